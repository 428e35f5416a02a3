#!/usr/bin/env bash
# Runs the built test suite on the GPU device machine, whose image has no Vulkan loader or
# validation layer of its own. Prepare here with:
#   EXTRA_DEBS=vulkan-validationlayers ../shared/device/prepare.sh
# then on the device:  source .device/env.sh && scripts/gpu-machine-test.sh [build-dir [ctest args...]]
# Debian 12's layer predates VK_KHR_cooperative_matrix; carry .cache/validation-trixie.tar.xz
# (scripts/fetch-validation-layer.sh) to validate the KHR matrix kernels with trixie's layer.
set -euo pipefail
build=${1:-build}
shift || true
staged=/tmp/device-debs
export VK_LAYER_PATH=$staged/usr/share/vulkan/explicit_layer.d
export LD_LIBRARY_PATH=$staged/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if [ -f .cache/validation-trixie.tar.xz ]; then
  mkdir -p /tmp/validation-trixie && tar -xJf .cache/validation-trixie.tar.xz -C /tmp/validation-trixie
  export VK_LAYER_PATH=/tmp/validation-trixie/root/usr/share/vulkan/explicit_layer.d
  export LD_LIBRARY_PATH=/tmp/validation-trixie/root/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH
fi
export Q3N_VALIDATE=1
cd "$build"
ctest --output-on-failure --timeout 1500 "$@"

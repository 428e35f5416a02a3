#!/usr/bin/env bash
# Prints the path of a glslc that compiles GL_KHR_cooperative_matrix (and integer dot products):
# the system's where it can (Debian 13, Ubuntu 24.04+), otherwise Debian 13 (trixie)'s own glslc
# packages unpacked into .cache/glslc-trixie/ and started through trixie's dynamic loader, since
# their binaries need glibc 2.38 (Debian 12 has 2.36). Only Debian's packages, fetched with apt
# into a private list and cache (nothing is installed into /); reused once unpacked.
# Exit status 1 (with a message on stderr) when neither is available.
set -euo pipefail
cd "$(dirname "$0")/.."

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

rm -rf "$prefix"
mkdir -p "$prefix/lists/partial" "$prefix/archives/partial" "$prefix/debs" "$prefix/root"
echo "deb http://deb.debian.org/debian trixie main" >"$prefix/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$prefix/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$prefix/lists" -o "Dir::Cache::Archives=$prefix/archives"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Architecture=amd64" -o "APT::Architectures=amd64"
  -o "APT::Sandbox::User=root")
if ! apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 ||
  ! (cd "$prefix/debs" && apt-get "${apt_opts[@]}" download glslc libshaderc1 libc6 libstdc++6 libgcc-s1 >/dev/null 2>&1); then
  echo "fetch-glslc: could not download Debian trixie's glslc packages (apt); KHR cooperative-matrix shaders will not be built" >&2
  exit 1
fi
for deb in "$prefix"/debs/*.deb; do dpkg -x "$deb" "$prefix/root"; done
rm -rf "$prefix/lists" "$prefix/archives" "$prefix/debs"  # 40 MB of package lists; only root/ is used
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

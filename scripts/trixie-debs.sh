# Sourced by the fetch-* scripts: trixie_unpack PREFIX PACKAGE... downloads Debian 13 (trixie)'s
# packages with apt into a private list and cache under PREFIX (nothing is installed into /) and
# unpacks them into PREFIX/root. Returns 1 when apt cannot fetch them.
trixie_unpack() {
  local prefix=$1
  shift
  rm -rf "$prefix"
  mkdir -p "$prefix/lists/partial" "$prefix/archives/partial" "$prefix/debs" "$prefix/root"
  echo "deb http://deb.debian.org/debian trixie main" >"$prefix/sources.list"
  local apt_opts=(-o "Dir::Etc::SourceList=$prefix/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$prefix/lists" -o "Dir::Cache::Archives=$prefix/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Architecture=amd64" -o "APT::Architectures=amd64"
    -o "APT::Sandbox::User=root")
  if ! apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 ||
    ! (cd "$prefix/debs" && apt-get "${apt_opts[@]}" download "$@" >/dev/null 2>&1); then
    return 1
  fi
  local deb
  for deb in "$prefix"/debs/*.deb; do dpkg -x "$deb" "$prefix/root"; done
  rm -rf "$prefix/lists" "$prefix/archives" "$prefix/debs"  # tens of MB of package lists; only root/ is used
}

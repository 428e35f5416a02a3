#!/usr/bin/env bash
# Writes the demo model's training text to ${1:-.cache/demo}/kjv.txt: the King James Bible from
# Debian's bible-kjv-text (public domain: the 1611 translation's copyright has expired; the
# package's own legend allows unrestricted use), decoded by the package's `bible` program.
# Needs apt (Debian/Ubuntu); nothing is installed, the two .deb files are only unpacked.
set -euo pipefail
out=${1:-.cache/demo}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download bible-kjv bible-kjv-text >/dev/null 2>&1) || {
  echo "error: 'apt-get download bible-kjv bible-kjv-text' failed; run 'apt-get update' first" >&2
  exit 1
}
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
"$work/root/usr/bin/bible" -p "$work/root/usr/lib" gen1:1-rev22:21 >"$out/kjv.txt"
cp "$work/root/usr/share/doc/bible-kjv-text/copyright" "$out/kjv-copyright.txt"
echo "wrote $out/kjv.txt ($(wc -c <"$out/kjv.txt") bytes)"

#!/usr/bin/env bash
# Checks the C++ layout against .clang-format with clang-format 14 (Debian 12's; other versions
# lay code out differently, so the check is skipped without it). Prints the files that differ
# and exits 1. Fix with: scripts/check-format.sh --fix
set -uo pipefail
cd "$(dirname "$0")/.."
fmt=$(command -v clang-format-14 || true)
if [ -z "$fmt" ] && command -v clang-format >/dev/null && clang-format --version | grep -q "version 14\."; then
  fmt=$(command -v clang-format)
fi
if [ -z "$fmt" ]; then
  echo "check-format: clang-format 14 not found; skipped"
  exit 0
fi
files=$(git ls-files '*.cpp' '*.h' 2>/dev/null || find . \( -name '*.cpp' -o -name '*.h' \) -not -path './build*')
if [ "${1:-}" = "--fix" ]; then
  echo "$files" | xargs "$fmt" -i
  exit 0
fi
# One clang-format run over every file; it reports each place that differs.
differing=$(echo "$files" | xargs "$fmt" --dry-run 2>&1 | grep -oE '^[^:]+:[0-9]+:[0-9]+: warning' | cut -d: -f1 | sort -u)
if [ -n "$differing" ]; then
  echo "$differing" | sed 's/^/check-format: differs from .clang-format (scripts\/check-format.sh --fix): /'
  exit 1
fi

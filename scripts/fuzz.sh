#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes: builds the libFuzzer targets of tests/fuzz with clang,
# AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/, then runs each for
# FUZZ_SECONDS (default 20) from its seeds and committed regression inputs. A crash fails the
# script and leaves the input in build-fuzz/crashes/: fix the bug, then commit the input to
# tests/fuzz/regressions/<target>/ so ctest `fuzz_replay` keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
probe=$(mktemp -d)
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o "$probe/probe" >/dev/null 2>&1; then
  echo "fuzz: clang++ with libFuzzer and the sanitizer runtimes is not installed (scripts/setup.sh: clang, libclang-rt-14-dev); skipped"
  rm -rf "$probe"
  exit 0
fi
rm -rf "$probe"
cmake -S . -B build-fuzz -DQ3N_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
seconds=${FUZZ_SECONDS:-20}
mkdir -p build-fuzz/crashes
status=0
for target in safetensors config batch_line token_ids tokenizer chat_config pipeline_cache weight_cache; do
  corpus=build-fuzz/corpus/$target
  mkdir -p "$corpus" tests/fuzz/regressions/$target
  if build-fuzz/tests/fuzz/fuzz_$target -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
      -artifact_prefix="build-fuzz/crashes/$target-" -print_final_stats=1 \
      "$corpus" tests/fuzz/seeds/$target tests/fuzz/regressions/$target > build-fuzz/$target.log 2>&1; then
    echo "fuzz: $target: $(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' build-fuzz/$target.log | grep -oE '[0-9]+$') runs in ${seconds}s, no crash"
  else
    echo "fuzz: $target: CRASH (build-fuzz/$target.log, input in build-fuzz/crashes/)"
    tail -30 build-fuzz/$target.log
    status=1
  fi
done
exit $status

#!/usr/bin/env bash
# The unit, GPU, model and CLI tests built with AddressSanitizer + UndefinedBehaviorSanitizer (gcc,
# -O1) in build-asan/ and run by ctest on the same device as the main suite (lavapipe where there
# is no GPU), under the validation layer. Any sanitizer report fails the test that caused it. The
# Vulkan driver and loader are not instrumented; leaks are checked for q3n's own allocations only
# (scripts/lsan.supp lists the driver libraries' one-time allocations).
set -euo pipefail
cd "$(dirname "$0")/.."
glslc_args=()
if glslc_path=$(scripts/fetch-glslc.sh 2>/dev/null); then glslc_args=(-DGLSLC="$glslc_path"); fi
cmake -S . -B build-asan -DQ3N_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1" \
  -DQ3N_BUILD_BENCH=OFF "${glslc_args[@]}" >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}
export Q3N_VALIDATE=1
# The model tests under the GPU shapes repeat the same host code (only shaders differ) at 3x the time;
# so do, each with the host code another test here runs (the sanitizer instruments host code only):
#  - the long-context prefills of 4500 tokens (the short fixtures');
#  - the three-device and synthetic pipeline splits (the two-device split's);
#  - kjv-demo's held-out perplexity (the fixtures' teacher-forced logits: prefill chunks, logits);
#  - kjv-demo's MTP generations, one and several sequences, and MTP batch jobs (batch_cli's
#    `run --mtp` and `batch --mtp`, four sequences at once);
#  - the sampling kernel's frequency tests (thousands of draws in the driver, one record_sample
#    call, which SampleTest's other tests make).
export GTEST_FILTER=${GTEST_FILTER:--LongContextTest.LogitsPast4096*:*SplitTest.Three*:*SplitTest.Synthetic*:DemoModelTest.*:MtpTest.Emits*:MtpTest.Drafts*:MtpTest.Batch*:SampleTest.FilteredFrequencies*}
# Open MPI's own start-up allocations are not freed (LeakSanitizer would report them); the
# multi-process batch path runs in the normal build's batch_cli test.
export Q3N_TEST_MPI=${Q3N_TEST_MPI:-0}
# The demo model's split logits (two 170-token evaluations) only repeat batch_cli's split test here.
export Q3N_TEST_DEMO_SPLIT=${Q3N_TEST_DEMO_SPLIT:-0}
(cd build-asan && ctest --output-on-failure --timeout 1500 -j2 -E '^(format|layering|model_gpu_shapes_[0-9])$')
echo "sanitize: every test passed under ASan + UBSan"

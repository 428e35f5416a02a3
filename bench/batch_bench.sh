#!/usr/bin/env bash
# The `q3n batch` throughput benchmark (bench/NOTES.md): a generated file of requests with
# prompt lengths spread from 32 to 2048 tokens and 128 output tokens each, run on the synthetic
# 80B-A3B model at 4-bit weights once per --max-batch value.
#   bench/batch_bench.sh OUTDIR REQUESTS "MAX_BATCHES" [extra q3n batch flags...]
# e.g. bench/batch_bench.sh /tmp/out 512 "32 128"
set -euo pipefail
out=$1 requests=$2 batches=$3
shift 3
mkdir -p "$out"
input="$out/requests-$requests.jsonl"
[ -f "$input" ] || python3 "$(dirname "$0")/../tools/make_batch_requests.py" "$input" --requests "$requests"
for b in $batches; do
  rm -f "$out/results-$requests-b$b.jsonl"
  # --ctx 2176: the longest prompt (2048) plus 128 output tokens, so 128 sequences fit in 80 GB.
  build/q3n batch --synthetic assets/configs/qwen3-next-80b-a3b.json --weights q4 --ctx 2176 \
    --input "$input" --output "$out/results-$requests-b$b.jsonl" --max-batch "$b" "$@" 2>&1 |
    tee "$out/batch-$requests-b$b.log" | grep -v '^\[q3n\] batch: [0-9]*/' || true
  rm -f "$out/results-$requests-b$b.jsonl"  # tens of MB of ids; the log keeps the numbers
done

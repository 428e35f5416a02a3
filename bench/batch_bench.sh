#!/usr/bin/env bash
# The `q3n batch` throughput benchmark (bench/NOTES.md): a generated file of requests (prompt
# lengths spread from MIN to MAX tokens, 128 output tokens each) run on the synthetic 80B-A3B
# model at 4-bit weights once per --max-batch value. Results are kept, so a rerun resumes.
#   bench/batch_bench.sh OUTDIR REQUESTS MIN_LEN MAX_LEN "MAX_BATCHES" [extra q3n batch flags...]
# e.g. bench/batch_bench.sh /tmp/out 512 32 2048 "32 128"
# BATCH_SECONDS=N stops each run after N seconds (SIGINT; the next run resumes it).
set -euo pipefail
out=$1 requests=$2 min_len=$3 max_len=$4 batches=$5
shift 5
mkdir -p "$out"
name="$requests-$min_len-$max_len"
input="$out/requests-$name.jsonl"
[ -f "$input" ] || python3 "$(dirname "$0")/../tools/make_batch_requests.py" "$input" --requests "$requests" \
  --min-len "$min_len" --max-len "$max_len"
for b in $batches; do
  # --ctx: the longest prompt plus 128 output tokens.
  ${BATCH_SECONDS:+timeout -s INT -k 60 $BATCH_SECONDS} build/q3n batch --synthetic assets/configs/qwen3-next-80b-a3b.json \
    --weights q4 --ctx $((max_len + 128)) --input "$input" --output "$out/results-$name-b$b.jsonl" --max-batch "$b" "$@" \
    2>&1 | tee -a "$out/batch-$name-b$b.log" | grep -v '^\[q3n\] batch: [0-9]*/' || true
done

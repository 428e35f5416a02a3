#!/usr/bin/env python3
"""Writes a `q3n batch` input file of synthetic requests for benchmarks: prompt_ids of random
tokens (no tokenizer needed, so it works with --synthetic), prompt lengths spread evenly over a
range, a fixed max_tokens, greedy.

  tools/make_batch_requests.py OUT.jsonl [--requests 512] [--min-len 32] [--max-len 2048]
                               [--max-tokens 128] [--vocab 151643] [--seed 1]
"""
import argparse
import json
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--min-len", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=151643, help="ids are drawn below this (Qwen3: the ordinary tokens)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    # Evenly spread lengths, shuffled so that long and short prompts arrive mixed.
    span = a.max_len - a.min_len
    lengths = [a.min_len + (span * i) // max(a.requests - 1, 1) for i in range(a.requests)]
    rng.shuffle(lengths)
    with open(a.out, "w") as f:
        for i, n in enumerate(lengths):
            ids = [rng.randrange(a.vocab) for _ in range(n)]
            f.write(json.dumps({"custom_id": f"req-{i}", "prompt_ids": ids, "max_tokens": a.max_tokens, "temperature": 0}) + "\n")
    total = sum(lengths)
    print(f"wrote {a.out}: {a.requests} requests, {total} prompt tokens (mean {total / a.requests:.0f}), "
          f"{a.requests * a.max_tokens} output tokens at most")


if __name__ == "__main__":
    main()

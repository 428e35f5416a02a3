#!/usr/bin/env python3
"""Adds HF `tokenizers` reference ids to the tokenizer corpus.

    python3 tools/tokenizer_reference.py TOKENIZER_JSON CORPUS_JSON OUT_JSON

Run where the `tokenizers` package is installed (the GPU machine has it with transformers).
The output is committed as tests/data/tokenizer_cases.json and read by tests/loader/tokenizer_test.cpp.
"""
import json
import sys

import tokenizers


def main():
    tok_path, corpus_path, out_path = sys.argv[1:4]
    tok = tokenizers.Tokenizer.from_file(tok_path)
    cases = json.load(open(corpus_path, encoding="utf-8"))
    for case in cases:
        enc = tok.encode(case["text"], add_special_tokens=False)
        case["ids"] = enc.ids
        case["decoded"] = tok.decode(enc.ids, skip_special_tokens=False)
    meta = {"generator": "HF tokenizers " + tokenizers.__version__, "cases": cases}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
    print("wrote", len(cases), "cases with", tokenizers.__version__)


if __name__ == "__main__":
    main()

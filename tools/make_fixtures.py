#!/usr/bin/env python3
"""Builds the small random-weight Qwen3-Next checkpoints that q3n's end-to-end tests compare
against HF transformers (issue 5; docs/spec/qwen3-next.md §9).

For each fixture: a checkpoint saved by transformers' save_pretrained (every parameter random,
norms, A_log and dt_bias included), a tiny byte-level BPE tokenizer of Qwen2's structure, and
HF's reference outputs computed on CPU in fp32 from the stored weights (TF32 off):
  reference.json  prompt ids, greedy continuation ids and each greedy step's top-2 margin
  logits.f32      teacher-forced logits of prompt + continuation, little-endian f32: all T rows,
                  or (long prompts) the rows listed in reference.json's "logits_rows"
and, for the long-context fixture (issue 18), RoPE far from position 0:
  offset_logits_P.f32  logits [N, vocab] of the prompt's first N tokens at positions P .. P+N-1
                       (HF position_ids; the causal mask is unchanged), for each P in
                       reference.json's "rope_offsets"

Run on the device machine (needs torch and transformers >= 5):
  python3 tools/make_fixtures.py OUT_DIR
then copy OUT_DIR/* to tests/data/fixtures/. `make_fixtures.py OUT_DIR NAME...` builds only those.
"""
import json
import os
import sys

import torch
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

from qwen_bpe import make_tokenizer

FIXTURES = {
    # F32, transformers-5 config spelling, untied, Hv/Hk = 2, dk != dv, rotary 0.25, a dense
    # mlp_only layer, two attention layers (3 and 7), GQA 2.
    "f32_untied": dict(
        dtype=torch.float32, spelling="transformers5", seed=1,
        config=dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=8,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                    linear_value_head_dim=8, linear_conv_kernel_dim=4, num_experts=8, num_experts_per_tok=2,
                    moe_intermediate_size=32, shared_expert_intermediate_size=48, norm_topk_prob=True,
                    mlp_only_layers=[1], tie_word_embeddings=False, partial_rotary_factor=0.25)),
    # BF16 on disk, release config spelling, tied embeddings, Hv/Hk = 1, dk != dv, rotary 0.5,
    # GQA 4, norm_topk_prob false.
    "bf16_tied": dict(
        dtype=torch.bfloat16, spelling="release", seed=2,
        config=dict(vocab_size=320, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                    linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16,
                    linear_value_head_dim=24, linear_conv_kernel_dim=4, num_experts=6, num_experts_per_tok=3,
                    moe_intermediate_size=24, shared_expert_intermediate_size=32, norm_topk_prob=False,
                    mlp_only_layers=[], tie_word_embeddings=True, partial_rotary_factor=0.5)),
    # Long context (issue 18): 4500 prompt tokens (positions past 4096, many prefill chunks) on a
    # model whose max_position_embeddings is the release's 262,144, with references at RoPE
    # positions near 200,000 and at the last position. Teacher-forced logits every 50th row and
    # the last 8 keep the files small.
    "long_context": dict(
        dtype=torch.float32, spelling="transformers5", seed=3, prompt_tokens=4500, greedy_tokens=8,
        logit_stride=50, max_position_embeddings=262144, rope_offsets=[200000, 262144 - 130],
        offset_tokens=130,
        config=dict(vocab_size=320, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16,
                    linear_value_head_dim=16, linear_conv_kernel_dim=4, num_experts=4, num_experts_per_tok=2,
                    moe_intermediate_size=24, shared_expert_intermediate_size=32, norm_topk_prob=True,
                    mlp_only_layers=[], tie_word_embeddings=False, partial_rotary_factor=0.5)),
}
PROMPT_TOKENS = 150   # spans two 64-token chunks and a remainder
GREEDY_TOKENS = 16


def corpus():
    import argparse, collections, json as j, pathlib, textwrap  # noqa: E401 - docstrings as text
    return [m.__doc__ or "" for m in (argparse, collections, j, pathlib, textwrap, os, torch.nn)]


def randomise(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("A_log"):
                p.copy_(torch.empty_like(p).uniform_(1, 16).log())
            elif n.endswith("dt_bias"):
                p.copy_(torch.randn_like(p) * 0.5)
            elif "norm" in n:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if n.endswith("linear_attn.norm.weight") else 0.0))
            else:
                p.copy_(torch.randn_like(p) * 0.08)


def build(name, spec, out_root):
    torch.manual_seed(spec["seed"])
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    tok = make_tokenizer(spec["config"]["vocab_size"], corpus())
    eos = tok.token_to_id("<|endoftext|>")
    c = dict(spec["config"])
    partial = c.pop("partial_rotary_factor")
    cfg = Qwen3NextConfig(**c, rms_norm_eps=1e-6, max_position_embeddings=spec.get("max_position_embeddings", 4096),
                          decoder_sparse_step=1,
                          full_attention_interval=4, bos_token_id=eos, eos_token_id=eos,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e7,
                                           "partial_rotary_factor": partial})
    cfg._attn_implementation = "eager"
    model = Qwen3NextForCausalLM(cfg).float().eval()
    randomise(model)
    model.to(spec["dtype"]).save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|endoftext|>"}, f, indent=1)
    if spec["spelling"] == "release":  # the Qwen3-Next release's config.json keys
        path = os.path.join(out, "config.json")
        with open(path) as f:
            saved = json.load(f)
        rope = saved.pop("rope_parameters")
        saved["rope_theta"] = rope["rope_theta"]
        saved["partial_rotary_factor"] = rope["partial_rotary_factor"]
        if "dtype" in saved:
            saved["torch_dtype"] = saved.pop("dtype")
        with open(path, "w") as f:
            json.dump(saved, f, indent=2)

    # The reference runs in fp32 from exactly the stored weights.
    model = model.float().eval()
    gen = torch.Generator().manual_seed(100 + spec["seed"])
    prompt = torch.randint(0, cfg.vocab_size, (spec.get("prompt_tokens", PROMPT_TOKENS),), generator=gen).tolist()
    ids, margins = list(prompt), []
    with torch.no_grad():
        for _ in range(spec.get("greedy_tokens", GREEDY_TOKENS)):  # full recompute each step: no cache path
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 2).values
            margins.append(float(top[0] - top[1]))
            ids.append(int(torch.argmax(logits)))
        logits = model(torch.tensor([ids])).logits[0].float().contiguous()
    reference = {"prompt_ids": prompt, "greedy_ids": ids[len(prompt):], "greedy_margins": margins,
                 "logits_shape": list(logits.shape), "transformers": __import__("transformers").__version__,
                 "torch": torch.__version__}
    if "logit_stride" in spec:
        greedy = len(ids) - len(prompt)
        rows = sorted(set(range(0, len(ids), spec["logit_stride"])) | set(range(len(ids) - greedy, len(ids))))
        logits = logits[rows].contiguous()
        reference["logits_rows"] = rows
    logits.numpy().astype("<f4").tofile(os.path.join(out, "logits.f32"))
    if "rope_offsets" in spec:
        n = spec["offset_tokens"]
        reference["rope_offsets"], reference["offset_tokens"] = spec["rope_offsets"], n
        for offset in spec["rope_offsets"]:
            with torch.no_grad():
                shifted = model(torch.tensor([prompt[:n]]), position_ids=torch.arange(offset, offset + n)[None])
            shifted.logits[0].float().contiguous().numpy().astype("<f4").tofile(
                os.path.join(out, f"offset_logits_{offset}.f32"))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(reference, f)
    print(name, "params", sum(p.numel() for p in model.parameters()), "files", sorted(os.listdir(out)))


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out_root, names = sys.argv[1], sys.argv[2:] or list(FIXTURES)
    for name in names:
        build(name, FIXTURES[name], out_root)


if __name__ == "__main__":
    main()

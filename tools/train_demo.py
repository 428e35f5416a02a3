#!/usr/bin/env python3
"""Trains q3n's shipped demo model (issue 7): a ~12M-parameter Qwen3-Next with every feature of
the architecture (3:1 Gated DeltaNet / gated attention, MoE with a sigmoid-gated shared expert,
partial RoPE, zero-centred norms) plus the MTP module of docs/spec/qwen3-next.md §4, trained
jointly on the next-token loss and the MTP's next-next-token loss.

Data: the King James Bible (public domain) from Debian's bible-kjv-text, written by
scripts/fetch-demo-corpus.sh. Every 40th chapter is held out.

Run on the device machine (torch + transformers >= 5, a CUDA GPU):
  python3 tools/train_demo.py --corpus .cache/demo/kjv.txt --out OUT   # ~3 minutes on an H100
It runs --steps optimizer steps (warm-up, then cosine decay to 10%), keeps the weights of the best
held-out loss, saves a resumable checkpoint to --work every --save-minutes (and when --minutes
runs out: call again with --resume), and writes to --out:
  config.json, model.safetensors (BF16, mtp.* included), tokenizer.json, tokenizer_config.json,
  generation_config.json, heldout.txt, heldout.json (HF's fp32 perplexity of heldout.txt from the
  saved BF16 weights), train_log.json (losses, accuracies, a sample).
Resume an interrupted run with the same command plus --resume.
"""
import argparse
import json
import math
import os
import re
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Qwen3NextConfig, Qwen3NextForCausalLM
from transformers.models.qwen3_next import modeling_qwen3_next as hf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qwen_bpe import make_tokenizer  # noqa: E402

VOCAB = 4096
HELDOUT_EVERY = 40        # every 40th chapter is held out
HELDOUT_EVAL_CHARS = 4000  # the text q3n's test evaluates (~1k tokens)
MTP_LOSS_WEIGHT = 0.3


def model_config(eos):
    return Qwen3NextConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=64, linear_value_head_dim=64,
        linear_conv_kernel_dim=4, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=64,
        shared_expert_intermediate_size=192, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        full_attention_interval=4, tie_word_embeddings=True, rms_norm_eps=1e-6, max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        router_aux_loss_coef=0.01, bos_token_id=eos, eos_token_id=eos)


# ---------------------------------------------------------------------------------------------
# Data

def read_chapters(path):
    """The `bible` program's output as [(heading, [verse, ...])]: a heading follows a blank line;
    a verse starts with its indented number; other lines continue the previous verse."""
    chapters, prev_blank = [], True
    for line in open(path, encoding="utf-8").read().split("\n"):
        if not line.strip():
            prev_blank = True
            continue
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            chapters[-1][1].append(verse.group(1).strip())
        elif prev_blank and not line.startswith(" "):
            chapters.append((line.strip(), []))
        else:
            chapters[-1][1][-1] += " " + line.strip()
        prev_blank = False
    if len(chapters) < 1000:
        raise SystemExit(f"{path}: only {len(chapters)} chapters found; run scripts/fetch-demo-corpus.sh")
    return chapters


def chapter_text(chapter):
    heading, verses = chapter
    return heading + "\n" + "\n".join(verses) + "\n\n"


# ---------------------------------------------------------------------------------------------
# MTP module (spec §4): names and structure of vLLM's Qwen3NextMultiTokenPredictor.

class MultiTokenPredictor(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, eps = cfg.hidden_size, cfg.rms_norm_eps
        attention_layer = cfg.layer_types.index("full_attention")  # builds a full-attention MoE layer
        self.fc = nn.Linear(2 * H, H, bias=False)
        self.pre_fc_norm_embedding = hf.Qwen3NextRMSNorm(H, eps=eps)
        self.pre_fc_norm_hidden = hf.Qwen3NextRMSNorm(H, eps=eps)
        self.layers = nn.ModuleList([hf.Qwen3NextDecoderLayer(cfg, attention_layer)])
        self.norm = hf.Qwen3NextRMSNorm(H, eps=eps)

    def forward(self, hidden, next_embedding, position_embeddings, position_ids):
        """hidden: the main model's final (normed) hidden state at t; next_embedding: embed(x_{t+1}).
        Returns the normed state whose logits predict x_{t+2}; RoPE position = t (spec §4.2)."""
        c = self.fc(torch.cat([self.pre_fc_norm_embedding(next_embedding), self.pre_fc_norm_hidden(hidden)], -1))
        out = self.layers[0](hidden_states=c, position_embeddings=position_embeddings, attention_mask=None,
                             position_ids=position_ids)
        return self.norm(out[0] if isinstance(out, tuple) else out)


def checkpoint_tensors(module, prefix):
    """`module`'s parameters under checkpoint names: transformers 5 keeps each MoE's experts fused
    (gate_up_proj [E, 2I, H], down_proj [E, H, I]); checkpoints name them per expert."""
    out = {}
    for name, p in module.state_dict().items():
        p = p.detach().to("cpu")
        if name.endswith("experts.gate_up_proj"):
            base, inter = prefix + name[: -len("gate_up_proj")], p.shape[1] // 2
            for e in range(p.shape[0]):
                out[f"{base}{e}.gate_proj.weight"] = p[e, :inter].contiguous()
                out[f"{base}{e}.up_proj.weight"] = p[e, inter:].contiguous()
        elif name.endswith("experts.down_proj"):
            base = prefix + name[: -len("down_proj")]
            for e in range(p.shape[0]):
                out[f"{base}{e}.down_proj.weight"] = p[e].contiguous()
        else:
            out[prefix + name] = p.contiguous()
    return out


# ---------------------------------------------------------------------------------------------
# Training

def losses(model, mtp, ids, cfg, with_aux=True):
    """Next-token loss, MTP next-next-token loss, router balance loss and MTP top-1 accuracy."""
    base = model.model
    out = base(input_ids=ids, output_router_logits=with_aux)
    h = out.last_hidden_state                                   # post model.norm (spec §4.2)
    logits = model.lm_head(h[:, :-1])
    main = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    T = ids.shape[1]
    pos = torch.arange(T - 2, device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)
    hm = mtp(h[:, : T - 2], base.embed_tokens(ids[:, 1 : T - 1]), base.rotary_emb(h, pos), pos)
    mtp_logits = model.lm_head(hm).float()
    target = ids[:, 2:]
    mtp_loss = F.cross_entropy(mtp_logits.reshape(-1, mtp_logits.shape[-1]), target.reshape(-1))
    mtp_acc = (mtp_logits.argmax(-1) == target).float().mean()
    aux = torch.zeros((), device=ids.device)
    router = getattr(out, "router_logits", None)
    if with_aux and router:
        aux = hf.load_balancing_loss_func(router, cfg.num_experts, cfg.num_experts_per_tok, None)
    return main, mtp_loss, aux, mtp_acc


@torch.no_grad()
def evaluate(model, mtp, stream, cfg, seq):
    model.eval(), mtp.eval()
    n = (len(stream) - 1) // seq
    tot = {"main": 0.0, "mtp": 0.0, "acc": 0.0}
    for i in range(n):
        ids = stream[i * seq : (i + 1) * seq + 1].unsqueeze(0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            main, mtp_loss, _, acc = losses(model, mtp, ids, cfg, with_aux=False)
        tot["main"] += main.item(); tot["mtp"] += mtp_loss.item(); tot["acc"] += acc.item()
    model.train(), mtp.train()
    return {k: v / max(n, 1) for k, v in tot.items()}


def lr_at(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/q3n-train-demo", help="resumable checkpoint folder")
    ap.add_argument("--steps", type=int, default=560, help="optimizer steps; the weights of the best held-out loss are kept (step 200 of 560 for the shipped model)")
    ap.add_argument("--minutes", type=float, default=9.0, help="stop this call after this long; --resume goes on")
    ap.add_argument("--save-minutes", type=float, default=2.0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    dev = "cuda"
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)

    chapters = read_chapters(args.corpus)
    held_out = [i % HELDOUT_EVERY == HELDOUT_EVERY - 1 for i in range(len(chapters))]
    train_chapters = [chapter_text(c) for c, h in zip(chapters, held_out) if not h]
    train_text = "".join(train_chapters)
    held_text = "".join(chapter_text(c) for c, h in zip(chapters, held_out) if h)
    tok_path = os.path.join(args.work, "tokenizer.json")
    if args.resume and os.path.exists(tok_path):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tok_path)
    else:
        tok = make_tokenizer(VOCAB, train_chapters)
        tok.save(tok_path)
    eos = tok.token_to_id("<|endoftext|>")
    train_ids = torch.tensor(tok.encode(train_text).ids, device=dev)
    held_ids = torch.tensor(tok.encode(held_text).ids, device=dev)
    print(f"chapters {len(chapters)}: train {len(train_text)} chars / {len(train_ids)} tokens, "
          f"held out {len(held_text)} chars / {len(held_ids)} tokens", flush=True)

    cfg = model_config(eos)
    cfg._attn_implementation = "sdpa"
    model = Qwen3NextForCausalLM(cfg).to(dev)
    mtp = MultiTokenPredictor(cfg).to(dev)
    params = list(model.parameters()) + list(mtp.parameters())
    n_main = sum(p.numel() for p in model.parameters())
    n_mtp = sum(p.numel() for p in mtp.parameters())
    print(f"parameters: model {n_main / 1e6:.2f}M, mtp {n_mtp / 1e6:.2f}M", flush=True)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=True)

    ckpt_path = os.path.join(args.work, "ckpt.pt")
    step, total, trained_s, log = 0, args.steps, 0.0, []
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=dev)
        model.load_state_dict(ck["model"]); mtp.load_state_dict(ck["mtp"]); opt.load_state_dict(ck["opt"])
        step, total, trained_s, log = ck["step"], ck["total"], ck["trained_s"], ck["log"]
        print(f"resumed at step {step} of {total}", flush=True)

    def save_checkpoint():
        torch.save({"model": model.state_dict(), "mtp": mtp.state_dict(), "opt": opt.state_dict(), "step": step,
                    "total": total, "trained_s": trained_s, "log": log}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    budget_s = args.minutes * 60
    warmup = 100
    best = {"loss": float("inf"), "step": 0, "model": None, "mtp": None}
    session_start = last_save = time.time()
    step_start_s = trained_s
    model.train(), mtp.train()
    while True:
        if step >= total:
            break
        if time.time() - session_start > budget_s:
            save_checkpoint()
            print(f"stopped at step {step} of {total} after {args.minutes} minutes: run again with --resume")
            return
        starts = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,), device=dev)
        ids = torch.stack([train_ids[s : s + args.seq + 1] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, warmup)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            main_loss, mtp_loss, aux, acc = losses(model, mtp, ids, cfg)
            loss = main_loss + MTP_LOSS_WEIGHT * mtp_loss + cfg.router_aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        trained_s = step_start_s + (time.time() - session_start)
        if step % 50 == 0 or step == 1:
            rec = {"step": step, "seconds": round(trained_s, 1), "loss": round(main_loss.item(), 4),
                   "mtp_loss": round(mtp_loss.item(), 4), "aux": round(aux.item(), 4), "mtp_acc": round(acc.item(), 4)}
            log.append(rec)
            print(json.dumps(rec), flush=True)
        if step % args.eval_every == 0:  # early stopping: 1M tokens are seen many times over
            held = evaluate(model, mtp, held_ids, cfg, args.seq)
            log.append({"step": step, "heldout": held})
            print(json.dumps(log[-1]), flush=True)
            if held["main"] < best["loss"]:
                best = {"loss": held["main"], "step": step,
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                        "mtp": {k: v.detach().clone() for k, v in mtp.state_dict().items()}}
        if time.time() - last_save > args.save_minutes * 60:
            save_checkpoint()
            last_save = time.time()
    save_checkpoint()
    held = evaluate(model, mtp, held_ids, cfg, args.seq)
    if best["model"] is not None and best["loss"] < held["main"]:
        print(f"keeping step {best['step']}: held-out loss {best['loss']:.4f} < final {held['main']:.4f}", flush=True)
        model.load_state_dict(best["model"]), mtp.load_state_dict(best["mtp"])
        step = best["step"]

    train_eval = evaluate(model, mtp, train_ids[: 64 * args.seq + 1], cfg, args.seq)
    held_eval = evaluate(model, mtp, held_ids, cfg, args.seq)
    print("train", train_eval, "held out", held_eval, flush=True)
    export(model, mtp, cfg, tok, held_text, args, {"steps": step, "seconds": round(trained_s, 1),
           "train": train_eval, "heldout": held_eval, "log": log, "params_model": n_main, "params_mtp": n_mtp,
           "train_tokens": len(train_ids), "heldout_tokens": len(held_ids)})


def export(model, mtp, cfg, tok, held_text, args, summary):
    """Writes the HF checkpoint in BF16 with mtp.* added, then HF's reference perplexity of the
    held-out evaluation text computed in fp32 from exactly the saved weights."""
    out = args.out
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    weights_path = os.path.join(out, "model.safetensors")
    saved = load_file(weights_path)
    # Self-check of checkpoint_tensors against save_pretrained's own conversion of layer 0.
    mine = checkpoint_tensors(model.model.layers[0].mlp, "model.layers.0.mlp.")
    for k, v in mine.items():
        if not torch.equal(saved[k], v):
            raise SystemExit(f"expert name conversion disagrees with save_pretrained at {k}")
    saved.update(checkpoint_tensors(mtp.to(torch.bfloat16), "mtp."))
    save_file(saved, weights_path, metadata={"format": "pt"})
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|endoftext|>",
                   "model_max_length": cfg.max_position_embeddings}, f, indent=1)
    eos = tok.token_to_id("<|endoftext|>")
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": eos, "eos_token_id": [eos], "do_sample": True, "temperature": 0.7,
                   "top_k": 40, "top_p": 0.9}, f, indent=1)

    # HF reference on the held-out evaluation text, fp32, from the saved BF16 weights.
    text = held_text[:HELDOUT_EVAL_CHARS]
    text = text[: text.rfind("\n") + 1]
    with open(os.path.join(out, "heldout.txt"), "w") as f:
        f.write(text)
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = Qwen3NextForCausalLM.from_pretrained(out, dtype=torch.float32).to("cuda").eval()
    ids = tok.encode(text).ids
    with torch.no_grad():
        logits = ref(torch.tensor([ids], device="cuda")).logits[0].double()
        nll = F.cross_entropy(logits[:-1], torch.tensor(ids[1:], device="cuda"), reduction="mean").item()
        prompt = tok.encode("And God said").ids
        gen = ref.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=60, do_sample=True,
                           temperature=0.7, top_k=40, top_p=0.9)
    sample = tok.decode(gen[0].tolist())
    import transformers
    with open(os.path.join(out, "heldout.json"), "w") as f:
        json.dump({"file": "heldout.txt", "tokens": len(ids), "token_ids": ids, "mean_nll": nll,
                   "perplexity": math.exp(nll), "computed_by": f"transformers {transformers.__version__}, "
                   f"torch {torch.__version__}, fp32 from the BF16 checkpoint"}, f)
    summary["hf_heldout_eval_perplexity"] = math.exp(nll)
    summary["sample"] = sample
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("held-out eval text:", len(ids), "tokens, HF perplexity", math.exp(nll), flush=True)
    print("sample:", sample, flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden fixtures for the LongLoRA training step: transformers + peft LoRA on q/k/v/o with
modules_to_save embeddings and norms, and S2-Attn written from docs/CONVENTIONS.md §4 (both variants) as a
transformers attention function. Records the loss and every trainable gradient for: full
attention, S2 boundaries, S2 roll, packed documents (full) and packed documents with S2 boundaries.

  /tmp/ref/bin/python Tools/reference/make_lora_fixtures.py Tests/LlamaTests/Fixtures/lora
  /tmp/ref/bin/python Tools/reference/make_lora_fixtures.py Tests/LlamaTests/Fixtures/lora_qwen3 qwen3
  /tmp/ref/bin/python Tools/reference/make_lora_fixtures.py Tests/LlamaTests/Fixtures/lora_phi3 phi3
  /tmp/ref/bin/python Tools/reference/make_lora_fixtures.py Tests/LlamaTests/Fixtures/lora_gemma3 gemma3
(qwen3: the same step on a Qwen3 model, whose per-head q_norm/k_norm are trainable norms as peft's
modules_to_save=["norm"] makes them; phi3: a Phi-3 model with half-rotary heads, LoRA on its fused qkv_proj and
gate_up_proj as peft names them, and on o_proj; gemma3: a Gemma 3 model whose local layer keeps its 12-token window
and full causal attention in every case (S2-Attn and roll apply to the global layer only, docs/CONVENTIONS.md §22).)
"""
import json, os, shutil, sys
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (AttentionInterface, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,
                          Phi3Config, Phi3ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/lora"
FAMILY = sys.argv[2] if len(sys.argv) > 2 else "llama"
T, RATIO = 64, 0.25
G = int(T * RATIO)
MODE = {"kind": "full", "docs": None}   # read by the attention function below


def allowed_mask(n_heads, docs, kind, window=None):
    """[H, T, T] boolean: which keys each query sees (causal within segments, within `window` keys)."""
    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]
    if window is not None:   # transformers' sliding_window_overlay: kv_idx > q_idx - window
        causal = causal & (i[None, :] > i[:, None] - window)
    def seg_ids(starts):
        s = torch.zeros(T, dtype=torch.long)
        for st in starts[1:]:
            s[st:] += 1
        return s
    doc = seg_ids(docs) if docs else torch.zeros(T, dtype=torch.long)
    masks = []
    for h in range(n_heads):
        if kind == "s2_boundaries":
            starts = list(range(0, T, G)) if h < n_heads // 2 else [0] + list(range(G // 2, T, G))
            grp = seg_ids(starts)
        else:
            grp = torch.zeros(T, dtype=torch.long)
        same = (grp[:, None] == grp[None, :]) & (doc[:, None] == doc[None, :])
        masks.append(causal & same)
    return torch.stack(masks)


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    b, h, t, d = query.shape
    rep = h // key.shape[1]
    k = key.repeat_interleave(rep, dim=1); v = value.repeat_interleave(rep, dim=1)
    q = query
    window = kw.get("sliding_window")
    kind = "full" if window else MODE["kind"]   # a local layer: its window, never S2
    if kind == "s2_roll":   # LongLoRA's original: roll the second half of the heads by -G/2
        q, k, v = (torch.cat([x[:, : h // 2], x[:, h // 2:].roll(-G // 2, dims=2)], dim=1) for x in (q, k, v))
        grp = torch.arange(t) // G
        mask = ((torch.arange(t)[None, :] <= torch.arange(t)[:, None]) & (grp[:, None] == grp[None, :]))[None].expand(h, t, t)
    else:
        mask = allowed_mask(h, MODE["docs"], kind, window)
    s = (q @ k.transpose(-1, -2)) * scaling
    s = s.masked_fill(~mask[None], float("-inf"))
    o = torch.softmax(s, dim=-1) @ v
    if kind == "s2_roll":
        o = torch.cat([o[:, : h // 2], o[:, h // 2:].roll(G // 2, dims=2)], dim=1)
    return o.transpose(1, 2).contiguous(), None


AttentionInterface.register("s2_reference", attention)


def ours(name):   # peft name -> LongTune/HF name
    name = name.replace("base_model.model.", "", 1).replace(".default", "").replace(".modules_to_save", "")
    return name


def main():
    shutil.rmtree(OUT, ignore_errors=True); os.makedirs(OUT)
    torch.manual_seed(11)
    shape = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    if FAMILY == "qwen3":
        base = Qwen3ForCausalLM(Qwen3Config(head_dim=32, rope_theta=1e6, **shape))
    elif FAMILY == "phi3":
        base = Phi3ForCausalLM(Phi3Config(partial_rotary_factor=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                          **shape))
        targets = ["qkv_proj", "o_proj", "gate_up_proj"]
    elif FAMILY == "gemma3":
        base = Gemma3ForCausalLM(Gemma3TextConfig(head_dim=24, query_pre_attn_scalar=20, sliding_window=12,
                                                  layer_types=["sliding_attention", "full_attention"], **shape))
    else:
        base = LlamaForCausalLM(LlamaConfig(**shape))
    with torch.no_grad():
        for n, p in base.named_parameters():
            p.copy_((torch.randn_like(p) * 0.15 if p.dim() == 2 else torch.rand_like(p) + 0.5).half().float())
    base.save_pretrained(os.path.join(OUT, "base"))
    save_file({k: v.half().contiguous() for k, v in base.state_dict().items()}, os.path.join(OUT, "base", "model.safetensors"),
              metadata={"format": "pt"})
    base.config._attn_implementation = "s2_reference"
    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets,
                      modules_to_save=["embed_tokens", "norm"], task_type="CAUSAL_LM")
    model = get_peft_model(base, lcfg)
    with torch.no_grad():   # B = 0 would make every A gradient zero: start from random adapters
        for n, p in model.named_parameters():
            if "lora_B" in n or "lora_A" in n:
                p.copy_(torch.randn_like(p) * 0.2)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    save_file({ours(n): p.detach().contiguous() for n, p in trainable.items()}, os.path.join(OUT, "adapter_start.safetensors"))
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 97, (1, T), generator=g)
    docs = [0, 23, 40]
    pos = torch.cat([torch.arange(b - a) for a, b in zip(docs, docs[1:] + [T])])[None]
    results = {}
    for case, kind, use_docs in [("full", "full", False), ("s2_boundaries", "s2_boundaries", False), ("s2_roll", "s2_roll", False),
                                 ("documents", "full", True), ("documents_s2_boundaries", "s2_boundaries", True)]:
        MODE["kind"], MODE["docs"] = kind, (docs if use_docs else None)
        model.zero_grad()
        labels = ids.clone()
        if use_docs:   # the first token of a packed document is not predicted from the one before
            labels[0, docs[1:]] = -100
        out = model(input_ids=ids, labels=labels, position_ids=pos if use_docs else None)
        out.loss.backward()
        save_file({ours(n): p.grad.contiguous() for n, p in trainable.items()}, os.path.join(OUT, f"grads_{case}.safetensors"))
        results[case] = out.loss.item()
        print(case, out.loss.item())
    save_file({"input_ids": ids[0].float()}, os.path.join(OUT, "inputs.safetensors"))
    json.dump({"loss": results, "document_starts": docs, "targets": targets, "group_ratio": RATIO, "rank": 4, "alpha": 8,
               "trainable": sorted(ours(n) for n in trainable)}, open(os.path.join(OUT, "expected.json"), "w"), indent=2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A tiny Llama GGUF file (every supported tensor type) and transformers' logits for it.

Writes Tests/LlamaTests/Fixtures/gguf/tiny.gguf with the `gguf` package (llama.cpp's writer):
weights quantized Q8_0/Q4_0/Q4_1, stored F16/BF16/F32, q/k rows permuted the way
convert_hf_to_gguf.py does, a byte-level BPE tokenizer in the metadata; then loads it with
transformers' GGUF loader and records logits and loss in expected.safetensors / expected.json.

  /tmp/ref/bin/python Tools/reference/make_gguf_fixture.py Tests/LlamaTests/Fixtures/gguf
"""
import json, os, sys
import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/gguf"
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(3)
V, C, I, L, H, KV = 300, 64, 96, 2, 4, 2
D = C // H


def byte_alphabet():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return [chr(c) for b, c in sorted(zip(bs, cs))]


def permute(w, n_head):   # convert_hf_to_gguf.py's LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


alphabet = byte_alphabet()
merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "r e", "a t"]
tokens = alphabet + [m.replace(" ", "") for m in merges]
tokens += [f"<unused{i}>" for i in range(V - len(tokens) - 1)] + ["<|endoftext|>"]
types = [1] * (V - 1) + [3]

w = gguf.GGUFWriter(os.path.join(OUT, "tiny.gguf"), "llama")
w.add_context_length(32); w.add_embedding_length(C); w.add_block_count(L); w.add_feed_forward_length(I)
w.add_head_count(H); w.add_head_count_kv(KV); w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0)
w.add_vocab_size(V); w.add_rope_dimension_count(D)
w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default"); w.add_token_list(tokens); w.add_token_types(types)
w.add_token_merges(merges); w.add_bos_token_id(V - 1); w.add_eos_token_id(V - 1)


def tensor(name, shape, qtype, scale=0.15, permute_heads=None, ones=False):
    a = (rng.uniform(0.5, 1.5, size=shape) if ones else rng.normal(0, scale, size=shape)).astype(np.float32)
    if permute_heads:
        a = permute(a, permute_heads)
    if qtype == Q.F32:
        w.add_tensor(name, a)
    elif qtype == Q.F16:
        w.add_tensor(name, a.astype(np.float16))
    else:
        q = gguf.quants.quantize(a, qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)


tensor("token_embd.weight", (V, C), Q.Q8_0)
for b in range(L):
    tensor(f"blk.{b}.attn_norm.weight", (C,), Q.F32, ones=True)
    tensor(f"blk.{b}.attn_q.weight", (H * D, C), Q.Q4_0, permute_heads=H)
    tensor(f"blk.{b}.attn_k.weight", (KV * D, C), Q.Q4_1, permute_heads=KV)
    tensor(f"blk.{b}.attn_v.weight", (KV * D, C), Q.Q8_0)
    tensor(f"blk.{b}.attn_output.weight", (C, H * D), Q.F16)
    tensor(f"blk.{b}.ffn_norm.weight", (C,), Q.F32, ones=True)
    tensor(f"blk.{b}.ffn_gate.weight", (I, C), Q.Q4_1)
    tensor(f"blk.{b}.ffn_up.weight", (I, C), Q.BF16 if b == 0 else Q.Q4_0)
    tensor(f"blk.{b}.ffn_down.weight", (C, I), Q.Q8_0)
tensor("output_norm.weight", (C,), Q.F32, ones=True)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny.gguf", dtype=torch.float32).eval()
ids = torch.from_numpy(rng.integers(0, V, size=48)).unsqueeze(0)
with torch.no_grad():
    out = model(ids, labels=ids)
save_file({"input_ids": ids[0].float().contiguous(), "logits": out.logits[0].contiguous()}, os.path.join(OUT, "expected.safetensors"))
json.dump({"loss": out.loss.item()}, open(os.path.join(OUT, "expected.json"), "w"), indent=2)
print("loss", out.loss.item())

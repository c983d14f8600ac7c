#!/usr/bin/env python3
"""Tiny Qwen2, Qwen3, Phi-3 and Gemma 3 GGUF files, written with the `gguf` package (llama.cpp's writer) the way
convert_hf_to_gguf.py's Qwen2Model / Qwen3Model / Phi3MiniModel (conversion/phi.py) write them: architecture `qwen2` /
`qwen3` / `phi3`, `ARCH.*` hyperparameters with head_dim as attention.key_length (Qwen), YaRN as rope.scaling.*,
q/k rows in HF order (no permutation: llama.cpp runs their RoPE in NEOX order), Qwen2's q/k/v biases as attn_q.bias…,
Qwen3's per-head norms as attn_q_norm/attn_k_norm; Phi-3's fused attn_qkv and ffn_up (gate then up), its rotary
dimensions as rope.dimension_count, its window as attention.sliding_window, longrope as the rope_factors_long/short
tensors with rope.scaling.attn_factor and original_context_length; Gemma 3 (conversion/gemma.py's Gemma3Model) with its
norms stored as 1 + w, post_attention_norm / ffn_norm (before the MLP) / post_ffw_norm, attention.sliding_window and,
since the tiny model's local layers are not llama.cpp's default every-6th pattern, attention.sliding_window_pattern
as per-layer flags, linear scaling as rope.scaling.*. llama.cpp derives Gemma's score scale from head_dim, so the
Gemma reference is transformers on the directory with query_pre_attn_scalar = head_dim
(gguf_families/gemma3-expected.safetensors). The weights
are the fixture directories' (Tests/LlamaTests/Fixtures/qwen2, qwen3, phi3, made by make_llama_fixtures.py), matrices F16
(their exact values), norms and biases F32, so an import must reproduce transformers' logits for that directory
(its expected.safetensors). llama.cpp (llama-cpp-python) runs each file here and agrees within its f16 products
(expected.json); transformers' GGUF loader cannot check qwen3 (it ignores qwen3.attention.key_length).

  /tmp/ref/bin/python Tools/reference/make_gguf_family_fixtures.py Tests/LlamaTests/Fixtures
"""
import json, math, os, sys
import numpy as np
import gguf
from safetensors.numpy import load_file, save_file

ROOT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures"
NAMES = {"self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
         "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
GEMMA_NAMES = dict(NAMES, post_attention_layernorm="post_attention_norm", pre_feedforward_layernorm="ffn_norm",
                   post_feedforward_layernorm="post_ffw_norm")


def name(hf, names=NAMES):
    if hf == "model.embed_tokens.weight": return "token_embd.weight"
    if hf == "model.norm.weight": return "output_norm.weight"
    if hf == "lm_head.weight": return "output.weight"
    parts = hf.split(".")
    return f"blk.{parts[2]}.{names['.'.join(parts[3:-1])]}.{parts[-1]}"


def write(family):
    src, out = os.path.join(ROOT, family), os.path.join(ROOT, "gguf_families")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"tiny-{family}.gguf")
    cfg = json.load(open(os.path.join(src, "config.json")))
    weights = load_file(os.path.join(src, "model.safetensors"))
    V, rope = cfg["vocab_size"], cfg["rope_parameters"]
    gemma = family == "gemma3"
    if gemma:
        rope = rope["full_attention"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    # A minimal byte-level BPE vocabulary of V tokens (import-gguf needs tokens and merges; the ids are what matter).
    tokens = ["t", "0"] + [f"<x{i}>" for i in range(V - 4)] + ["t0", "<|endoftext|>"]
    w = gguf.GGUFWriter(path, family)
    w.add_context_length(cfg["max_position_embeddings"]); w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"]); w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"]); w.add_head_count_kv(cfg["num_key_value_heads"])
    if family != "phi3":
        w.add_key_length(head_dim); w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"]); w.add_rope_freq_base(rope["rope_theta"])
    if family == "phi3":
        original, rope_dims = cfg["original_max_position_embeddings"], int(rope["partial_rotary_factor"] * head_dim)
        scale = cfg["max_position_embeddings"] / original
        w.add_rope_scaling_orig_ctx_len(original); w.add_rope_dimension_count(rope_dims)
        w.add_sliding_window(cfg.get("sliding_window") or 0)
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)))
        w.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))
    if gemma:
        w.add_sliding_window(cfg["sliding_window"])
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg["layer_types"]])
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR); w.add_rope_scaling_factor(rope["factor"])
    if rope["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN); w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("qwen2"); w.add_token_list(tokens)
    w.add_token_types([1] * (V - 1) + [3]); w.add_token_merges(["t 0"]); w.add_eos_token_id(V - 1)
    for hf, a in weights.items():
        if gemma and hf.endswith("norm.weight"):   # Gemma3RMSNorm's 1 + w, added in fp32 as the converter does
            a = a.astype(np.float32) + np.float32(1)
        w.add_tensor(name(hf, GEMMA_NAMES if gemma else NAMES), a.astype(np.float32 if a.ndim == 1 else np.float16))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

    expected = load_file(os.path.join(src, "expected.safetensors"))
    ids = expected["input_ids"].astype(int).tolist()
    reference = expected["logits"]
    import torch
    from transformers import AutoModelForCausalLM
    if gemma:   # llama.cpp scales Gemma's scores by 1/√head_dim
        derived = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, query_pre_attn_scalar=head_dim).eval()
        with torch.no_grad():
            reference = derived(torch.tensor([ids])).logits[0].numpy()
        save_file({"input_ids": expected["input_ids"], "logits": reference},
                  os.path.join(out, "gemma3-expected.safetensors"))
    elif cfg.get("sliding_window"):   # llama.cpp disables Phi's sliding window (src/models/phi3.cpp): compare without
        full = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, sliding_window=None).eval()
        with torch.no_grad():
            reference = full(torch.tensor([ids])).logits[0].numpy()
    m = llama_cpp.Llama(path, n_ctx=128, logits_all=True, verbose=False, n_threads=2)
    m.eval(ids)
    diff = float(np.abs(np.array(m.scores[:len(ids)]) - reference).max())
    print(f"{family}: llama.cpp on the GGUF vs transformers on the directory: max |logit diff| {diff}")
    assert diff < 0.02, diff   # llama.cpp's f16 products
    return diff


import llama_cpp   # llama.cpp itself runs the files: the layout above is the one it reads
diffs = {family: write(family) for family in ["qwen2", "qwen3", "phi3", "gemma3"]}
json.dump({"llama_cpp_vs_transformers_max_logit_diff": diffs, "llama_cpp_python": llama_cpp.__version__},
          open(os.path.join(ROOT, "gguf_families", "expected.json"), "w"), indent=2)

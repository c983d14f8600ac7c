#!/usr/bin/env python3
"""Golden fixtures for the Llama model tests, produced by Hugging Face transformers.

Builds tiny random Llama-family checkpoints (one per RoPE scaling kind, evaluated past the original
context; GQA; attention/MLP bias with an explicit head_dim; Qwen2; v4- and v5-style configs), saves
each as a model directory (fp16/bf16 safetensors, so the fixtures stay small and the Swift loader's
half-precision paths are exercised) and records, in expected.safetensors + expected.json, the
logits, the causal-LM loss and the rotary inverse frequencies transformers computed in fp32.

Run:  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch transformers safetensors
      /tmp/ref/bin/python Tools/reference/make_llama_fixtures.py Tests/LlamaTests/Fixtures [NAME...]
(NAME...: only those fixtures, e.g. a family added later, leaving the others' files as they are.)
"""
import json, os, shutil, sys, zlib

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, Phi3Config, Phi3ForCausalLM, Gemma3TextConfig,
                          Gemma3ForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures"
ONLY = set(sys.argv[2:])
T = 80                 # tokens evaluated: 2.5x the original context of 32
BASE = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-5, tie_word_embeddings=True)


def build(name, cls=LlamaForCausalLM, cfg_cls=LlamaConfig, dtype=torch.float16, v4=None, swift_config=None,
          ref_overrides=None, **kw):
    if ONLY and name not in ONLY:
        return
    args = dict(BASE); args.update(kw)
    torch.manual_seed(zlib.crc32(name.encode()))
    config = cfg_cls(**args)
    model = cls(config).eval()
    with torch.no_grad():   # larger weights than the 0.02 init, so logits are far from uniform
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.15)
        for n, p in model.named_parameters():
            if p.dim() == 1 and "norm" in n:   # Gemma's norms scale by 1 + w
                p.uniform_(-0.5, 0.5) if cfg_cls is Gemma3TextConfig else p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.1)
        # Round the weights to the storage type, so reference and Swift read the same numbers.
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    # Re-save the weights in the half-precision storage type.
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()
             if not (config.tie_word_embeddings and k == "lm_head.weight")}
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    ref_model = model
    if ref_overrides:   # the reference is a differently-configured HF model with the same weights
        rc = dict(args); rc.update(ref_overrides)
        ref_model = cls(cfg_cls(**rc)).eval()
        ref_model.load_state_dict(model.state_dict())
    if v4 is not None or swift_config is not None:
        with open(os.path.join(d, "config.json")) as f:
            cj = json.load(f)
        if callable(v4):      # a family's own v4 form
            v4(cj)
        elif v4 is not None:    # rewrite as a transformers v4 config: top-level rope_theta, rope_scaling
            params = cj.pop("rope_parameters")
            cj["rope_theta"] = params.pop("rope_theta")
            cj["rope_scaling"] = v4
        if swift_config is not None:
            cj.update(swift_config)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cj, f, indent=2)
        if v4 is not None:   # transformers must read the v4 form to the same model
            reread = cls.from_pretrained(d, dtype=torch.float32).eval()
            ids = torch.arange(T).remainder(97).unsqueeze(0)
            with torch.no_grad():
                assert torch.allclose(reread(ids).logits, model(ids).logits, atol=1e-6), name + ": v4 config reads differently"
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, config.vocab_size, (1, T), generator=g)
    with torch.no_grad():
        out = ref_model(ids, labels=ids)
    rotary = ref_model.model.rotary_emb
    inv_freq = getattr(rotary, "full_attention_inv_freq", None)   # Gemma 3: the global layers'
    save_file({"input_ids": ids[0].float().contiguous(), "logits": out.logits[0].float().contiguous(),
               "inv_freq": (rotary.inv_freq if inv_freq is None else inv_freq).float().contiguous()},
              os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"loss": out.loss.item(),
                   "attention_scaling": float(getattr(rotary, "attention_scaling", None)
                                              or getattr(rotary, "full_attention_attention_scaling")),
                   "transformers": __import__("transformers").__version__, "torch": torch.__version__}, f, indent=2)
    print(f"{name}: loss {out.loss.item():.6f}")


def main():
    os.makedirs(OUT, exist_ok=True)
    build("default_gqa")
    build("linear_v4", dtype=torch.bfloat16, rope_scaling={"rope_type": "linear", "factor": 4.0},
          v4={"type": "linear", "factor": 4.0})
    build("dynamic", rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    build("yarn", rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
          max_position_embeddings=128)
    build("yarn_mscale_v4", rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                                         "mscale": 1.0, "mscale_all_dim": 0.5, "beta_fast": 16.0, "truncate": False},
          max_position_embeddings=128,
          v4={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "mscale": 1.0,
              "mscale_all_dim": 0.5, "beta_fast": 16.0, "truncate": False})
    build("llama3", rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 32}, max_position_embeddings=128)
    short = [1.0 + 0.05 * i for i in range(8)]
    long = [1.0 + 0.5 * i for i in range(8)]
    build("longrope", rope_scaling={"rope_type": "longrope", "short_factor": short, "long_factor": long,
                                    "original_max_position_embeddings": 32}, max_position_embeddings=128)
    # exllama's static NTK alpha: transformers has no such kind; the reference is the default RoPE
    # with theta·alpha^(d/(d-2)), and the Swift side reads our own "ntk_alpha" kind.
    alpha, d = 2.0, 16
    build("ntk_alpha", swift_config={"rope_parameters": {"rope_type": "ntk_alpha", "alpha_value": alpha, "rope_theta": 10000.0}},
          ref_overrides={"rope_theta": 10000.0 * alpha ** (d / (d - 2))})
    build("bias_headdim_untied", attention_bias=True, mlp_bias=True, head_dim=32, tie_word_embeddings=False,
          num_key_value_heads=4)
    build("qwen2", cls=Qwen2ForCausalLM, cfg_cls=Qwen2Config, rope_theta=1e6, num_key_value_heads=1,
          max_position_embeddings=128)
    # Mistral's sliding window: 24 of the 80 tokens (transformers' sliding-window causal mask).
    build("mistral_window", cls=MistralForCausalLM, cfg_cls=MistralConfig, sliding_window=24, max_position_embeddings=128)
    # Qwen3: per-head q/k RMSNorm, head_dim (32) independent of hidden/heads (16), YaRN past a window of 32.
    build("qwen3", cls=Qwen3ForCausalLM, cfg_cls=Qwen3Config, head_dim=32, rope_theta=1e6, max_position_embeddings=128,
          rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})
    # Phi-3.5 / Phi-4-mini: fused qkv_proj and gate_up_proj, rotary on half of each head (Phi-4-mini: 0.75),
    # longrope past an original window of 32 (its long factors and attention scaling), a 48-token sliding window.
    build("phi3", cls=Phi3ForCausalLM, cfg_cls=Phi3Config, partial_rotary_factor=0.5, max_position_embeddings=128,
          original_max_position_embeddings=32, sliding_window=48, tie_word_embeddings=False, pad_token_id=0,
          bos_token_id=1, eos_token_id=2, rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6],
                                                        "long_factor": [1.0, 2.0, 3.5, 6.0]})
    # Gemma 3: (1 + w) norms before and after attention and the MLP, √hidden embeddings, GeGLU, per-head q/k norms,
    # query_pre_attn_scalar (20) ≠ head_dim (24), local layers (a 16-token window, base 10⁴) around a global one
    # (base 10⁶ with linear ×4 past 32): v5 rope_parameters per layer type, and the same model in v4 form.
    gemma = dict(cls=Gemma3ForCausalLM, cfg_cls=Gemma3TextConfig, num_hidden_layers=3, head_dim=24,
                 query_pre_attn_scalar=20, sliding_window=16, max_position_embeddings=32, rms_norm_eps=1e-6,
                 layer_types=["sliding_attention", "full_attention", "sliding_attention"], pad_token_id=0,
                 bos_token_id=2, eos_token_id=1,
                 rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    build("gemma3", **gemma)

    def gemma_v4(cj):   # Gemma3TextConfig before v5: rope_theta, rope_scaling (global), rope_local_base_freq
        params = cj.pop("rope_parameters")
        cj["rope_theta"] = params["full_attention"]["rope_theta"]
        cj["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
        cj["rope_scaling"] = {"rope_type": "linear", "factor": 4.0}
        cj.pop("layer_types"); cj["sliding_window_pattern"] = 2   # layers 0, 2 local; 1 global (as above)
        cj["num_hidden_layers"] = 3
    build("gemma3_v4", v4=gemma_v4, dtype=torch.bfloat16, **gemma)


if __name__ == "__main__":
    main()

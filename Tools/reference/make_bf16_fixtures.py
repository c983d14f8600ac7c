#!/usr/bin/env python3
"""Golden fixtures for bf16 compute (docs/CONVENTIONS.md §15): one LoRA training step (q/k/v/o, r = 4) of a tiny
tied-embedding Llama whose weights are bf16 values, stored as bf16 safetensors. Records the loss and every adapter
gradient three ways:

- fp32: transformers + peft in fp32;
- emulated: LongTune's bf16 scheme written in torch. Every frozen product (the projections' base layers and the
  tied LM head) rounds its input to bf16 and multiplies the bf16 weight with fp32 accumulation; its input gradient
  rounds the output gradient to bf16 the same way. LoRA, norms, attention, softmax and the loss stay fp32. LongTune
  must match this to fp32 summation order;
- autocast: the same model under torch.autocast("cpu", dtype=torch.bfloat16), what PyTorch users run. It also runs
  LoRA and attention in bf16 and keeps bf16 activations, so it differs from both; LongTune is checked to be at least
  as close to fp32 as autocast is.

  /tmp/ref/bin/python Tools/reference/make_bf16_fixtures.py Tests/LlamaTests/Fixtures/bf16
"""
import json, os, shutil, sys
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/bf16"
T = 96


class FrozenBF16Product(torch.autograd.Function):
    """y = bf16(x) · Wᵀ in fp32 (W holds bf16 values); dx = bf16(dy) · W."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return x.bfloat16().float() @ w.t()

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        return dy.bfloat16().float() @ w, None


def emulate_bf16(model):
    """Routes every frozen nn.Linear (peft's base layers and the LM head) through FrozenBF16Product."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad:
            m.forward = (lambda mod: (lambda x: FrozenBF16Product.apply(x, mod.weight)))(m)


def ours(name):   # peft name -> LongTune/HF name
    return name.replace("base_model.model.", "", 1).replace(".default", "")


def build(base_dir, start):
    base = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32, attn_implementation="eager")
    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lcfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(start[ours(n)])
    return model


def step(model, ids, autocast=False):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {ours(n): p.grad.float().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.item(), grads


def main():
    shutil.rmtree(OUT, ignore_errors=True); os.makedirs(OUT)
    torch.manual_seed(23)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True)
    base = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for n, p in base.named_parameters():
            p.copy_((torch.randn_like(p) * 0.15 if p.dim() == 2 else torch.rand_like(p) + 0.5).bfloat16().float())
    base_dir = os.path.join(OUT, "base")
    base.save_pretrained(base_dir)
    save_file({k: v.bfloat16().contiguous() for k, v in base.state_dict().items() if k != "lm_head.weight"},
              os.path.join(base_dir, "model.safetensors"), metadata={"format": "pt"})
    g = torch.Generator().manual_seed(9)
    start = {}
    for layer in range(cfg.num_hidden_layers):
        for proj, (o, i) in {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64)}.items():
            p = f"model.layers.{layer}.self_attn.{proj}"
            start[f"{p}.lora_A.weight"] = torch.randn(4, i, generator=g) * 0.2
            start[f"{p}.lora_B.weight"] = torch.randn(o, 4, generator=g) * 0.2
    save_file(start, os.path.join(OUT, "adapter_start.safetensors"))
    ids = torch.randint(0, 97, (1, T), generator=g)
    save_file({"input_ids": ids[0].float()}, os.path.join(OUT, "inputs.safetensors"))

    losses = {}
    for case in ["fp32", "emulated", "autocast"]:
        model = build(base_dir, start)
        if case == "emulated":
            emulate_bf16(model)
        losses[case], grads = step(model, ids, autocast=(case == "autocast"))
        save_file(grads, os.path.join(OUT, f"grads_{case}.safetensors"))
        print(case, losses[case])
    json.dump({"loss": losses, "rank": 4, "alpha": 8}, open(os.path.join(OUT, "expected.json"), "w"), indent=2)


if __name__ == "__main__":
    main()

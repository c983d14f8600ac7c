#!/usr/bin/env python3
"""The PyTorch + peft side of the README's performance table: the step `longtune bench train` times, in PyTorch.
SmolLM2-135M's shape with random weights, LoRA r=8 (alpha 16) on q/k/v/o, one training step (forward, backward,
AdamW) on `--context` random tokens, full attention (sdpa), in fp32 or under bf16 autocast; `--threads` threads (2 by
default); the best of `--steps` steps after one warm-up. Prints tokens/s and the process's peak RSS.

  /tmp/ref/bin/python Tools/reference/bench_torch_train.py --context 2048 [--bf16] [--checkpointing] [--model qwen3-0.6b]
(--model qwen3-0.6b / gemma-3-1b: that model's shape instead, as `bench train --model builtin:NAME`.)
"""
import argparse, resource, time
import torch
from peft import LoraConfig, get_peft_model
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

ap = argparse.ArgumentParser()
ap.add_argument("--context", type=int, default=2048)
ap.add_argument("--bf16", action="store_true", help="torch.autocast('cpu', dtype=torch.bfloat16)")
ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of every layer")
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
ap.add_argument("--model", choices=["smollm2-135m", "qwen3-0.6b", "gemma-3-1b"], default="smollm2-135m")
args = ap.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
if args.model == "qwen3-0.6b":
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                      max_position_embeddings=max(40960, args.context), rms_norm_eps=1e-6, rope_theta=1e6,
                      tie_word_embeddings=True)
    model = Qwen3ForCausalLM(cfg)
elif args.model == "gemma-3-1b":   # google/gemma-3-1b-pt
    cfg = Gemma3TextConfig(vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                           sliding_window=512, max_position_embeddings=max(32768, args.context), rms_norm_eps=1e-6)
    model = Gemma3ForCausalLM(cfg)
else:
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=max(8192, args.context),
                      rms_norm_eps=1e-5, rope_theta=100000, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
if args.checkpointing:
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
ids = torch.randint(0, cfg.vocab_size, (1, args.context))


def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()


step()
best = float("inf")
for _ in range(args.steps):
    t0 = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - t0)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"context {args.context} {'bf16 autocast' if args.bf16 else 'fp32'}"
      f"{' checkpointing' if args.checkpointing else ''}, {args.threads} threads: step {best:.2f} s  {args.context / best:.1f} tokens/s  "
      f"peak RSS {rss:.2f} GiB  (torch {torch.__version__})")

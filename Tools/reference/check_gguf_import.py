#!/usr/bin/env python3
"""Checks `longtune import-gguf` against transformers' own GGUF loader on a real file.

  python Tools/reference/check_gguf_import.py MODEL.gguf IMPORTED_DIR [TOKENS]

Loads the GGUF with AutoModelForCausalLM.from_pretrained(dir, gguf_file=...), and the directory
LongTune wrote with plain from_pretrained; compares logits on real text and the loss at TOKENS
tokens (default 4096), and checks that the imported tokenizer.json encodes like transformers'
GGUF tokenizer. Prints the differences; exits non-zero when they exceed 1e-3.
"""
import os, sys, inspect, json
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, imported = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
torch.set_num_threads(2)
ref_tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
ours = Tokenizer.from_file(os.path.join(imported, "tokenizer.json"))
samples = ["Hello, world!", "  leading spaces\tand\ttabs\n\nnew lines", "Unicode: café, 日本語, emoji 🎉, Ω≈ç√",
           "def f(x):\n    return x ** 2  # code\n", "numbers 1234567 3.14159 1e-5", "<|im_start|>user\nhi<|im_end|>"]
bad = 0
for s in samples:
    a = ref_tok(s, add_special_tokens=False)["input_ids"]; b = ours.encode(s, add_special_tokens=False).ids
    if a != b:
        bad += 1; print("tokenizer mismatch:", repr(s), a, b)
text = "".join(open(inspect.getsourcefile(m)).read() for m in [json, os, inspect])
ids = ref_tok(text, add_special_tokens=False)["input_ids"][:n]
x = torch.tensor([ids])
m1 = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32).eval()
m2 = AutoModelForCausalLM.from_pretrained(imported, dtype=torch.float32).eval()
with torch.no_grad():
    o1 = m1(x[:, :512]).logits; o2 = m2(x[:, :512]).logits
    l1 = m1(x, labels=x).loss.item(); l2 = m2(x, labels=x).loss.item()
d = (o1 - o2).abs().max().item()
print(f"tokenizer mismatches: {bad}/{len(samples)}")
print(f"max |logit diff| over 512 tokens: {d:.3e}")
print(f"loss at {len(ids)} tokens: transformers-gguf {l1:.6f}  imported {l2:.6f}  rel diff {abs(l1 - l2) / l1:.2e}")
json.dump({"ids": ids[:64], "logits_row0": o1[0, 0, :16].tolist(), "loss": l1}, open("/tmp/chk/ref.json", "w"))
sys.exit(1 if bad or d > 1e-3 or abs(l1 - l2) / l1 > 1e-3 else 0)

#!/usr/bin/env python3
"""Checks that transformers + bitsandbytes load `longtune quantize`'s output unchanged (docs/CONVENTIONS.md §14):
its logits equal those of the fp16 model loaded with BitsAndBytesConfig(nf4, double quantization).

  /tmp/ref/bin/python Tools/reference/check_bnb_quantize.py .build/release/longtune [MODEL_DIR]

MODEL_DIR defaults to Tests/LlamaTests/Fixtures/bnb/fp16 (any fp16/bf16 Llama directory works).
"""
import os, subprocess, sys, tempfile
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

exe = sys.argv[1]
model = sys.argv[2] if len(sys.argv) > 2 else "Tests/LlamaTests/Fixtures/bnb/fp16"
out = os.path.join(tempfile.mkdtemp(), "nf4")
subprocess.run([exe, "quantize", model, "--out", out], check=True)

dtype = AutoModelForCausalLM.from_pretrained(model).dtype
bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=dtype)
reference = AutoModelForCausalLM.from_pretrained(model, quantization_config=bnb, dtype=dtype)
ours = AutoModelForCausalLM.from_pretrained(out)
ids = torch.tensor([[(i * 37 + 5) % reference.config.vocab_size for i in range(64)]])
with torch.no_grad():
    a, b = reference(ids).logits.float(), ours(ids).logits.float()
diff = (a - b).abs().max().item()
print(f"{model}: max |logit difference| {diff:.3g} between transformers' own NF4 model and longtune quantize's")
sys.exit(0 if diff <= 1e-3 * max(1.0, a.abs().max().item()) else 1)

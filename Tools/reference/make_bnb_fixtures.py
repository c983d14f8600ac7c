#!/usr/bin/env python3
"""Golden fixtures for Hugging Face bitsandbytes 4-bit checkpoints (docs/CONVENTIONS.md §14).

  /tmp/ref/bin/python Tools/reference/make_bnb_fixtures.py Tests/LlamaTests/Fixtures/bnb

Writes:
  fp16/       a small random Llama in fp16 (every projection's input size a multiple of 64: bitsandbytes'
              native CPU kernel mis-dequantizes rows that are not, see make_nf4_fixtures.py)
  nf4/        fp16/ loaded by transformers with BitsAndBytesConfig(nf4, double quantization) in its own
              dtype and written back with save_pretrained: the checkpoint format LongTune reads and writes
  expected.json  token ids, and the logits of nf4/ computed in fp32 by transformers (each 4-bit weight
              dequantized by bitsandbytes in its stored dtype, fp16, then widened, as matmul_4bit does)
"""
import json, os, shutil, sys
import torch
import bitsandbytes, transformers
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/bnb"
torch.manual_seed(0)
shutil.rmtree(OUT, ignore_errors=True)

config = LlamaConfig(vocab_size=97, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
base = LlamaForCausalLM(config).to(torch.float16)
base.save_pretrained(os.path.join(OUT, "fp16"))

bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=torch.float16)
quantized = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "fp16"), quantization_config=bnb, dtype=torch.float16)
quantized.save_pretrained(os.path.join(OUT, "nf4"))

# Logits of the saved checkpoint with fp32 compute. transformers keeps a 4-bit model's other tensors in fp16
# whatever dtype is asked for, so the fp32 model is built explicitly: the fp16 model in fp32, each projection
# replaced by bitsandbytes' dequantization of the saved 4-bit weight (in its stored dtype, then widened).
loaded = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "nf4"))
fp32 = LlamaForCausalLM.from_pretrained(os.path.join(OUT, "fp16"), dtype=torch.float32)
state = fp32.state_dict()
for name, module in loaded.named_modules():
    if isinstance(module, bitsandbytes.nn.Linear4bit):
        state[name + ".weight"] = bitsandbytes.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
fp32.load_state_dict(state)
ids = [(i * 37 + 5) % 97 for i in range(40)]
with torch.no_grad():
    logits = fp32(torch.tensor([ids])).logits[0]
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump({"ids": ids, "logits": logits.flatten().tolist(), "bitsandbytes": bitsandbytes.__version__,
               "transformers": transformers.__version__}, f)
print(f"wrote {OUT}: fp16/, nf4/ ({sorted(os.listdir(os.path.join(OUT, 'nf4')))}), expected.json")

#!/usr/bin/env python3
"""Dequantization fixtures for every ggml block type LongTune reads (docs/CONVENTIONS.md §9), from the `gguf`
package's own dequantize (llama.cpp's reference, in numpy).

  /tmp/ref/bin/python Tools/reference/make_gguf_quant_fixtures.py Tests/LlamaTests/Fixtures/gguf_quants

Random block bytes (their fp16 scale fields set to finite values in a realistic range), then for each type
TYPE: TYPE.raw (U8, 8 blocks) and TYPE.values (F32, the dequantized elements) in quants.safetensors.
"""
import os, sys
import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/gguf_quants"
rng = np.random.default_rng(11)
BLOCKS = 8
# byte offsets of the fp16 scale fields in each block
HALF_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
               Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}

tensors = {}
for qtype, fields in HALF_FIELDS.items():
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(BLOCKS, size), dtype=np.uint8)
    for f in fields:
        halves = (rng.standard_normal(BLOCKS) * 0.01).astype(np.float16)
        raw[:, f:f + 2] = halves.view(np.uint8).reshape(BLOCKS, 2)
    values = gguf.quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
    assert values.size == BLOCKS * block and np.isfinite(values).all()
    tensors[f"{qtype.name}.raw"] = torch.from_numpy(raw.reshape(-1).copy())
    tensors[f"{qtype.name}.values"] = torch.from_numpy(values.copy())

os.makedirs(OUT, exist_ok=True)
save_file(tensors, os.path.join(OUT, "quants.safetensors"), metadata={"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "?"})
print(f"wrote {len(tensors)} tensors to {OUT}/quants.safetensors")

#!/usr/bin/env python3
"""Golden fixtures for NF4 quantization (docs/CONVENTIONS.md §14): bitsandbytes' own quantize_4bit and
dequantize_4bit on the CPU, with and without double quantization, for tensors that exercise every rule:
fp32/fp16/bf16 inputs, a remainder block, an odd element count, an all-zero block, values exactly on the
midpoints between two codes, and more than 256 blocks (two nested blocks, the second partial).

  /tmp/ref/bin/python Tools/reference/make_nf4_fixtures.py Tests/LlamaTests/Fixtures/nf4

Writes nf4.safetensors. For each case NAME:
  NAME.input          the tensor as given to bitsandbytes (in its own dtype)
  NAME.packed         U8 [ceil(n/2), 1], two codes per byte, first element in the high nibble
  NAME.absmax         F32 per-block absmax (no double quantization)
  NAME.dequant        F32 dequantize_4bit(packed) (in the input's dtype, widened); see REFERENCE_DEQUANT
  NAME.dq.absmax      U8 8-bit codes of (absmax - offset)
  NAME.dq.nested_absmax  F32 one per 256 absmaxes
  NAME.dq.offset      F32 [1] the mean of the absmaxes
  NAME.dq.nested_quant_map  F32 [256] the dynamic map as bitsandbytes saves it
  NAME.dq.dequant     F32 dequantize_4bit with the double-quantized state
"""
import os, sys
import torch
import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/nf4"
torch.manual_seed(0)


def midpoint_case():
    """Blocks of 64: a zero block, a block holding the exact midpoints between codes, and random blocks."""
    code = F.get_4bit_type("nf4", device="cpu")
    mids = ((code[:-1] + code[1:]) / 2)
    x = torch.randn(40, 64) * 0.02
    x[0] = 0
    scale = 0.5
    row = torch.zeros(64)
    row[0] = scale                         # the block's absmax
    row[1:16] = mids * scale               # exactly on each midpoint (after the scale)
    row[16:31] = -mids * scale
    x[1] = row
    return x


CASES = {
    "fp32": torch.randn(64, 96) * 0.02,
    "fp16": (torch.randn(48, 40) * 0.05).half(),
    "bf16": (torch.randn(33, 64) * 0.03).bfloat16(),
    "odd": torch.randn(7, 9),
    "special": midpoint_case(),
    "many_blocks": torch.randn(300, 64) * 0.02 + torch.linspace(-0.01, 0.01, 64),
}

def reference_dequant(packed, state):
    """bitsandbytes' dequantize_4bit. Its native CPU kernel for fp32 output (0.50.2) returns wrong values when
    a row's length is not a multiple of the block size (blocks then straddle rows; try the `fp32` case, rows of
    96); its portable implementation follows the format, so that one is the reference there."""
    native = F.dequantize_4bit(packed, state)
    absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset if state.nested else state.absmax
    portable = _dequantize_4bit_compute(packed.reshape(-1), absmax.float(), F.get_4bit_type("nf4", device="cpu"),
                                        state.blocksize, state.shape, state.dtype)
    if state.shape[-1] % state.blocksize == 0:
        assert torch.equal(native, portable), "native and portable dequantization differ"
    return portable


tensors = {}
for name, x in CASES.items():
    packed, state = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=False)
    tensors[f"{name}.input"] = x.contiguous()
    tensors[f"{name}.packed"] = packed.contiguous()
    tensors[f"{name}.absmax"] = state.absmax.float().contiguous()
    tensors[f"{name}.dequant"] = reference_dequant(packed, state).float().contiguous()
    packed2, s2 = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
    assert torch.equal(packed, packed2)
    tensors[f"{name}.dq.absmax"] = s2.absmax.contiguous()
    tensors[f"{name}.dq.nested_absmax"] = s2.state2.absmax.float().contiguous()
    tensors[f"{name}.dq.offset"] = s2.offset.reshape(1).float().contiguous()
    tensors[f"{name}.dq.nested_quant_map"] = s2.state2.code.float().clone().contiguous()
    tensors[f"{name}.dq.dequant"] = reference_dequant(packed2, s2).float().contiguous()

os.makedirs(OUT, exist_ok=True)
save_file(tensors, os.path.join(OUT, "nf4.safetensors"), metadata={"bitsandbytes": bitsandbytes.__version__})
print(f"wrote {len(tensors)} tensors to {OUT}/nf4.safetensors (bitsandbytes {bitsandbytes.__version__})")

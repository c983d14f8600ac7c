#!/usr/bin/env python3
"""Interop fixture for `longtune merge`: trains a few LongLoRA steps with the LongTune binary on the
tiny HF model of Tests/LlamaTests/Fixtures/lora/base (YaRN to twice its context), merges it with
--peft, then checks with the real libraries that
  * transformers loads the merged directory with the trained RoPE scaling and context length, and
  * peft loads the exported adapter onto the base model,
and that both give the same logits. Saves the checkpoint and transformers' logits as the fixture
the Swift MergeInteropTests read.

  /tmp/ref/bin/python Tools/reference/make_interop_fixture.py .build/release/longtune Tests/TrainingTests/Fixtures/interop
  /tmp/ref/bin/python Tools/reference/make_interop_fixture.py .build/release/longtune \
      Tests/TrainingTests/Fixtures/interop_qwen3 Tests/LlamaTests/Fixtures/lora_qwen3/base
  /tmp/ref/bin/python Tools/reference/make_interop_fixture.py .build/release/longtune \
      Tests/TrainingTests/Fixtures/interop_phi3 Tests/LlamaTests/Fixtures/lora_phi3/base qkv_proj,o_proj,gate_up_proj \
      '{"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6], "long_factor": [1.0, 2.0, 3.5, 6.0],
        "original_max_position_embeddings": 128}'
(a third argument: another tiny base, such as the Qwen3 one whose trained q_norm/k_norm peft must place; a fourth:
the LoRA targets, such as Phi-3's fused projections; a fifth: the RoPE scaling, YaRN ×2 unless given: Phi3Config reads
"yarn" as longrope, so Phi-3 is scaled with longrope.)
"""
import json, os, shutil, subprocess, sys, tempfile
import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

exe, OUT = sys.argv[1], sys.argv[2]
base = os.path.abspath(sys.argv[3] if len(sys.argv) > 3 else "Tests/LlamaTests/Fixtures/lora/base")
targets = sys.argv[4].split(",") if len(sys.argv) > 4 else ["q_proj", "k_proj", "v_proj", "o_proj"]
scaling = json.loads(sys.argv[5]) if len(sys.argv) > 5 else \
    {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128}
work = tempfile.mkdtemp()
recipe = os.path.join(work, "interop.yaml")
open(recipe, "w").write(f"""# longtune train interop.yaml
model: {{path: {base}, context_length: 256, rope_scaling: {json.dumps(scaling)}}}
attention: {{mode: s2, group_ratio: 0.25, shift: boundaries}}
adapter: {{targets: [{", ".join(targets)}]}}
data: {{train: builtin:chain}}
training: {{steps: 3, learning_rate: 5.0e-3, extras_learning_rate: 1.0e-3, seed: 7}}
checkpoints: {{dir: {work}/run, every: 3}}
""")
subprocess.run([exe, "train", recipe], check=True)
merged, peft_dir = os.path.join(work, "merged"), os.path.join(work, "peft")
subprocess.run([exe, "merge", f"{work}/run/latest", "--out", merged, "--dtype", "fp32", "--peft", peft_dir], check=True)

m = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
rp = m.config.rope_parameters
full = rp.get("full_attention", rp)   # Gemma 3: parameters per layer type, the scaling on the global layers
assert full["rope_type"] == scaling["rope_type"] and full.get("factor", 2.0) == 2.0, rp
assert m.config.max_position_embeddings == 256, m.config.max_position_embeddings
ids = torch.arange(200).remainder(97).unsqueeze(0)
with torch.no_grad():
    lm = m(ids).logits[0]
# peft onto the original base, with the trained RoPE scaling (the base's own config has none).
# (Phi3Config's top-level original_max_position_embeddings outranks rope_parameters': pass both.)
top = {} if "full_attention" in rp else {"original_max_position_embeddings": full["original_max_position_embeddings"]}
b = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, rope_parameters=dict(rp), max_position_embeddings=256,
                                         **top)
pm = PeftModel.from_pretrained(b, peft_dir).eval()
with torch.no_grad():
    lp = pm(ids).logits[0]
diff = (lm - lp).abs().max().item()
print("merged vs peft adapter: max |logit diff|", diff)
assert diff < 1e-4, diff
shutil.rmtree(OUT, ignore_errors=True)
shutil.copytree(os.path.realpath(f"{work}/run/latest"), os.path.join(OUT, "checkpoint"))
save_file({"input_ids": ids[0].float(), "logits": lm.contiguous()}, os.path.join(OUT, "expected.safetensors"))
json.dump({"merged_vs_peft_max_diff": diff, "rope_parameters": rp, "max_position_embeddings": 256},
          open(os.path.join(OUT, "expected.json"), "w"), indent=2)

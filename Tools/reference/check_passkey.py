#!/usr/bin/env python3
"""Checks `longtune eval passkey` against transformers' greedy generation.

  longtune eval passkey --model DIR --context 1024,3000 --trials 3 --json pk.json
  python Tools/reference/check_passkey.py DIR pk.json

Rebuilds each trial's prompt (the same text and the same fill-to-length rule), runs
model.generate(do_sample=False) for as many tokens as the answer has, and compares "retrieved"
with LongTune's one-pass verdict. Exits non-zero on any disagreement.
"""
import json, math, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, report = sys.argv[1], json.load(open(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
task = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
filler = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

def prompt(units, depth, key):
    before = math.floor(units * depth + 0.5)   # Swift's rounded(): half away from zero
    return (task + filler * before + f" The pass key is {key}. Remember it. {key} is the pass key."
            + filler * (units - before) + " What is the pass key? The pass key is")

def n_tokens(text):
    return len(tok.encode(text, add_special_tokens=False))

bad = 0
for r in report["results"]:
    length = r["context"]
    for t in r["trials"]:
        key, depth = t["passkey"], t["depth"]
        units = 0
        while n_tokens(prompt(units + 1, depth, key) + f" {key}") <= length:
            units += 1
        ids = tok.encode(prompt(units, depth, key), add_special_tokens=False)
        answer = tok.encode(f" {key}", add_special_tokens=False)
        out = model.generate(torch.tensor([ids]), max_new_tokens=len(answer), do_sample=False)[0, len(ids):].tolist()
        agree = (out == answer) == t["retrieved"]
        bad += not agree
        print(f"context {length} depth {depth:.2f} key {key}: transformers {tok.decode(out)!r} "
              f"retrieved={out == answer}; longtune retrieved={t['retrieved']} {'ok' if agree else 'DISAGREE'}")
sys.exit(1 if bad else 0)

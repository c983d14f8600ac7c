#!/usr/bin/env python3
"""Writes a text corpus every Python machine has: the standard library's own source.

Each .py file is one document (a JSON line with a "text" field). Files are taken in sorted path
order; every 8th goes to the held-out evaluation set, the rest to training, until each set reaches
its size budget. Usage: stdlib_corpus.py OUT_DIR [TRAIN_MB] [EVAL_MB]
"""
import json
import os
import sys
import sysconfig

out = sys.argv[1]
train_budget = float(sys.argv[2] if len(sys.argv) > 2 else 3) * 1e6
eval_budget = float(sys.argv[3] if len(sys.argv) > 3 else 0.4) * 1e6
root = sysconfig.get_paths()["stdlib"]
skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo"}
paths = []
for d, dirs, files in os.walk(root):
    dirs[:] = sorted(x for x in dirs if x not in skip)
    paths += [os.path.join(d, f) for f in sorted(files) if f.endswith(".py")]
paths.sort()
os.makedirs(out, exist_ok=True)
sizes = {"train": 0, "eval": 0}
budget = {"train": train_budget, "eval": eval_budget}
with open(os.path.join(out, "train.jsonl"), "w") as tr, open(os.path.join(out, "eval.jsonl"), "w") as ev:
    for i, p in enumerate(paths):
        split = "eval" if i % 8 == 0 else "train"
        if sizes[split] >= budget[split]:
            continue
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if len(text) < 2000:
            continue
        (ev if split == "eval" else tr).write(json.dumps({"text": text, "source": os.path.relpath(p, root)}) + "\n")
        sizes[split] += len(text)
print(f"stdlib corpus from {root}: train {sizes['train'] / 1e6:.1f} MB, eval {sizes['eval'] / 1e6:.1f} MB (held-out files)")

#!/usr/bin/env python3
"""Exact-match accuracy of greedy answers on the SFT demonstration's held-out samples (sft_demo_data.py).

For each sample, the user turn goes through `longtune generate --chat` (the model's chat format, greedy, at most 8
new tokens); the answer counts when its text, stripped, is the asked five-digit code.
Usage: sft_demo_eval.py EVAL.jsonl LONGTUNE --model DIR [--checkpoint DIR]
"""
import json
import os
import subprocess
import sys
import tempfile
import time

path, longtune, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
right, total, start = 0, 0, time.time()
with tempfile.TemporaryDirectory() as tmp:
    for line in open(path):
        sample = json.loads(line)["messages"]
        prompt = os.path.join(tmp, "prompt.txt")
        with open(prompt, "w") as f:
            f.write(sample[0]["content"])
        out = subprocess.run([longtune, "generate", *extra, "--chat", "--prompt-file", prompt, "--max-tokens", "8",
                              "--json"], check=True, capture_output=True, text=True).stdout
        answer = json.loads(out)["text"].strip()
        total += 1
        right += answer == sample[1]["content"]
        print(f"  expected {sample[1]['content']}  got {answer!r}", flush=True)
print(f"{right}/{total} exact ({time.time() - start:.0f} s)")

#!/usr/bin/env python3
"""A long-context question-answering set for the SFT demonstration (LongAlpaca's idea at toy scale).

Each sample is a chat: the user turn holds about CHARS characters of Python standard library source (from a corpus
written by stdlib_corpus.py) with four sentences "The access code of the <name> archive is <five digits>." placed at
random lines (other archives, other codes), followed by the question "What is the access code of the <name>
archive?" about one of them; the assistant answers with the five digits alone. Training samples come from the corpus's train.jsonl, held-out ones from eval.jsonl, with other
names and codes. Usage: sft_demo_data.py CORPUS_DIR OUT_DIR [TRAIN_SAMPLES] [EVAL_SAMPLES] [CHARS] [SEED]
"""
import json
import os
import random
import sys

corpus, out = sys.argv[1], sys.argv[2]
n_train = int(sys.argv[3]) if len(sys.argv) > 3 else 32
n_eval = int(sys.argv[4]) if len(sys.argv) > 4 else 8
chars = int(sys.argv[5]) if len(sys.argv) > 5 else 26000
rng = random.Random(int(sys.argv[6]) if len(sys.argv) > 6 else 7)
NAMES = ["harbour", "orchard", "granite", "lantern", "meadow", "falcon", "cobalt", "willow", "summit", "ember",
         "glacier", "saffron", "quarry", "beacon", "thistle", "marble", "canyon", "juniper", "ferry", "sparrow"]


def haystack(texts):
    text = ""
    while len(text) < chars:
        doc = rng.choice(texts)
        start = rng.randrange(max(1, len(doc) - 4000))
        text += doc[start:start + rng.randint(2000, 8000)] + "\n"
    return text[:chars]


def sample(texts):
    names = set()
    while len(names) < 4:
        names.add(rng.choice(NAMES) + "-" + rng.choice(NAMES))
    facts = {name: f"{rng.randrange(10000, 100000)}" for name in sorted(names)}
    lines = haystack(texts).split("\n")
    for name, code in facts.items():
        lines.insert(rng.randrange(1, len(lines)), f"The access code of the {name} archive is {code}.")
    asked = rng.choice(sorted(facts))
    question = f"What is the access code of the {asked} archive? Answer with the five digits only."
    return {"messages": [{"role": "user", "content": "\n".join(lines) + "\n\n" + question},
                         {"role": "assistant", "content": facts[asked]}]}


os.makedirs(out, exist_ok=True)
for split, n in (("train", n_train), ("eval", n_eval)):
    texts = [json.loads(line)["text"] for line in open(os.path.join(corpus, f"{split}.jsonl"))]
    texts = [t for t in texts if len(t) > 4000]
    with open(os.path.join(out, f"{split}.jsonl"), "w") as f:
        for _ in range(n):
            f.write(json.dumps(sample(texts)) + "\n")
print(f"{n_train} training and {n_eval} held-out samples of ~{chars} characters -> {out}")

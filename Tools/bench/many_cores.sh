#!/usr/bin/env bash
# Thread scaling on a many-core host without Swift (the 16-core Xeon of the many-cores issue), in one call: LongTune
# (a portable build: ../shared/tools/portable-build.sh sapphirerapids, then carry .portable/) and PyTorch + peft
# (Tools/reference/bench_torch_train.py) on SmolLM2-135M's shape, LoRA r=8 q/k/v/o, 2048 tokens full attention, at
# 2..N cores under taskset (LongTune takes its thread count from the affinity mask, docs/CONVENTIONS.md §18); then
# `bench kernels` and 8192 tokens S2 bf16 at all cores, with `--profile` tables. Results under $OUT (default /tmp/many-cores): one log.
#   Tools/bench/many_cores.sh [PYTHON]      PYTHON: the interpreter with torch, transformers and peft (python3)
set -u
OUT=${OUT:-/tmp/many-cores}; mkdir -p "$OUT"; LOG="$OUT/many_cores.log"
PY=${1:-python3}
(cd .portable && tar xJf longtune.tar.xz) || exit 1
export LD_LIBRARY_PATH=$PWD/.portable/lib
L=$PWD/.portable/longtune
N=$(nproc)
run() { echo "\$ $*" >> "$LOG"; timeout 300 "$@" >> "$LOG" 2>&1; echo "(exit $?)" >> "$LOG"; }
lscpu | head -20 > "$LOG"
run "$L" bench machine
for n in 1 2 4 8 "$N"; do run taskset -c 0-$((n-1)) "$L" bench machine; done
for n in 2 "$N"; do
  steps=$([ "$n" -le 2 ] && echo 1 || echo 2)
  run taskset -c 0-$((n-1)) "$L" bench train --context 2048 --attention full --steps "$steps" --profile
  run taskset -c 0-$((n-1)) "$L" bench train --context 2048 --attention full --steps "$steps" --compute-dtype bf16 --profile
  run taskset -c 0-$((n-1)) "$PY" Tools/reference/bench_torch_train.py --context 2048 --threads "$n" --steps 1 --bf16
done
run "$PY" Tools/reference/bench_torch_train.py --context 2048 --threads "$N" --steps 1
for n in 4 8; do run taskset -c 0-$((n-1)) "$L" bench train --context 2048 --attention full --compute-dtype bf16; done
run "$L" bench kernels --lengths 2048 --lengths 8192
run "$L" bench train --context 8192 --attention s2 --compute-dtype bf16 --steps 1 --profile
echo done >> "$LOG"

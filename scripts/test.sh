#!/usr/bin/env bash
# The test command: installs missing system packages, then runs the whole suite (release build:
# the numeric tests run on the optimized kernels they check).
#   scripts/test.sh                 for this machine's CPU (-target-cpu native)
#   scripts/test.sh --isa avx2      the AVX2 + FMA configuration on any x86-64 machine: a build for `haswell`
#                                   (in .build-haswell), LONGTUNE_ISA=avx2 and OpenBLAS's Haswell kernels
#                                   (docs/CONVENTIONS.md §18); what an AVX2-only CPU such as Zen 3 runs
# Other arguments go to `swift test` (e.g. --filter BF16).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
if [ "${1:-}" = "--isa" ]; then
  [ "${2:-}" = "avx2" ] || { echo "scripts/test.sh: --isa takes avx2 (got '${2:-}')" >&2; exit 2; }
  shift 2
  export LONGTUNE_TARGET_CPU=haswell LONGTUNE_ISA=avx2 OPENBLAS_CORETYPE=HASWELL
  exec swift test -c release --disable-swift-testing --scratch-path .build-haswell "$@"
fi
swift test -c release --disable-swift-testing "$@"

#!/usr/bin/env bash
# Coverage-guided fuzzing of LongTune's parsers with libFuzzer (not part of CI):
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     targets: safetensors gguf config tokenizer recipe dataset chat bnb
# Builds the parser modules (Engine, Llama, Datasets, Formats, Adapters, Yams, Training) with -sanitize=fuzzer into .build/fuzz, seeds each
# target's corpus from the committed test fixtures (Fuzz/seeds.txt lists them), and runs it. A crash
# leaves crash-* files in .build/fuzz/findings/<target>/: keep each as a regression test.
# The per-input limit is 30 s: the dataset target waits up to 10 s for HDF5 on a corrupt file before its error.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-180}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(safetensors gguf config tokenizer recipe dataset chat bnb)
out=.build/fuzz; mkdir -p "$out"
export SWIFT_BACKTRACE=enable=no   # let libFuzzer catch the crash and save the input
includes=(-I "$out" -I Sources/CBLAS -I Sources/CHDF5)
for dir in $(pkg-config --cflags-only-I openblas hdf5 | sed 's/-I//g'); do includes+=(-Xcc -I"$dir"); done
flags=(-O -wmo -parse-as-library -sanitize=fuzzer -swift-version 5)
module() {   # module NAME SOURCES...: an instrumented object and its .swiftmodule
  local name=$1; shift
  swiftc "${flags[@]}" "${includes[@]}" -module-name "$name" -emit-module -emit-module-path "$out/$name.swiftmodule" \
    -c -o "$out/$name.o" "$@"
}
echo "building instrumented modules into $out"
module Engine $(find Sources/Engine -name '*.swift' | sort)
module Llama Sources/Llama/*.swift
module Datasets Sources/Datasets/*.swift
module Formats Sources/Formats/*.swift
module Adapters Sources/Adapters/*.swift
# The recipe target needs Yams (SwiftPM's checkout: run `swift build` once first) and its C parser.
yams=.build/checkouts/Yams/Sources
[ -d "$yams" ] || swift package resolve
mkdir -p "$out/cyaml"
for c in "$yams"/CYaml/src/*.c; do
  clang -O1 -fsanitize=fuzzer-no-link -DYAML_DECLARE_STATIC -I "$yams/CYaml/include" -c "$c" -o "$out/cyaml/$(basename "$c" .c).o"
done
includes+=(-I "$yams/CYaml/include")
module Yams -DSWIFT_PACKAGE -Xcc -DYAML_DECLARE_STATIC "$yams"/Yams/*.swift
module Training Sources/Training/*.swift
swiftc "${flags[@]}" "${includes[@]}" -module-name FuzzTargets Fuzz/FuzzTargets.swift \
  "$out"/{Engine,Llama,Datasets,Formats,Adapters,Yams,Training}.o "$out"/cyaml/*.o \
  $(pkg-config --libs openblas hdf5) -o "$out/fuzz"
for t in "${targets[@]}"; do
  corpus="$out/corpus/$t" findings="$out/findings/$t"
  mkdir -p "$corpus" "$findings"
  grep "^$t " Fuzz/seeds.txt | while read -r _ seed; do cp "$seed" "$corpus/$(echo "$seed" | tr / _)"; done
  echo "== $t: ${seconds}s"
  FUZZ_TARGET=$t "$out/fuzz" "$corpus" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=200000 \
    -artifact_prefix="$findings/" -print_final_stats=1 2>&1 | grep -E "DONE|stat::number_of_executed_units|crash-|timeout-|oom-|SUMMARY" || true
done
echo "findings (empty when none): $(ls "$out"/findings/*/ 2>/dev/null | grep -cE 'crash|timeout|oom' || true)"

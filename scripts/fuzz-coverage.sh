#!/usr/bin/env bash
# Source coverage of the fuzz corpora: which lines of the codec, pipeline and configuration loader
# the inputs that libFuzzer kept (scripts/fuzz.sh, in .build-fuzz/corpus/<TARGET>/) reach.
#
#   scripts/fuzz-coverage.sh [TARGET|all]      (default all)
#
# Builds the replay form of each target (no libFuzzer; the same harness) with llvm's source-based
# coverage in .build-cov, replays every corpus file through it and prints `llvm-cov report` for
# the modules that target exercises. Per-file line listings of what no input reached:
# test-output/fuzz-coverage/<TARGET>/uncovered-<File>.txt (lines with count 0, from `llvm-cov show`).
# Not part of CI: run it after a long `scripts/fuzz.sh 600`.
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-all}"
all_targets=(RPCWireFuzz RPCGatewayFuzz RPCConfigFuzz)
case "$which" in
  all) targets=("${all_targets[@]}") ;;
  RPCWireFuzz | RPCGatewayFuzz | RPCConfigFuzz) targets=("$which") ;;
  *) echo "usage: scripts/fuzz-coverage.sh [all|${all_targets[*]// /|}]" >&2; exit 2 ;;
esac
toolbin=$(dirname "$(readlink -f "$(command -v swift)")")
llvm_profdata="$toolbin/llvm-profdata"
llvm_cov="$toolbin/llvm-cov"
scratch=.build-cov
out=test-output/fuzz-coverage

modules_of() { # target -> source folders whose coverage is reported
  case "$1" in
    RPCWireFuzz) echo "Sources/RPCWire" ;;
    RPCGatewayFuzz) echo "Sources/RPCWire Sources/RPCPolicy Sources/RPCGateway" ;;
    RPCConfigFuzz) echo "Sources/RPCGatewayConfig Sources/RPCPolicy" ;;
  esac
}

for target in "${targets[@]}"; do
  corpus=".build-fuzz/corpus/$target"
  if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    echo "$target: no corpus in $corpus (run scripts/fuzz.sh first)" >&2
    exit 1
  fi
  echo "== building $target (replay) with coverage in $scratch"
  swift build --scratch-path "$scratch" --product "$target" \
    -Xswiftc -profile-generate -Xswiftc -profile-coverage-mapping 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
  binary="$scratch/debug/$target"
  [ -x "$binary" ] || { echo "$target: coverage build failed" >&2; exit 1; }

  dir="$out/$target"
  rm -rf "$dir" && mkdir -p "$dir/raw"
  files=$(find "$corpus" -type f | wc -l)
  echo "== replaying $files corpus inputs"
  # Batches of 200 files per process: one profile per process, merged below.
  find "$corpus" -type f -print0 |
    LLVM_PROFILE_FILE="$PWD/$dir/raw/%p.profraw" xargs -0 -n 200 "$binary" >/dev/null
  "$llvm_profdata" merge -sparse "$dir"/raw/*.profraw -o "$dir/merged.profdata"
  rm -rf "$dir/raw"

  read -r -a folders <<<"$(modules_of "$target")"
  sources=()
  for folder in "${folders[@]}"; do
    while IFS= read -r file; do sources+=("$file"); done < <(find "$folder" -name '*.swift' | sort)
  done
  echo "== $target: coverage of ${folders[*]} by its corpus ($files inputs)"
  "$llvm_cov" report "$binary" -instr-profile="$dir/merged.profdata" "${sources[@]}" | tee "$dir/report.txt"
  for file in "${sources[@]}"; do
    name=$(basename "$file" .swift)
    "$llvm_cov" show "$binary" -instr-profile="$dir/merged.profdata" "$file" -show-line-counts 2>/dev/null |
      awk -F'|' '$2 ~ /^ *0$/ { print }' >"$dir/uncovered-$name.txt" || true
  done
done

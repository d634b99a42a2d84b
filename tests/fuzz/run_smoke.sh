#!/usr/bin/env bash
# Builds the fuzz targets with clang (libFuzzer + ASan) and runs each for a bounded time
# from its seed corpus of valid and broken inputs: fuzz_safetensors (model files,
# corpus/), fuzz_config (configs, corpus_config/) and fuzz_train_state (training states,
# corpus_state/), the time split evenly between them.
# usage: run_smoke.sh BUILD_DIR SECONDS [extra cmake args]
# CI passes the ASan + UBSan build directory with -DHMOE_SANITIZE=ON: the same flags, so
# the fuzzers come from that build and nothing is compiled twice.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root/build-fuzz}"
secs="${2:-60}"
shift 2 || shift $#
HMOE_BUILD_TARGETS="fuzz_safetensors fuzz_config fuzz_train_state" bash "$root/tools/build.sh" "$dir" \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHMOE_FUZZ=ON -DHMOE_GPU=off \
  -DHMOE_BUILD_BENCH=OFF -DHMOE_BUILD_TOOLS=OFF -DHMOE_NATIVE=OFF "$@"
each=$(( secs / 3 > 0 ? secs / 3 : 1 ))
# target, seed corpus, largest input (a seed state is 7 KB)
for spec in "fuzz_safetensors corpus 4096" "fuzz_config corpus_config 4096" "fuzz_train_state corpus_state 8192"; do
  read -r target seeds max_len <<< "$spec"
  corpus="$dir/fuzz_corpus/$target"
  mkdir -p "$corpus"
  cp "$root"/tests/fuzz/"$seeds"/* "$corpus"/ 2>/dev/null || true
  echo "=== $target: $each s"
  "$dir/tests/fuzz/$target" "$corpus" -max_total_time="$each" -max_len="$max_len" -print_final_stats=1 2>&1 | tail -15
done

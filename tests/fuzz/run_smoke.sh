#!/usr/bin/env bash
# Builds the safetensors fuzzer with clang (libFuzzer + ASan) and runs it for a bounded
# time from a seed corpus of valid and broken files.
# usage: run_smoke.sh BUILD_DIR SECONDS [extra cmake args]
# CI passes the ASan + UBSan build directory with -DHMOE_SANITIZE=ON: the same flags, so
# the fuzzer comes from that build and nothing is compiled twice.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root/build-fuzz}"
secs="${2:-60}"
shift 2 || shift $#
HMOE_BUILD_TARGETS=fuzz_safetensors bash "$root/tools/build.sh" "$dir" -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHMOE_FUZZ=ON -DHMOE_GPU=off -DHMOE_BUILD_BENCH=OFF \
  -DHMOE_BUILD_TOOLS=OFF -DHMOE_NATIVE=OFF "$@"
corpus="$dir/fuzz_corpus"
mkdir -p "$corpus"
cp "$root"/tests/fuzz/corpus/* "$corpus"/ 2>/dev/null || true
"$dir/tests/fuzz/fuzz_safetensors" "$corpus" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 2>&1 | tail -15

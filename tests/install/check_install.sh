#!/usr/bin/env bash
# check_install.sh BUILD_DIR CONSUMER_SRC SCRATCH CXX: install, then build and run a consumer.
set -euo pipefail
build="$1"; src="$2"; scratch="$3"; cxx="$4"
rm -rf "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
for kind in shared static; do
  cmake -S "$src" -B "$scratch/$kind" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$scratch/prefix" \
    -DHMOE_CONSUMER_STATIC=$([ $kind = static ] && echo ON || echo OFF) >/dev/null
  ninja -C "$scratch/$kind" >/dev/null
  LD_LIBRARY_PATH="$scratch/prefix/lib:${LD_LIBRARY_PATH:-}" "$scratch/$kind/consumer"
done

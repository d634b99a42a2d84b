#!/usr/bin/env bash
# Configures and builds hmoe into a build directory.
# usage: tools/build.sh [build-dir] [extra cmake args...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/build}"
shift || true
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root" -B "$dir" -G Ninja "${launcher[@]}" "$@" >/dev/null
jobs="${HMOE_BUILD_JOBS:-$(nproc)}"
# HMOE_BUILD_TARGETS: build only these targets (default: all).
ninja -C "$dir" -j "$jobs" ${HMOE_BUILD_TARGETS:-}

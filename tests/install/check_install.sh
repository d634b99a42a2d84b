#!/usr/bin/env bash
# check_install.sh BUILD_DIR SOURCE_DIR SCRATCH CXX: installs the build into a scratch
# prefix, MOVES the install elsewhere (the package must not record its prefix), then
# against the moved copy: compiles every installed header on its own with only
# -I PREFIX/include; builds and runs tests/install/consumer with find_package (shared and
# static library) and with pkg-config (hmoe, hmoe-static); builds examples/ and runs them
# (generate on a checkpoint that the installed `hmoe train` writes).
set -euo pipefail
build="$1"; src="$2"; scratch="$3"; cxx="$4"
rm -rf "$scratch"; mkdir -p "$scratch"
fail() { echo "check_install: $*" >&2; exit 1; }
quiet() { "$@" >"$scratch/log" 2>&1 || { cat "$scratch/log" >&2; fail "failed: $*"; }; }

quiet cmake --install "$build" --prefix "$scratch/stage"
mv "$scratch/stage" "$scratch/moved"
prefix="$scratch/moved"

# Nothing in the package names where it was installed, built or its source.
if grep -rlF -e "$scratch/stage" -e "$(cd "$build" && pwd)" -e "$src" "$prefix/lib/cmake" "$prefix/lib/pkgconfig"; then
  fail "the files above name the install prefix, the build or the source tree"
fi
# Public headers include each other as <hmoe/...> only; no build-mode macro leaks.
if grep -rnE '#include "(engine|autograd|ops|models)/' "$prefix/include"; then fail "quoted project includes above"; fi
if grep -n "INTERFACE_COMPILE_DEFINITIONS" "$prefix"/lib/cmake/hmoe/*Targets.cmake; then fail "compile definitions leak"; fi
(cd "$prefix/include" && find hmoe -name '*.h' | sort) > "$scratch/headers"
xargs -P 2 -I{} sh -c 'echo "#include <{}>" | "$1" -std=c++20 -fsyntax-only -I "$2/include" -x c++ - || echo "{}" >> "$3"' \
  _ "$cxx" "$prefix" "$scratch/bad_headers" < "$scratch/headers"
[ ! -s "$scratch/bad_headers" ] || fail "headers that do not compile alone: $(tr '\n' ' ' < "$scratch/bad_headers")"
echo "check_install: $(wc -l < "$scratch/headers") installed headers compile alone with -I PREFIX/include"

export LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}"
for kind in shared static; do
  quiet cmake -S "$src/tests/install/consumer" -B "$scratch/$kind" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_PREFIX_PATH="$prefix" -DHMOE_CONSUMER_STATIC=$([ $kind = static ] && echo ON || echo OFF)
  quiet cmake --build "$scratch/$kind" -j 2
  echo -n "find_package, $kind: "; "$scratch/$kind/consumer"
done
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
for pc in hmoe hmoe-static; do
  # shellcheck disable=SC2046
  quiet "$cxx" -std=c++20 -o "$scratch/pc-$pc" "$src/tests/install/consumer/main.cpp" $(pkg-config --cflags --libs $pc)
  echo -n "pkg-config $pc: "; "$scratch/pc-$pc"
done

quiet cmake -S "$src/examples" -B "$scratch/examples" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix"
quiet cmake --build "$scratch/examples" -j 2
(cd "$scratch" && examples/train_layer && examples/profile_layer "$scratch/trace.json" | tail -n 1)
grep -q '"traceEvents"' "$scratch/trace.json" || fail "profile_layer wrote no Chrome trace"
if [ -x "$prefix/bin/hmoe" ]; then
  quiet "$prefix/bin/hmoe" train --config "$src/tools/configs/tiny_hypermoe.toml" train.out_dir="$scratch/run" \
    train.steps=2 train.batch_size=2 train.eval_every=1 train.eval_batches=1 model.block_size=32
  "$scratch/examples/generate" "$scratch/run/checkpoint" "The " > "$scratch/sample.txt"
  echo "generate: $(head -c 60 "$scratch/sample.txt" | tr -c '[:print:]' '?')"
fi
echo "check_install: ok"

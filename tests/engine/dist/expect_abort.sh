#!/usr/bin/env bash
# Runs a job that must fail: passes when it exits with the expected code within the
# time limit (whole seconds) and its output matches the pattern, so that no rank hangs.
# A job that exits 77 is skipped (77 again).
# usage: expect_abort.sh <exit-code> <seconds> <regex> command...
set -uo pipefail
want_code="$1" limit="$2" pattern="$3"
shift 3
start=$(date +%s%N)
out="$(timeout -k 5 "$((limit + 30))" "$@" 2>&1)"
code=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
echo "$out"
[ "$code" -eq 77 ] && { echo "expect_abort: skipped (exit code 77)"; exit 77; }
echo "expect_abort: exit code $code after $elapsed_ms ms (want $want_code within $limit s)"
[ "$code" -eq "$want_code" ] || { echo "expect_abort: FAIL: exit code $code, want $want_code"; exit 1; }
[ "$elapsed_ms" -le $((limit * 1000)) ] || { echo "expect_abort: FAIL: took $elapsed_ms ms"; exit 1; }
echo "$out" | grep -Eq "$pattern" || { echo "expect_abort: FAIL: no line matches /$pattern/"; exit 1; }
echo "expect_abort: ok"

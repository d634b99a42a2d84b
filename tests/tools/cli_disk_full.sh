#!/usr/bin/env bash
# A full disk (a file-size limit, `ulimit -f`, makes writes fail as ENOSPC would): the
# metrics write that fails stops the run with the reason at once (issue 18, case 8), and a
# resume that cannot rewrite the metrics leaves them whole (case 3).
# usage: cli_disk_full.sh HMOE_BINARY
source "$(dirname "$0")/lib.sh"

# 1 KiB per file: the metrics fill it within a few steps, long before the end.
rc=0
(ulimit -f 1 && train full train.steps=100000 train.eval_every=0) || rc=$?
[ $rc -eq 2 ] || fail "a full disk: exit status $rc, expected 2: $(cat full.err)"
grep -q "metrics: writing .* failed: File too large" full.err || fail "a full disk: $(cat full.err)"

train run train.steps=20 train.eval_every=10 || fail "$(cat run.err)"
cp run/metrics.jsonl before.jsonl
[ "$(wc -c < before.jsonl)" -gt 2048 ] || fail "the metrics are too short for this test"
rc=0
(ulimit -f 1 && train run train.steps=30 train.eval_every=10 --resume) || rc=$?
[ $rc -eq 2 ] || fail "resume on a full disk: exit status $rc, expected 2: $(cat run.err)"
grep -q "metrics: writing .* failed: File too large" run.err || fail "resume on a full disk: $(cat run.err)"
cmp -s before.jsonl run/metrics.jsonl || fail "resume on a full disk changed the metrics"
[ ! -e run/metrics.jsonl.tmp ] || fail "a temporary file was left behind"
train run train.steps=30 train.eval_every=10 --resume || fail "resume with room: $(cat run.err)"
echo "cli_disk_full: ok"

#!/usr/bin/env bash
# Two processes on one run (issue 18, case 4): a second trainer on a running trainer's
# directory is refused, naming the process; `hmoe eval` while the trainer saves every step
# always reads a whole checkpoint (it waits for a save in flight).
# usage: cli_lock.sh HMOE_BINARY
source "$(dirname "$0")/lib.sh"

train_bg run train.steps=1000000 train.eval_every=0 train.checkpoint_every=1
pid=$!
wait_for_steps run 3
rc=0
train run train.steps=1000000 --resume || rc=$?
[ $rc -eq 2 ] || fail "a second trainer: exit status $rc, expected 2"
grep -q "another trainer is running in .*(process $pid)" run.err || fail "a second trainer: $(cat run.err)"
kill -0 $pid || fail "the first trainer died"
for i in $(seq 1 25); do
  "$hmoe" eval --checkpoint run/checkpoint --data corpus.txt --max-batches 1 > eval.log 2> eval.err ||
    fail "eval $i during saves: $(cat eval.err)"
done
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc -eq 75 ] || fail "the trainer's exit status after SIGTERM: $rc"
echo "cli_lock: ok"

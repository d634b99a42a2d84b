#!/usr/bin/env bash
# Ctrl-C during training (issue 18, case 6): the first SIGINT or SIGTERM finishes the step,
# saves a checkpoint, exits with 75 and says how to resume; the resumed run's losses are
# an uninterrupted run's. A second signal ends the process at once; the checkpoint on disk
# stays whole and the run resumes exactly.
# usage: cli_signals.sh HMOE_BINARY
source "$(dirname "$0")/lib.sh"
steps=(train.steps=150 train.eval_every=50)

train ref "${steps[@]}" || fail "the uninterrupted run failed: $(cat ref.err)"

for sig in INT TERM; do
  run=first_$sig
  train_bg $run "${steps[@]}"
  pid=$!
  wait_for_steps $run 5
  kill -$sig $pid
  rc=0
  wait $pid || rc=$?
  [ $rc -eq 75 ] || fail "SIG$sig: exit status $rc, expected 75: $(cat $run.err)"
  grep -q "stopped by SIG$sig after step" $run.err || fail "SIG$sig: no note of the stop: $(cat $run.err)"
  grep -q "continue with: .* --resume" $run.err || fail "SIG$sig: no resume command: $(cat $run.err)"
  saved=$(sed -n 's/.*after step \([0-9]*\).*/\1/p' $run.err)
  [ "$saved" -lt 150 ] || fail "SIG$sig: the run was not interrupted (step $saved)"
  # The command it printed continues the run (its relative paths from here).
  cmd=$(sed -n 's/^continue with: //p' $run.err)
  eval "$cmd" > $run.log 2> $run.err || fail "SIG$sig: resuming failed: $(cat $run.err)"
  same_losses ref $run || fail "SIG$sig: the interrupted and resumed run differs from the uninterrupted one"
done

# Two signals: the second ends the process at once (killed by it), whatever the first
# was doing; the last checkpoint is whole and the run resumes exactly.
run=twice
train_bg $run "${steps[@]}" train.checkpoint_every=3
pid=$!
wait_for_steps $run 10
kill -INT $pid
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc -gt 128 ] || fail "two signals: exit status $rc, expected death by the second (> 128): $(cat $run.err)"
train $run "${steps[@]}" train.checkpoint_every=3 --resume || fail "resuming after two signals: $(cat $run.err)"
same_losses ref $run || fail "two signals: the resumed run differs from the uninterrupted one"
echo "cli_signals: ok"

#!/usr/bin/env bash
# Crash safety: `kill -9` at arbitrary points (during steps or saves) loses at most the
# steps since the last checkpoint; each resume continues exactly, so the run's losses
# are an uninterrupted run's.
# usage: cli_crash.sh HMOE_BINARY
source "$(dirname "$0")/lib.sh"
steps=(train.steps=150 train.eval_every=40 train.checkpoint_every=4)

train ref "${steps[@]}" || fail "the uninterrupted run failed: $(cat ref.err)"
train_bg run "${steps[@]}"
pid=$!
wait_for_steps run 10
kill -9 $pid
wait $pid || true
for after in 30 70 110; do
  train_bg run "${steps[@]}" --resume
  pid=$!
  wait_for_steps run $after
  kill -9 $pid
  wait $pid || true
done
train run "${steps[@]}" --resume || fail "the last resume failed: $(cat run.err)"
same_losses ref run || fail "the run killed four times differs from the uninterrupted one"
echo "cli_crash: ok"

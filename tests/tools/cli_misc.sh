#!/usr/bin/env bash
# The CLI's own checks (issue 18, cases 7, 12 and 14): a fresh run over an existing one
# needs --overwrite; a FIFO as data is refused at once; range errors are short; metrics
# lines are strict JSON; generate prints as it goes (and runs a batch of prompts); a zero-step
# run is refused.
# usage: cli_misc.sh HMOE_BINARY
source "$(dirname "$0")/lib.sh"

train run train.steps=4 || fail "$(cat run.err)"
cp run/metrics.jsonl before.jsonl
rc=0
train run train.steps=4 || rc=$?
[ $rc -eq 2 ] && grep -q "already holds a run .*--overwrite" run.err || fail "a fresh run over a run: $rc $(cat run.err)"
cmp -s before.jsonl run/metrics.jsonl || fail "the refused run changed the metrics"
train run train.steps=2 --overwrite || fail "--overwrite: $(cat run.err)"
[ "$(grep -c '"lm_loss"' run/metrics.jsonl)" -eq 2 ] || fail "--overwrite kept the old metrics"
rc=0
train run train.steps=2 --overwrite --resume || rc=$?
[ $rc -ne 0 ] || fail "--overwrite with --resume was accepted"
same_losses run run  # strict JSON on every line

mkfifo fifo
rc=0
timeout 20 "$hmoe" train --quiet "${tiny[@]}" data.text=fifo train.out_dir=f > f.log 2> f.err || rc=$?
[ $rc -eq 2 ] && grep -q "is not a regular file" f.err || fail "a FIFO as data: status $rc: $(cat f.err)"

check_short() {  # the command fails with a message of one short line containing $1
  local want=$1; shift
  local rc=0
  "$@" > short.log 2> short.err || rc=$?
  [ $rc -ne 0 ] || fail "$* was accepted"
  grep -q -- "$want" short.err || fail "$*: no '$want' in: $(cat short.err)"
  [ "$(head -1 short.err | wc -c)" -lt 200 ] || fail "$*: a long message: $(head -c 300 short.err)"
}
check_short "in \[0, 4096\]" "$hmoe" --threads -1 presets
check_short "in \[0, 4096\]" "$hmoe" --threads 4294967297 presets
check_short "train.threads must be in \[0, 4096\]" "$hmoe" train train.threads=4294967297
check_short "whole number in \[0, 9223372036854775807\]" "$hmoe" generate --checkpoint run/checkpoint --max-tokens -1
check_short "finite number >= 0" "$hmoe" generate --checkpoint run/checkpoint --temperature inf
check_short "train.steps >= 1" "$hmoe" train train.steps=0
check_short "train.lr must be a finite number" "$hmoe" train train.lr=1e30

# Generation streams: the first bytes arrive long before 2^63 - 1 tokens are made.
bytes=$( (timeout 60 "$hmoe" generate --checkpoint run/checkpoint --prompt "the " \
  --max-tokens 9223372036854775807 || true) | head -c 40 | wc -c)
[ "$bytes" -eq 40 ] || fail "generate did not stream (got $bytes bytes)"
# Several prompts run as one batch, each row what it is alone; bad sampling input is refused.
"$hmoe" generate --checkpoint run/checkpoint --prompt "the q" --prompt "jumps over" --max-tokens 30 --greedy \
  > batch.txt || fail "batch generate"
[ "$(wc -l < batch.txt)" -eq 2 ] || fail "two prompts, not two lines: $(cat batch.txt)"
for p in "the q" "jumps over"; do
  one=$("$hmoe" generate --checkpoint run/checkpoint --prompt "$p" --max-tokens 30 --greedy)
  grep -qxF -- "$one" batch.txt || fail "'$one' alone is not a row of the batch: $(cat batch.txt)"
done
check_short "top_p must be in (0, 1\]" "$hmoe" generate --checkpoint run/checkpoint --top-p 0
check_short "the prompt has 17 tokens; a prompt needs 1 .. block_size = 16" "$hmoe" generate \
  --checkpoint run/checkpoint --prompt "the quick brown f"
echo "cli_misc: ok"

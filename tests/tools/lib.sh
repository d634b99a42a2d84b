# Shared by the cli_*.sh tests: the hmoe binary ($1), a scratch directory removed on exit,
# a small corpus, a tiny model's overrides, and checks that fail the test with a message.
set -euo pipefail
hmoe="$(realpath "$1")"
work="$(mktemp -d "${TMPDIR:-/tmp}/hmoe_cli.XXXXXX")"
cleanup() {
  # Only the processes this script started.
  for p in $(jobs -p); do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
for i in $(seq 1 400); do echo "the quick brown fox jumps over the lazy dog $((i % 7))"; done > corpus.txt

# A model small enough for a step of a few milliseconds.
tiny=(model.ffn=moe model.n_layer=2 model.d_model=32 model.n_head=2 model.d_ff=64 model.block_size=16
  model.n_experts=4 model.top_k=2 data.text=corpus.txt data.val_fraction=0.1 train.batch_size=4
  train.warmup=2 train.eval_batches=2 train.lr=3e-3)

fail() { echo "FAIL: $*" >&2; exit 1; }

# Runs hmoe train with the tiny model in the run directory NAME and more arguments;
# stdout and stderr to NAME.log and NAME.err.
train() {
  local out=$1; shift
  "$hmoe" train --quiet "${tiny[@]}" train.out_dir="$out" "$@" > "$out.log" 2> "$out.err"
}
# The same in the background, as the process $! itself (signals reach hmoe, not a
# subshell; bash's ignoring of SIGINT in background jobs is undone by hmoe's handler).
train_bg() {
  local out=$1; shift
  ( exec "$hmoe" train --quiet "${tiny[@]}" train.out_dir="$out" "$@" > "$out.log" 2> "$out.err" ) &
}

# Waits until the run NAME has logged at least N steps in its metrics (30 s at most).
wait_for_steps() {
  local out=$1 n=$2
  for _ in $(seq 1 3000); do
    if [ -f "$out/metrics.jsonl" ] && [ "$(grep -c '"lm_loss"' "$out/metrics.jsonl" || true)" -ge "$n" ]; then
      return 0
    fi
    sleep 0.01
  done
  fail "$out: fewer than $n steps logged after 30 s"
}

# Every line of the two runs' metrics is strict JSON (no NaN or Infinity), each step is
# logged once, and their losses (lm_loss, val_loss) are equal step for step.
same_losses() {
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" <<'PY'
import json, sys
def losses(path):
    out = {}
    for n, line in enumerate(open(path), 1):
        def bad(c): raise ValueError(f"{path}:{n}: {c} is not JSON")
        j = json.loads(line, parse_constant=bad)
        for key in ("lm_loss", "val_loss"):
            if key in j:
                k = (j["step"], key)
                if k in out: sys.exit(f"{path}: step {j['step']} logged twice")
                out[k] = j[key]
    return out
a, b = losses(sys.argv[1]), losses(sys.argv[2])
if a != b:
    diff = sorted(set(a.items()) ^ set(b.items()))[:6]
    sys.exit(f"losses differ between {sys.argv[1]} and {sys.argv[2]}: {diff}")
PY
}

#!/usr/bin/env bash
# Training over several processes (`mpirun -np W hmoe train ... dist.ep=E`): 20 steps at
# world 1, 2 (ep 2) and 4 (ep 4, and ep 2 x dp 2) give the same losses (1e-5 relative,
# the metrics' 6 digits); two runs at one world size give the same bits; a run saved at
# ep 4 continues at ep 2 and in one process; the emulated cuda device under MPI matches
# the CPU; a rank killed mid-run ends the job at once, naming the rank, and the last
# checkpoint stays whole.
# usage: dist_train.sh HMOE_BINARY MPIEXEC [cuda]
source "$(dirname "$0")/lib.sh"
mpiexec=$2
with_cuda=${3:-}
run_np() {
  local np=$1 out=$2; shift 2
  "$mpiexec" --oversubscribe --bind-to none -np "$np" "$hmoe" train --quiet "${tiny[@]}" train.out_dir="$out" \
    train.threads=1 "$@" > "$out.log" 2> "$out.err"
}
# Losses of two runs equal within a relative tolerance, step by step (tol 0: the same bits).
close_losses() {
  python3 - "$1/metrics.jsonl" "$2/metrics.jsonl" "$3" <<'PY'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        j = json.loads(line)
        for key in ("lm_loss", "val_loss"):
            if key in j: out[(j["step"], key)] = j[key]
    return out
a, b, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
if a.keys() != b.keys(): sys.exit(f"{sys.argv[1]} and {sys.argv[2]} log different steps")
bad = [(k, a[k], b[k]) for k in sorted(a) if abs(a[k] - b[k]) > tol * abs(a[k])]
if bad: sys.exit(f"{sys.argv[1]} vs {sys.argv[2]}: {bad[:4]}")
PY
}
steps=(train.steps=20 train.eval_every=10 train.log_every=1 train.batch_size=4)

train w1 "${steps[@]}" || fail "world 1: $(cat w1.err)"
run_np 2 w2 "${steps[@]}" dist.ep=2 || fail "world 2, ep 2: $(cat w2.err)"
close_losses w1 w2 1e-5 || fail "world 2 (ep 2) trains another run than world 1"
run_np 4 w4 "${steps[@]}" dist.ep=4 || fail "world 4, ep 4: $(cat w4.err)"
close_losses w1 w4 1e-5 || fail "world 4 (ep 4) trains another run than world 1"
run_np 4 w4dp "${steps[@]}" dist.ep=2 || fail "world 4, ep 2: $(cat w4dp.err)"
close_losses w1 w4dp 1e-5 || fail "world 4 (ep 2 x dp 2) trains another run than world 1"

# The same world twice: the same bits, losses and checkpoint.
run_np 2 w2b "${steps[@]}" dist.ep=2 || fail "world 2 again: $(cat w2b.err)"
close_losses w2 w2b 0 || fail "two runs at world 2 differ"
# Tensors of two safetensors files: the same names, dtypes and shapes, and (bits) the same bytes.
same_tensors() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
if a.keys() != b.keys(): sys.exit(f"different tensors: {sorted(a.keys() ^ b.keys())[:4]}")
for k in a:
    if a[k][:2] != b[k][:2]: sys.exit(f"{k}: {a[k][:2]} vs {b[k][:2]}")
    if sys.argv[3] == "bits" and a[k][2] != b[k][2]: sys.exit(f"{k}: other values")
PY
}
same_tensors w2/checkpoint/model.safetensors w2b/checkpoint/model.safetensors bits || fail "two runs at world 2 saved other weights"
same_tensors w2/checkpoint/state.safetensors w2b/checkpoint/state.safetensors bits || fail "two runs at world 2 saved another optimiser state"
# A checkpoint is the one a single process writes: world 2's tensors are world 1's, by name and shape.
same_tensors w1/checkpoint/model.safetensors w2/checkpoint/model.safetensors shapes || fail "world 2's weights are laid out unlike world 1's"
same_tensors w1/checkpoint/state.safetensors w2/checkpoint/state.safetensors shapes || fail "world 2's optimiser state is laid out unlike world 1's"

# Saved at ep 4 after 10 steps; continued at ep 2, and in one process.
run_np 4 r4 "${steps[@]}" dist.ep=4 --stop-at 10 || fail "the ep 4 half: $(cat r4.err)"
cp -r r4 r1
run_np 2 r4 "${steps[@]}" dist.ep=2 --resume || fail "resuming ep 4 at ep 2: $(cat r4.err)"
close_losses w1 r4 1e-5 || fail "the run saved at ep 4 and continued at ep 2 differs from world 1's"
train r1 "${steps[@]}" --resume || fail "resuming ep 4 in one process: $(cat r1.err)"
close_losses w1 r1 1e-5 || fail "the run saved at ep 4 and continued in one process differs from world 1's"

# The emulated cuda device under MPI (its memory is host memory) matches the CPU.
if [ "$with_cuda" = cuda ]; then
  few=(train.steps=3 train.eval_every=3 train.eval_batches=1 train.log_every=1 train.batch_size=2 model.block_size=8)
  run_np 2 c_cpu "${few[@]}" dist.ep=2 || fail "cpu: $(cat c_cpu.err)"
  run_np 2 c_dev "${few[@]}" dist.ep=2 train.device=cuda || fail "cuda device: $(cat c_dev.err)"
  close_losses c_cpu c_dev 1e-5 || fail "the emulated cuda device under MPI differs from the CPU"
  # The same through the nccl backend (the emulated NCCL): each rank on its communicator's GPU.
  run_np 2 c_nccl "${few[@]}" dist.ep=2 train.device=cuda dist.backend=nccl || fail "nccl: $(cat c_nccl.err)"
  close_losses c_cpu c_nccl 1e-5 || fail "the nccl backend's run differs from the CPU"
fi

# A rank killed mid-run: the job ends at once (not after the watchdog's timeout), naming
# the rank, and the last checkpoint stays whole.
( exec "$mpiexec" --oversubscribe --bind-to none -np 2 "$hmoe" train --quiet "${tiny[@]}" train.out_dir=k \
    train.threads=1 train.steps=100000 train.eval_every=0 train.checkpoint_every=5 dist.ep=2 > k.log 2> k.err ) &
job=$!
wait_for_steps k 12
victim=$(pgrep -f "train.out_dir=k train.threads" | while read -r p; do
  [ "$(ps -o comm= -p "$p")" = "$(basename "$hmoe")" ] && echo "$p"; done | tail -1)
[ -n "$victim" ] || fail "no rank process found to kill"
start=$(date +%s)
kill -9 "$victim"
rc=0
wait $job || rc=$?
[ "$rc" -ne 0 ] || fail "the job ended with 0 after a rank was killed"
[ $(( $(date +%s) - start )) -le 30 ] || fail "the job took more than 30 s to end after a rank was killed"
grep -qiE "rank|process" k.err || fail "the job's error names no rank: $(tail -5 k.err)"
pgrep -f "train.out_dir=k train.threads" > /dev/null && fail "a rank is still running"
train k "${steps[@]}" --resume train.steps=30 > /dev/null 2>&1 || fail "the last checkpoint does not resume: $(cat k.err)"
echo "dist_train: ok"

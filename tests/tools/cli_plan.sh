#!/usr/bin/env bash
# `hmoe plan ep`: the bytes each rank sends per MoE layer follow from the config (base
# preset, bf16, 64 sequences of 1024 over 8 ranks, top-1: 8192 tokens a rank, 7/8 of
# them leave, 768 values of 2 bytes: 10.50 MiB each way), EP 16 rounds 8 experts up to
# 16, a dense model and bad bandwidths are refused.
# usage: cli_plan.sh HMOE_BINARY
source "$(dirname "$0")/lib.sh"
"$hmoe" plan ep model.preset=base model.dtype=bf16 train.batch_size=64 > plan.out 2> plan.err || fail "plan: $(cat plan.err)"
grep -q "EP 8, one node" plan.out || fail "no EP 8 plan: $(cat plan.out)"
grep -q "dispatch 10.50 MiB, combine 10.50 MiB" plan.out || fail "EP 8 bytes: $(grep dispatch plan.out)"
grep -q "16 ranks, 1 of 16 experts each (model.n_experts rounded up" plan.out || fail "EP 16: $(cat plan.out)"
"$hmoe" plan ep model.preset=base --ep 4 --dispatch-gbps 100 --combine-gbps 100 --allreduce-gbps 100 > one.out \
  || fail "a given cluster"
grep -q "the given cluster: 4 ranks, 2 of 8 experts each" one.out || fail "the given cluster: $(cat one.out)"
if "$hmoe" plan ep model.ffn=dense > /dev/null 2> dense.err; then fail "a dense model was planned"; fi
grep -q "no experts to share" dense.err || fail "dense: $(cat dense.err)"
if "$hmoe" plan ep --ep 4 > /dev/null 2> bw.err; then fail "a cluster without bandwidths was planned"; fi
grep -q "positive bandwidths" bw.err || fail "bandwidths: $(cat bw.err)"
echo "cli_plan: ok"

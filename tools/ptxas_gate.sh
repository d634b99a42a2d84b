#!/usr/bin/env bash
# The ptxas resource gate: builds hmoe with the real CUDA backend (HMOE_GPU=cuda), then
# recompiles every ops/cuda/*.cu with ptxas's per-kernel report (-Xptxas -v,-warn-spills,
# -warn-lmem-usage), writes it to <build-dir>/ptxas_report.txt plus a per-kernel table
# (<build-dir>/ptxas_kernels.tsv), and fails when a gated kernel spills registers or
# uses local memory (a non-zero stack frame). Needs nvcc, not a GPU.
#
# usage: tools/ptxas_gate.sh [build-dir] [extra cmake args...]
#   HMOE_PTXAS_HOT=<regex>    kernels (demangled names) the gate applies to (default: all)
#   HMOE_PTXAS_ALLOW=<regex>  kernels exempt from it (default: see below)
#   HMOE_BUILD_JOBS=<n>       parallel jobs (default: nproc)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/build-cuda}"
shift || true
jobs="${HMOE_BUILD_JOBS:-$(nproc)}"
hot="${HMOE_PTXAS_HOT:-.*}"
# random_kernel: double-precision cos() in Box-Muller (bit-identical to the CPU's draws)
# keeps a 40-byte frame for the Payne-Hanek reduction of huge arguments, a path never
# taken for arguments in [0, 2*pi). Not a hot kernel.
allow="${HMOE_PTXAS_ALLOW:-random_kernel<}"

command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] || {
  echo "ptxas_gate: nvcc not found (CUDA toolkit needed)" >&2
  exit 2
}

launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root" -B "$dir" -G Ninja -DHMOE_GPU=cuda -DHMOE_PTXAS_REPORT=ON "${launcher[@]}" "$@" >/dev/null
# The build itself must succeed (it also proves every kernel compiles for sm_80/sm_90).
ninja -C "$dir" -j "$jobs" hmoe_static

# Recompile each kernel source with its exact build command into a scratch object, to
# capture the report even when the objects were up to date.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python3 - "$dir/compile_commands.json" "$scratch" <<'EOF'
import json, os, shlex, sys
cmds, scratch = json.load(open(sys.argv[1])), sys.argv[2]
for i, c in enumerate(e for e in cmds if e["file"].endswith(".cu")):
    argv = shlex.split(c["command"])
    argv[argv.index("-o") + 1] = os.path.join(scratch, f"{i}.o")
    log = shlex.quote(os.path.join(scratch, f"{i}.log"))
    with open(os.path.join(scratch, f"job_{i}.sh"), "w") as job:
        job.write(f"echo {shlex.quote('== ' + c['file'])} > {log}\n")
        job.write(f"cd {shlex.quote(c['directory'])} && {shlex.join(argv)} >> {log} 2>&1 "
                  f"|| echo 'COMPILE FAILED' >> {log}\n")
EOF
find "$scratch" -name 'job_*.sh' -print0 | xargs -0 -r -n 1 -P "$jobs" bash
cat "$scratch"/*.log > "$dir/ptxas_report.txt"

python3 - "$dir/ptxas_report.txt" "$dir/ptxas_kernels.tsv" "$hot" "$allow" <<'EOF'
import re, shutil, subprocess, sys
report, table, hot, allow = sys.argv[1:5]
text = open(report).read()
if "COMPILE FAILED" in text:
    print("ptxas_gate: a kernel source failed to compile; see", report)
    sys.exit(1)
kernels = {}  # (mangled, arch) -> dict
cur = None
for line in text.splitlines():
    m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
    if m:
        cur = (m.group(1), m.group(2))
        kernels[cur] = {"regs": 0, "stack": 0, "spill_st": 0, "spill_ld": 0, "lmem": 0}
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        k = kernels[cur]
        k["stack"], k["spill_st"], k["spill_ld"] = map(int, m.groups())
    m = re.search(r"Used (\d+) registers", line)
    if m:
        kernels[cur]["regs"] = int(m.group(1))
    m = re.search(r"(\d+) bytes lmem", line)
    if m:
        kernels[cur]["lmem"] = int(m.group(1))
    if line.startswith("ptxas info    : Compile time"):
        cur = None
names = sorted({k for k, _ in kernels})
demangled = dict(zip(names, names))
if names and shutil.which("c++filt"):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    if len(out) == len(names):
        demangled = dict(zip(names, out))
bad = []
with open(table, "w") as t:
    t.write("kernel\tarch\tregisters\tstack_bytes\tspill_stores\tspill_loads\tlmem_bytes\tgated\n")
    for (name, arch), k in sorted(kernels.items(), key=lambda kv: (demangled[kv[0][0]], kv[0][1])):
        d = demangled[name]
        gated = bool(re.search(hot, d)) and not (allow and re.search(allow, d))
        t.write(f"{d}\t{arch}\t{k['regs']}\t{k['stack']}\t{k['spill_st']}\t{k['spill_ld']}\t{k['lmem']}\t{int(gated)}\n")
        if gated and (k["spill_st"] or k["spill_ld"] or k["lmem"] or k["stack"]):
            bad.append(f"  {d} [{arch}]: {k['spill_st']} B spill stores, {k['spill_ld']} B spill loads, "
                       f"{k['stack']} B stack frame, {k['lmem']} B lmem")
print(f"ptxas_gate: {len(kernels)} kernel compilations ({len(names)} kernels) in {report}; table in {table}")
if bad:
    print("ptxas_gate: FAILED: kernels with register spills or local memory:")
    print("\n".join(bad))
    sys.exit(1)
print("ptxas_gate: OK (no spills, no local memory in gated kernels)")
EOF

#!/usr/bin/env bash
# The ptxas resource gate: builds hmoe with the real CUDA backend (HMOE_GPU=cuda),
# compiling every kernel source (ops/cuda, ops/moe/cuda) once, with ptxas's per-kernel
# report (-Xptxas -v,-warn-spills,-warn-lmem-usage); writes the report to
# <build-dir>/ptxas_report.txt plus a per-kernel table
# (<build-dir>/ptxas_kernels.tsv: registers, stack, spills, static shared memory; the
# occupancy of `hmoe bench kernels --emu-counters --ptxas FILE` reads it), and fails when a gated kernel spills registers or
# uses local memory (a non-zero stack frame). Then the instruction check: the sources
# holding tensor-core kernels are compiled once more to sm_80 PTX (this toolkit install
# has no cuobjdump/nvdisasm, so PTX is what can be read), and every kernel entry matching
# HMOE_PTX_MMA_KERNELS must contain an MMA instruction (mma.sync / wmma.mma); the table
# <build-dir>/ptx_mma.tsv also counts 16-byte global and shared accesses per kernel.
# Needs nvcc, not a GPU.
#
# usage: tools/ptxas_gate.sh [build-dir] [extra cmake args...]
#   HMOE_PTXAS_HOT=<regex>    kernels (demangled names) the gate applies to (default: all)
#   HMOE_PTXAS_ALLOW=<regex>  kernels exempt from it (default: see below)
#   HMOE_BUILD_JOBS=<n>       parallel jobs (default: nproc)
#   HMOE_PTX_MMA_SOURCES="<files>"  sources holding tensor-core kernels (default: the
#                             attention and grouped GEMM rooms)
#   HMOE_PTX_MMA_KERNELS=<regex>    kernels (demangled) that must contain MMA (default: _wmma<|_mma_sync<)
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
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# Each kernel source is compiled once, by the build itself: its objects are removed
# first, so ninja runs every nvcc command (ccache replays a cached compile's report) and
# prints each command's whole output, ptxas's per-kernel report included, as one piece.
# The build must succeed (that also proves every kernel compiles for sm_80/sm_90).
find "$dir/CMakeFiles/hmoe_cuda_objects.dir" -name '*.cu.o' -delete 2>/dev/null || true
if ! ninja -C "$dir" -j "$jobs" hmoe_cuda_objects > "$scratch/build.log" 2>&1; then
  tail -n 200 "$scratch/build.log"
  echo "ptxas_gate: a kernel source failed to compile" >&2
  exit 1
fi
cp "$scratch/build.log" "$dir/ptxas_report.txt"
ninja -C "$dir" -j "$jobs" hmoe_static

python3 - "$dir/ptxas_report.txt" "$dir/ptxas_kernels.tsv" "$hot" "$allow" <<'EOF'
import re, shutil, subprocess, sys
report, table, hot, allow = sys.argv[1:5]
text = open(report).read()
kernels = {}  # (mangled, arch) -> dict
cur = None
for line in text.splitlines():
    m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'", line)
    if m:
        cur = (m.group(1), m.group(2))
        kernels[cur] = {"regs": 0, "stack": 0, "spill_st": 0, "spill_ld": 0, "lmem": 0, "smem": 0}
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
    m = re.search(r"(\d+) bytes smem", line)
    if m:
        kernels[cur]["smem"] = int(m.group(1))
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
    t.write("kernel\tarch\tregisters\tstack_bytes\tspill_stores\tspill_loads\tlmem_bytes\tgated\tsmem_bytes\n")
    for (name, arch), k in sorted(kernels.items(), key=lambda kv: (demangled[kv[0][0]], kv[0][1])):
        d = demangled[name]
        gated = bool(re.search(hot, d)) and not (allow and re.search(allow, d))
        t.write(f"{d}\t{arch}\t{k['regs']}\t{k['stack']}\t{k['spill_st']}\t{k['spill_ld']}\t{k['lmem']}\t{int(gated)}\t{k['smem']}\n")
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

# The instruction check on the tensor-core kernels' PTX (spec: gpu-without-gpu.md, 1).
mma_sources="${HMOE_PTX_MMA_SOURCES:-ops/cuda/attention.cu ops/moe/cuda/grouped_gemm.cu}"
mma_kernels="${HMOE_PTX_MMA_KERNELS:-_wmma<|_mma_sync<}"
read -r -a mma_list <<< "$mma_sources"
python3 - "$dir/compile_commands.json" "$scratch" "$dir/ptx_mma.tsv" "$mma_kernels" "$jobs" "${mma_list[@]}" <<'EOF'
import json, os, re, shlex, shutil, subprocess, sys
cmds, scratch, table, pattern, jobs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sources = sys.argv[6:]
entries = [e for e in json.load(open(cmds)) if e["file"].endswith(".cu")]
# Each source's own build command, turned into a PTX compile for sm_80 alone.
procs = []
for i, src in enumerate(sources):
    match = [e for e in entries if os.path.normpath(e["file"]).endswith(os.path.normpath(src))]
    if not match:
        print(f"ptxas_gate: FAILED: {src} is not a CUDA source of this build")
        sys.exit(1)
    e = match[0]
    argv, out, skip = [], os.path.join(scratch, f"mma_{i}.ptx"), False
    for a in shlex.split(e["command"]):
        if skip:
            skip = False
            continue
        if a in ("-o", "-gencode", "--generate-code", "-arch", "-code"):
            skip = True  # dropped with its value
            continue
        if a == "-c" or a.startswith(("--generate-code=", "-gencode=", "-arch=", "-code=", "-Xptxas")):
            continue
        argv.append(a)
    argv += ["-ptx", "-arch=sm_80", "-o", out]
    while sum(p.poll() is None for _, _, p in procs) >= max(jobs, 1):
        next(p for _, _, p in procs if p.poll() is None).wait()
    log = open(out + ".log", "w")
    procs.append((src, out, subprocess.Popen(argv, cwd=e["directory"], stdout=log, stderr=subprocess.STDOUT)))

def count(pattern, body):
    return len(re.findall(pattern, body))

rows, bad = [], []
for src, out, p in procs:
    if p.wait() != 0:
        print(f"ptxas_gate: FAILED: the PTX compile of {src}:")
        print(open(out + ".log").read()[-4000:])
        sys.exit(1)
    text = open(out).read()
    heads = list(re.finditer(r"\.entry\s+([A-Za-z0-9_$]+)\s*\(", text))
    names = [m.group(1) for m in heads]
    demangled = names
    if names and shutil.which("c++filt"):
        d = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
        if len(d) == len(names):
            demangled = d
    gated = 0
    for j, m in enumerate(heads):
        body = text[m.end():heads[j + 1].start() if j + 1 < len(heads) else len(text)]
        mma = count(r"\b(?:wmma\.mma|mma\.sync)\.", body)
        v16 = r"(?:\.[a-z0-9]+)*\.(?:v4\.[bufs]32|v2\.[bufs]64)\b"
        g16 = count(r"\b(?:ld|st)\.global" + v16, body)
        s16 = count(r"\b(?:ld|st)\.shared" + v16, body)
        want = bool(re.search(pattern, demangled[j]))
        gated += want
        rows.append((demangled[j], src, mma, g16, s16, want))
        if want and mma == 0:
            bad.append(f"  {demangled[j]} ({src}): no mma.sync / wmma.mma in its PTX")
    if gated == 0:
        bad.append(f"  {src}: no kernel matches '{pattern}' (the check would prove nothing)")
with open(table, "w") as t:
    t.write("kernel\tsource\tmma_instructions\tglobal_16B_accesses\tshared_16B_accesses\tgated\n")
    for r in sorted(rows):
        t.write(f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\t{r[4]}\t{int(r[5])}\n")
print(f"ptxas_gate: PTX (sm_80) of {len(procs)} sources: {len(rows)} kernels, "
      f"{sum(r[5] for r in rows)} tensor-core kernels; table in {table}")
for r in sorted(rows):
    if r[5]:
        print(f"  {r[2]:4d} mma {r[3]:4d} 16B global {r[4]:4d} 16B shared  {r[0][:120]}")
if bad:
    print("ptxas_gate: FAILED: tensor-core kernels without MMA instructions:")
    print("\n".join(bad))
    sys.exit(1)
print("ptxas_gate: OK (every tensor-core kernel issues MMA instructions)")
EOF

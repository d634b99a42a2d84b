// Theoretical occupancy (the occupancy calculator's rules) and the ptxas table reader.
#include "engine/cuda/occupancy.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>

#include "engine/error.h"

namespace hmoe::cuda {
namespace {

size_t round_up(size_t v, size_t unit) { return (v + unit - 1) / unit * unit; }

// Blocks per SM that the registers allow (cuda_occupancy.h,
// cudaOccMaxBlocksPerSMRegsLimit): registers go to warps in units of reg_unit; each
// sub-partition holds regs_per_sm / sub_partitions of them, so only whole warps per
// sub-partition count. The block must fit the per-block register file even with its
// warps rounded up to the sub-partitions (the hardware's launch check).
int blocks_by_registers(int regs, int warps_per_block, const SmLimits& sm) {
  if (regs <= 0) return INT_MAX;
  const int per_warp = int(round_up(size_t(regs) * 32, size_t(sm.reg_unit)));
  const int assumed = per_warp * int(round_up(size_t(warps_per_block), size_t(sm.sub_partitions)));
  if (assumed > sm.regs_per_sm || per_warp * warps_per_block > sm.regs_per_sm) return 0;
  const int warps_per_sub = sm.regs_per_sm / sm.sub_partitions / per_warp;
  return warps_per_sub * sm.sub_partitions / warps_per_block;
}

}  // namespace

Occupancy occupancy(const KernelResources& r, const LaunchShape& l, const SmLimits& sm) {
  Occupancy o;
  const size_t smem = r.static_smem + l.dynamic_smem;
  if (l.block_threads == 0 || l.block_threads > 1024) {
    o.invalid = "block of " + std::to_string(l.block_threads) + " threads (1 to 1024)";
  } else if (r.registers > sm.max_regs_per_thread) {
    o.invalid =
        std::to_string(r.registers) + " registers per thread (at most " + std::to_string(sm.max_regs_per_thread) + ")";
  } else if (smem > sm.smem_per_block) {
    o.invalid = std::to_string(smem) + " bytes of shared memory per block (at most " +
                std::to_string(sm.smem_per_block) + " on " + sm.name + ")";
  }
  if (!o.invalid.empty()) return o;
  const int warps_per_block = int((l.block_threads + 31) / 32);
  o.by_warps = sm.max_warps / warps_per_block;
  o.by_blocks = sm.max_blocks;
  o.by_registers = blocks_by_registers(r.registers, warps_per_block, sm);
  // Every block also holds smem_reserved bytes; allocations are in smem_unit steps. The
  // driver picks the carveout, so the largest one bounds the resident blocks.
  o.by_smem = int(sm.smem_per_sm / round_up(smem + sm.smem_reserved, sm.smem_unit));
  if (o.by_registers == 0) {
    o.invalid = std::to_string(r.registers) + " registers x " + std::to_string(l.block_threads) +
                " threads exceed the register file (too many resources requested for launch)";
    return o;
  }
  o.blocks = std::min({o.by_warps, o.by_blocks, o.by_registers, o.by_smem});
  o.warps = o.blocks * warps_per_block;
  o.fraction = double(o.warps) / double(sm.max_warps);
  const std::pair<int, const char*> limits[] = {
      {o.by_registers, "registers"}, {o.by_smem, "shared memory"}, {o.by_warps, "warps"}, {o.by_blocks, "blocks"}};
  for (const auto& [n, what] : limits)
    if (n == o.blocks) o.limiter += (o.limiter.empty() ? "" : " + ") + std::string(what);
  return o;
}

std::vector<PtxasKernel> read_ptxas_table(const std::string& path) {
  std::ifstream in(path);
  HMOE_CHECK(in.good(), "ptxas table: cannot open '", path, "' (tools/ptxas_gate.sh writes <build>/ptxas_kernels.tsv)");
  std::string line;
  std::getline(in, line);
  std::vector<std::string> head;
  {
    std::istringstream hs(line);
    for (std::string c; std::getline(hs, c, '\t');) head.push_back(c);
  }
  auto col = [&](const char* name) {
    const auto it = std::find(head.begin(), head.end(), name);
    return it == head.end() ? -1 : int(it - head.begin());
  };
  const int ck = col("kernel"), ca = col("arch"), cr = col("registers"), cs = col("smem_bytes");
  HMOE_CHECK(ck >= 0 && ca >= 0 && cr >= 0, "ptxas table '", path,
             "': the header needs kernel, arch and registers columns, got '", line, "'");
  std::vector<PtxasKernel> rows;
  for (int n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    std::vector<std::string> c;
    std::istringstream ls(line);
    for (std::string f; std::getline(ls, f, '\t');) c.push_back(f);
    HMOE_CHECK(int(c.size()) > std::max({ck, ca, cr, cs}), "ptxas table '", path, "' line ", n, ": too few columns");
    PtxasKernel k;
    k.kernel = c[size_t(ck)];
    k.arch = c[size_t(ca)];
    try {
      k.resources.registers = std::stoi(c[size_t(cr)]);
      k.resources.static_smem = cs >= 0 ? std::stoul(c[size_t(cs)]) : 0;
    } catch (const std::exception&) {
      HMOE_CHECK(false, "ptxas table '", path, "' line ", n, ": registers / smem_bytes are not numbers");
    }
    rows.push_back(std::move(k));
  }
  return rows;
}

namespace {
// "ns::name<args>" from "void ns::name<args>(params)": the name without return type and
// parameter list.
std::string bare_name(const std::string& s) {
  std::string n = s;
  if (n.rfind("void ", 0) == 0) n = n.substr(5);
  int depth = 0;
  for (size_t i = 0; i < n.size(); ++i) {
    if (n[i] == '<') ++depth;
    if (n[i] == '>') --depth;
    if (n[i] == '(' && depth == 0 && n.compare(i, 21, "(anonymous namespace)") != 0) return n.substr(0, i);
  }
  return n;
}
}  // namespace

const PtxasKernel* find_ptxas_kernel(const std::vector<PtxasKernel>& table, const std::string& function,
                                     const std::string& arch) {
  const std::string want = bare_name(function);
  for (const PtxasKernel& k : table)
    if (k.arch == arch && bare_name(k.kernel) == want) return &k;
  return nullptr;
}

}  // namespace hmoe::cuda

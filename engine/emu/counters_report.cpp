// Access counters' report: sites symbolized to function and source line
// (llvm-symbolizer over each site's module and offset) and the per-kernel tables.
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>

#include "engine/emu/counters_internal.h"

namespace hmoe::emu::counters {
namespace {

// "name<args>" from "void ns::(anonymous namespace)::name<args>(params) const".
std::string short_function(std::string fn) {
  if (size_t close = fn.rfind(')'); close != std::string::npos) {  // drop the parameter list
    int depth = 0;
    for (size_t i = close + 1; i-- > 0;) {
      depth += fn[i] == ')' ? 1 : fn[i] == '(' ? -1 : 0;
      if (depth == 0) {
        fn.resize(i);
        break;
      }
    }
  }
  int depth = 0;
  size_t cut = 0;  // past the last "::" or space outside template arguments
  for (size_t i = 0; i < fn.size(); ++i) {
    depth += fn[i] == '<' || fn[i] == '(' ? 1 : fn[i] == '>' || fn[i] == ')' ? -1 : 0;
    if (depth == 0 && (fn[i] == ' ' || (fn[i] == ':' && i + 1 < fn.size() && fn[i + 1] == ':'))) cut = i + 1;
  }
  fn = fn.substr(cut < fn.size() && fn[cut] == ':' ? cut + 1 : cut);
  if (fn.size() > 48) fn = fn.substr(0, 45) + "...";
  return fn;
}

// "ops/moe/cuda/x.cuh:12 fn" from "/any/root/ops/moe/cuda/x.cuh:12:5" and fn.
std::string short_location(const std::string& fn, std::string file) {
  size_t from = std::string::npos;
  for (const char* room : {"/engine/", "/ops/", "/tests/", "/models/", "/tools/", "/bench/"})
    from = std::min(from, file.find(room));
  if (from != std::string::npos) file = file.substr(from + 1);
  if (size_t c = file.rfind(':'); c != std::string::npos && file.find(':') != c) file.resize(c);  // the column
  return file + " " + short_function(fn);
}

struct Frame {
  std::string function, file;  // as the symbolizer prints them
};

// The module holding pc and pc's offset in it; empty when unknown.
std::string module_of(uintptr_t pc, uintptr_t& offset) {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(pc), &info) == 0 || info.dli_fname == nullptr) return {};
  offset = pc - uintptr_t(info.dli_fbase);
  return info.dli_fname;
}

// Runs the symbolizer (llvm-symbolizer, or $HMOE_SYMBOLIZER) once per module over the
// offsets; keeps each answer's frames, innermost inlined first.
void run_symbolizer(std::map<std::string, std::map<uintptr_t, std::vector<Frame>>>& by_module) {
  const char* env = std::getenv("HMOE_SYMBOLIZER");
  const std::string tool = env && *env ? env : "llvm-symbolizer";
  for (auto& [module, frames] : by_module) {
    std::ostringstream cmd;
    cmd << tool << " --obj='" << module << "'";
    for (const auto& f : frames) cmd << " 0x" << std::hex << f.first;
    cmd << " 2>/dev/null";
    FILE* pipe = popen(cmd.str().c_str(), "r");
    if (pipe == nullptr) continue;
    std::vector<std::string> lines;
    char buf[4096];
    while (std::fgets(buf, sizeof buf, pipe)) {
      std::string l(buf);
      while (!l.empty() && (l.back() == '\n' || l.back() == '\r')) l.pop_back();
      lines.push_back(l);
    }
    pclose(pipe);
    // One block per address: (function, file:line:col) pairs, then a blank line.
    size_t i = 0;
    for (auto& f : frames) {
      for (; i + 1 < lines.size() && !lines[i].empty(); i += 2) f.second.push_back(Frame{lines[i], lines[i + 1]});
      while (i < lines.size() && !lines[i].empty()) ++i;
      ++i;
    }
  }
}

// The access's source line: the innermost frame outside the emulator (whose helpers such
// as whole_load make the access for kernel code), and the line that called it.
std::string site_text(const std::vector<Frame>& frames) {
  size_t i = 0;
  auto in_emulator = [](const std::string& file) {  // engine/emu/, not tests/engine/emu/
    const size_t p = file.find("/engine/emu/");
    return p != std::string::npos && !(p >= 6 && file.compare(p - 6, 6, "/tests") == 0);
  };
  while (i < frames.size() && in_emulator(frames[i].file)) ++i;
  if (i == frames.size() || frames[i].file.find("??") != std::string::npos) return {};
  std::string text = short_location(frames[i].function, frames[i].file);
  if (i + 1 < frames.size() && frames[i + 1].file.find("??") == std::string::npos) {
    const std::string caller = short_location(frames[i + 1].function, frames[i + 1].file);
    text += " <- " + caller.substr(0, caller.find(' '));
  }
  return text;
}

void symbolize(std::vector<KernelCounts>& kernels) {
  std::map<std::string, std::map<uintptr_t, std::vector<Frame>>> by_module;  // module -> offset -> frames
  auto add = [&](uintptr_t pc) {
    uintptr_t off = 0;
    if (std::string m = module_of(pc, off); !m.empty()) by_module[m][off];
  };
  for (const KernelCounts& k : kernels) {
    add(uintptr_t(k.function));
    for (const SiteCounts& s : k.sites)
      if (s.location.empty()) add(s.pc - 1);  // the call instruction, not the one after it
  }
  run_symbolizer(by_module);
  auto frames = [&](uintptr_t pc, std::string& module, uintptr_t& off) -> const std::vector<Frame>& {
    module = module_of(pc, off);
    return by_module[module][off];
  };
  for (KernelCounts& k : kernels) {
    std::string m;
    uintptr_t off = 0;
    const std::vector<Frame>& f = frames(uintptr_t(k.function), m, off);
    k.function_name = f.empty() || f[0].function == "??" ? k.name : f[0].function;
    for (SiteCounts& s : k.sites) {
      if (!s.location.empty()) continue;  // a modelled site, named when counted
      s.location = site_text(frames(s.pc - 1, m, off));
      if (s.location.empty()) {
        char raw[64];
        std::snprintf(raw, sizeof raw, "+0x%zx", size_t(off));
        s.location = m.substr(m.rfind('/') + 1) + raw;
      }
    }
  }
}

std::string kind_line(const char* what, const Totals& t, bool shared) {
  char buf[256];
  if (t.requests == 0) return {};
  if (shared) {
    std::snprintf(buf, sizeof buf,
                  "  %-13s %10llu requests %6.2f wavefronts/request (ideal %.2f), %llu bank-conflict wavefronts\n",
                  what, static_cast<unsigned long long>(t.requests), t.wavefronts_per_request(),
                  t.requests ? double(t.ideal) / double(t.requests) : 0.0,
                  static_cast<unsigned long long>(t.conflicts()));
  } else {
    std::snprintf(buf, sizeof buf, "  %-13s %10llu requests %6.2f sectors/request, efficiency %5.1f%%\n", what,
                  static_cast<unsigned long long>(t.requests), t.sectors_per_request(), 100 * t.efficiency());
  }
  return buf;
}

}  // namespace

std::vector<KernelCounts> snapshot(bool symbolize_sites) {
  std::vector<KernelCounts> k = raw_snapshot();
  for (KernelCounts& x : k)
    std::sort(x.sites.begin(), x.sites.end(), [](const SiteCounts& a, const SiteCounts& b) {
      return std::make_tuple(a.shared, a.pc, a.store) < std::make_tuple(b.shared, b.pc, b.store);
    });
  if (symbolize_sites) symbolize(k);
  return k;
}

std::string report(const std::vector<KernelCounts>& kernels, const std::string& filter) {
  std::ostringstream os;
  char buf[512];
  for (const KernelCounts& k : kernels) {
    if (!filter.empty() && k.name.find(filter) == std::string::npos) continue;
    os << "kernel " << k.name;
    if (!k.function_name.empty() && k.function_name != k.name) os << " [" << k.function_name << "]";
    os << ": " << k.launches << " launch(es), " << k.unique_sectors << " distinct global sectors ("
       << (k.unique_sectors * 32) / 1024 << " KiB); block of " << k.block_threads << " threads, " << k.static_smem
       << " B static + " << k.dynamic_smem << " B dynamic shared memory\n";
    os << kind_line("global loads", totals(k, false, false), false)
       << kind_line("global stores", totals(k, false, true), false)
       << kind_line("shared loads", totals(k, true, false), true)
       << kind_line("shared stores", totals(k, true, true), true);
    std::snprintf(buf, sizeof buf, "    %-6s %-5s %5s %10s %9s %6s %9s %9s  %s\n", "space", "op", "bytes", "requests",
                  "sect/req", "eff%", "wave/req", "confl/req", "site");
    os << buf;
    for (const SiteCounts& s : k.sites) {
      const double req = double(std::max<uint64_t>(s.requests, 1));
      if (s.shared) {
        std::snprintf(buf, sizeof buf, "    %-6s %-5s %5u %10llu %9s %6s %9.2f %9.2f  %s\n", "shared",
                      s.store ? "store" : "load", s.width, static_cast<unsigned long long>(s.requests), "-", "-",
                      double(s.wavefronts) / req, double(s.wavefronts - s.ideal) / req, s.location.c_str());
      } else {
        std::snprintf(buf, sizeof buf, "    %-6s %-5s %5u %10llu %9.2f %6.1f %9s %9s  %s\n", "global",
                      s.store ? "store" : "load", s.width, static_cast<unsigned long long>(s.requests),
                      double(s.sectors) / req, s.sectors ? 100.0 * double(s.bytes) / (32.0 * double(s.sectors)) : 0.0,
                      "-", "-", s.location.c_str());
      }
      os << buf;
    }
  }
  return os.str();
}

}  // namespace hmoe::emu::counters

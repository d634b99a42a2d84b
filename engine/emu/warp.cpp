// Warp collectives: the per-warp rendezvous keyed by mask, the shuffle / vote /
// reduce / match rules of the CUDA Programming Guide, and mismatch diagnosis.
#include <bit>
#include <cstring>
#include <sstream>

#include "engine/emu/counters_internal.h"
#include "engine/emu/runtime.h"
#include "engine/emu/check.h"

namespace hmoe::emu::detail {
namespace {

const char* kind_name(ValueKind k) {
  switch (k) {
    case ValueKind::none: return "";
    case ValueKind::i32: return "int";
    case ValueKind::u32: return "unsigned";
    case ValueKind::i64: return "long long";
    case ValueKind::u64: return "unsigned long long";
    case ValueKind::f32: return "float";
    case ValueKind::f64: return "double";
    case ValueKind::f16: return "__half";
    case ValueKind::bf16: return "__nv_bfloat16";
    case ValueKind::other: return "other";
  }
  return "?";
}

std::string lanes_text(unsigned m) {
  std::ostringstream os;
  os << '{';
  bool first = true;
  for (int i = 0; i < 32;) {
    if (!(m >> i & 1u)) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < 32 && (m >> (j + 1) & 1u)) ++j;
    os << (first ? "" : ",") << i;
    if (j > i) os << '-' << j;
    first = false;
    i = j + 1;
  }
  os << '}';
  return os.str();
}

bool is_shuffle(WarpOp op) {
  return op == WarpOp::shfl || op == WarpOp::shfl_up || op == WarpOp::shfl_down || op == WarpOp::shfl_xor;
}

// Every field the lanes of one collective must agree on, besides mask and op.
bool agrees(const WarpCall& a, const WarpCall& b) {
  return a.kind == b.kind && a.size == b.size && a.width == b.width && a.complete == b.complete &&
         std::memcmp(a.shared, b.shared, sizeof a.shared) == 0;
}

std::string call_text(const WarpCall& c) {
  std::ostringstream os;
  os << c.name << "(mask=" << hex_mask(c.mask);
  if (is_shuffle(c.op)) os << ", width=" << c.width;
  if (c.kind != ValueKind::none && c.kind != ValueKind::other) os << ", " << kind_name(c.kind);
  // WMMA's agreed words are its pointer and ldm (ldmatrix / mma.sync: form and site).
  if (c.op == WarpOp::custom && std::strncmp(c.name, "wmma::", 6) == 0)
    os << ", ptr=0x" << std::hex << c.shared[0] << std::dec << ", ldm=" << c.shared[1];
  os << ") at " << c.loc.file_name() << ':' << c.loc.line();
  return os.str();
}

uint64_t poison_bits(unsigned size) { return size >= 8 ? ~uint64_t(0) : (uint64_t(1) << (8 * size)) - 1; }

// Computes every arrived lane's result once the last lane is in.
void compute(WarpSlot& s) {
  const WarpCall& c = s.call;
  const unsigned arrived = s.arrived;
  const uint64_t vmask = poison_bits(c.size);
  if (is_shuffle(c.op)) {
    const unsigned w = unsigned(c.width);
    for (unsigned lane = 0; lane < 32; ++lane) {
      if (!(arrived >> lane & 1u)) continue;
      const unsigned seg = lane & ~(w - 1), local = lane & (w - 1);
      const uint64_t arg = s.arg[lane];
      unsigned src = lane;
      switch (c.op) {
        case WarpOp::shfl: src = seg + unsigned(arg & (w - 1)); break;
        case WarpOp::shfl_up: src = local >= arg ? lane - unsigned(arg) : lane; break;
        case WarpOp::shfl_down: src = local + arg < w ? lane + unsigned(arg) : lane; break;
        default:  // shfl_xor: lanes past the end of their segment keep their own value
          src = lane ^ unsigned(arg & 31u);
          if (src >= seg + w) src = lane;
          break;
      }
      // A source lane that did not take part (outside the mask, or exited) has no
      // defined value; poison it so that the result shows.
      s.result[lane] = (arrived >> src & 1u) ? s.value[src] : poison_bits(c.size);
    }
    return;
  }
  unsigned ballot = 0;
  for (unsigned lane = 0; lane < 32; ++lane)
    if ((arrived >> lane & 1u) && s.value[lane] != 0) ballot |= 1u << lane;
  const bool is_signed = c.kind == ValueKind::i32 || c.kind == ValueKind::i64;
  uint64_t acc = 0;
  bool first = true, all_equal = true;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(arrived >> lane & 1u)) continue;
    const uint64_t v = s.value[lane] & vmask;
    const int64_t sv = c.size == 4 ? int64_t(int32_t(uint32_t(v))) : int64_t(v);
    const int64_t sacc = c.size == 4 ? int64_t(int32_t(uint32_t(acc))) : int64_t(acc);
    if (first) {
      acc = v;
      first = false;
      continue;
    }
    all_equal = all_equal && v == acc;
    switch (c.op) {
      case WarpOp::reduce_add: acc = (acc + v) & vmask; break;
      case WarpOp::reduce_min: acc = (is_signed ? sv < sacc : v < acc) ? v : acc; break;
      case WarpOp::reduce_max: acc = (is_signed ? sv > sacc : v > acc) ? v : acc; break;
      case WarpOp::reduce_and: acc &= v; break;
      case WarpOp::reduce_or: acc |= v; break;
      case WarpOp::reduce_xor: acc ^= v; break;
      default: break;
    }
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(arrived >> lane & 1u)) continue;
    switch (c.op) {
      case WarpOp::ballot: s.result[lane] = ballot; break;
      case WarpOp::any: s.result[lane] = ballot != 0; break;
      case WarpOp::all: s.result[lane] = ballot == arrived; break;
      case WarpOp::match_any: {
        unsigned m = 0;
        for (unsigned o = 0; o < 32; ++o)
          if ((arrived >> o & 1u) && ((s.value[o] ^ s.value[lane]) & vmask) == 0) m |= 1u << o;
        s.result[lane] = m;
        break;
      }
      case WarpOp::match_all: s.result[lane] = all_equal ? arrived : 0; break;
      case WarpOp::syncwarp: s.result[lane] = 0; break;
      default: s.result[lane] = acc; break;  // reductions
    }
  }
}

void try_complete(BlockState& b, unsigned warp, size_t si) {
  WarpState& w = b.warps[warp];
  WarpSlot& s = w.slots[si];
  const unsigned required = s.call.mask & w.live;
  if ((s.arrived & required) != required) return;
  if (s.call.full_warp && s.arrived != ~0u) {
    set_error(b, std::string(s.call.name) + " at " + s.call.loc.file_name() + ":" + std::to_string(s.call.loc.line()) +
                     " in warp " + std::to_string(warp) + ": lanes " + lanes_text(~s.arrived) +
                     " exited before joining; WMMA, ldmatrix and mma.sync need all 32 lanes");
    return;
  }
  // Lanes named in the mask that went into a different collective and then exited
  // never meant to join this one: the lanes disagree on mask or operation.
  if (const unsigned bad = s.call.mask & ~s.arrived & ~w.live & s.skipped) {
    set_error(b, "lanes disagree on a warp collective: lanes " + lanes_text(s.arrived) + " of warp " +
                     std::to_string(warp) + " call " + call_text(s.call) + " but lanes " + lanes_text(bad) +
                     " named in its mask called " + call_text(s.skipped_to) + " instead and exited");
    return;
  }
  const void* anchor = &w.tsan_sync[si % 32];
  if (s.call.op == WarpOp::custom) {
    tsan_acquire(anchor);
    const CountersPause pause;  // the completion's memory traffic is not this lane's
    s.call.complete(s.value, s.call.shared, s.arrived);
    tsan_release(anchor);
  } else {
    compute(s);
  }
  s.done = true;
  s.readers = unsigned(std::popcount(s.arrived));
  for (unsigned lane = 0; lane < 32; ++lane)
    if (s.arrived >> lane & 1u) mark_ready(b, warp * 32 + lane);
}

}  // namespace

std::string warp_slot_text(const WarpSlot& s) { return call_text(s.call) + " with lanes " + lanes_text(s.arrived); }

unsigned live_lanes() {
  ThreadState& t = self();
  return t.block->warps[t.warp].live;
}

uint64_t warp_collective(const WarpCall& call) {
  ThreadState& t = self();
  BlockState& b = *t.block;
  WarpState& w = b.warps[t.warp];
  const unsigned bit = 1u << t.lane;
  // Built only on the error paths: collectives are hot.
  auto who = [&] {
    return "lane " + std::to_string(t.lane) + " of warp " + std::to_string(t.warp) + " (thread " +
           thread_pos(b, t.linear) + ")";
  };
  if (!(call.mask & bit))
    fail(b, who() + " calls " + call_text(call) + " with a mask that does not include the lane itself");
  if (call.width < 1 || call.width > 32 || !std::has_single_bit(unsigned(call.width)))
    fail(b, who() + " calls " + call_text(call) + ": width must be a power of two from 1 to 32");
  if (call.full_warp && w.live != ~0u)
    fail(b, who() + " calls " + call_text(call) + " but lanes " + lanes_text(~w.live) +
                " of its warp do not exist or have exited; WMMA, ldmatrix and mma.sync need all 32 lanes");

  // Join the pending collective with the same mask and operation that still waits
  // for this lane; lanes that take a different path (different mask or operation)
  // start their own, and if they never meet, the deadlock report names both.
  size_t si = w.slots.size();
  for (size_t i = 0; i < w.slots.size(); ++i) {
    WarpSlot& s = w.slots[i];
    if (!s.used || s.done || s.call.mask != call.mask || s.call.op != call.op || (s.arrived & bit)) continue;
    if (!agrees(s.call, call))
      fail(b, "lanes disagree on a warp collective: " + who() + " calls " + call_text(call) + " while lanes " +
                  lanes_text(s.arrived) + " wait in " + call_text(s.call));
    si = i;
    break;
  }
  if (si == w.slots.size()) {
    for (si = 0; si < w.slots.size() && w.slots[si].used; ++si) {
    }
    if (si == w.slots.size()) w.slots.emplace_back();
    WarpSlot& s = w.slots[si];
    s.used = true;
    s.done = false;
    s.call = call;
    s.arrived = 0;
    s.skipped = 0;
  }
  for (size_t i = 0; i < w.slots.size(); ++i) {
    WarpSlot& o = w.slots[i];
    if (i == si || !o.used || o.done || !(o.call.mask & bit) || (o.arrived & bit)) continue;
    if (o.skipped == 0) o.skipped_to = call;
    o.skipped |= bit;
  }
  WarpSlot& s = w.slots[si];
  s.value[t.lane] = call.value;
  s.arg[t.lane] = call.arg;
  s.arrived |= bit;
  t.status = ThreadStatus::at_warp;
  t.slot = int(si);
  t.what = call.name;
  t.file = call.loc.file_name();
  t.line = int(call.loc.line());
  const void* anchor = &w.tsan_sync[si % 32];
  tsan_release(anchor);
  try_complete(b, t.warp, si);
  if (b.error) throw AbortBlock{};
  wait_here(t);
  tsan_acquire(anchor);
  WarpSlot& done = w.slots[si];  // the vector may have grown while this lane waited
  const uint64_t r = done.result[t.lane];
  if (--done.readers == 0) done.used = false;
  return r;
}

void warp_lane_exited(BlockState& b, ThreadState& t) {
  WarpState& w = b.warps[t.warp];
  for (size_t i = 0; i < w.slots.size() && !b.error; ++i) {
    const WarpSlot& s = w.slots[i];
    if (s.used && !s.done && (s.call.mask >> t.lane & 1u)) try_complete(b, t.warp, i);
  }
}

std::string describe_deadlock(const BlockState& b) {
  std::ostringstream os;
  // A warp with two pending collectives over overlapping masks: its lanes disagree
  // on mask or operation (each group waits for lanes that sit in the other).
  for (unsigned wi = 0; wi < b.num_warps; ++wi) {
    const WarpState& w = b.warps[wi];
    for (size_t i = 0; i < w.slots.size(); ++i) {
      const WarpSlot& a = w.slots[i];
      if (!a.used || a.done) continue;
      for (size_t j = i + 1; j < w.slots.size(); ++j) {
        const WarpSlot& c = w.slots[j];
        if (!c.used || c.done || !(a.call.mask & c.call.mask)) continue;
        os << "deadlock: lanes of warp " << wi << " disagree on a warp collective's mask or operation: lanes "
           << lanes_text(a.arrived) << " wait in " << call_text(a.call) << ", lanes " << lanes_text(c.arrived)
           << " wait in " << call_text(c.call);
        for (const WarpSlot* x : {&a, &c})
          if (x->skipped & ~x->arrived)
            os << "; while " << x->call.name << " waited, lanes " << lanes_text(x->skipped & ~x->arrived)
               << " named in its mask called " << call_text(x->skipped_to);
        return os.str();
      }
    }
  }
  for (unsigned wi = 0; wi < b.num_warps; ++wi) {
    const WarpState& w = b.warps[wi];
    for (const WarpSlot& s : w.slots) {
      if (!s.used || s.done) continue;
      os << "deadlock: " << call_text(s.call) << " in warp " << wi << " waits for lanes "
         << lanes_text(s.call.mask & w.live & ~s.arrived) << ", which are blocked elsewhere";
      return os.str();
    }
  }
  os << "deadlock: no thread of the block can run";
  return os.str();
}

}  // namespace hmoe::emu::detail

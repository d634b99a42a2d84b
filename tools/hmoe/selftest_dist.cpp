// `hmoe selftest --dist` (run as `mpirun -np W hmoe selftest --dist`): the communicator's
// collectives on this rank's cuda device and on the CPU, then the expert-parallel MoE and
// HyperMoE layer on the device, each against a serial reference every rank computes itself
// from deterministic inputs. Collectives move and sum small integers (engine/dist/reference.h),
// so they must be exact (bound 0); the layer runs in f32 on the device against the whole
// layer in f64 on the CPU on the global batch (bound 1e-5, ||got - want|| / ||want||).
// Rank 0 prints the table, each check reduced over the ranks: the largest error, the bytes
// one call moves on the rank that moves most (as the profiler counts them), GB/s as those
// bytes over the slowest rank's time per call, and the lowest rank where it failed.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/reference.h"
#include "hmoe.h"
#include "models/hypermoe/ep_pair.h"
#include "tools/hmoe/selftest.h"
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
#include "engine/cuda/allocator.h"
#include "engine/cuda/runtime.h"
#endif

namespace hmoe::tools {
namespace {

namespace ref = dist::reference;
using dist::Communicator;
using dist::ReduceOp;

// One row of the table: this rank's measurements (reduced over the ranks before printing).
struct Check {
  std::string name, device;
  double bytes = 0;    // per call on this rank (0: not a transfer)
  double error = 0;    // largest over the comparisons
  double bound = 0;    // error <= bound passes
  double seconds = 0;  // per call (0: not timed)
  std::string worst;   // which comparison gave error
};

// Waits for the work queued on d's current stream (nccl collectives are asynchronous).
void drain(Device d) {
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
  if (d.is_cuda()) cuda::current_stream(d.index).synchronize();
#else
  (void)d;
#endif
}

// The largest |got - want|; +inf for another number of elements or a NaN.
double max_error(const Tensor& got, const std::vector<double>& want) {
  const std::vector<double> g = got.to(Device::cpu()).to_vector();
  if (g.size() != want.size()) return INFINITY;
  double e = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double d = std::abs(g[i] - want[i]);
    e = std::isnan(d) ? INFINITY : std::max(e, d);
  }
  return e;
}

// Seconds per call of f over reps calls, after one untimed call, the device drained.
double time_calls(int reps, Device d, const std::function<void()>& f) {
  f();
  drain(d);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  drain(d);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / reps;
}

// The checks of one communicator on one device; names prefixed with the group's.
class CollectiveChecks {
 public:
  CollectiveChecks(Communicator& c, Device dev, std::string prefix, int reps, std::vector<Check>& out)
      : c_(c), dev_(dev), prefix_(std::move(prefix)), reps_(reps), out_(out) {}

  void all_reduce(DType dt, ReduceOp op, int64_t n, int64_t seed) {
    Tensor t = make(ref::values(c_.rank(), n, dt, seed), {n}, dt);
    c_.all_reduce(t, op);
    Tensor scratch = t.clone();  // timed calls overwrite it (sums grow; nothing reads them)
    add("all_reduce " + std::string(op == ReduceOp::sum ? "sum " : "max ") + std::string(dtype_name(dt)),
        double(t.nbytes()), max_error(t, ref::all_reduce(c_.size(), n, dt, seed, op)),
        time_calls(reps_, dev_, [&] { c_.all_reduce(scratch, op); }));
  }

  void all_gather(DType dt, int64_t n, int64_t seed) {
    const Tensor in = make(ref::values(c_.rank(), n, dt, seed), {n}, dt);
    const Tensor out = c_.all_gather(in);
    add("all_gather " + std::string(dtype_name(dt)), double(in.nbytes() + out.nbytes()),
        max_error(out, ref::all_gather(c_.size(), n, dt, seed)),
        time_calls(reps_, dev_, [&] { c_.all_gather(in, out); }));
  }

  void broadcast(DType dt, int64_t n, int root, int64_t seed) {
    const Tensor t = make(ref::values(c_.rank(), n, dt, seed), {n}, dt);
    c_.broadcast(t, root);
    const double err = max_error(t, ref::values(root, n, dt, seed));
    add("broadcast from " + std::to_string(root) + " " + std::string(dtype_name(dt)), double(t.nbytes()), err,
        time_calls(reps_, dev_, [&] { c_.broadcast(t, root); }));
  }

  // all_to_all_v of case k, and the reverse exchange, which must give the input back.
  void all_to_all_v(const std::string& what, const ref::AllToAllCase& k) {
    const int me = c_.rank(), size = c_.size();
    const std::vector<int64_t> send_rows = ref::rows(k, me, size, false), recv_rows = ref::rows(k, me, size, true);
    const std::vector<double> send_v = ref::buffer(k, me, size, false);
    const Tensor send = make(send_v, ref::buffer_shape(k, send_rows), k.dtype);
    const Tensor recv = c_.all_to_all_v(send, send_rows, recv_rows, k.layout());
    const Tensor back = c_.all_to_all_v(recv, recv_rows, send_rows, {k.chunks, k.recv_chunk_major, k.send_chunk_major});
    const double err = std::max(max_error(recv, ref::buffer(k, me, size, true)), max_error(back, send_v));
    add("all_to_all_v " + what, double(send.nbytes() + recv.nbytes()), err,
        time_calls(reps_, dev_, [&] { c_.all_to_all_v(send, send_rows, recv, recv_rows, k.layout()); }));
  }

 private:
  Tensor make(const std::vector<double>& v, const Shape& shape, DType dt) const {
    return from_vector(v, shape, {dt, dev_});
  }
  void add(const std::string& name, double bytes, double error, double seconds) {
    out_.push_back({prefix_ + name, dev_.is_cpu() ? "cpu" : "cuda", bytes, error, 0.0, seconds, ""});
  }

  Communicator& c_;
  Device dev_;
  std::string prefix_;
  int reps_;
  std::vector<Check>& out_;
};

// Every collective on c and dev, with the count patterns of the communicator's tests.
void check_collectives(Communicator& c, Device dev, const std::string& prefix, bool quick, int64_t seed,
                       std::vector<Check>& out) {
  CollectiveChecks k(c, dev, prefix, quick ? 2 : 5, out);
  const int64_t n = quick ? 4099 : (int64_t(1) << 24) + 3;  // odd: no size is a multiple of anything
  k.all_reduce(DType::f32, ReduceOp::sum, n, seed);
  k.all_reduce(DType::bf16, ReduceOp::sum, n, seed + 1);
  k.all_reduce(DType::f32, ReduceOp::max, n, seed + 2);
  k.all_gather(DType::f32, n / c.size(), seed + 3);
  k.broadcast(DType::f32, n, c.size() - 1, seed + 4);
  using ref::Pattern;
  const Shape row{quick ? int64_t(8) : int64_t(256)};
  k.all_to_all_v("uneven", {Pattern::uneven, 1, false, false, DType::f32, row, seed});
  k.all_to_all_v("empty", {Pattern::empty, 1, false, false, DType::f32, row, seed});
  k.all_to_all_v("first rank silent", {Pattern::silent_first_rank, 1, false, false, DType::f32, row, seed});
  k.all_to_all_v("all to rank 0", {Pattern::all_to_rank_0, 1, false, false, DType::bf16, row, seed});
  k.all_to_all_v("large", {Pattern::large, 1, false, false, DType::bf16, row, seed});
  // The expert-parallel dispatch's layout: 3 chunks, sent peer-major, received chunk-major.
  k.all_to_all_v("3 chunks", {Pattern::uneven, 3, false, true, DType::f32, row, seed});
}

// The expert-parallel layer's sizes.
model::ModelConfig layer_config(bool quick, int64_t k) {
  model::ModelConfig c;
  c.n_layer = 2;
  c.d_model = quick ? 16 : 128;
  c.d_ff = quick ? 24 : 256;
  c.n_experts = 8;
  c.top_k = k;
  c.expert_emb_dim = quick ? 6 : 64;
  c.selection_hidden = quick ? 7 : 64;
  c.hyper_in = quick ? 5 : 32;
  c.hyper_hidden = quick ? 9 : 64;
  c.layer_emb_dim = 3;
  c.adapter_rank = quick ? 4 : 16;
  c.aux_cv_coef = 0.1;
  c.aux_lb_coef = 0.05;
  c.aux_z_coef = 0.01;
  return c;
}

struct LayerCase {
  bool hyper;
  int64_t k, ep;
  bool forced;  // every token to expert 0: the other ranks' experts receive nothing
};

// The layer on dev with its experts over ep ranks, on this rank's rows of the global batch,
// against the whole layer in f64 on the CPU on the whole batch: output, aux loss, dx and
// every parameter gradient (averaged over the ranks as training does).
Check check_layer(const std::shared_ptr<Communicator>& world, Device dev, const LayerCase& cs, bool quick,
                  uint64_t seed) {
  const int W = world->size(), r = world->rank();
  const model::ModelConfig cfg = layer_config(quick, cs.k);
  const nn::Parallel par = nn::Parallel::make(world, cs.ep);
  const auto whole = model::make_ffn_layer(cfg, cs.hyper, {}, seed);
  const auto mine = model::make_ffn_layer(cfg, cs.hyper, par, seed);
  model::set_random_parameters(*whole, *mine, cs.forced, seed + 1);
  whole->to(DType::f64);  // from the f32 values the device layer holds
  mine->to(dev);

  const int64_t T = quick ? 8 : 64, d = cfg.d_model;  // tokens per rank
  Generator g(seed + 2);
  Tensor x_all = uniform({W * T, d}, g, -1, 1);
  if (cs.forced) x_all.narrow(1, 0, 1).copy_(uniform({W * T, 1}, g, 0.5, 1.5));
  const Tensor up = uniform({W * T, d}, g, -1, 1);
  const Tensor x_ref = x_all.to(DType::f64).set_requires_grad(true);
  const Tensor x = x_all.narrow(0, r * T, T).to(dev).set_requires_grad(true);

  // The reference's loss is the mean over the whole batch plus the aux losses; each rank's
  // the mean over its rows plus the aux losses (of the whole batch): averaged over the
  // ranks, the reference's, and so are the gradients.
  Generator noise_ref(seed + 3), noise(seed + 3);
  model::FfnStats st_ref, st;
  const Tensor y_ref = whole->forward(x_ref, st_ref, noise_ref);
  (sum(y_ref * up.to(DType::f64)) / double(W * T) + st_ref.aux_loss).backward();
  const Tensor y = mine->forward(x, st, noise);
  (sum(y * up.narrow(0, r * T, T).to(dev)) / double(T) + st.aux_loss).backward();
  nn::average_gradients(*mine, par);

  Check c{std::string(cs.hyper ? "hypermoe" : "moe") + " k " + std::to_string(cs.k) + " ep " + std::to_string(cs.ep) +
              (cs.ep < W ? " x dp " + std::to_string(W / cs.ep) : "") + (cs.forced ? " all to expert 0" : ""),
          dev.is_cpu() ? "cpu" : "cuda",
          0,
          0,
          1e-5,
          0,
          ""};
  const auto compare = [&](const Tensor& got, const Tensor& want, const std::string& what) {
    const double e = rel_error(got.to(Device::cpu()).to(DType::f64), want);
    if (!(e <= c.error)) {  // NaN counts as worst
      c.error = e;
      c.worst = what;
    }
  };
  compare(y.detach(), y_ref.detach().narrow(0, r * T, T), "y");
  compare(st.aux_loss.detach(), st_ref.aux_loss.detach(), "aux loss");
  compare(x.grad() / double(W), x_ref.grad().narrow(0, r * T, T), "dx");
  const std::map<std::string, nn::RowShard> shards = mine->parameter_shards();
  const auto ref_params = whole->named_parameters(), params = mine->named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    const Tensor want = ref_params[i].second.grad();
    const auto sh = shards.find(name);
    const Tensor want_mine = sh == shards.end() ? want : want.narrow(0, sh->second.first, p.size(0));
    // An idle expert's gradient is zero, whether or not autograd wrote it.
    compare(p.grad().defined() ? p.grad() : zeros(p.shape()), want_mine, name + " gradient");
  }
  return c;
}

void check_layers(const std::shared_ptr<Communicator>& world, Device dev, bool quick, uint64_t seed,
                  std::vector<Check>& out) {
  std::vector<int64_t> eps{world->size()};
  if (world->size() == 4) eps.push_back(2);  // ep 2 x dp 2
  for (int64_t ep : eps)
    for (bool hyper : {false, true})
      for (int64_t k : {1, 2})
        for (bool forced : {false, true}) out.push_back(check_layer(world, dev, {hyper, k, ep, forced}, quick, seed));
}

// Reduces each check over the ranks (the largest error, bytes and time per call; the
// lowest failing rank) and prints the table on rank 0. Returns the number of failed
// checks (the same on every rank).
int report(Communicator& world, const std::vector<Check>& checks) {
  const size_t n = checks.size();
  std::vector<double> mine(4 * n);  // errors, bytes, seconds, size - the rank where it failed (else 0)
  for (size_t i = 0; i < n; ++i) {
    const Check& c = checks[i];
    mine[i] = std::isnan(c.error) ? INFINITY : c.error;
    mine[n + i] = c.bytes;
    mine[2 * n + i] = c.seconds;
    mine[3 * n + i] = c.error <= c.bound ? 0.0 : double(world.size() - world.rank());
  }
  Tensor all = from_vector(mine, {int64_t(4 * n)}, {DType::f64});
  world.all_reduce(all, ReduceOp::max);
  const std::vector<double> v = all.to_vector();
  const bool print = world.rank() == 0;
  if (print)
    std::printf("%-44s %-6s %10s %10s %8s %9s  %s\n", "check", "device", "bytes", "max error", "bound", "GB/s",
                "result");
  int failures = 0;
  for (size_t i = 0; i < n; ++i) {
    const Check& c = checks[i];
    const bool ok = v[3 * n + i] == 0;
    failures += ok ? 0 : 1;
    // Each failing rank says where (rank 0's table names the lowest one).
    if (!(c.error <= c.bound))
      std::fprintf(stderr, "hmoe selftest --dist: rank %d: %s on %s: error %.3e%s%s\n", world.rank(), c.name.c_str(),
                   c.device.c_str(), c.error, c.worst.empty() ? "" : " in ", c.worst.c_str());
    if (!print) continue;
    char bytes[32] = "-", gbps[32] = "-";
    if (v[n + i] > 0) std::snprintf(bytes, sizeof bytes, "%.0f", v[n + i]);
    if (v[n + i] > 0 && v[2 * n + i] > 0) std::snprintf(gbps, sizeof gbps, "%.3f", v[n + i] / v[2 * n + i] / 1e9);
    std::printf("%-44s %-6s %10s %10.2e %8.1e %9s  %s", c.name.c_str(), c.device.c_str(), bytes, v[i], c.bound, gbps,
                ok ? "pass" : "FAIL");
    if (!ok) std::printf(" (rank %d)", world.size() - int(v[3 * n + i]));
    std::printf("\n");
  }
  if (print) std::printf("%zu of %zu checks passed\n", n - size_t(failures), n);
  return failures;
}

}  // namespace

int run_selftest_dist(const SelftestOptions& o) {
  dist::Options dopts;
  dopts.backend = dist::parse_backend(o.backend);
  dopts.timeout_s = 300;  // a rank that never joins ends the job (exit code 124) instead of a hang
  const dist::Environment env(dopts);
  Communicator& world = env.world();
  try {
    // nccl takes its rank's device (local rank modulo the devices); the others any.
    const Device dev = Device::cuda(std::max(world.device(), 0));
    std::vector<Device> devices{Device::cpu()};
#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
    if (world.backend() != dist::Backend::mpi || cuda::is_emulated()) devices.push_back(dev);
    const cuda::DeviceGuard on_device(dev.index);  // kernels launch on the current device: this rank's
    cuda::set_poison_allocations(true);            // an unwritten device output reads NaN, and fails
#endif
    const Tensor device_of = world.all_gather(full({1}, double(dev.index), {DType::i64}));
    if (world.rank() == 0) {
      std::printf("hmoe selftest --dist: %d rank%s, backend %s, devices", world.size(), world.size() == 1 ? "" : "s",
                  std::string(dist::backend_name(world.backend())).c_str());
      if (devices.size() > 1) {
        for (double i : device_of.to_vector()) std::printf(" cuda:%d", int(i));
      } else {
        std::printf(" cpu only (this backend takes no cuda tensors here)");
      }
      if (world.backend() == dist::Backend::single)
        std::printf(" (one process: the collectives are copies; run it under mpirun -np <gpus>)");
      std::printf("\n");
    }
    const int64_t seed = int64_t(o.seed);
    // --filter picks sections: "collectives" (the world's), "group" (sub-groups), "layer".
    const auto wanted = [&](const char* section) { return std::string(section).find(o.filter) != std::string::npos; };
    std::vector<Check> checks;
    for (Device d : devices) {
      if (wanted("collectives")) check_collectives(world, d, "", o.quick, seed, checks);
      // Sub-groups: the ranks of one parity, ranked in reverse.
      if (world.size() > 1 && wanted("group")) {
        const std::shared_ptr<Communicator> g = world.split(world.rank() % 2, -world.rank());
        check_collectives(*g, d, "parity group: ", true, seed + 10, checks);
      }
    }
    if (devices.size() > 1 && wanted("layer")) check_layers(env.world_ptr(), dev, o.quick, o.seed, checks);
    return report(world, checks);
  } catch (const std::exception& e) {
    // The other ranks would wait in their next collective: end the job, naming this rank.
    env.abort(std::string("selftest --dist: ") + e.what(), 1);
  }
}

}  // namespace hmoe::tools

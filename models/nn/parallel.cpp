// The expert-parallel and expert-data-parallel groups of a world; gradient averaging,
// global-norm clipping and the gathering and slicing of sharded state over them.
#include "models/nn/parallel.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "engine/error.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/optim.h"

namespace hmoe::nn {

Parallel Parallel::make(const std::shared_ptr<dist::Communicator>& world, int64_t ep) {
  HMOE_CHECK(world != nullptr, "parallel layout: no world communicator");
  const int w = world->size(), r = world->rank();
  HMOE_CHECK(ep >= 1 && w % ep == 0, "parallel layout: dist.ep = ", ep, " must divide the world size ", w);
  Parallel p;
  p.world = world;
  // Consecutive ranks share experts (on one node where ranks fill nodes in order, so the
  // token exchange stays on the fast links); ranks at the same place in their groups
  // hold the same experts.
  p.ep = world->split(int(r / ep), r);
  p.edp = world->split(int(r % ep), r);
  return p;
}

namespace {

// The parameters of m, replicated or sharded, in registration order (the same on every rank).
struct Split {
  std::vector<Tensor> replicated, sharded;
};
Split split_parameters(const Module& m) {
  const std::map<std::string, RowShard> shards = m.parameter_shards();
  Split s;
  for (const auto& [n, p] : m.named_parameters()) (shards.count(n) ? s.sharded : s.replicated).push_back(p);
  return s;
}

// Sums the gradients of `params` over comm and scales them by `scale`, in buckets of
// parameters of one dtype and device flattened into one buffer each.
void sum_gradients(const std::vector<Tensor>& params, dist::Communicator& comm, double scale, size_t bucket_bytes) {
  NoGradGuard ng;
  size_t i = 0;
  while (i < params.size()) {
    const DType dt = params[i].dtype();
    const Device dev = params[i].device();
    std::vector<Tensor> grads;
    size_t bytes = 0;
    for (; i < params.size() && params[i].dtype() == dt && params[i].device() == dev; ++i) {
      Tensor p = params[i];
      Tensor& g = p.mutable_grad();
      if (!g.defined()) g = zeros(p.shape(), {dt, dev});
      grads.push_back(g);
      bytes += g.nbytes();
      if (bytes >= bucket_bytes) {
        ++i;
        break;
      }
    }
    std::vector<Tensor> flat;
    for (const Tensor& g : grads) flat.push_back(g.reshape({-1}));
    Tensor bucket = cat(flat, 0);
    comm.all_reduce(bucket);
    if (scale != 1.0) bucket = bucket * scale;
    int64_t off = 0;
    for (Tensor& g : grads) {
      g.copy_(bucket.narrow(0, off, g.numel()).reshape(g.shape()));
      off += g.numel();
    }
  }
}

// f64 sum of the squared gradients of params (those that have one).
double sum_squares_of(const std::vector<Tensor>& params) {
  double total = 0;
  for (const Tensor& p : params)
    if (p.grad().defined()) total += sum_squares(p.grad()).item();
  return total;
}

}  // namespace

void average_gradients(const Module& m, const Parallel& par, size_t bucket_bytes) {
  if (par.world_size() == 1) return;
  const Split s = split_parameters(m);
  const double scale = 1.0 / double(par.world_size());
  sum_gradients(s.replicated, *par.world, scale, bucket_bytes);
  sum_gradients(s.sharded, par.edp ? *par.edp : *par.world, scale, bucket_bytes);
}

double clip_grad_norm(const Module& m, const Parallel& par, double max_norm) {
  HMOE_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  const Split s = split_parameters(m);
  double sharded = sum_squares_of(s.sharded);
  if (par.experts_sharded()) {
    Tensor t = full({}, sharded, {DType::f64});
    par.ep->all_reduce(t);
    sharded = t.item();
  }
  const double norm = std::sqrt(sum_squares_of(s.replicated) + sharded);
  if (norm > max_norm) {
    NoGradGuard ng;
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& [n, p] : m.named_parameters()) {
      if (!p.grad().defined()) continue;
      Tensor g = p.grad();
      g.copy_(g * scale);
    }
  }
  return norm;
}

std::vector<std::pair<std::string, Tensor>> gather_shards(const std::vector<std::pair<std::string, Tensor>>& local,
                                                          const std::map<std::string, RowShard>& shards,
                                                          const Parallel& par) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [n, t] : local) {
    const auto it = shards.find(n);
    if (it == shards.end() || !par.experts_sharded()) {
      out.emplace_back(n, t);
      continue;
    }
    const Tensor whole = par.ep->all_gather(t.detach().contiguous());
    HMOE_CHECK(whole.size(0) == it->second.total, "gather_shards: '", n, "' gathers ", whole.size(0), " rows, not ",
               it->second.total);
    out.emplace_back(n, whole);
  }
  return out;
}

std::map<std::string, Tensor> slice_shards(const std::map<std::string, Tensor>& whole,
                                           const std::map<std::string, RowShard>& shards) {
  std::map<std::string, Tensor> out = whole;
  for (const auto& [n, sh] : shards) {
    auto it = out.find(n);
    if (it == out.end()) continue;  // the strict loader names what is missing
    HMOE_CHECK(it->second.dim() >= 1 && it->second.size(0) == sh.total, "checkpoint: '", n, "' has shape ",
               shape_str(it->second.shape()), "; ", sh.total, " rows (all experts) expected");
    it->second = it->second.narrow(0, sh.first, sh.rows).contiguous();
  }
  return out;
}

}  // namespace hmoe::nn

// The backward engine: orders the graph reachable from the roots, runs each node
// once (latest-created first among ready nodes, so the order is deterministic),
// sums gradients arriving at a node and frees saved state unless retain_graph.
#include <map>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "engine/profiler.h"

namespace hmoe::autograd {
namespace {
thread_local uint64_t t_next_sequence_nr = 0;
thread_local bool t_saved_expire = false;  // set by run_backward for its node calls

// Sets t_saved_expire for a scope, restoring the outer value (a backward may run inside a backward function).
class ExpireScope {
 public:
  explicit ExpireScope(bool on) : prev_(t_saved_expire) { t_saved_expire = on; }
  ~ExpireScope() { t_saved_expire = prev_; }
  ExpireScope(const ExpireScope&) = delete;
  ExpireScope& operator=(const ExpireScope&) = delete;

 private:
  bool prev_;
};
}  // namespace

bool saved_tensors_expire() { return t_saved_expire; }

Node::Node(std::string name) : name_(std::move(name)), sequence_nr_(t_next_sequence_nr++) {}

std::vector<Tensor> FunctionNode::apply(std::vector<Tensor> grads) {
  HMOE_CHECK(fn_ != nullptr, "backward: trying to run the backward of '", name(),
             "' a second time; its saved tensors were freed. Pass retain_graph=true to the first backward");
  return fn_(std::move(grads));
}

AccumulateGrad::AccumulateGrad(Tensor leaf) : Node("AccumulateGrad"), leaf_(std::move(leaf)) {
  outputs.push_back({leaf_.shape(), leaf_.dtype(), leaf_.device()});
}

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor> grads) {
  const Tensor& g = grads[0];
  if (!g.defined()) return {};
  Tensor& slot = leaf_.mutable_grad();
  if (g.dtype() != leaf_.dtype()) {  // the conversion makes a tensor of its own
    const Tensor gg = ops_seam::to_dtype(g, leaf_.dtype());
    if (slot.defined())
      ops_seam::add_into(slot, gg);
    else
      slot = gg;
  } else if (slot.defined()) {
    ops_seam::add_into(slot, g);
  } else {
    // A gradient nothing else can reach becomes .grad as it is (no copy, no second
    // buffer of the parameter's size); any other gets a buffer of its own, so that later
    // in-place accumulation cannot write through an alias.
    slot = g.is_sole_owner() ? g : ops_seam::clone(g);
  }
  return {};
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  AutogradMeta& m = *t.unsafe_impl()->autograd;
  if (m.grad_fn) return {m.grad_fn, m.output_nr};
  std::shared_ptr<Node> acc = m.grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    m.grad_accumulator = acc;
  }
  return {acc, 0};
}

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
            BackwardFn backward) {
  if (!needs_grad(inputs)) return;
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->next_edges.reserve(inputs.size());
  for (const Tensor& in : inputs) node->next_edges.push_back(gradient_edge(in));
  uint32_t nr = 0;
  for (const Tensor& out : outputs) {
    node->outputs.push_back({out.shape(), out.dtype(), out.device()});
    TensorImpl* impl = out.unsafe_impl();
    if (!impl->autograd) impl->autograd = std::make_unique<AutogradMeta>();
    impl->autograd->requires_grad = true;
    impl->autograd->grad_fn = node;
    impl->autograd->output_nr = nr++;
  }
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  NoGradGuard no_grad;  // backward formulas are not themselves recorded
  struct Pending {
    std::vector<Tensor> grads;
    int deps = 0;
  };
  std::unordered_map<Node*, Pending> pending;

  // Count, for every reachable node, how many edges lead into it.
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  std::vector<Edge> root_edges;
  for (const Tensor& r : roots) {
    Edge e = gradient_edge(r);
    root_edges.push_back(e);
    if (e.node && seen.insert(e.node.get()).second) stack.push_back(e.node.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.node) continue;
      ++pending[e.node.get()].deps;
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr() < b->sequence_nr();
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later_first)> ready(
      later_first);

  auto deliver = [&](const Edge& e, const Tensor& g_in, const char* from) {
    Pending& p = pending[e.node.get()];
    if (p.grads.empty()) p.grads.resize(e.node->outputs.size());
    if (g_in.defined()) {
      const OutputMeta& m = e.node->outputs[e.input_nr];
      HMOE_CHECK(g_in.shape() == m.shape, "backward of '", from, "' produced a gradient of shape ",
                 shape_str(g_in.shape()), " for an input of shape ", shape_str(m.shape));
      // Every node gets its outputs' gradients in their dtypes: an op that promoted its
      // inputs (f32 + f64) hands the narrower one a wider gradient, which that input's
      // backward kernel would otherwise read as its own dtype.
      const Tensor g = g_in.dtype() == m.dtype ? g_in : ops_seam::to_dtype(g_in, m.dtype);
      Tensor& slot = p.grads[e.input_nr];
      if (!slot.defined())
        slot = g;
      else if (slot.is_sole_owner() && slot.dtype() == g.dtype())
        ops_seam::add_into(slot, g);  // nothing else sees the sum so far: no third buffer
      else
        slot = ops_seam::add(slot, g);
    }
  };

  for (size_t i = 0; i < roots.size(); ++i) {
    if (!root_edges[i].node) continue;
    deliver(root_edges[i], grads[i], "root");
  }
  for (size_t i = 0; i < roots.size(); ++i) {
    Node* n = root_edges[i].node.get();
    if (n && pending[n].deps == 0 && seen.erase(n)) ready.push(root_edges[i].node);
  }

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    Pending work = std::move(pending[node.get()]);
    pending.erase(node.get());
    bool any = false;
    Device dev = Device::cpu();  // of the first gradient given (the profiler's scope)
    for (const Tensor& g : work.grads) {
      if (g.defined() && !any) dev = g.device();
      any = any || g.defined();
    }
    std::vector<Tensor> in_grads;
    if (any) {
      work.grads.resize(node->outputs.size());
      for (size_t i = 0; i < work.grads.size(); ++i) {
        if (!work.grads[i].defined()) {
          const OutputMeta& m = node->outputs[i];
          work.grads[i] = ops_seam::zeros(m.shape, m.dtype, m.device);
        }
      }
      {
        const ExpireScope expire(!retain_graph);
        const ProfileScope scope(Profiler::current() ? node->name() + " backward" : std::string(), dev);
        in_grads = node->apply(std::move(work.grads));
      }
      if (!retain_graph) node->release();
      HMOE_CHECK(in_grads.empty() || in_grads.size() == node->next_edges.size(), "backward of '", node->name(),
                 "' returned ", in_grads.size(), " gradients for ", node->next_edges.size(), " inputs");
    }
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.node) continue;
      deliver(e, i < in_grads.size() ? in_grads[i] : Tensor(), node->name().c_str());
      if (--pending[e.node.get()].deps == 0) ready.push(e.node);
    }
  }
}

}  // namespace hmoe::autograd

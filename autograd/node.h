/// @file
/// The autograd graph: a Node per recorded op, holding what its backward needs and
/// edges to the nodes of its inputs; FunctionNode keeps an op's backward as a lambda
/// written next to its forward; record() is how ops attach one to their outputs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::autograd {

class Node;

/// Where a gradient flows: an input slot of the node that made (or accumulates) a tensor.
struct Edge {
  std::shared_ptr<Node> node;  ///< null: that input needs no gradient
  uint32_t input_nr = 0;       ///< which gradient slot of `node` this feeds
};

/// The shape, dtype and device of one output of a node (to make zeros for a missing gradient).
struct OutputMeta {
  Shape shape;    ///< shape of the output
  DType dtype;    ///< element type of the output
  Device device;  ///< device of the output
};

/// A node of the autograd graph: one recorded op's backward, with edges to the nodes of
/// its inputs.
class Node {
 public:
  /// A node named `name` (the op's name, shown in profiles and errors).
  explicit Node(std::string name);
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  /// grads: one per output (missing ones filled with zeros by the engine), handed over:
  /// a backward may drop one once it is used, so that its buffer goes back before the
  /// backward's later allocations. Returns one gradient per next edge (undefined where
  /// there is none).
  virtual std::vector<Tensor> apply(std::vector<Tensor> grads) = 0;
  /// Frees saved tensors once backward no longer needs them.
  virtual void release() {}

  /// The op's name.
  const std::string& name() const { return name_; }
  /// The order of creation on this thread (backward runs later nodes first).
  uint64_t sequence_nr() const { return sequence_nr_; }

  std::vector<Edge> next_edges;     ///< one per input of the op: where each input's gradient goes
  std::vector<OutputMeta> outputs;  ///< one per output of the op

 private:
  std::string name_;
  uint64_t sequence_nr_;
};

/// A closure taking `const std::vector<Tensor>&` fits too (it cannot drop the gradients).
using BackwardFn = std::function<std::vector<Tensor>(std::vector<Tensor> grad_outputs)>;

/// A node whose backward is a closure; the closure's captures are the saved tensors.
class FunctionNode final : public Node {
 public:
  /// A node named `name` whose backward is fn.
  FunctionNode(std::string name, BackwardFn fn) : Node(std::move(name)), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(std::vector<Tensor> grads) override;
  void release() override { fn_ = nullptr; }

 private:
  BackwardFn fn_;
};

/// Fills a leaf's .grad.
class AccumulateGrad final : public Node {
 public:
  /// The node that accumulates gradients into leaf's grad().
  explicit AccumulateGrad(Tensor leaf);
  std::vector<Tensor> apply(std::vector<Tensor> grads) override;

 private:
  Tensor leaf_;
};

/// True when grad mode is on and any defined input requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);

/// The edge a gradient for `t` should flow into (null node if t needs none).
Edge gradient_edge(const Tensor& t);

/// If needs_grad(inputs): makes a FunctionNode with `backward`, points it at the
/// inputs and makes it the grad_fn of each output. Outputs must be fresh tensors.
/// backward receives one gradient per output and returns one per input (undefined
/// for inputs that need none); save tensors in its captures, detached.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
            BackwardFn backward);

/// Runs backward from roots with the given gradients (one per root).
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph);

/// True inside a backward function run by a backward pass that frees the graph after it
/// (no retain_graph): the function's saved tensors die when it returns, so it may write
/// its results into their buffers (one less buffer of that size alive at once).
bool saved_tensors_expire();

/// The few tensor operations the engine itself needs; ops/ provides them.
namespace ops_seam {
Tensor zeros(const Shape& shape, DType dtype, Device device);
Tensor ones(const Shape& shape, DType dtype, Device device);
Tensor add(const Tensor& a, const Tensor& b);
void add_into(const Tensor& dst, const Tensor& src);  ///< dst += src (same shape)
Tensor to_dtype(const Tensor& t, DType dtype);
Tensor clone(const Tensor& t);
}  // namespace ops_seam

}  // namespace hmoe::autograd

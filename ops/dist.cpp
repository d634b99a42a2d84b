// exchange_rows, RowExchange and sum_over_ranks: a communicator call forward, its adjoint
// backward.
#include "ops/dist.h"

#include <algorithm>
#include <utility>

#include "autograd/node.h"

namespace hmoe::dist {

namespace {
ChunkLayout swapped(const ChunkLayout& l) { return {l.chunks, l.recv_chunk_major, l.send_chunk_major}; }
}  // namespace

Tensor exchange_rows(const std::shared_ptr<Communicator>& comm, const Tensor& x, std::vector<int64_t> send_rows,
                     std::vector<int64_t> recv_rows, const ChunkLayout& layout) {
  HMOE_CHECK(comm != nullptr, "exchange_rows: no communicator");
  Tensor y = comm->all_to_all_v(x.detach().contiguous(), send_rows, recv_rows, layout);
  autograd::record("exchange_rows", {x}, {y},
                   [comm, send = std::move(send_rows), recv = std::move(recv_rows), layout](std::vector<Tensor> g) {
                     Tensor gy = g[0].contiguous();
                     g.clear();
                     return std::vector<Tensor>{comm->all_to_all_v(gy, recv, send, swapped(layout))};
                   });
  return y;
}

struct RowExchange::State {
  std::shared_ptr<Communicator> comm;
  std::vector<int64_t> send_rows, recv_rows;
  ChunkLayout layout;
  PendingExchange forward, backward;
  Tensor grad_x;  // the reverse exchange's result
};

RowExchange::RowExchange(const std::shared_ptr<Communicator>& comm, const Tensor& x, std::vector<int64_t> send_rows,
                         std::vector<int64_t> recv_rows, const ChunkLayout& layout)
    : state_(std::make_shared<State>()) {
  HMOE_CHECK(comm != nullptr, "RowExchange: no communicator");
  HMOE_CHECK(x.defined() && x.dim() >= 1, "RowExchange: the rows must be a defined tensor of at least one dim");
  State& s = *state_;
  s.comm = comm;
  s.send_rows = std::move(send_rows);
  s.recv_rows = std::move(recv_rows);
  s.layout = layout;
  Shape shape = x.shape();
  shape[0] = 0;
  for (int64_t r : s.recv_rows) shape[0] += std::max<int64_t>(r, 0);
  rows_ = Tensor::empty(shape, {x.dtype(), x.device()});
  s.forward = comm->start_all_to_all_v(x.detach().contiguous(), s.send_rows, rows_, s.recv_rows, layout);
  link_ = Tensor::empty({0}, {x.dtype(), x.device()});
  autograd::record("exchange_rows_start", {x}, {link_}, [st = state_](const std::vector<Tensor>&) {
    st->backward.wait();
    return std::vector<Tensor>{std::exchange(st->grad_x, Tensor())};
  });
}

Tensor RowExchange::wait() {
  if (!state_->forward.in_flight()) return rows_;
  state_->forward.wait();
  const TensorOptions link_options{link_.dtype(), link_.device()};
  autograd::record("exchange_rows_wait", {link_}, {rows_}, [st = state_, link_options](std::vector<Tensor> g) {
    Tensor gy = g[0].contiguous();
    g.clear();
    Shape shape = gy.shape();
    shape[0] = 0;
    for (int64_t r : st->send_rows) shape[0] += r;
    st->grad_x = Tensor::empty(shape, {gy.dtype(), gy.device()});
    st->backward = st->comm->start_all_to_all_v(gy, st->recv_rows, st->grad_x, st->send_rows, swapped(st->layout));
    return std::vector<Tensor>{Tensor::empty({0}, link_options)};
  });
  return rows_;
}

Tensor sum_over_ranks(const std::shared_ptr<Communicator>& comm, const Tensor& t) {
  HMOE_CHECK(comm != nullptr, "sum_over_ranks: no communicator");
  Tensor s = t.detach().contiguous().clone();
  comm->all_reduce(s, ReduceOp::sum);
  autograd::record("sum_over_ranks", {t}, {s}, [comm](std::vector<Tensor> g) {
    Tensor gs = g[0].contiguous().clone();
    comm->all_reduce(gs, ReduceOp::sum);
    return std::vector<Tensor>{gs};
  });
  return s;
}

}  // namespace hmoe::dist

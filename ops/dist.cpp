// exchange_rows and sum_over_ranks: a communicator call forward, its adjoint backward.
#include "ops/dist.h"

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

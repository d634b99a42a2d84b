/// @file
/// Matrix products: matmul with batching and broadcasting (NumPy rules), linear
/// (x W^T + b). f32/f64 through BLAS (OpenBLAS cblas); bf16/f16 computed in f32.
#pragma once

#include "engine/tensor.h"

namespace hmoe {

/// 1-d x 1-d: dot; 2-d x 2-d: matrix product; n-d: batched with broadcast batch dims;
/// a 1-d operand is promoted to a matrix and the added dim removed afterwards.
Tensor matmul(const Tensor& a, const Tensor& b);
/// x [..., in], weight [out, in], bias [out] (optional) -> [..., out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

/// A raw GEMM's shape: C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for b in
/// [0, batch), with row-major matrices addressed by (pointer offset per batch, leading
/// dimension).
struct GemmArgs {
  /// @{
  /// Whether A and B are read transposed.
  bool trans_a = false, trans_b = false;
  /// @}
  /// @{
  /// C is m x n; the inner dimension is k.
  int64_t m = 0, n = 0, k = 0;
  /// @}
  /// @{
  /// Leading dimensions (elements between rows) of A, B and C.
  int64_t lda = 0, ldb = 0, ldc = 0;
  /// @}
  int64_t batch = 1;  ///< the number of products
  /// @{
  /// Elements between consecutive batches' matrices of A, B and C.
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  ///< elements between batches
  /// @}
  /// @{
  /// The scales of the product and of C's previous values.
  double alpha = 1.0, beta = 0.0;
  /// @}
};

/// Raw GEMM on contiguous row-major tensors (no autograd): c = alpha op(a) op(b) + beta c.
void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c);

}  // namespace hmoe

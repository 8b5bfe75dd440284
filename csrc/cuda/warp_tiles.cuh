// A warp's accumulator block on the tensor cores, for every engine: DMMA in float64
// (dmma.cuh), 3xTF32 or TF32 in float32 (tf32x3.cuh). Both use the same 16 x 8 tile map, so the FC
// kernels' accumulators hold one WarpTiles each and differ only in how their stages are read.
#pragma once
#include "cuda/dmma.cuh"
#include "cuda/tf32x3.cuh"

namespace bj {

// FM x FN tiles of 16 x 8: v[i][j][e] is element (dmma_row(i, e), dmma_col(j, e)) of the block.
template <class T, int FM, int FN> struct WarpTiles {
  T v[FM][FN][4];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[i][j][e] = T(0);
  }

  // v += A B over k in [0, K) for the block at (m0, n0); a(k, m), b(k, n) read the stages.
  // kPasses (float32 only): 3 for 3xTF32, 1 for TF32.
  template <int K, int kPasses, class A, class B> __device__ __forceinline__ void multiply(A&& a, B&& b, int m0, int n0) {
    if constexpr (sizeof(T) == 8) dmma_block<FM, FN, K>(a, b, m0, n0, v);
    else tf32_block<kPasses, FM, FN, K>(a, b, m0, n0, v);
  }

  // f(row, col, value) for every element.
  template <class F> __device__ __forceinline__ void visit(F&& f) const {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) f(dmma_row(i, e), dmma_col(j, e), v[i][j][e]);
  }

  // f(row, col, pointer to the two values at columns col, col + 1) for every pair (col even).
  template <class F> __device__ __forceinline__ void visit_pairs(F&& f) const {
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int e = 0; e < 4; e += 2)
#pragma unroll
        for (int j = 0; j < FN; ++j) f(dmma_row(i, e), dmma_col(j, e), &v[i][j][e]);
  }
};

}  // namespace bj

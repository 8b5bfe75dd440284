// float64 matrix products on the tensor cores (DMMA), for the FC kernels' fp64 product loops.
//
// A DMMA is IEEE float64 arithmetic with float64 accumulators, so it is float64 accuracy, not a
// precision option. It is twice the peak of the FP64 FMA pipe on an H100/H200, and it reads
// far fewer shared-memory bytes per multiply-add than an FMA thread tile: the fp64 FMA loops
// were shared-memory bound (a thread's 8 x 2 or 4 x 2 tile loads 5-6 bytes per multiply-add;
// a warp's DMMA block below loads under 1).
//
// Operands sit in shared memory k-major, as the kernels stage them: a[k][m] and b[k][n]. With
// rows of 4 (mod 16) doubles, a warp's fragment loads are free of bank conflicts (each
// half-warp's 16 lanes, (t, g) in 4 x 4, hit 16 distinct 8-byte bank pairs).
#pragma once
#include <cuda_runtime.h>

namespace bj {

// Leading dimension (in elements) with ld = 4 (mod 16) for the DMMA fragment loads.
constexpr int dmma_ld(int n) { return n + ((4 - n % 16) + 16) % 16; }

// d[16 x 8] += a[16 x 4] b[4 x 8] on one warp. Lane 4 g + t holds a0 = A[g][t], a1 = A[g + 8][t],
// b = B[t][g], d[0], d[1] = D[g][2 t], D[g][2 t + 1] and d[2], d[3] the same in row g + 8.
// sm_90 has the 16 x 8 x 4 shape; sm_80 - sm_89 run it as two 8 x 8 x 4 products.
__device__ __forceinline__ void dmma_16x8x4(double (&d)[4], double a0, double a1, double b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mma.sync.aligned.m16n8k4.row.col.f64.f64.f64.f64 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
               : "+d"(d[0]), "+d"(d[1]), "+d"(d[2]), "+d"(d[3])
               : "d"(a0), "d"(a1), "d"(b));
#else
  asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0, %1}, {%2}, {%3}, {%0, %1};"
               : "+d"(d[0]), "+d"(d[1])
               : "d"(a0), "d"(b));
  asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0, %1}, {%2}, {%3}, {%0, %1};"
               : "+d"(d[2]), "+d"(d[3])
               : "d"(a1), "d"(b));
#endif
}

// A warp's block of FM * 16 rows x FN * 8 columns at (m0, n0): acc += A B over k in [0, K), with
// a(k, m) and b(k, n) reading the shared-memory stages (k-major, so that the caller may pad or
// swizzle them). acc[i][j][e] is C[m0 + 16 i + g + 8 (e / 2)][n0 + 8 j + 2 t + e % 2]
// (dmma_row, dmma_col).
template <int FM, int FN, int K, class A, class B>
__device__ __forceinline__ void dmma_block(A&& a, B&& b, int m0, int n0, double (&acc)[FM][FN][4]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int k = 0; k < K; k += 4) {
    double av[FM][2], bv[FN];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      av[i][0] = a(k + t, m0 + 16 * i + g);
      av[i][1] = a(k + t, m0 + 16 * i + 8 + g);
    }
#pragma unroll
    for (int j = 0; j < FN; ++j) bv[j] = b(k + t, n0 + 8 * j + g);
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j) dmma_16x8x4(acc[i][j], av[i][0], av[i][1], bv[j]);
  }
}

// The row and column (relative to the block's corner) of acc[i][j][e] for this lane.
__device__ __forceinline__ int dmma_row(int i, int e) { return 16 * i + (threadIdx.x % 32) / 4 + 8 * (e / 2); }
__device__ __forceinline__ int dmma_col(int j, int e) { return 8 * j + 2 * (threadIdx.x % 4) + e % 2; }

}  // namespace bj

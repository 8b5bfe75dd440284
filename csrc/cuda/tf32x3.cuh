// float32 matrix products on the tensor cores, the FC kernels' opt-in fp32 engines:
// tensor_product(..., precision="tf32x3") with float32-level accuracy ("3xTF32", three products
// per operand pair), and precision="tf32" with TF32's (one product of the operands rounded to 10
// mantissa bits, relative errors near 2^-11 per product: the precision JAX's default float32 dot
// gets on these cards).
//
// Each operand x is split into big = tf32(x) (10 explicit mantissa bits) and small = x - big (of
// which the tensor cores use the next 10 or 11 bits), and a b is taken as big_a big_b + big_a
// small_b + small_a big_b; the dropped small_a small_b term is below 2^-21 of |a b|.
// Accumulation is in float32 on the tensor cores. The result differs from an FMA loop's by a few
// float32 roundings of the sum's terms, not by TF32's 2^-11 (measured in
// benchmark_tensor_product.py's ACCURACY lines and the GPU tests).
//
// Operands sit in shared memory k-major; the caller passes them as accessors a(k, m), b(k, n)
// (so a stage may be swizzled). Fragment loads are conflict-free for row lengths of 8 (mod 32)
// floats, or with the swizzle of the caller's choosing.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace bj {

// Row length (in floats) with ld = 8 (mod 32) for conflict-free TF32 fragment loads.
constexpr int tf32_ld(int n) { return n + ((8 - n % 32) + 32) % 32; }

struct Tf32Split {
  uint32_t big, small;
};

// big = x rounded to TF32, to nearest with ties away from zero (what cvt.rna gives): half a TF32
// ulp added to the bits, whose low 13 the tensor cores ignore. small = x - big, exact in float32,
// handed over whole: the tensor cores read it truncated to TF32, an error under 2^-21 |x|, the
// size of the dropped small_a small_b term. cvt.rna.tf32.f32 compiles to about seven instructions
// per operand on sm_90 (an infinity test and select for big, the same again for small); this is
// three (an add, a mask, a subtraction). Infinities and NaNs still end up as NaN or infinity.
// H200, 2026-11-29, N = 20k, ncu: forward 0.509 -> 0.457 ms, x/y_bar 0.980 -> 0.919, w_bar 0.795
// -> 0.670; pipelined fwd 0.444 -> 0.402, fwd+bwd 1.570 -> 1.431; the forward's difference from
// the FMA engine stayed 3.4e-6 of max |out|.
__device__ __forceinline__ Tf32Split tf32_split(float x) {
  const uint32_t big = __float_as_uint(x) + 0x1000u;
  return {big, __float_as_uint(x - __uint_as_float(big & 0xffffe000u))};
}

// d[16 x 8] += a[16 x 8] b[8 x 8] in TF32 on one warp. Lane 4 g + t holds a = A[g][t],
// A[g + 8][t], A[g][t + 4], A[g + 8][t + 4]; b = B[t][g], B[t + 4][g]; d as in dmma.cuh:
// D[g][2 t], D[g][2 t + 1], D[g + 8][2 t], D[g + 8][2 t + 1].
__device__ __forceinline__ void mma_tf32_16x8x8(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// A warp's block of FM * 16 rows x FN * 8 columns at (m0, n0): acc += A B over k in [0, K), in
// kPasses = 3 (3xTF32) or 1 (TF32: the big parts only) tensor-core products per operand pair.
// acc[i][j][e] is C[m0 + 16 i + g + 8 (e / 2)][n0 + 8 j + 2 t + e % 2] (dmma_row and dmma_col
// in dmma.cuh give the same map). a(k, m) and b(k, n) read the shared-memory stages.
template <int kPasses, int FM, int FN, int K, class A, class B>
__device__ __forceinline__ void tf32_block(A&& a, B&& b, int m0, int n0, float (&acc)[FM][FN][4]) {
  static_assert(kPasses == 1 || kPasses == 3, "TF32 (1 pass) or 3xTF32 (3 passes)");
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll 2
  for (int k = 0; k < K; k += 8) {
    Tf32Split av[FM][4];
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      const int m = m0 + 16 * i + g;
      av[i][0] = tf32_split(a(k + t, m));
      av[i][1] = tf32_split(a(k + t, m + 8));
      av[i][2] = tf32_split(a(k + t + 4, m));
      av[i][3] = tf32_split(a(k + t + 4, m + 8));
    }
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      const int n = n0 + 8 * j + g;
      const Tf32Split b0 = tf32_split(b(k + t, n)), b1 = tf32_split(b(k + t + 4, n));
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        if constexpr (kPasses == 3) {  // the small terms first, then the big one
          mma_tf32_16x8x8(acc[i][j], av[i][0].small, av[i][1].small, av[i][2].small, av[i][3].small, b0.big, b1.big);
          mma_tf32_16x8x8(acc[i][j], av[i][0].big, av[i][1].big, av[i][2].big, av[i][3].big, b0.small, b1.small);
        }
        // with one pass the small parts are dead code, and only the rounding add remains
        mma_tf32_16x8x8(acc[i][j], av[i][0].big, av[i][1].big, av[i][2].big, av[i][3].big, b0.big, b1.big);
      }
    }
  }
}

}  // namespace bj

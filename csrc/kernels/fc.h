// The seed's fully connected product, per path and row, shared by the CPU and CUDA handlers:
//
//   out[n, w, k] = sum_p sum_u sum_ij C_p[i, j, k] x[n, u, i] y[n, j] W[g(n), p, u, w]
//
// over the 34 seed paths p = (l1, l2, l3) (k in l3's block). Rows come in `groups` equal
// blocks, each with its own weights (one group unless weights are vmapped). Both handlers
// factor a path's product through the per-row matrix
//
//   M_p[n][i][k] = sum_j C_p[i, j, k] y[n, j]        ([2 l1 + 1][2 l3 + 1])
//
// so that the forward is a matrix product over (p, u) of A[(n, k), (p, u)] = sum_i x[n, u, i]
// M_p[n][i][k] with W, and the backward the same product's transposes.
#pragma once
#include <cstdint>

#include "kernels/conv.h"
#include "kernels/uvu.h"

namespace bj {

constexpr int kSeedPaths = 34;

// Position of (L1, L2, L3) among the seed paths (lexicographic order).
constexpr int seed_path_index(int L1, int L2, int L3) {
  int n = 0;
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b)
      for (int c = conv_abs(a - b); c <= conv_min(a + b, 3); ++c) {
        if (a == L1 && b == L2 && c == L3) return n;
        ++n;
      }
  return n;
}

// Calls f(l1, l2, p) (integral constants; p = seed index) for the seed paths into l_out = L3,
// in seed order.
template <int L3, class F> BJ_HD void for_each_fc_path(F&& f) {
  static_for<0, 4>([&](auto l1) {
    static_for<0, 4>([&](auto l2) {
      constexpr int A = decltype(l1)::value, B = decltype(l2)::value;
      if constexpr (conv_abs(A - B) <= L3 && L3 <= A + B)
        f(l1, l2, std::integral_constant<int, seed_path_index(A, B, L3)>{});
    });
  });
}

// M_p of one row: m[i * D3 + k] = sum_j C[i, j, k] y[j] (y: the row's l2 block).
template <int L1, int L2, int L3, class T> BJ_HD void fc_row_matrix(const T* y, T* m) {
  constexpr int D2 = 2 * L2 + 1, D3 = 2 * L3 + 1;
  T yl[D2];
  for (int j = 0; j < D2; ++j) yl[j] = y[j];
  for (int q = 0; q < (2 * L1 + 1) * D3; ++q) m[q] = T(0);
  CG<L1, L2, L3>::visit([&](int i, int j, int k, double c) { m[i * D3 + k] += T(c) * yl[j]; });
}

// Operand sizes of one call: n rows in `groups` blocks of rows_per_group.
struct FcDims {
  int64_t n, groups, rows_per_group, c_in, c_out;
  constexpr int64_t w_size() const { return kSeedPaths * c_in * c_out; }  // one group's weights
};

// The CUDA backward's scratch, in this order: w_bar's slab partials (at most `slabs` slabs of
// each group's rows, summed over the slabs in a fixed order), when w_bar is asked for; then the
// x_bar and y_bar partials of the l3 = 2, 1, 0 tiles (the l3 = 3 tiles write x_bar and y_bar
// themselves; all four are summed in that fixed order), when asked for. The one source of this
// layout: the handler takes its offsets (fc_ffi.h, FcBwdBuffers), and fc.py asks the extension
// for its size (module.cc) when it lowers a call. Offsets of absent parts are -1.
struct FcScratchLayout {
  int64_t w_part, x_part, y_part, size;  // element offsets into the scratch, and its length
};
// Each part starts at a multiple of 4 elements (16 bytes in float32, 32 in float64), so that the
// CUDA kernels that read them may use 16-byte vector loads (fc_xy_sum_kernel).
constexpr int64_t fc_scratch_align(int64_t at) { return (at + 3) / 4 * 4; }
constexpr FcScratchLayout fc_scratch_layout(const FcDims& d, int64_t slabs, bool need_x, bool need_y, bool need_w) {
  FcScratchLayout l{-1, -1, -1, 0};
  if (need_w) {  // [groups, slabs, 34, C_in, C_out]
    l.w_part = l.size;
    l.size = fc_scratch_align(l.size + d.groups * slabs * d.w_size());
  }
  if (need_x) {  // [3, n, 16, C_in]
    l.x_part = l.size;
    l.size = fc_scratch_align(l.size + 3 * d.n * 16 * d.c_in);
  }
  if (need_y) {  // [3, n, 16]
    l.y_part = l.size;
    l.size = fc_scratch_align(l.size + 3 * d.n * 16);
  }
  return l;
}
static_assert(fc_scratch_layout(FcDims{10, 1, 10, 3, 5}, 2, true, true, true).y_part == 2 * 34 * 15 + 3 * 10 * 16 * 3 &&
                  fc_scratch_layout(FcDims{10, 1, 10, 3, 5}, 1, true, true, true).x_part == 512 &&
                  fc_scratch_layout(FcDims{10, 1, 10, 3, 5}, 2, false, true, false).y_part == 0,
              "scratch parts in the order w, x, y, each present only when asked for");
constexpr int64_t fc_scratch_size(const FcDims& d, int64_t slabs, bool need_x, bool need_y, bool need_w) {
  return fc_scratch_layout(d, slabs, need_x, need_y, need_w).size;
}

}  // namespace bj

// Deterministic per-node sums of per-edge rows, the one segment reduction of the backward
// kernels that scatter into nodes (conv x_bar, fused_sh_tp_simple f_bar):
//   out[n, c] = sum of part[e, c] over e = perm[t], t in [seg[n], seg[n + 1]), in that order,
// counting only edges with own[e] == n (after a vmap fold a segment can reach into another
// batch's padding) and, if `other` is given, other[e] in [0, other_n) (the edge exists).
// One thread per (node, column): the rows are read whole and coalesced, no atomics.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/cuda_common.h"

namespace bj {

template <class T> struct SegmentSum {
  const T* part;  // [ne, width]
  T* out;         // [nodes, width]
  const int32_t* perm;
  const int32_t* seg;  // [nodes + 1]
  const int32_t* own;
  const int32_t* other;  // or null
  int64_t ne, nodes, width, other_n;
};

constexpr int kSegmentThreads = 128;

template <class T> __global__ void __launch_bounds__(kSegmentThreads) segment_sum_kernel(SegmentSum<T> s) {
  const int64_t col = int64_t(blockIdx.y) * kSegmentThreads + threadIdx.x;
  for (int64_t n = blockIdx.x; n < s.nodes; n += gridDim.x) {
    const int64_t beg = std::min(std::max(int64_t(s.seg[n]), int64_t(0)), s.ne);
    const int64_t end = std::min(std::max(int64_t(s.seg[n + 1]), beg), s.ne);
    T acc = T(0);
    for (int64_t t = beg; t < end; ++t) {
      const int64_t e = s.perm[t];
      if (e < 0 || e >= s.ne || s.own[e] != n) continue;
      if (s.other && (s.other[e] < 0 || s.other[e] >= s.other_n)) continue;
      if (col < s.width) acc += s.part[e * s.width + col];
    }
    if (col < s.width) s.out[n * s.width + col] = acc;
  }
}

template <class T> void launch_segment_sum(const SegmentSum<T>& s, cudaStream_t stream) {
  if (s.nodes == 0 || s.width == 0) return;
  const dim3 grid(unsigned(std::min<int64_t>(s.nodes, 1 << 20)),
                  unsigned((s.width + kSegmentThreads - 1) / kSegmentThreads));
  segment_sum_kernel<T><<<grid, kSegmentThreads, 0, stream>>>(s);
}

}  // namespace bj

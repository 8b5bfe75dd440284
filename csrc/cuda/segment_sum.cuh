// Deterministic per-node sums of per-edge rows, the one segment reduction of the backward
// kernels that scatter into nodes (conv x_bar, fused_sh_tp_simple f_bar):
//   out[n, c] = sum of part[e, c] over e = perm[t], t in [seg[n], seg[n + 1]), in that order,
// counting only edges with own[e] == n (after a vmap fold a segment can reach into another
// batch's padding) and, if `other` is given, other[e] in [0, other_n) (the edge exists).
// The rows are read whole and coalesced, no atomics.
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

// V consecutive columns of one row, loaded and stored as one 16-byte access where V * sizeof(T)
// is 16 (the caller checks the width and the alignment), element by element otherwise.
template <class T, int V> struct alignas(sizeof(T) * V) SegCols {
  T v[V];
};

// One block per (node, V * 128 columns). The block first lists the node's existing edges, 128
// at a time, as row offsets in shared memory (in segment order, packed to the front), so that
// each thread's loop over them has no index loads or checks left: it issues kSegmentBatch row
// loads before adding any, where the per-edge perm -> own -> other -> part chain kept one load
// in flight. The additions stay in segment order: the sums are bitwise those of one sequential
// loop, run after run.
constexpr int kSegmentBatch = 8;

template <class T, int V> __global__ void __launch_bounds__(kSegmentThreads) segment_sum_kernel(SegmentSum<T> s) {
  constexpr int kWarpsPerBlock = kSegmentThreads / 32;
  __shared__ int64_t rows[kSegmentThreads];  // part offsets e * width of the chunk's existing edges
  __shared__ int warp_count[kWarpsPerBlock];
  using Cols = SegCols<T, V>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t col = (int64_t(blockIdx.y) * kSegmentThreads + threadIdx.x) * V;
  const bool active = col < s.width;  // width % V == 0 when V > 1
  for (int64_t n = blockIdx.x; n < s.nodes; n += gridDim.x) {  // uniform over the block
    const int64_t beg = std::min(std::max(int64_t(s.seg[n]), int64_t(0)), s.ne);
    const int64_t end = std::min(std::max(int64_t(s.seg[n + 1]), beg), s.ne);
    T acc[V];
#pragma unroll
    for (int c = 0; c < V; ++c) acc[c] = T(0);
    for (int64_t t0 = beg; t0 < end; t0 += kSegmentThreads) {
      const int64_t t = t0 + threadIdx.x;
      int64_t e = -1;
      if (t < end) e = s.perm[t];
      bool ok = e >= 0 && e < s.ne && s.own[e] == n;
      if (ok && s.other) ok = s.other[e] >= 0 && s.other[e] < s.other_n;
      const unsigned mask = __ballot_sync(0xffffffffu, ok);
      if (lane == 0) warp_count[warp] = __popc(mask);
      __syncthreads();
      int base = 0, total = 0;
#pragma unroll
      for (int w = 0; w < kWarpsPerBlock; ++w) {
        base += w < warp ? warp_count[w] : 0;
        total += warp_count[w];
      }
      if (ok) rows[base + __popc(mask & ((1u << lane) - 1u))] = e * s.width;
      __syncthreads();
      if (active) {
        int i = 0;
        for (; i + kSegmentBatch <= total; i += kSegmentBatch) {
          Cols q[kSegmentBatch];
#pragma unroll
          for (int b = 0; b < kSegmentBatch; ++b) q[b] = *reinterpret_cast<const Cols*>(s.part + rows[i + b] + col);
#pragma unroll
          for (int b = 0; b < kSegmentBatch; ++b)
#pragma unroll
            for (int c = 0; c < V; ++c) acc[c] += q[b].v[c];
        }
        for (; i < total; ++i) {
          const Cols q = *reinterpret_cast<const Cols*>(s.part + rows[i] + col);
#pragma unroll
          for (int c = 0; c < V; ++c) acc[c] += q.v[c];
        }
      }
      __syncthreads();  // rows and warp_count are refilled by the next chunk
    }
    if (active) {
      Cols q;
#pragma unroll
      for (int c = 0; c < V; ++c) q.v[c] = acc[c];
      *reinterpret_cast<Cols*>(s.out + n * s.width + col) = q;
    }
  }
}

template <class T> void launch_segment_sum(const SegmentSum<T>& s, cudaStream_t stream) {
  if (s.nodes == 0 || s.width == 0) return;
  // 16-byte column groups when every row starts on a 16-byte boundary (XLA's buffers do)
  constexpr int kVec = 16 / sizeof(T);
  const bool vec = s.width % kVec == 0 && reinterpret_cast<uintptr_t>(s.part) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(s.out) % 16 == 0;
  const int v = vec ? kVec : 1;
  const dim3 grid(unsigned(std::min<int64_t>(s.nodes, 1 << 20)),
                  unsigned((s.width + int64_t(kSegmentThreads) * v - 1) / (int64_t(kSegmentThreads) * v)));
  if (vec)
    segment_sum_kernel<T, kVec><<<grid, kSegmentThreads, 0, stream>>>(s);
  else
    segment_sum_kernel<T, 1><<<grid, kSegmentThreads, 0, stream>>>(s);
}

}  // namespace bj

// The fully connected product's CUDA kernels, part 1 of 4: what the three kernels share (tile
// constants, global and shared-memory access helpers, the per-path matrices M_p, the tile map).
// Included by fc_cuda.cu only (one translation unit, internal linkage).
#pragma once
#include <cuda_runtime.h>

#include "cuda/cuda_common.h"
#include "cuda/warp_tiles.cuh"
#include "fc_ffi.h"

namespace bj {
namespace {

constexpr int kThreads = 128;
constexpr int kBM = 128;        // (n, k) pairs per tile
constexpr int kBN = 64;         // output channels per forward CTA / w_bar CTA
constexpr int kMatMax = 896;    // max over l3 of R * (2 l1 + 1) * (2 l3 + 1)
constexpr int kPad = 4;         // row padding of transposed stages (keeps 16-byte alignment)

// Reduction-chunk width: 32 channels in fp32, 16 in fp64 (same shared-memory bytes).
template <class T> struct Chunk { static constexpr int K = sizeof(T) == 4 ? 32 : 16; };
// A tile of BM (n, k) pairs of one l3 (kBM in every kernel but the fp64 x_bar / y_bar one).
template <int L3, int BM = kBM> struct Tile {
  static constexpr int D = 2 * L3 + 1, R = BM / D;
};
// Entries of the per-path matrices M_p of one tile: max over l3 of R (2 l1 + 1) (2 l3 + 1), with
// l1 = 3 into every l3 (896 at BM = 128, 448 at 64).
constexpr int mat_max(int bm) {
  int m = 0;
  for (int l3 = 0; l3 < 4; ++l3) {
    const int v = bm / (2 * l3 + 1) * 7 * (2 * l3 + 1);
    m = v > m ? v : m;
  }
  return m;
}
static_assert(mat_max(kBM) == kMatMax, "kMatMax is mat_max(kBM)");

// Which engine a kernel's products run on (template value kTc = the tensor-core passes of the
// caller's precision, float32 only): FMA thread tiles (fp32, kTc = 0, the default), 3xTF32 or
// TF32 warp blocks (fp32, kTc = 3 or 1; tf32x3.cuh) or DMMA warp blocks (fp64, kTc = 0;
// dmma.cuh, float64 arithmetic). The tensor-core
// engines want other shared-memory row lengths, or a swizzle where padding would cost an SM
// its fourth CTA: column c of stage row k at c ^ swz(k), which moves 8-float groups only (so
// 16-byte vectors stay whole) and spreads a TF32 fragment load's four k rows over the banks.
template <bool kSwz> __device__ __forceinline__ int swz(int k, int c) { return kSwz ? c ^ ((k & 3) << 3) : c; }

// Read-only global loads (ld.global.nc): being explicitly global, they may be hoisted above
// the staging loops' shared-memory stores, so a thread's loads of several items overlap.
template <class T> __device__ __forceinline__ T ldg(const T* p) { return __ldg(p); }
// 16 bytes (4 floats / 2 doubles) through ld.global.nc, or zeros when !ok; p 16-byte aligned.
__device__ __forceinline__ void ldg_vec(const float* p, bool ok, float* v) {
  const float4 q = ok ? __ldg(reinterpret_cast<const float4*>(p)) : make_float4(0.f, 0.f, 0.f, 0.f);
  v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void ldg_vec(const double* p, bool ok, double* v) {
  const double2 q = ok ? __ldg(reinterpret_cast<const double2*>(p)) : make_double2(0.0, 0.0);
  v[0] = q.x; v[1] = q.y;
}

// 16 bytes global -> shared through L2 only (cp.async.cg), zeros when !ok (src is then not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool ok) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(ok ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Zeros a thread's tile of FMA accumulators.
template <class T, int M, int N> __device__ __forceinline__ void zero_tile(T (&v)[M][N]) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j) v[i][j] = T(0);
}

__device__ __forceinline__ void lds4(const float* p, float* v) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void lds4(const double* p, double* v) {
  const double2 a = reinterpret_cast<const double2*>(p)[0], b = reinterpret_cast<const double2*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}
__device__ __forceinline__ void lds2(const float* p, float* v) {
  const float2 q = *reinterpret_cast<const float2*>(p);
  v[0] = q.x; v[1] = q.y;
}
__device__ __forceinline__ void lds2(const double* p, double* v) {
  const double2 q = *reinterpret_cast<const double2*>(p);
  v[0] = q.x; v[1] = q.y;
}

// M_p of the tile's rows (R of them; by default a tile's) into shared memory:
// mat[(r * D1 + i) * D3 + k] (zeros past nrows).
template <int L1, int L2, int L3, class T, int R = Tile<L3>::R>
__device__ void build_matrices(const T* y, int64_t row0, int nrows, T* mat) {
  constexpr int D1 = 2 * L1 + 1, D3 = 2 * L3 + 1;
  for (int r = threadIdx.x; r < R; r += kThreads) {
    T m[D1 * D3];
    if (r < nrows) fc_row_matrix<L1, L2, L3>(y + (row0 + r) * 16 + L2 * L2, m);
    else
      for (int q = 0; q < D1 * D3; ++q) m[q] = T(0);
    for (int q = 0; q < D1 * D3; ++q) mat[r * D1 * D3 + q] = m[q];
  }
}

// The path of index pi among those into L3 (runtime), as compile-time (l1, l2, p) for f; the
// returned l1 lets the path-independent code (the products) stay one copy per L3.
template <int L3, class F> __device__ int with_fc_path(int pi, F&& f) {
  int n = 0, l1_out = 0;
  for_each_fc_path<L3>([&](auto l1, auto l2, auto p) {
    if (n++ == pi) {
      f(l1, l2, p);
      l1_out = decltype(l1)::value;
    }
  });
  return l1_out;
}

// Seed index of the pi-th path into l3 (seed order), by a short loop: a runtime lookup that
// does not instantiate a path's code.
__device__ __forceinline__ int fc_seed_index(int l3, int pi) {
  int n = 0, p = 0;
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b)
      for (int c = conv_abs(a - b); c <= conv_min(a + b, 3); ++c, ++p)
        if (c == l3 && n++ == pi) return p;
  return 0;
}

template <int L3> constexpr int fc_path_count() {
  int n = 0;
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) n += (conv_abs(a - b) <= L3 && L3 <= a + b) ? 1 : 0;
  return n;
}

// Work items of a launch over tiles: items [start[o], start[o+1]) have l3 = l3_of[o]; within
// them, tile t of group g is item g * per_group[o] + t.
struct TileMap {
  int64_t start[5];
  int64_t per_group[4];
  int l3_of[4];
};

struct TileRef {
  int l3, nrows, g;
  int64_t row0;
};

// Constant indices only: a runtime index into the kernel-parameter struct would make the
// compiler copy it to local memory (an 88-byte stack frame in every kernel).
__device__ TileRef locate(const TileMap& tm, const FcDims& d, int64_t item, int bm = kBM) {
  int l3 = tm.l3_of[0];
  int64_t start = tm.start[0], per_group = tm.per_group[0];
#pragma unroll
  for (int o = 1; o < 4; ++o)
    if (item >= tm.start[o]) {
      l3 = tm.l3_of[o];
      start = tm.start[o];
      per_group = tm.per_group[o];
    }
  const int64_t local = item - start, g = local / per_group, t = local % per_group;
  const int R = bm / (2 * l3 + 1);
  const int64_t first = t * R, left = d.rows_per_group - first;
  return TileRef{l3, int(left < R ? left : R), int(g), g * d.rows_per_group + first};
}


// Tiles per group for each l3, in the order l3 = 3, 2, 1, 0: the heaviest tiles (most paths)
// first, so that the light ones fill the last wave. Tiles of bm (n, k) pairs.
TileMap tile_map(const FcDims& d, int bm = kBM) {
  TileMap m{};
  m.start[0] = 0;
  for (int o = 0; o < 4; ++o) {
    const int l3 = 3 - o, R = bm / (2 * l3 + 1);
    m.l3_of[o] = l3;
    m.per_group[o] = (d.rows_per_group + R - 1) / R;
    m.start[o + 1] = m.start[o] + m.per_group[o] * d.groups;
  }
  return m;
}

}  // namespace
}  // namespace bj

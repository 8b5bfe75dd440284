// XLA FFI CUDA handlers of the fully connected product (kernels/fc.h).
//
// Each kernel is a register-tiled matrix product whose A operand is generated in shared
// memory from x and the per-row matrices M_p, so the [rows, paths, C_in, 2l+1] expansion is
// never written to memory:
//   forward   out[(n,k), w]  = sum_{p,u} A_p[(n,k), u] W[p, u, w]      one CTA: 128 (n,k) x 64 w
//   x/y_bar   G_p[(n,k), u]  = sum_w ct[(n,k), w] W[p, u, w], then contracted with M_p (x_bar)
//             and with x (y_bar)                                       one CTA: 128 (n,k), all p
//             into l3; one launch, each l3's copy summed in a fixed order by a second kernel
//   w_bar     W_bar[p, u, w] = sum_{(n,k)} A_p[(n,k), u] ct[(n,k), w]  one CTA: one path, a slab
//             of rows; slabs summed in a fixed order by a second kernel (no atomics).
// A tile covers R = 128 / (2 l3 + 1) rows of one group and one l3, so that (n, k) fills 128.
// The backward's x, ct and x_bar are component-major ([n, 16, C], fc_ffi.h): (n, k) indexes rows
// of channel vectors, so every load and store along channels is contiguous. The forward reads x
// and writes out in the public layout [n, C, 16] (stage_a_chunk, the end of fwd_tile).
// Only the matrices M_p are built per path at compile time (build_matrices); the products are
// one copy per l3, which keeps the build time and the instruction footprint small.
#include <cuda_runtime.h>

#include <type_traits>

#include "cuda/cuda_common.h"
#include "cuda/dmma.cuh"
#include "cuda/tf32x3.cuh"
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
template <int L3> struct Tile {
  static constexpr int D = 2 * L3 + 1, R = kBM / D;
};

// Which engine a kernel's products run on (template flag kTc = the caller's precision="tf32x3",
// float32 only): FMA thread tiles (fp32, the default), 3xTF32 warp blocks (fp32, kTc;
// tf32x3.cuh) or DMMA warp blocks (fp64; dmma.cuh, float64 arithmetic). The tensor-core
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
__device__ TileRef locate(const TileMap& tm, const FcDims& d, int64_t item) {
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
  const int R = kBM / (2 * l3 + 1);
  const int64_t first = t * R, left = d.rows_per_group - first;
  return TileRef{l3, int(left < R ? left : R), int(g), g * d.rows_per_group + first};
}

// ------------------------------------------------------------------------------ forward
// The W chunk is double-buffered: the next (path, chunk) step's copy (cp.async) flies during this
// step's product and the next A stage. The tile's y rows are staged once, so that each path's
// matrices are built from shared memory instead of waiting on global loads. 44 KB (fp32) /
// 56 KB (fp64) of dynamic shared memory.
// Row lengths of the A and W stages: kBM + kPad and kBN for the fp32 FMA tiles, dmma_ld (= 4
// mod 16, conflict-free fragment loads) for the fp64 DMMA blocks.
template <class T, bool kTc> constexpr int kFwdLdA = sizeof(T) == 8 ? dmma_ld(kBM) : kTc ? tf32_ld(kBM) : kBM + kPad;
template <class T, bool kTc> constexpr int kFwdLdB = sizeof(T) == 8 ? dmma_ld(kBN) : kTc ? tf32_ld(kBN) : kBN;

template <class T, bool kTc> struct FwdSmem {
  T a[Chunk<T>::K][kFwdLdA<T, kTc>];     // A chunk, [u][(n, k)]
  T b[2][Chunk<T>::K][kFwdLdB<T, kTc>];  // W chunks, [buffer][u][w]
  T mat[kMatMax];
  T yt[kBM * 16];                // the tile's rows of y (zeros past nrows)
};

// The tile's rows of y into yt[r * 16 + j] (zeros past nrows); rows are contiguous in y.
template <class T> __device__ void stage_y_tile(const T* y, const TileRef& t, int R, T* yt) {
  for (int q = threadIdx.x; q < R * 16; q += kThreads) yt[q] = q / 16 < t.nrows ? ldg(y + t.row0 * 16 + q) : T(0);
}

template <class T> struct FwdArgs {
  const T* x;  // [n, C_in, 16]
  const T* y;
  const T* w;
  T* out;      // [n, C_out, 16] (BN = 32) or [n, 16, C_out] (BN = 64): fc_fwd_kernel
  FcDims d;
};

// N = 2 or 4 consecutive values to global memory, vectorised when vec (p then aligned to them).
template <int N, class T> __device__ __forceinline__ void st_run(T* p, const T* v, bool vec) {
  if (vec) {
    if constexpr (sizeof(T) == 4 && N == 4) {
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
    } else {
#pragma unroll
      for (int j = 0; j < N; j += 2) reinterpret_cast<double2*>(p)[j / 2] = make_double2(v[j], v[j + 1]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) p[j] = v[j];
  }
}

// A row's l1 block of x for V = 16 bytes (4 floats / 2 doubles) of channels from channel u:
// xv[i][j] = xr[i * c_in + j], where xr points at component i = 0 of that block at channel u;
// zeros where !row_ok or past c_in. One vector load per component when c_in % V == 0 (then a
// V-group of channels is wholly inside or outside c_in), else scalar loads.
template <class T, int D1, int V>
__device__ __forceinline__ void load_x_block(const T* xr, int64_t c_in, int64_t u, bool row_ok, T (&xv)[D1][V]) {
  if (c_in % V == 0) {
    const bool ok = row_ok && u < c_in;
#pragma unroll
    for (int i = 0; i < D1; ++i) ldg_vec(xr + i * c_in, ok, xv[i]);
  } else {
#pragma unroll
    for (int i = 0; i < D1; ++i)
#pragma unroll
      for (int j = 0; j < V; ++j) xv[i][j] = (row_ok && u + j < c_in) ? ldg(xr + i * c_in + j) : T(0);
  }
}

// N consecutive values p[OFF .. OFF + N) of one row's 16-component block (64 or 128 bytes,
// aligned as its start) into v, with the widest loads the offsets allow (16, 8 or 4 bytes).
template <class T, int OFF, int N> __device__ __forceinline__ void load_run(const T* p, T* v) {
  if constexpr (N > 0) {
    constexpr int V = 16 / int(sizeof(T));
    if constexpr (OFF % V == 0 && N >= V) {
      if constexpr (sizeof(T) == 4) {
        const float4 q = __ldg(reinterpret_cast<const float4*>(p + OFF));
        v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
      } else {
        const double2 q = __ldg(reinterpret_cast<const double2*>(p + OFF));
        v[0] = q.x; v[1] = q.y;
      }
      load_run<T, OFF + V, N - V>(p, v + V);
    } else if constexpr (sizeof(T) == 4 && OFF % 2 == 0 && N >= 2) {
      const float2 q = __ldg(reinterpret_cast<const float2*>(p + OFF));
      v[0] = q.x; v[1] = q.y;
      load_run<T, OFF + 2, N - 2>(p, v + 2);
    } else {
      v[0] = __ldg(p + OFF);
      load_run<T, OFF + 1, N - 1>(p, v + 1);
    }
  }
}

// The forward's A chunk: A[u][(r, k)] = sum_i x[n, u, i] M[r][i][k] for the BK channels from u0,
// x in the public layout [n, C_in, 16]. One item = one row and NC = BK / 8 channels {c, c + 8,
// ...}: each channel's l1 block is one contiguous run (load_run), and each M value read from
// shared memory serves NC channels. A warp's 32 items are 4 rows x 8 channels c, so the stores
// A[u][r * D + k] (row stride kBM + kPad = 4 mod 32 words, odd D) fall in distinct banks.
template <class T, int L1, int L3, class S>
__device__ void stage_a_chunk(const FwdArgs<T>& a, const TileRef& t, int64_t u0, S& s) {
  constexpr int D = 2 * L3 + 1, D1 = 2 * L1 + 1, R = Tile<L3>::R, BK = Chunk<T>::K, NC = BK / 8;
  const int64_t c_in = a.d.c_in;
  for (int q = threadIdx.x; q < (R + 3) / 4 * 32; q += kThreads) {
    const int c = q % 8, r = q / 32 * 4 + q / 8 % 4;
    if (r >= R) continue;
    const bool row_ok = r < t.nrows;
    T xv[NC][D1];
#pragma unroll
    for (int j = 0; j < NC; ++j) {
      const int64_t u = u0 + c + 8 * j;
      if (row_ok && u < c_in) {
        load_run<T, L1 * L1, D1>(a.x + ((t.row0 + r) * c_in + u) * 16, xv[j]);
      } else {
#pragma unroll
        for (int i = 0; i < D1; ++i) xv[j][i] = T(0);
      }
    }
    const T* mr = s.mat + r * D1 * D;
#pragma unroll
    for (int k = 0; k < D; ++k) {
      T v[NC];
#pragma unroll
      for (int j = 0; j < NC; ++j) v[j] = T(0);
#pragma unroll
      for (int i = 0; i < D1; ++i) {
        const T m = mr[i * D + k];
#pragma unroll
        for (int j = 0; j < NC; ++j) v[j] += xv[j][i] * m;
      }
#pragma unroll
      for (int j = 0; j < NC; ++j) s.a[c + 8 * j][r * D + k] = v[j];
    }
  }
}

// The forward's W chunk: b[uu][c] = W_p[u0 + uu, w0 + c] for uu < K, c < BN (zeros outside
// C_in x C_out): 16-byte cp.async copies when C_out allows them (a V-group of channels is then
// wholly inside or outside C_out, and 16-byte aligned), else plain loads and stores. The
// caller commits the group.
template <class T, int BN, int LD>
__device__ void stage_w_chunk(const T* wp, const FcDims& d, int64_t u0, int64_t w0, T (*b)[LD]) {
  constexpr int BK = Chunk<T>::K, V = 16 / sizeof(T), G = BN / V;
  const bool vec = d.c_out % V == 0;
  for (int q = threadIdx.x; q < BK * G; q += kThreads) {
    const int uu = q / G, c = q % G * V;
    const int64_t u = u0 + uu, w = w0 + c;
    const bool u_ok = u < d.c_in;
    const T* src = wp + (u_ok ? u : 0) * d.c_out + (w < d.c_out ? w : 0);
    if (vec) {
      cp_async16(&b[uu][c], src, u_ok && w < d.c_out);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) b[uu][c + j] = (u_ok && w + j < d.c_out) ? ldg(src + j) : T(0);
    }
  }
}

// The forward's 128 x BN accumulators and product, one chunk at a time. visit_runs(f) calls
// f(m, h, wl, v) for each run of kRun consecutive output channels that the thread holds: (n, k)
// pair m, channels w0 + 32 h + wl + [0, kRun), values v[0 .. kRun).
template <class T, int BN, bool kTc> struct FwdAcc;

// fp32: FMAs on a thread tile of 8 (n, k) rows {4 tm .. +3, 64 + 4 tm .. +3} times BN / 8
// channels {4 tw .. +3, 32 + 4 tw .. +3} (BN = 64) or {4 tw .. +3} (BN = 32).
template <int BN> struct FwdAcc<float, BN, false> {
  static constexpr int TN = BN / 8, kRun = 4;
  float v[8][TN];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) v[i][j] = 0.f;
  }
  __device__ void multiply(const float (*a)[kFwdLdA<float, false>], const float (*b)[kFwdLdB<float, false>]) {
    const int tm = threadIdx.x % 16, tw = threadIdx.x / 16;
#pragma unroll 8
    for (int uu = 0; uu < Chunk<float>::K; ++uu) {
      float av[8], bv[TN];
      lds4(&a[uu][4 * tm], av);
      lds4(&a[uu][64 + 4 * tm], av + 4);
      lds4(&b[uu][4 * tw], bv);
      if constexpr (TN == 8) lds4(&b[uu][32 + 4 * tw], bv + 4);
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) v[i][j] += av[i] * bv[j];
    }
  }
  template <class F> __device__ void visit_runs(F&& f) const {
    const int tm = threadIdx.x % 16, tw = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int h = 0; h < TN / 4; ++h) f(i < 4 ? 4 * tm + i : 64 + 4 * tm + i - 4, h, 4 * tw, &v[i][4 * h]);
  }
};

// fp64: DMMA (dmma.cuh), warp q owning (n, k) rows [32 q, 32 q + 32) times all BN channels.
template <int BN> struct FwdAcc<double, BN, false> {
  static constexpr int FN = BN / 8, kRun = 2;
  double v[2][FN][4];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[i][j][e] = 0.0;
  }
  __device__ void multiply(const double (*a)[kFwdLdA<double, false>], const double (*b)[kFwdLdB<double, false>]) {
    dmma_block<2, FN, Chunk<double>::K>(&a[0][0], kFwdLdA<double, false>, &b[0][0], kFwdLdB<double, false>,
                                        32 * (threadIdx.x / 32), 0, v);
  }
  template <class F> __device__ void visit_runs(F&& f) const {
    const int m0 = 32 * (threadIdx.x / 32);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int e = 0; e < 4; e += 2)
#pragma unroll
        for (int j = 0; j < FN; ++j) {
          const int w = dmma_col(j, e);
          f(m0 + dmma_row(i, e), w / 32, w % 32, &v[i][j][e]);
        }
  }
};

// fp32 with kTc: 3xTF32 (tf32x3.cuh), warp q owning (n, k) rows [32 q, 32 q + 32) times all BN
// channels; the same accumulator map as the DMMA block.
template <int BN> struct FwdAcc<float, BN, true> {
  static constexpr int FN = BN / 8, kRun = 2;
  float v[2][FN][4];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < FN; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[i][j][e] = 0.f;
  }
  __device__ void multiply(const float (*a)[kFwdLdA<float, true>], const float (*b)[kFwdLdB<float, true>]) {
    tf32x3_block<2, FN, Chunk<float>::K>([&](int k, int m) { return a[k][m]; }, [&](int k, int n) { return b[k][n]; },
                                         32 * (threadIdx.x / 32), 0, v);
  }
  template <class F> __device__ void visit_runs(F&& f) const {
    const int m0 = 32 * (threadIdx.x / 32);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int e = 0; e < 4; e += 2)
#pragma unroll
        for (int j = 0; j < FN; ++j) {
          const int w = dmma_col(j, e);
          f(m0 + dmma_row(i, e), w / 32, w % 32, &v[i][j][e]);
        }
  }
};

template <class T, int L3, int BN, bool kPublicOut, bool kTc>
__device__ void fwd_tile(const FwdArgs<T>& a, const TileRef& t, int w0, FwdSmem<T, kTc>& s) {
  constexpr int D = 2 * L3 + 1, BK = Chunk<T>::K;
  const int tid = threadIdx.x;
  constexpr int R = Tile<L3>::R;
  FwdAcc<T, BN, kTc> acc;
  acc.zero();
  constexpr int kSpare = kBM - R * D;  // (n, k) slots past the tile's rows: zero throughout
  if constexpr (kSpare > 0)
    for (int q = tid; q < BK * kSpare; q += kThreads) s.a[q / kSpare][R * D + q % kSpare] = T(0);

  // Steps run over (path, u chunk), paths in seed order. A step's W chunk is copied one step
  // ahead; mat is rebuilt at each path's first step (its last reader, the previous step's A
  // stage, is behind that step's second barrier).
  auto path_weights = [&](int pi) {
    return a.w + (int64_t(t.g) * kSeedPaths + fc_seed_index(L3, pi)) * a.d.c_in * a.d.c_out;
  };
  stage_w_chunk<T, BN>(path_weights(0), a.d, 0, w0, s.b[0]);
  cp_async_commit();
  stage_y_tile(a.y, t, R, s.yt);
  __syncthreads();
  int buf = 0;
  for (int pi = 0; pi < fc_path_count<L3>(); ++pi) {
    const int L1 = with_fc_path<L3>(pi, [&](auto l1, auto l2, auto) {
      build_matrices<decltype(l1)::value, decltype(l2)::value, L3>(s.yt, 0, t.nrows, s.mat);
    });
    for (int64_t u0 = 0; u0 < a.d.c_in; u0 += BK) {
      __syncthreads();  // the last product is done with a and b[buf ^ 1]; mat is built
      switch (L1) {  // the A chunk, with the row's l1 block size known at compile time
        case 0: stage_a_chunk<T, 0, L3>(a, t, u0, s); break;
        case 1: stage_a_chunk<T, 1, L3>(a, t, u0, s); break;
        case 2: stage_a_chunk<T, 2, L3>(a, t, u0, s); break;
        default: stage_a_chunk<T, 3, L3>(a, t, u0, s); break;
      }
      // the next step's W chunk, issued after the A stage (whose registers are then free): it
      // flies during this product and the next A stage
      const bool same_path = u0 + BK < a.d.c_in;
      if (same_path || pi + 1 < fc_path_count<L3>())
        stage_w_chunk<T, BN>(path_weights(same_path ? pi : pi + 1), a.d, same_path ? u0 + BK : 0, w0, s.b[buf ^ 1]);
      cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group
      cp_async_wait<1>();  // this step's W chunk has landed
      __syncthreads();
      acc.multiply(s.a, s.b[buf]);
      buf ^= 1;
    }
  }
  cp_async_wait<0>();
  constexpr int kRun = FwdAcc<T, BN, kTc>::kRun;
  if constexpr (kPublicOut) {
    // The output in the public layout [n, C_out, 16]: each (row, channel) holds this l3's D
    // components contiguously, 64 bytes apart from the next channel's. Through shared memory, so
    // that a warp's stores run along (channel, k) in that order: runs of D values instead of
    // single values 64 bytes apart. 32 channels at a time, as o[r * (32 D + 1) + w * D + k]
    // (the padding word per row spreads the rows' stores over the banks), overlaying the
    // stages, which are dead by then.
    T* const o = reinterpret_cast<T*>(&s);
    constexpr int kRow = 32 * D + 1;
    static_assert(sizeof(FwdSmem<T, kTc>) >= sizeof(T) * R * kRow, "the output tile overlays the stages");
#pragma unroll
    for (int h = 0; h < BN / 32; ++h) {  // channels [w0 + 32 h, w0 + 32 h + 32)
      __syncthreads();  // the last product is done with a and b (h = 0), the last copy-out (h = 1)
      acc.visit_runs([&](int m, int hv, int wl, const T* v) {
        const int r = m / D, k = m % D;
        if (hv != h || r >= R) return;
#pragma unroll
        for (int j = 0; j < kRun; ++j) o[r * kRow + (wl + j) * D + k] = v[j];
      });
      __syncthreads();
      const int64_t wb = w0 + 32 * h;
      for (int q = tid; q < t.nrows * 32 * D; q += kThreads) {
        const int r = q / (32 * D), wk = q % (32 * D), wl = wk / D, k = wk % D;
        if (wb + wl < a.d.c_out) a.out[((t.row0 + r) * a.d.c_out + wb + wl) * 16 + L3 * L3 + k] = o[r * kRow + wk];
      }
    }
  } else {  // component-major [n, 16, C_out]: vector stores along channels
    const bool vec = a.d.c_out % kRun == 0;
    acc.visit_runs([&](int m, int h, int wl, const T* v) {
      const int r = m / D, k = m % D;
      if (r >= t.nrows) return;
      T* orow = a.out + ((t.row0 + r) * 16 + L3 * L3 + k) * a.d.c_out;
      const int64_t wc = w0 + 32 * h + wl;
      if (wc + kRun <= a.d.c_out) st_run<kRun>(orow + wc, v, vec);
      else
        for (int j = 0; j < kRun && wc + j < a.d.c_out; ++j) orow[wc + j] = v[j];
    });
  }
}

// 4 CTAs per SM in fp32: the forward waits on its per-path barriers, and more resident warps
// hide them (H200, 2026-11-28: 0.788 ms at 3 CTAs, 0.700 at 4, ncu). At 128 registers the
// BN = 64 kernel spills (196 B when the W chunk went double-buffered, which still won: H200,
// 2026-11-29, N = 20k pipelined 0.618 -> 0.589 ms; 84 B since the y tile and the public-layout
// x reads; benchmarks/ptxas_summary.sh prints it). The spill loads sit outside the product loop.
// BN = 64 output channels per CTA, or 32 for small grids (the caller's `public_out`, small N):
// twice the CTAs, each with half the product and the same staging. The two also differ in the
// layout of out (one source of truth: fc.py, _public_out): BN = 32 writes the public layout
// [n, C_out, 16] itself, which saves a launch where launches are most of the time (N = 1k:
// 0.057 -> 0.055 ms pipelined, H200, 2026-11-29); BN = 64 writes component-major [n, 16, C_out]
// for XLA to transpose, because its 64-byte (row, channel) blocks, written in parts by the four
// l3's tiles at different times, cost more than the transpose (N = 20k: 0.544 ms with the
// transpose, 0.572 without; tiles ordered by row across l3 to write the parts together: 0.795).
template <class T, int BN, bool kTc>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 4 : 2) fc_fwd_kernel(FwdArgs<T> a, TileMap map) {
  extern __shared__ __align__(16) unsigned char fwd_smem[];
  FwdSmem<T, kTc>& s = *reinterpret_cast<FwdSmem<T, kTc>*>(fwd_smem);
  const TileRef t = locate(map, a.d, blockIdx.x);
  const int w0 = blockIdx.y * BN;
  switch (t.l3) {
    case 0: fwd_tile<T, 0, BN, BN == 32, kTc>(a, t, w0, s); break;
    case 1: fwd_tile<T, 1, BN, BN == 32, kTc>(a, t, w0, s); break;
    case 2: fwd_tile<T, 2, BN, BN == 32, kTc>(a, t, w0, s); break;
    default: fwd_tile<T, 3, BN, BN == 32, kTc>(a, t, w0, s); break;
  }
}

// ------------------------------------------------------------------------------ x_bar, y_bar
template <class T> struct XyArgs {
  const T* xt;   // [n, 16, C_in], read for y_bar
  const T* y;
  const T* w;
  const T* ctt;  // [n, 16, C_out]
  T* x_bart;     // [n, 16, C_in] or null
  T* y_bar;      // [n, 16] or null
  T* x_part;     // [3, n, 16, C_in]: x_bar of the l3 = 2, 1, 0 tiles (null with x_bart)
  T* y_part;     // [3, n, 16] (null with y_bar)
  FcDims d;
};

// ct channels per staged block. With C_out <= kCtW the tile's whole ct (the same for every
// path of the tile) is staged once per tile instead of once per path; wider C_out is staged
// block by block per path, as before. 56 KB of dynamic shared memory in fp32 (4 CTAs per SM),
// 95 KB in fp64 (2).
constexpr int kCtW = 64;

// Row lengths of the ct and W stages: plain in fp32 (FMA tiles), dmma_ld in fp64 (DMMA blocks).
// The 3xTF32 engine swizzles the ct block instead (padding it would cost the fourth CTA per SM).
template <class T, bool kTc> constexpr int kXyLdC = sizeof(T) == 8 ? dmma_ld(kBM) : kBM;
template <class T, bool kTc> constexpr int kXyLdW = sizeof(T) == 8 ? dmma_ld(Chunk<T>::K) : kTc ? tf32_ld(Chunk<T>::K) : Chunk<T>::K;

template <class T, bool kTc> struct XySmem {
  T c[kCtW][kXyLdC<T, kTc>];         // ct block, [w][(n, k)] (swz<kTc> on (n, k))
  union {
    T wt[kCtW][kXyLdW<T, kTc>];    // W block, [w][u], during a product
    T g[Chunk<T>::K][kBM + kPad];  // G chunk, [u][(n, k)], once the product is done
  };
  T mat[kMatMax];
  T h[kMatMax];                      // H[r][i][k] = sum_u x[n, u, i] G[(n, k), u]
};

// The x/y kernel's G chunk, G[(n, k), u] = sum_w ct[(n, k), w] W[u, w] over 64-channel blocks
// of w, 128 (n, k) x K u: zero(), multiply(one block), store(into g[u][(n, k)]).
template <class T, bool kTc> struct XyAcc;

// fp32: FMAs on a thread tile of 8 (n, k) rows as in the forward times K / 8 = 4 channels u.
template <> struct XyAcc<float, false> {
  static constexpr int TU = Chunk<float>::K / 8;
  float v[8][TU];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < TU; ++j) v[i][j] = 0.f;
  }
  __device__ void multiply(const float (*c)[kXyLdC<float, false>], const float (*wt)[kXyLdW<float, false>]) {
    const int tm = threadIdx.x % 16, tu = threadIdx.x / 16;
#pragma unroll 8
    for (int ww = 0; ww < kCtW; ++ww) {
      float av[8], bv[TU];
      lds4(&c[ww][4 * tm], av);
      lds4(&c[ww][64 + 4 * tm], av + 4);
      lds4(&wt[ww][TU * tu], bv);
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < TU; ++j) v[i][j] += av[i] * bv[j];
    }
  }
  __device__ void store(float (*g)[kBM + kPad]) const {
    const int tm = threadIdx.x % 16, tu = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < TU; ++j) g[TU * tu + j][i < 4 ? 4 * tm + i : 64 + 4 * tm + i - 4] = v[i][j];
  }
};

// fp64: DMMA (dmma.cuh), warp q owning (n, k) rows [32 q, 32 q + 32) times all 16 channels u.
template <> struct XyAcc<double, false> {
  double v[2][2][4];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[i][j][e] = 0.0;
  }
  __device__ void multiply(const double (*c)[kXyLdC<double, false>], const double (*wt)[kXyLdW<double, false>]) {
    dmma_block<2, 2, kCtW>(&c[0][0], kXyLdC<double, false>, &wt[0][0], kXyLdW<double, false>, 32 * (threadIdx.x / 32), 0, v);
  }
  __device__ void store(double (*g)[kBM + kPad]) const {
    const int m0 = 32 * (threadIdx.x / 32);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) g[dmma_col(j, e)][m0 + dmma_row(i, e)] = v[i][j][e];
  }
};

// fp32 with kTc: 3xTF32, warp q owning (n, k) rows [32 q, 32 q + 32) times all 32 channels u.
template <> struct XyAcc<float, true> {
  float v[2][4][4];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[i][j][e] = 0.f;
  }
  __device__ void multiply(const float (*c)[kXyLdC<float, true>], const float (*wt)[kXyLdW<float, true>]) {
    tf32x3_block<2, 4, kCtW>([&](int k, int m) { return c[k][swz<true>(k, m)]; }, [&](int k, int n) { return wt[k][n]; },
                             32 * (threadIdx.x / 32), 0, v);
  }
  __device__ void store(float (*g)[kBM + kPad]) const {
    const int m0 = 32 * (threadIdx.x / 32);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) g[dmma_col(j, e)][m0 + dmma_row(i, e)] = v[i][j][e];
  }
};

// W_p's block u in [u0, u0 + K), w in [wb0, wb0 + kCtW) into wt[w][u] (zeros outside C_in x
// C_out). Lanes run over u, so the transposed stores are conflict-free (with lanes over w, as
// before, a warp's 32 stores hit one bank); each item is 16 bytes of one u's row of W_p.
template <class T, int LD>
__device__ void stage_w_block(const T* wp, int64_t c_in, int64_t c_out, int64_t u0, int64_t wb0, T (*wt)[LD]) {
  constexpr int BK = Chunk<T>::K, V = 16 / sizeof(T), G = kCtW / V;
  const bool vec = c_out % V == 0;
  for (int q = threadIdx.x; q < BK * G; q += kThreads) {
    const int uu = q % BK, g = q / BK;
    const int64_t u = u0 + uu, w = wb0 + g * V;
    const bool u_ok = u < c_in;
    const T* src = wp + (u_ok ? u : 0) * c_out + (w < c_out ? w : 0);
    T v[V];
    if (vec) {
      ldg_vec(src, u_ok && w < c_out, v);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = (u_ok && w + j < c_out) ? ldg(src + j) : T(0);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) wt[g * V + j][uu] = v[j];
  }
}

// The tile's ct rows, channels [wb0, wb0 + kCtW) (zeros past C_out and past the tile's rows),
// into c[w][(n, k)]. Lanes run over (n, k), so the transposed stores are conflict-free; each
// item is 16 bytes of one row's channels (one vector load when C_out allows it).
template <class T, int L3, bool kSwz, int LD>
__device__ void stage_ct_block(const T* ctt, const TileRef& t, int64_t c_out, int64_t wb0, T (*c)[LD]) {
  constexpr int D = 2 * L3 + 1, V = 16 / sizeof(T), G = kCtW / V;
  const bool vec = c_out % V == 0;  // then a V-group of channels is wholly inside or outside C_out
  for (int q = threadIdx.x; q < kBM * G; q += kThreads) {
    const int m = q % kBM, g = q / kBM, r = m / D, k = m % D;
    const int64_t w = wb0 + g * V;
    const bool row_ok = r < t.nrows;
    const T* src = ctt + ((t.row0 + (row_ok ? r : 0)) * 16 + L3 * L3 + k) * c_out + (w < c_out ? w : 0);
    T v[V];
    if (vec) {
      ldg_vec(src, row_ok && w < c_out, v);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = (row_ok && w + j < c_out) ? ldg(src + j) : T(0);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) c[g * V + j][swz<kSwz>(g * V + j, m)] = v[j];
  }
}

// One launch for every l3. x_bar and y_bar rows get terms from the tiles of every l3, so each
// l3's tiles write their own copy (the l3 = 3 tiles the results, the others x_part / y_part),
// and fc_xy_sum_kernel adds them in a fixed order (deterministic, no atomics). A tile owns its
// rows within its l3, so it stores (a path that is the first of its l1 into x_bar; y_bar at
// the end) or adds to what it stored itself: no memset, no read of another CTA's writes. (With
// one launch per l3, adding in stream order, each launch's CTA count at N = 1k was under one
// wave, and the four launches took 4x one CTA's latency: ncu, H200, N = 1k, 0.444 -> 0.132 ms
// (fp32); fwd+bwd pipelined 0.380 -> 0.165 ms at N = 1k and 1.83 -> 1.67 at N = 20k.)
template <class T, int L3, bool kTc>
__device__ void xy_tile(const XyArgs<T>& a, const TileRef& t, XySmem<T, kTc>& s) {
  constexpr int D = 2 * L3 + 1, R = Tile<L3>::R, BK = Chunk<T>::K;
  const int tid = threadIdx.x;
  const int64_t c_in = a.d.c_in, c_out = a.d.c_out;
  const bool ct_resident = c_out <= kCtW;
  T* const x_dst = !a.x_bart ? nullptr : L3 == 3 ? a.x_bart : a.x_part + (2 - L3) * a.d.n * 16 * c_in;
  T* const y_dst = !a.y_bar ? nullptr : L3 == 3 ? a.y_bar : a.y_part + (2 - L3) * a.d.n * 16;
  int prev_l1 = -1;  // paths come in seed order, l1 ascending: a path whose l1 differs is its l1's first
  // Row tid's y_bar over all paths of the tile, in registers (a tile has at most kThreads rows):
  // one global write per row and tile, where each path's did a read-modify-write (an L2 round
  // trip that the whole CTA waited for at the next barrier).
  static_assert(R <= kThreads, "one y_bar row per thread");
  T ybar[16];
#pragma unroll
  for (int j = 0; j < 16; ++j) ybar[j] = T(0);

  for (int pi = 0; pi < fc_path_count<L3>(); ++pi) {
    __syncthreads();
    int P = 0;
    const int L1 = with_fc_path<L3>(pi, [&](auto l1, auto l2, auto p) {
      build_matrices<decltype(l1)::value, decltype(l2)::value, L3>(a.y, t.row0, t.nrows, s.mat);
      P = decltype(p)::value;
    });
    const int D1 = 2 * L1 + 1;
    const bool first_of_l1 = L1 != prev_l1;  // then it stores its x_bar terms instead of adding
    prev_l1 = L1;
    for (int q = tid; q < R * D1 * D; q += kThreads) s.h[q] = T(0);
    const T* wp = a.w + (int64_t(t.g) * kSeedPaths + P) * c_in * c_out;
    for (int64_t u0 = 0; u0 < c_in; u0 += BK) {
      XyAcc<T, kTc> acc;
      acc.zero();
      for (int64_t wb0 = 0; wb0 < c_out; wb0 += kCtW) {
        __syncthreads();  // the previous block's readers of s.wt (and of s.c, s.g) are done
        if (!ct_resident || (pi == 0 && u0 == 0)) stage_ct_block<T, L3, kTc>(a.ctt, t, c_out, wb0, s.c);
        stage_w_block<T>(wp, c_in, c_out, u0, wb0, s.wt);
        __syncthreads();
        acc.multiply(s.c, s.wt);  // the whole 64-channel block (zeros past C_out in both operands)
      }
      __syncthreads();  // every thread is done with s.wt before s.g overwrites it
      acc.store(s.g);
      __syncthreads();
      if (x_dst)  // x_bar[n, i, u] += sum_k M[r][i][k] G[(r, k), u]; one thread per (r, u),
                     // channels fastest (coalesced). Two items at a time, both items' old values
                     // loaded before either is stored, so that their L2 round trips overlap (the
                     // compiler cannot move a load above a store that may alias it).
        for (int q0 = tid; q0 < R * BK; q0 += 2 * kThreads) {
          T old[2][7];
          T* xb[2];
          bool ok[2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int q = q0 + h * kThreads, uu = q % BK, r = q / BK;
            ok[h] = q < R * BK && r < t.nrows && u0 + uu < c_in;
            xb[h] = x_dst + ((t.row0 + (ok[h] ? r : 0)) * 16 + L1 * L1) * c_in + u0 + (ok[h] ? uu : 0);
#pragma unroll
            for (int i = 0; i < 7; ++i) old[h][i] = (ok[h] && i < D1 && !first_of_l1) ? xb[h][i * c_in] : T(0);
          }
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            if (!ok[h]) continue;
            const int q = q0 + h * kThreads, uu = q % BK, r = q / BK;
            T gk[D];
#pragma unroll
            for (int k = 0; k < D; ++k) gk[k] = s.g[uu][r * D + k];
#pragma unroll
            for (int i = 0; i < 7; ++i) {
              if (i >= D1) break;
              T v = old[h][i];
#pragma unroll
              for (int k = 0; k < D; ++k) v += s.mat[(r * D1 + i) * D + k] * gk[k];
              xb[h][i * c_in] = v;
            }
          }
        }
      if (a.y_bar)  // H[r][i][k] += sum_u x[n, u, i] G[(r, k), u]; one thread per (r, i) and all
                    // k, so each x value is loaded once (not once per k)
        for (int q = tid; q < t.nrows * D1; q += kThreads) {
          const int i = q % D1, r = q / D1;
          const T* xr = a.xt + ((t.row0 + r) * 16 + L1 * L1 + i) * c_in + u0;
          const int nu = int(c_in - u0 < BK ? c_in - u0 : BK);
          T xv[BK];  // the chunk's x values, loaded together (vectorised when aligned and full)
          if (nu == BK && c_in % 4 == 0) {
#pragma unroll
            for (int uu = 0; uu < BK; uu += 4) lds4(xr + uu, xv + uu);
          } else {
#pragma unroll
            for (int uu = 0; uu < BK; ++uu) xv[uu] = uu < nu ? xr[uu] : T(0);
          }
          T* h = s.h + q * D;  // = H[r][i][0]
#pragma unroll
          for (int k = 0; k < D; ++k) {
            T v = T(0);
#pragma unroll
            for (int uu = 0; uu < BK; ++uu) v += xv[uu] * s.g[uu][r * D + k];
            h[k] += v;
          }
        }
    }
    if (a.y_bar) {  // y_bar[n, j] += sum_ik C_ijk H[r][i][k]; thread r owns row r
      __syncthreads();
      if (tid < t.nrows)
        with_fc_path<L3>(pi, [&](auto l1, auto l2, auto) {
          constexpr int L1c = decltype(l1)::value, L2 = decltype(l2)::value, D1c = 2 * L1c + 1;
          const T* h = s.h + tid * D1c * D;
          CG<L1c, L2, L3>::visit([&](int i, int j, int k, double c) { ybar[L2 * L2 + j] += T(c) * h[i * D + k]; });
        });
    }
  }
  if (y_dst && tid < t.nrows) {  // the tile's only write of its y_bar rows
    T* out = y_dst + (t.row0 + tid) * 16;
#pragma unroll
    for (int j = 0; j < 16; ++j) out[j] = ybar[j];
  }
}

template <class T, bool kTc>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 4 : 2) fc_xy_kernel(XyArgs<T> a, TileMap map) {
  extern __shared__ __align__(16) unsigned char xy_smem[];
  XySmem<T, kTc>& s = *reinterpret_cast<XySmem<T, kTc>*>(xy_smem);
  const TileRef t = locate(map, a.d, blockIdx.x);
  switch (t.l3) {
    case 0: xy_tile<T, 0, kTc>(a, t, s); break;
    case 1: xy_tile<T, 1, kTc>(a, t, s); break;
    case 2: xy_tile<T, 2, kTc>(a, t, s); break;
    default: xy_tile<T, 3, kTc>(a, t, s); break;
  }
}

// x_bar += x_part[0] + x_part[1] + x_part[2] (the l3 = 2, 1, 0 tiles' terms, in that order), and
// y_bar the same; nx or ny is 0 when that result is not asked for.
template <class T>
__global__ void fc_xy_sum_kernel(T* x_bar, const T* x_part, int64_t nx, T* y_bar, const T* y_part, int64_t ny) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nx + ny; i += int64_t(gridDim.x) * blockDim.x) {
    if (i < nx) {
      x_bar[i] = ((x_bar[i] + x_part[i]) + x_part[nx + i]) + x_part[2 * nx + i];
    } else {
      const int64_t j = i - nx;
      y_bar[j] = ((y_bar[j] + y_part[j]) + y_part[ny + j]) + y_part[2 * ny + j];
    }
  }
}

// ------------------------------------------------------------------------------ w_bar
template <class T> struct WArgs {
  const T* xt;   // [n, 16, C_in]
  const T* y;
  const T* ctt;  // [n, 16, C_out]
  T* part;       // [groups, slabs, 34, C_in, C_out]
  FcDims d;
  int64_t slabs, slab_rows;
};

// (n, k) pairs per reduction chunk of the w_bar product (same shared-memory bytes in fp64).
template <class T> struct WChunk { static constexpr int M = sizeof(T) == 4 ? 64 : 32; };

// Rows whose M_p the w_bar kernel builds at once, in tiles: the build (global y loads, then
// every CG term by one thread per row) is latency the CTA waits through, so it is amortised
// over several chunks of the product. fp64 keeps its static shared memory under 48 KB.
template <class T> struct WBuild { static constexpr int kTiles = sizeof(T) == 4 ? 4 : 2; };

// The ct chunk is double-buffered: the next chunk's copy (cp.async, no registers) flies during
// this chunk's A stage and product. 54 KB of dynamic shared memory in fp32, 50 KB in fp64;
// 4 CTAs per SM either way. With the heaviest-first grid, W_bar went 1.18 -> 0.82 ms (fp32,
// N = 20k, ncu, H200), and 2.56 -> 2.12 in fp64.
// Row lengths of the A and ct stages: plain in fp32 (FMA tiles), dmma_ld in fp64 (DMMA blocks).
// The 3xTF32 engine swizzles both stages instead (padding would cost the fourth CTA per SM).
template <class T> constexpr int kWLdA = sizeof(T) == 8 ? dmma_ld(Chunk<T>::K) : Chunk<T>::K;
template <class T> constexpr int kWLdC = sizeof(T) == 8 ? dmma_ld(kBN) : kBN;

template <class T> struct WSmem {
  T a[WChunk<T>::M][kWLdA<T>];        // A chunk, [(n, k)][u] (swz<kTc> on u)
  T c[2][WChunk<T>::M][kWLdC<T>];     // ct chunks, [buffer][(n, k)][w] (swz<kTc> on w)
  T mat[WBuild<T>::kTiles * kMatMax];
};

// 16 bytes (4 floats / 2 doubles) to shared memory; p 16-byte aligned.
__device__ __forceinline__ void sts_vec(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void sts_vec(double* p, const double* v) {
  *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
}

// The w_bar kernel's A chunk: a[mm][u] = sum_i x[n, u0 + u, i] M[r][i][k] for the (n, k) pairs
// m0 + mm of the row chunk (zeros past it). As the forward's stage_a_chunk: one item is one
// (n, k) pair and V = 16 bytes of channels (vector x loads, one vector store, each M value read
// once for V channels), with l1 known at compile time; consecutive lanes take consecutive
// channel groups, so a warp's stores fill whole rows of `a`.
template <class T, int L1, int L3, bool kSwz>
__device__ void stage_w_a_chunk(const WArgs<T>& a, int64_t row0, int nrows, int m0, int64_t u0, WSmem<T>& s) {
  constexpr int D = 2 * L3 + 1, D1 = 2 * L1 + 1, BK = Chunk<T>::K, V = 16 / sizeof(T), G = BK / V;
  constexpr int kWm = WChunk<T>::M;
  const int64_t c_in = a.d.c_in;
#pragma unroll 2
  for (int q = threadIdx.x; q < kWm * G; q += kThreads) {
    const int g = q % G, mm = q / G, m = m0 + mm, u = g * V;
    const bool row_ok = m < nrows * D;
    const int r = row_ok ? m / D : 0, k = m % D;
    const T* xr = a.xt + ((row0 + r) * 16 + L1 * L1) * c_in + u0 + u;
    T xv[D1][V];
    load_x_block(xr, c_in, u0 + u, row_ok, xv);
    const T* mr = s.mat + r * D1 * D + k;
    T v[V];
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = T(0);
#pragma unroll
    for (int i = 0; i < D1; ++i) {
      const T mv = mr[i * D];
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] += xv[i][j] * mv;
    }
    sts_vec(&s.a[mm][swz<kSwz>(mm, u)], v);
  }
}

// The ct chunk of (n, k) pairs m0 + mm (mm < kWm) of the rows from row0 (nrows of them), channels
// [w0, w0 + kBN), into c[mm][w] (zeros past them): 16-byte cp.async copies when C_out allows
// them (a V-group of channels is then wholly inside or outside C_out, and 16-byte aligned),
// else plain loads and stores. The caller commits the group.
template <class T, int L3, bool kSwz>
__device__ void stage_w_ct_chunk(const WArgs<T>& a, int64_t row0, int nrows, int m0, int64_t w0, T (*c)[kWLdC<T>]) {
  constexpr int D = 2 * L3 + 1, V = 16 / sizeof(T), G = kBN / V, kWm = WChunk<T>::M;
  const int64_t c_out = a.d.c_out;
  const bool vec = c_out % V == 0;
#pragma unroll
  for (int q = threadIdx.x; q < kWm * G; q += kThreads) {
    const int g = q % G, mm = q / G, m = m0 + mm;
    const bool row_ok = m < nrows * D;
    const int r = row_ok ? m / D : 0, k = m % D;
    const int64_t w = w0 + g * V;
    const T* src = a.ctt + ((row0 + r) * 16 + L3 * L3 + k) * c_out + (w < c_out ? w : 0);
    if (vec) {
      cp_async16(&c[mm][swz<kSwz>(mm, g * V)], src, row_ok && w < c_out);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) c[mm][swz<kSwz>(mm, g * V + j)] = (row_ok && w + j < c_out) ? ldg(src + j) : T(0);
    }
  }
}

// The w_bar kernel's K x 64 block of W_bar[p] (u x w), summed over the (n, k) pairs of the
// chunks: zero(), multiply(one chunk), visit(f(u, w, value)) with u, w relative to the block.
template <class T, bool kTc> struct WAcc;

// fp32: FMAs on a thread tile of 4 channels u {4 tu ..} times TW channels w {TW tw ..}.
template <> struct WAcc<float, false> {
  static constexpr int NU = Chunk<float>::K / 4, TW = kBN / (kThreads / NU);
  float v[4][TW];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < TW; ++j) v[i][j] = 0.f;
  }
  __device__ void multiply(const float (*a)[kWLdA<float>], const float (*c)[kWLdC<float>]) {
    const int tu = threadIdx.x % NU, tw = threadIdx.x / NU;
#pragma unroll 8
    for (int mm = 0; mm < WChunk<float>::M; ++mm) {
      float av[4], bv[TW];
      lds4(&a[mm][4 * tu], av);
      if constexpr (TW == 4) lds4(&c[mm][TW * tw], bv);
      else lds2(&c[mm][TW * tw], bv);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < TW; ++j) v[i][j] += av[i] * bv[j];
    }
  }
  template <class F> __device__ void visit(F&& f) const {
    const int tu = threadIdx.x % NU, tw = threadIdx.x / NU;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < TW; ++j) f(4 * tu + i, TW * tw + j, v[i][j]);
  }
};

// fp64: DMMA (dmma.cuh), warp q owning all 16 channels u times channels w [16 q, 16 q + 16).
template <> struct WAcc<double, false> {
  double v[1][2][4];
  __device__ void zero() {
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) v[0][j][e] = 0.0;
  }
  __device__ void multiply(const double (*a)[kWLdA<double>], const double (*c)[kWLdC<double>]) {
    dmma_block<1, 2, WChunk<double>::M>(&a[0][0], kWLdA<double>, &c[0][0], kWLdC<double>, 0, 16 * (threadIdx.x / 32), v);
  }
  template <class F> __device__ void visit(F&& f) const {
    const int n0 = 16 * (threadIdx.x / 32);
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) f(dmma_row(0, e), n0 + dmma_col(j, e), v[0][j][e]);
  }
};

// fp32 with kTc: 3xTF32, warp q owning all 32 channels u times channels w [16 q, 16 q + 16); the
// stages are swizzled (swz<true>).
template <> struct WAcc<float, true> {
  float v[2][2][4];
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) v[i][j][e] = 0.f;
  }
  __device__ void multiply(const float (*a)[kWLdA<float>], const float (*c)[kWLdC<float>]) {
    tf32x3_block<2, 2, WChunk<float>::M>([&](int k, int m) { return a[k][swz<true>(k, m)]; },
                                         [&](int k, int n) { return c[k][swz<true>(k, n)]; }, 0, 16 * (threadIdx.x / 32), v);
  }
  template <class F> __device__ void visit(F&& f) const {
    const int n0 = 16 * (threadIdx.x / 32);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) f(dmma_row(i, e), n0 + dmma_col(j, e), v[i][j][e]);
  }
};

// The slab's rows go in builds of RB rows (M_p built once per build), each build in chunks of
// kWm (n, k) pairs. Per chunk: barrier; the next chunk's ct copy is issued; the A chunk is
// staged; this chunk's copy is waited for; barrier; product. So a ct chunk's load latency
// hides behind a whole chunk of work, and the barriers per chunk stay two.
template <class T, int L3, bool kTc>
__device__ void w_path(const WArgs<T>& a, int pi, int64_t s_row0, int64_t s_rows, int64_t u0, int64_t w0, WSmem<T>& s) {
  constexpr int D = 2 * L3 + 1, R = Tile<L3>::R, kWm = WChunk<T>::M;
  constexpr int RB = R * WBuild<T>::kTiles;  // rows per build
  const int64_t c_in = a.d.c_in, c_out = a.d.c_out;
  int P = 0;
  WAcc<T, kTc> acc;
  acc.zero();
  auto build_rows = [&](int64_t r0) { return int(s_rows - r0 < RB ? s_rows - r0 : RB); };
  int L1 = 0, buf = 0, m0 = 0;
  int64_t r0 = 0;
  if (s_rows > 0) stage_w_ct_chunk<T, L3, kTc>(a, s_row0, build_rows(0), 0, w0, s.c[0]);
  cp_async_commit();
  while (r0 < s_rows) {
    const int nrows = build_rows(r0);
    const int64_t row0 = s_row0 + r0;
    int next_m0 = m0 + kWm;  // the next chunk: further in this build, or the next build's first
    int64_t next_r0 = r0;
    if (next_m0 >= nrows * D) {
      next_m0 = 0;
      next_r0 = r0 + RB;
    }
    __syncthreads();  // the last product is done with `a` and with c[buf ^ 1]; the last A stage with mat
    if (next_r0 < s_rows) stage_w_ct_chunk<T, L3, kTc>(a, s_row0 + next_r0, build_rows(next_r0), next_m0, w0, s.c[buf ^ 1]);
    cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group
    if (m0 == 0) {
      L1 = with_fc_path<L3>(pi, [&](auto l1, auto l2, auto) {
        build_matrices<decltype(l1)::value, decltype(l2)::value, L3, T, RB>(a.y, row0, nrows, s.mat);
      });
      __syncthreads();
    }
    switch (L1) {  // the A chunk, with the row's l1 block size known at compile time
      case 0: stage_w_a_chunk<T, 0, L3, kTc>(a, row0, nrows, m0, u0, s); break;
      case 1: stage_w_a_chunk<T, 1, L3, kTc>(a, row0, nrows, m0, u0, s); break;
      case 2: stage_w_a_chunk<T, 2, L3, kTc>(a, row0, nrows, m0, u0, s); break;
      default: stage_w_a_chunk<T, 3, L3, kTc>(a, row0, nrows, m0, u0, s); break;
    }
    cp_async_wait<1>();  // this chunk's ct copy (all groups but the newest) has landed
    __syncthreads();
    acc.multiply(s.a, s.c[buf]);
    m0 = next_m0;
    r0 = next_r0;
    buf ^= 1;
  }
  cp_async_wait<0>();
  with_fc_path<L3>(pi, [&](auto, auto, auto p) { P = decltype(p)::value; });
  const int64_t slab = blockIdx.x % (a.d.groups * a.slabs);  // = g * slabs + s
  T* out = a.part + (slab * kSeedPaths + P) * c_in * c_out;
  acc.visit([&](int uu, int ww, T v) {
    const int64_t u = u0 + uu, wc = w0 + ww;
    if (u < c_in && wc < c_out) out[u * c_out + wc] = v;
  });
}

// The w_bar grid runs the heaviest CTAs first. A CTA's work grows with 2 l3 + 1 (its product
// and its (n, k) pairs) and with 2 l1 + 1 (its A stage), up to 7x between paths; in seed order
// an l3 = 3 CTA could start in the last wave and set the kernel's end. So CTA o's path is the
// o-th in the order l3 = 3, 2, 1, 0, and within an l3, l1 descending (all slabs of a path
// together); the light l3 = 0 CTAs fill the last wave's gaps.
struct WPathSlot {
  int l3, pi;  // pi: index among the paths into l3, in seed order
};
__device__ WPathSlot heavy_first_slot(int o) {
  WPathSlot out{0, 0};
  int start = 0;
  static_for<0, 4>([&](auto i) {
    constexpr int L3 = 3 - decltype(i)::value, n = fc_path_count<L3>();
    if (o >= start && o < start + n) out = WPathSlot{L3, n - 1 - (o - start)};  // seed order has l1 ascending
    start += n;
  });
  return out;
}

template <class T, bool kTc>
__global__ void __launch_bounds__(kThreads, 4) fc_w_kernel(WArgs<T> a) {
  extern __shared__ __align__(16) unsigned char w_smem[];
  WSmem<T>& s = *reinterpret_cast<WSmem<T>*>(w_smem);
  const int64_t per_path = a.d.groups * a.slabs;
  const WPathSlot slot = heavy_first_slot(int(blockIdx.x / per_path));
  const int64_t gs = blockIdx.x % per_path, g = gs / a.slabs, sl = gs % a.slabs;
  const int64_t first = sl * a.slab_rows;
  const int64_t rows = first >= a.d.rows_per_group ? 0
                       : (a.d.rows_per_group - first < a.slab_rows ? a.d.rows_per_group - first : a.slab_rows);
  const int64_t u0 = int64_t(blockIdx.y) * Chunk<T>::K, w0 = int64_t(blockIdx.z) * kBN;
  const int64_t row0 = g * a.d.rows_per_group + first;
  switch (slot.l3) {
    case 0: w_path<T, 0, kTc>(a, slot.pi, row0, rows, u0, w0, s); break;
    case 1: w_path<T, 1, kTc>(a, slot.pi, row0, rows, u0, w0, s); break;
    case 2: w_path<T, 2, kTc>(a, slot.pi, row0, rows, u0, w0, s); break;
    default: w_path<T, 3, kTc>(a, slot.pi, row0, rows, u0, w0, s); break;
  }
}

// Slabs per group the w_bar launch uses, at most `cap` (the scratch's room). A CTA walks its
// slab's rows serially, so with few CTAs the launch lasts as long as one long CTA (N = 1k:
// 8 slabs of 128 rows gave 272 CTAs on 132 SMs). Slabs of 128 rows while they give two waves
// of CTAs (4 per SM), else thinner slabs, down to the scratch's 32 rows, until they do.
int64_t w_slabs_used(const FcDims& d, int64_t cap, int64_t ctas_per_slab) {
  const int64_t by_rows = (d.rows_per_group + 127) / 128, slots = 2 * 4 * int64_t(sm_count());
  const int64_t to_fill = (slots + ctas_per_slab - 1) / ctas_per_slab;
  const int64_t s = by_rows > to_fill ? by_rows : to_fill;
  return s < cap ? (s < 1 ? 1 : s) : cap;
}

// w_bar[g, q] = sum_s part[g, s, q] in slab order.
template <class T> __global__ void fc_slab_sum_kernel(const T* part, T* w_bar, int64_t groups, int64_t slabs, int64_t size) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= groups * size) return;
  const int64_t g = i / size, q = i % size;
  T v = T(0);
  for (int64_t sl = 0; sl < slabs; ++sl) v += part[(g * slabs + sl) * size + q];
  w_bar[i] = v;
}

// ------------------------------------------------------------------------------ launches
// Tiles per group for each l3, in the order l3 = 3, 2, 1, 0: the heaviest tiles (most paths)
// first, so that the light ones fill the last wave.
TileMap tile_map(const FcDims& d) {
  TileMap m{};
  m.start[0] = 0;
  for (int o = 0; o < 4; ++o) {
    const int l3 = 3 - o, R = kBM / (2 * l3 + 1);
    m.l3_of[o] = l3;
    m.per_group[o] = (d.rows_per_group + R - 1) / R;
    m.start[o + 1] = m.start[o] + m.per_group[o] * d.groups;
  }
  return m;
}

// The forward launch: out [n, C_out, 16] with BN = 32 (public_out), else [n, 16, C_out] with BN = 64.
template <class T, bool kTc> void launch_fwd(const FwdArgs<T>& args, const TileMap& map, bool public_out, cudaStream_t stream) {
  // over the 48 KB default in fp64: opt in (per device, so on every launch; it is not a stream op)
  constexpr int smem = int(sizeof(FwdSmem<T, kTc>));
  const unsigned tiles = unsigned(map.start[4]);
  if (public_out) {
    cudaFuncSetAttribute(fc_fwd_kernel<T, 32, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    fc_fwd_kernel<T, 32, kTc><<<dim3(tiles, grid_for(args.d.c_out, 32)), kThreads, smem, stream>>>(args, map);
  } else {
    cudaFuncSetAttribute(fc_fwd_kernel<T, kBN, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    fc_fwd_kernel<T, kBN, kTc><<<dim3(tiles, grid_for(args.d.c_out, kBN)), kThreads, smem, stream>>>(args, map);
  }
}

template <class T, bool kTc> void launch_xy(const XyArgs<T>& args, const TileMap& map, cudaStream_t stream) {
  // over the 48 KB default: opt in (per device, so on every launch; it is not a stream op)
  cudaFuncSetAttribute(fc_xy_kernel<T, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(XySmem<T, kTc>)));
  fc_xy_kernel<T, kTc><<<unsigned(map.start[4]), kThreads, sizeof(XySmem<T, kTc>), stream>>>(args, map);
}

template <class T, bool kTc> void launch_w(const WArgs<T>& args, dim3 grid, cudaStream_t stream) {
  cudaFuncSetAttribute(fc_w_kernel<T, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(WSmem<T>)));
  fc_w_kernel<T, kTc><<<grid, kThreads, sizeof(WSmem<T>), stream>>>(args);
}

// f(kTc) with kTc a std::bool_constant: precision="tf32x3" (fc.py) selects the 3xTF32 engine for
// float32; float64 always runs DMMA (kTc false, so no fp64 kTc kernels are instantiated).
template <class T, class F> void with_engine(int64_t tf32x3, F&& f) {
  if constexpr (sizeof(T) == 4) {
    if (tf32x3) return f(std::true_type{});
  }
  f(std::false_type{});
}

ffi::Error FcCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer w,
                  ffi::Result<ffi::AnyBuffer> out, int64_t c_in, int64_t c_out, int64_t groups,
                  int64_t public_out, int64_t tf32x3) {
  FcDims d;
  if (auto err = fc_check(x, y, w, *out, c_in, c_out, groups, &d); !err.success()) return err;
  return dispatch_float(out->element_type(), "tensor_product", [&](auto tag) {
    using T = decltype(tag);
    if (d.n == 0 || c_out == 0) return ffi::Error::Success();
    if (c_in == 0) {
      cudaMemsetAsync(out->untyped_data(), 0, out->size_bytes(), stream);
      return cuda_status("tensor_product");
    }
    const TileMap map = tile_map(d);
    const FwdArgs<T> args{x.typed_data<T>(), y.typed_data<T>(), w.typed_data<T>(), out->typed_data<T>(), d};
    with_engine<T>(tf32x3, [&](auto tc) { launch_fwd<T, decltype(tc)::value>(args, map, public_out != 0, stream); });
    return cuda_status("tensor_product");
  });
}

ffi::Error FcBwdCuda(cudaStream_t stream, ffi::AnyBuffer xt, ffi::AnyBuffer y, ffi::AnyBuffer w, ffi::AnyBuffer ctt,
                     ffi::Result<ffi::AnyBuffer> x_bar, ffi::Result<ffi::AnyBuffer> y_bar,
                     ffi::Result<ffi::AnyBuffer> w_bar, ffi::Result<ffi::AnyBuffer> scratch, int64_t c_in,
                     int64_t c_out, int64_t groups, int64_t slabs, int64_t tf32x3) {
  FcDims d;
  if (auto err = fc_check_bwd(xt, y, w, ctt, *x_bar, *y_bar, *w_bar, *scratch, c_in, c_out, groups, slabs, &d);
      !err.success())
    return err;
  return dispatch_float(ctt.element_type(), "tensor_product backward", [&](auto tag) {
    using T = decltype(tag);
    const FcBwdBuffers<T> b(xt, y, w, ctt, *x_bar, *y_bar, *w_bar, *scratch, d, slabs);
    if (d.n == 0 || c_in == 0 || c_out == 0) {  // every non-empty result is zero
      if (b.x_bart) cudaMemsetAsync(b.x_bart, 0, x_bar->size_bytes(), stream);
      if (b.y_bar) cudaMemsetAsync(b.y_bar, 0, y_bar->size_bytes(), stream);
      if (b.w_bar) cudaMemsetAsync(b.w_bar, 0, w_bar->size_bytes(), stream);
      return cuda_status("tensor_product backward");
    }
    if (b.x_bart || b.y_bar) {
      const XyArgs<T> args{b.xt, b.y, b.w, b.ctt, b.x_bart, b.y_bar, b.x_part, b.y_part, d};
      const TileMap map = tile_map(d);  // l3 = 3 first (the heaviest tiles)
      with_engine<T>(tf32x3, [&](auto tc) { launch_xy<T, decltype(tc)::value>(args, map, stream); });
      const int64_t nx = b.x_bart ? d.n * 16 * c_in : 0, ny = b.y_bar ? d.n * 16 : 0;
      const unsigned blocks = grid_for(nx + ny, 256), cap = unsigned(8 * sm_count());
      fc_xy_sum_kernel<T><<<blocks < cap ? blocks : cap, 256, 0, stream>>>(b.x_bart, b.x_part, nx, b.y_bar, b.y_part, ny);
    }
    if (b.w_bar) {
      const unsigned gy = grid_for(c_in, Chunk<T>::K), gz = grid_for(c_out, kBN);
      const int64_t used = w_slabs_used(d, slabs, groups * kSeedPaths * gy * gz);
      const int64_t slab_rows = (d.rows_per_group + used - 1) / used;
      const WArgs<T> args{b.xt, b.y, b.ctt, b.w_part, d, used, slab_rows};
      const dim3 grid(unsigned(groups * used * kSeedPaths), gy, gz);
      with_engine<T>(tf32x3, [&](auto tc) { launch_w<T, decltype(tc)::value>(args, grid, stream); });
      const int64_t size = d.w_size();
      fc_slab_sum_kernel<T><<<grid_for(groups * size, 256), 256, 0, stream>>>(b.w_part, b.w_bar, groups, used, size);
    }
    return cuda_status("tensor_product backward");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_fc_cuda, FcCuda, BJ_FC_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_fc_bwd_cuda, FcBwdCuda,
                              BJ_FC_BWD_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

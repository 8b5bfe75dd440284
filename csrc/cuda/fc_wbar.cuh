// The fully connected product's CUDA kernels, part 4 of 4: w_bar (fc_w_kernel over paths and
// slabs of rows, the fixed-order slab sum) and its launch. Included by fc_cuda.cu only.
#pragma once
#include "cuda/fc_common.cuh"

namespace bj {
namespace {

// ------------------------------------------------------------------------------ w_bar
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
// over several chunks of the product. fp64 builds 2 tiles at a time: 4 would cost it the fourth
// CTA per SM, which lost (fwd+bwd 2.98 -> 3.16 ms at N = 20k, H200, 2026-11-29).
template <class T> struct WBuild { static constexpr int kTiles = sizeof(T) == 4 ? 4 : 2; };

// The ct chunk is double-buffered: the next chunk's copy (cp.async, no registers) flies during
// this chunk's A stage and product. 54 KB of dynamic shared memory in fp32 (either engine), 53 KB
// in fp64; 4 CTAs per SM either way. With the heaviest-first grid, W_bar went 1.18 -> 0.82 ms (fp32,
// N = 20k, ncu, H200), and 2.56 -> 2.12 in fp64.
// Row lengths of the A and ct stages: plain in fp32 (FMA tiles), dmma_ld in fp64 (DMMA blocks).
// The TF32 engines swizzle both stages instead (padding would cost the fourth CTA per SM).
template <class T> constexpr int kWLdA = sizeof(T) == 8 ? dmma_ld(Chunk<T>::K) : Chunk<T>::K;
template <class T> constexpr int kWLdC = sizeof(T) == 8 ? dmma_ld(kBN) : kBN;

template <class T> struct WSmem {
  T a[WChunk<T>::M][kWLdA<T>];        // A chunk, [(n, k)][u] (swz<kTc != 0> on u)
  T c[2][WChunk<T>::M][kWLdC<T>];     // ct chunks, [buffer][(n, k)][w] (swz<kTc != 0> on w)
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
template <class T, int kTc> struct WAcc;

// fp32: FMAs on a thread tile of 4 channels u {4 tu ..} times TW channels w {TW tw ..}.
template <> struct WAcc<float, 0> {
  static constexpr int NU = Chunk<float>::K / 4, TW = kBN / (kThreads / NU);
  float v[4][TW];
  __device__ void zero() { zero_tile(v); }
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



// The tensor-core engines (DMMA in fp64, 3xTF32 or TF32 in fp32 with kTc, which read both stages
// swizzled): warp q owns all K channels u times channels w [16 q, 16 q + 16).
template <class T, int kPasses> struct WTcAcc {
  static constexpr bool kSwz = sizeof(T) == 4;
  WarpTiles<T, Chunk<T>::K / 16, 2> tiles;
  __device__ void zero() { tiles.zero(); }
  template <class PA, class PC> __device__ void multiply(PA a, PC c) {
    tiles.template multiply<WChunk<T>::M, kPasses>([&](int k, int m) { return a[k][swz<kSwz>(k, m)]; },
                                                   [&](int k, int n) { return c[k][swz<kSwz>(k, n)]; }, 0,
                                                   16 * (threadIdx.x / 32));
  }
  template <class F> __device__ void visit(F&& f) const {
    const int n0 = 16 * (threadIdx.x / 32);
    tiles.visit([&](int u, int w, T v) { f(u, n0 + w, v); });
  }
};
template <> struct WAcc<double, 0> : WTcAcc<double, 0> {};
template <int kTc> struct WAcc<float, kTc> : WTcAcc<float, kTc> {};

// The slab's rows go in builds of RB rows (M_p built once per build), each build in chunks of
// kWm (n, k) pairs. Per chunk: barrier; the next chunk's ct copy is issued; the A chunk is
// staged; this chunk's copy is waited for; barrier; product. So a ct chunk's load latency
// hides behind a whole chunk of work, and the barriers per chunk stay two.
template <class T, int L3, int kTc>
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
  if (s_rows > 0) stage_w_ct_chunk<T, L3, kTc != 0>(a, s_row0, build_rows(0), 0, w0, s.c[0]);
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
    if (next_r0 < s_rows)
      stage_w_ct_chunk<T, L3, kTc != 0>(a, s_row0 + next_r0, build_rows(next_r0), next_m0, w0, s.c[buf ^ 1]);
    cp_async_commit();  // possibly empty: the wait below always leaves exactly the newest group
    if (m0 == 0) {
      L1 = with_fc_path<L3>(pi, [&](auto l1, auto l2, auto) {
        build_matrices<decltype(l1)::value, decltype(l2)::value, L3, T, RB>(a.y, row0, nrows, s.mat);
      });
      __syncthreads();
    }
    switch (L1) {  // the A chunk, with the row's l1 block size known at compile time
      case 0: stage_w_a_chunk<T, 0, L3, kTc != 0>(a, row0, nrows, m0, u0, s); break;
      case 1: stage_w_a_chunk<T, 1, L3, kTc != 0>(a, row0, nrows, m0, u0, s); break;
      case 2: stage_w_a_chunk<T, 2, L3, kTc != 0>(a, row0, nrows, m0, u0, s); break;
      default: stage_w_a_chunk<T, 3, L3, kTc != 0>(a, row0, nrows, m0, u0, s); break;
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

template <class T, int kTc>
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


template <class T, int kTc> void launch_w(const WArgs<T>& args, dim3 grid, cudaStream_t stream) {
  cudaFuncSetAttribute(fc_w_kernel<T, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(WSmem<T>)));
  fc_w_kernel<T, kTc><<<grid, kThreads, sizeof(WSmem<T>), stream>>>(args);
}

}  // namespace
}  // namespace bj

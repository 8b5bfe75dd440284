// The fully connected product's CUDA kernels, part 3 of 4: x_bar and y_bar (fc_xy_kernel, the
// fixed-order sum of its per-l3 copies) and its launch. Included by fc_cuda.cu only.
#pragma once
#include <type_traits>

#include "cuda/fc_common.cuh"

namespace bj {
namespace {

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
// block by block per path, as before. 55.5 KB of dynamic shared memory in fp32, either engine,
// and 52 KB in fp64 (its tiles are half as tall): 4 CTAs per SM.
constexpr int kCtW = 64;

// Row lengths of the ct and W stages: plain in fp32 (FMA tiles), dmma_ld in fp64 (DMMA blocks).
// The TF32 engines swizzle the ct block instead (padding it would cost the fourth CTA per SM).
// fp64 tiles hold 64 (n, k) pairs: the resident ct block is then 34 KB instead of 68, and 4 CTAs
// fit on an SM instead of 2 at 128 registers (80 B of spill; the kernel waits on its per-path
// phases, and more CTAs hide them). H200, 2026-11-29, fp64 fwd+bwd pipelined: N = 20k 2.978 ->
// 2.886 ms, N = 1k 0.247 -> 0.221; at 3 CTAs per SM (157 registers, no spill) it was slower, 3.106.
template <class T> constexpr int kXyBM = sizeof(T) == 8 ? 64 : kBM;
template <class T, int kTc> constexpr int kXyLdC = sizeof(T) == 8 ? dmma_ld(kXyBM<T>) : kBM;
template <class T, int kTc> constexpr int kXyLdW = sizeof(T) == 8 ? dmma_ld(Chunk<T>::K) : kTc ? tf32_ld(Chunk<T>::K) : Chunk<T>::K;

template <class T, int kTc> struct XySmem {
  T c[kCtW][kXyLdC<T, kTc>];         // ct block, [w][(n, k)] (swz<kTc != 0> on (n, k))
  union {
    T wt[kCtW][kXyLdW<T, kTc>];    // W block, [w][u], during a product
    T g[Chunk<T>::K][kXyBM<T> + kPad];  // G chunk, [u][(n, k)], once the product is done
  };
  T mat[mat_max(kXyBM<T>)];
  T h[mat_max(kXyBM<T>)];            // H[r][i][k] = sum_u x[n, u, i] G[(n, k), u]
};

// The x/y kernel's G chunk, G[(n, k), u] = sum_w ct[(n, k), w] W[u, w] over 64-channel blocks
// of w, 128 (n, k) x K u: zero(), multiply(one block), store(into g[u][(n, k)]).
template <class T, int kTc> struct XyAcc;

// fp32: FMAs on a thread tile of 8 (n, k) rows as in the forward times K / 8 = 4 channels u.
template <> struct XyAcc<float, 0> {
  static constexpr int TU = Chunk<float>::K / 8;
  float v[8][TU];
  __device__ void zero() { zero_tile(v); }
  __device__ void multiply(const float (*c)[kXyLdC<float, 0>], const float (*wt)[kXyLdW<float, 0>]) {
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



// The tensor-core engines (DMMA in fp64, 3xTF32 or TF32 in fp32 with kTc, which read the
// swizzled ct block): warp q owns (n, k) rows [q BM / 4, (q + 1) BM / 4) times all K channels u.
template <class T, int kPasses> struct XyTcAcc {
  static constexpr int kRows = kXyBM<T> / 4;  // per warp
  WarpTiles<T, kRows / 16, Chunk<T>::K / 8> tiles;
  __device__ void zero() { tiles.zero(); }
  template <class PC, class PW> __device__ void multiply(PC c, PW wt) {
    tiles.template multiply<kCtW, kPasses>([&](int k, int m) { return c[k][swz<sizeof(T) == 4>(k, m)]; },
                                           [&](int k, int n) { return wt[k][n]; }, kRows * (threadIdx.x / 32), 0);
  }
  __device__ void store(T (*g)[kXyBM<T> + kPad]) const {
    const int m0 = kRows * (threadIdx.x / 32);
    tiles.visit([&](int m, int u, T v) { g[u][m0 + m] = v; });
  }
};
template <> struct XyAcc<double, 0> : XyTcAcc<double, 0> {};
template <int kTc> struct XyAcc<float, kTc> : XyTcAcc<float, kTc> {};

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
  constexpr int BM = kXyBM<T>;
  for (int q = threadIdx.x; q < BM * G; q += kThreads) {
    const int m = q % BM, g = q / BM, r = m / D, k = m % D;
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
template <class T, int L3, int kTc>
__device__ void xy_tile(const XyArgs<T>& a, const TileRef& t, XySmem<T, kTc>& s) {
  constexpr int D = 2 * L3 + 1, R = Tile<L3, kXyBM<T>>::R, BK = Chunk<T>::K;
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
      build_matrices<decltype(l1)::value, decltype(l2)::value, L3, T, R>(a.y, t.row0, t.nrows, s.mat);
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
        if (!ct_resident || (pi == 0 && u0 == 0)) stage_ct_block<T, L3, kTc != 0>(a.ctt, t, c_out, wb0, s.c);
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

template <class T, int kTc>
__global__ void __launch_bounds__(kThreads, 4) fc_xy_kernel(XyArgs<T> a, TileMap map) {
  extern __shared__ __align__(16) unsigned char xy_smem[];
  XySmem<T, kTc>& s = *reinterpret_cast<XySmem<T, kTc>*>(xy_smem);
  const TileRef t = locate(map, a.d, blockIdx.x, kXyBM<T>);
  switch (t.l3) {
    case 0: xy_tile<T, 0, kTc>(a, t, s); break;
    case 1: xy_tile<T, 1, kTc>(a, t, s); break;
    case 2: xy_tile<T, 2, kTc>(a, t, s); break;
    default: xy_tile<T, 3, kTc>(a, t, s); break;
  }
}

// x_bar += x_part[0] + x_part[1] + x_part[2] (the l3 = 2, 1, 0 tiles' terms, in that order), and
// y_bar the same; nx or ny is 0 when that result is not asked for. V consecutive elements per
// item: 16 bytes (V = 16 / sizeof(T)) where every pointer is 16-byte aligned (the scratch parts
// always are, fc_scratch_layout; the results are XLA's buffers), else 1. nx and ny are multiples
// of 16 (n * 16 * C_in, n * 16). H200, ncu, N = 20k, C_in = 32: one float per item 0.066 ms,
// 16 bytes per item 0.048; its 205 MB of traffic take 0.043 ms at the card's 4.8 TB/s.
__device__ __forceinline__ void add_vec(float4& a, const float4& b) {
  a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
}
__device__ __forceinline__ void add_vec(double2& a, const double2& b) {
  a.x += b.x; a.y += b.y;
}
template <class T, int V>
__global__ void fc_xy_sum_kernel(T* x_bar, const T* x_part, int64_t nx, T* y_bar, const T* y_part, int64_t ny) {
  using Vec = std::conditional_t<V == 1, T, std::conditional_t<sizeof(T) == 4, float4, double2>>;
  static_assert(sizeof(Vec) == V * sizeof(T), "V elements per item");
  const int64_t mx = nx / V, m = mx + ny / V;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m; i += int64_t(gridDim.x) * blockDim.x) {
    const bool is_x = i < mx;
    const int64_t at = (is_x ? i : i - mx) * V, stride = is_x ? nx : ny;
    Vec* dst = reinterpret_cast<Vec*>((is_x ? x_bar : y_bar) + at);
    const Vec* src = reinterpret_cast<const Vec*>((is_x ? x_part : y_part) + at);
    const Vec p0 = __ldg(src), p1 = __ldg(src + stride / V), p2 = __ldg(src + 2 * (stride / V));
    Vec v = *dst;
    if constexpr (V == 1) {
      v = ((v + p0) + p1) + p2;
    } else {
      add_vec(v, p0);
      add_vec(v, p1);
      add_vec(v, p2);
    }
    *dst = v;
  }
}

template <class T, int kTc> void launch_xy(const XyArgs<T>& args, const TileMap& map, cudaStream_t stream) {
  // over the 48 KB default: opt in (per device, so on every launch; it is not a stream op)
  cudaFuncSetAttribute(fc_xy_kernel<T, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(XySmem<T, kTc>)));
  fc_xy_kernel<T, kTc><<<unsigned(map.start[4]), kThreads, sizeof(XySmem<T, kTc>), stream>>>(args, map);
}

}  // namespace
}  // namespace bj

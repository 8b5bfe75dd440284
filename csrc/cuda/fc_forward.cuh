// The fully connected product's CUDA kernels, part 2 of 4: the forward (fc_fwd_kernel) and its
// launch. Included by fc_cuda.cu only.
#pragma once
#include "cuda/fc_common.cuh"

namespace bj {
namespace {

// ------------------------------------------------------------------------------ forward
// The W chunk is double-buffered: the next (path, chunk) step's copy (cp.async) flies during this
// step's product and the next A stage. The tile's y rows are staged once, so that each path's
// matrices are built from shared memory instead of waiting on global loads. Dynamic shared
// memory: 44 KB (fp32 FMA), 46.5 KB (TF32, 3xTF32), 56.5 KB (fp64).
// Row lengths of the A and W stages: kBM + kPad and kBN for the fp32 FMA tiles; for the
// tensor-core engines, the lengths that make their fragment loads conflict-free: dmma_ld (4 mod
// 16 doubles, fp64) and tf32_ld (8 mod 32 floats, TF32 and 3xTF32).
template <class T, int kTc> constexpr int kFwdLdA = sizeof(T) == 8 ? dmma_ld(kBM) : kTc ? tf32_ld(kBM) : kBM + kPad;
template <class T, int kTc> constexpr int kFwdLdB = sizeof(T) == 8 ? dmma_ld(kBN) : kTc ? tf32_ld(kBN) : kBN;

// (n, k) pairs per forward tile: kBM, except in the fp32 FMA BN = 32 kernel (small grids, N ~ 1k),
// which takes 64. There the call lasts about one CTA's path loop (the grid is under one wave),
// and at l3 = 3 that loop staged 144 A items per path for 128 threads; 64-pair tiles give twice
// the CTAs, each with half the rows: half the A stage (one round), half the product and half the
// M_p build per path. The stages keep their 128-pair sizes (row lengths unchanged).
// H200, N = 1k fwd: FMA 0.060 -> 0.055 ms; the same tiles lost with tf32x3 (0.054 -> 0.059) and
// in fp64 (0.080 -> 0.106), which keep 128 pairs.
template <class T, int BN, int kTc> constexpr int kFwdBM = BN == kBN || kTc || sizeof(T) == 8 ? kBM : 64;

template <class T, int kTc> struct FwdSmem {
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
// x in the public layout [n, C_in, 16]. One item = one row and NCH channels {c + 8 (h NCH + j)}
// (c < 8, channel half h < H): each channel's l1 block is one contiguous run (load_run), and each M
// value read from shared memory serves NCH channels. A warp's 32 items are 4 rows x 8 channels c,
// so the stores A[u][r * D + k] (row stride kBM + kPad = 4 mod 32 words, odd D) fall in distinct
// banks. In the fp32 BN = 64 kernel at l3 = 3 the channels come in two halves (H = 2): the tile's
// 18 rows give 144 items of 4 channels for 128 threads, so warp 0 ran a second round while the
// others waited at the next barrier; 288 items of 2 channels cut that round to half an item
// (H200, 2026-11-29, N = 20k pipelined: 0.550 -> 0.535 ms). The BN = 32 kernel (small grids)
// keeps items of 4: there, halves measured slower (N = 1k: 0.061 -> 0.064).
template <class T, int L1, int L3, int BN, int BM, class S>
__device__ void stage_a_chunk(const FwdArgs<T>& a, const TileRef& t, int64_t u0, S& s) {
  constexpr int D = 2 * L3 + 1, D1 = 2 * L1 + 1, R = Tile<L3, BM>::R, BK = Chunk<T>::K, NC = BK / 8;
  constexpr bool kFp32Big = sizeof(T) == 4 && BN == kBN;
  constexpr int H = kFp32Big && L3 == 3 ? 2 : 1, NCH = NC / H, P = R * 8;
  const int64_t c_in = a.d.c_in;
  // Items run over q < H P (row q % P / 8) in the fp32 BN = 64 kernel, which then spills 8 B
  // instead of 88; the other kernels keep rows in groups of 4, whose padding items past R skip.
  constexpr int Q = kFp32Big ? H * P : (R + 3) / 4 * 32;
  for (int q = threadIdx.x; q < Q; q += kThreads) {
    const int h = kFp32Big ? q / P : 0, c = q % 8, r = kFp32Big ? q % P / 8 : q / 32 * 4 + q / 8 % 4, j0 = h * NCH;
    if (!kFp32Big && r >= R) continue;
    const bool row_ok = r < t.nrows;
    T xv[NCH][D1];
#pragma unroll
    for (int j = 0; j < NCH; ++j) {
      const int64_t u = u0 + c + 8 * (j0 + j);
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
      T v[NCH];
#pragma unroll
      for (int j = 0; j < NCH; ++j) v[j] = T(0);
#pragma unroll
      for (int i = 0; i < D1; ++i) {
        const T m = mr[i * D + k];
#pragma unroll
        for (int j = 0; j < NCH; ++j) v[j] += xv[j][i] * m;
      }
#pragma unroll
      for (int j = 0; j < NCH; ++j) s.a[c + 8 * (j0 + j)][r * D + k] = v[j];
    }
  }
}

// The forward's W chunk: b[uu][c] = W_p[u0 + uu, w0 + c] for uu < K, c < BN (zeros outside
// C_in x C_out): 16-byte cp.async copies when C_out allows them (a V-group of channels is then
// wholly inside or outside C_out, and 16-byte aligned), else plain loads and stores. The
// BN = 64 kernel runs only for C_out % 4 == 0 (fc.py, _public_out), so it has no scalar
// fallback: its code is smaller (fp32 258 -> 196 KB, fp64 308 -> 171 KB; "no instruction" was
// 14% of its stall samples). H200, 2026-11-29, N = 20k pipelined: 3xTF32 0.459 -> 0.442 ms,
// fp64 0.936 -> 0.892, fp32 FMA level (0.538 / 0.547; it spilled 100 B then, 8 B since the A
// stage's half-width items). The caller commits the group.
template <class T, int BN, int LD>
__device__ void stage_w_chunk(const T* wp, const FcDims& d, int64_t u0, int64_t w0, T (*b)[LD]) {
  constexpr int BK = Chunk<T>::K, V = 16 / sizeof(T), G = BN / V;
  const bool vec = BN == kBN || d.c_out % V == 0;
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

// The forward's kFwdBM x BN accumulators and product, one chunk at a time. visit_runs(f) calls
// f(m, h, wl, v) for each run of kRun consecutive output channels that the thread holds: (n, k)
// pair m, channels w0 + 32 h + wl + [0, kRun), values v[0 .. kRun).
template <class T, int BN, int kTc> struct FwdAcc;

// fp32: FMAs on a thread tile of 8 (n, k) rows {4 tm .. +3, 64 + 4 tm .. +3} times 8 channels
// {4 tw .. +3, 32 + 4 tw .. +3} (BN = 64, 128 pairs), or of 4 rows {4 tm .. +3} times 4 channels
// {4 tw .. +3} (BN = 32, 64 pairs).
template <int BN> struct FwdAcc<float, BN, 0> {
  static constexpr int TM = kFwdBM<float, BN, 0> / 16, TN = BN / 8, kRun = 4;
  float v[TM][TN];
  __device__ void zero() { zero_tile(v); }
  __device__ void multiply(const float (*a)[kFwdLdA<float, 0>], const float (*b)[kFwdLdB<float, 0>]) {
    const int tm = threadIdx.x % 16, tw = threadIdx.x / 16;
#pragma unroll 8
    for (int uu = 0; uu < Chunk<float>::K; ++uu) {
      float av[TM], bv[TN];
      lds4(&a[uu][4 * tm], av);
      if constexpr (TM == 8) lds4(&a[uu][64 + 4 * tm], av + 4);
      lds4(&b[uu][4 * tw], bv);
      if constexpr (TN == 8) lds4(&b[uu][32 + 4 * tw], bv + 4);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) v[i][j] += av[i] * bv[j];
    }
  }
  template <class F> __device__ void visit_runs(F&& f) const {
    const int tm = threadIdx.x % 16, tw = threadIdx.x / 16;
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int h = 0; h < TN / 4; ++h) f(i < 4 ? 4 * tm + i : 64 + 4 * tm + i - 4, h, 4 * tw, &v[i][4 * h]);
  }
};



// The tensor-core engines (DMMA in fp64, 3xTF32 or TF32 in fp32 with kTc; warp_tiles.cuh): warp
// q owns (n, k) rows [32 q, 32 q + 32) times all BN channels.
template <class T, int BN, int kPasses> struct FwdTcAcc {
  static constexpr int kRun = 2;
  WarpTiles<T, 2, BN / 8> tiles;
  __device__ void zero() { tiles.zero(); }
  template <class PA, class PB> __device__ void multiply(PA a, PB b) {
    tiles.template multiply<Chunk<T>::K, kPasses>([&](int k, int m) { return a[k][m]; },
                                                  [&](int k, int n) { return b[k][n]; }, 32 * (threadIdx.x / 32), 0);
  }
  template <class F> __device__ void visit_runs(F&& f) const {
    const int m0 = 32 * (threadIdx.x / 32);
    tiles.visit_pairs([&](int m, int w, const T* v) { f(m0 + m, w / 32, w % 32, v); });
  }
};
template <int BN> struct FwdAcc<double, BN, 0> : FwdTcAcc<double, BN, 0> {};
template <int BN, int kTc> struct FwdAcc<float, BN, kTc> : FwdTcAcc<float, BN, kTc> {};

template <class T, int L3, int BN, bool kPublicOut, int kTc>
__device__ void fwd_tile(const FwdArgs<T>& a, const TileRef& t, int w0, FwdSmem<T, kTc>& s) {
  constexpr int D = 2 * L3 + 1, BK = Chunk<T>::K;
  const int tid = threadIdx.x;
  constexpr int BM = kFwdBM<T, BN, kTc>, R = Tile<L3, BM>::R;
  FwdAcc<T, BN, kTc> acc;
  acc.zero();
  constexpr int kSpare = BM - R * D;  // (n, k) slots past the tile's rows: zero throughout
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
      build_matrices<decltype(l1)::value, decltype(l2)::value, L3, T, R>(s.yt, 0, t.nrows, s.mat);
    });
    for (int64_t u0 = 0; u0 < a.d.c_in; u0 += BK) {
      __syncthreads();  // the last product is done with a and b[buf ^ 1]; mat is built
      switch (L1) {  // the A chunk, with the row's l1 block size known at compile time
        case 0: stage_a_chunk<T, 0, L3, BN, BM>(a, t, u0, s); break;
        case 1: stage_a_chunk<T, 1, L3, BN, BM>(a, t, u0, s); break;
        case 2: stage_a_chunk<T, 2, L3, BN, BM>(a, t, u0, s); break;
        default: stage_a_chunk<T, 3, L3, BN, BM>(a, t, u0, s); break;
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
  } else {  // component-major [n, 16, C_out] (BN = 64, so C_out % 4 == 0): vector stores along channels
    acc.visit_runs([&](int m, int h, int wl, const T* v) {
      const int r = m / D, k = m % D;
      const int64_t wc = w0 + 32 * h + wl;  // a multiple of kRun, so the run is inside C_out or past it
      if (r < t.nrows && wc < a.d.c_out) st_run<kRun>(a.out + ((t.row0 + r) * 16 + L3 * L3 + k) * a.d.c_out + wc, v, true);
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
template <class T, int BN, int kTc>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? 4 : 2) fc_fwd_kernel(FwdArgs<T> a, TileMap map) {
  extern __shared__ __align__(16) unsigned char fwd_smem[];
  FwdSmem<T, kTc>& s = *reinterpret_cast<FwdSmem<T, kTc>*>(fwd_smem);
  const TileRef t = locate(map, a.d, blockIdx.x, kFwdBM<T, BN, kTc>);
  const int w0 = blockIdx.y * BN;
  switch (t.l3) {
    case 0: fwd_tile<T, 0, BN, BN == 32, kTc>(a, t, w0, s); break;
    case 1: fwd_tile<T, 1, BN, BN == 32, kTc>(a, t, w0, s); break;
    case 2: fwd_tile<T, 2, BN, BN == 32, kTc>(a, t, w0, s); break;
    default: fwd_tile<T, 3, BN, BN == 32, kTc>(a, t, w0, s); break;
  }
}


// The forward launch: out [n, C_out, 16] with BN = 32 (public_out), else [n, 16, C_out] with BN = 64.
template <class T, int kTc> void launch_fwd(const FwdArgs<T>& args, bool public_out, cudaStream_t stream) {
  // over the 48 KB default in fp64: opt in (per device, so on every launch; it is not a stream op)
  constexpr int smem = int(sizeof(FwdSmem<T, kTc>));
  const TileMap map = tile_map(args.d, public_out ? kFwdBM<T, 32, kTc> : kBM);
  const unsigned tiles = unsigned(map.start[4]);
  if (public_out) {
    cudaFuncSetAttribute(fc_fwd_kernel<T, 32, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    fc_fwd_kernel<T, 32, kTc><<<dim3(tiles, grid_for(args.d.c_out, 32)), kThreads, smem, stream>>>(args, map);
  } else {
    cudaFuncSetAttribute(fc_fwd_kernel<T, kBN, kTc>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    fc_fwd_kernel<T, kBN, kTc><<<dim3(tiles, grid_for(args.d.c_out, kBN)), kThreads, smem, stream>>>(args, map);
  }
}

}  // namespace
}  // namespace bj

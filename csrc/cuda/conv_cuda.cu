// XLA FFI CUDA handlers of the fused convolution (message passing).
//
// Forward: one warp per (receiver, 32-channel block of one run); lanes are channels. The warp
// walks its receiver's edges (receiver-sorted perm/seg) 32 at a time: lane t computes edge t's
// harmonics into shared memory, then every lane loads its channel of x[sender] once per edge
// and adds all of the run's paths into registers (<= 51 values for l_out <= 3). The receiver's
// row is written once: no atomics, no [E, 16] or [E, message] array.
// Backward: (1) the same receiver-owned walk, with the receiver's cotangent slice held in
// registers (the fp32 dPhi/dY-only variant stages it in shared memory and takes the edges in
// pairs, body_y_pairs), writes w_bar, each edge's x_bar contribution (x_part, the width of one x row) and
// each block's part of dPhi/dY (16 numbers per edge and block); both parts are extra outputs of
// the call. (2) One thread per edge adds the dPhi/dY parts in a fixed order and applies the
// harmonics' backward, so v_bar leaves the kernel directly. (3) One thread per (sender, column)
// sums x_part over the sender's edges in sender-sorted order (perm/seg): the one segment
// reduction. All three are deterministic. Reading the cotangent rows of random receivers from
// the sender side instead costs the width of a message (10x an x row for 34 paths) per edge.
// Tangent mode (t non-null): the harmonics are replaced by J(v) t in the tile; nothing else
// changes (see conv_ffi.h).
#include "conv_ffi.h"
#include "cuda/cuda_common.h"
#include "cuda/segment_sum.cuh"

namespace bj {
namespace {

constexpr int kWarps = 4;  // warps per block

// kernel_order: the receiver-owned kernels number their warps block-major (item = block * nodes
// + node). The warps in flight then run the same run's code, whose unrolled paths would
// otherwise thrash the instruction cache (measured: half of all stalls).

// The edge's rows of x (its sender's) and of w, as pointers: the edge loop adds each path's
// 32-bit offset to one 64-bit base that it loads from here. Computed from the indices there, the
// compiler rebuilt every path's address from e * w_w (IMAD.WIDE, two MOVs, LEA, LEA.HI.X per
// path and per prefetch: about 30% of the W2n forward's instructions were integer and moves).
// H200, pipelined: W2n forward 0.618 -> 0.535 ms, fwd+bwd 1.548 -> 1.452, double backward 1.457
// -> 1.360.
template <class T> struct EdgeTile {
  const T* xrow[32];  // x + sender * x_w
  const T* wrow[32];  // w + e * w_w
  T y[32][17];  // harmonics of 32 edges (padded row: lane-strided stores avoid bank conflicts)
  int e[32];    // ids of the tile's existing edges, packed to the front
};

// Sums 16 values over the warp through shared memory. Each lane stores its 16 values as one row
// (16-byte vector stores); lane L then adds component L / 2 down half of the rows (the lanes'
// rows 16 h .. 16 h + 15, h = L % 2), and the lane pair adds its two halves. Returns the full sum
// of component lane >> 1 (lanes 2c and 2c+1 both hold component c). Against the 16-shuffle
// halving sum this was written to replace: 4 (fp32) vector stores, 16 loads with immediate
// offsets, 16 adds and 1 shuffle, where the halving sum issued 16 shuffles, 16 adds and 30
// selects (which half to give away). That sum ran once per edge and channel block: for the
// l1 = 0 run more instructions than the run's paths.
// Layout: row stride kLd (16-byte aligned), and the upper 16 rows shifted by kShift
// elements so that, at each step m, the 32 lanes (16 components x 2 halves) read 32 distinct
// banks (fp32; fp64: 16 distinct bank pairs per half warp). Writes: 8 lanes of a vector phase
// hit disjoint 16-byte bank groups.
template <class T> struct SumRows {
  static constexpr int kLd = sizeof(T) == 4 ? 20 : 18, kShift = sizeof(T) == 4 ? 16 : 8;
  __align__(16) T v[32 * kLd + kShift];
  __device__ static int row(int r) { return r * kLd + (r >= 16 ? kShift : 0); }
};

template <class T> __device__ __forceinline__ void store_row16(T* dst, const T* v);
template <> __device__ __forceinline__ void store_row16<float>(float* dst, const float* v) {
#pragma unroll
  for (int q = 0; q < 4; ++q) reinterpret_cast<float4*>(dst)[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
}
template <> __device__ __forceinline__ void store_row16<double>(double* dst, const double* v) {
#pragma unroll
  for (int q = 0; q < 8; ++q) reinterpret_cast<double2*>(dst)[q] = make_double2(v[2 * q], v[2 * q + 1]);
}

template <class T> __device__ T warp_sum16(const T* v, SumRows<T>& rows) {
  const int lane = threadIdx.x & 31, h = lane & 1;
  __syncwarp();  // every lane is done reading the previous sum's rows
  store_row16(rows.v + SumRows<T>::row(lane), v);
  __syncwarp();
  const T* col = rows.v + SumRows<T>::row(16 * h) + (lane >> 1);  // rows 16 h + m are kLd apart
  T s = T(0);
#pragma unroll
  for (int m = 0; m < 16; ++m) s += col[m * SumRows<T>::kLd];
  return s + __shfl_xor_sync(0xffffffffu, s, 1);
}

// Block b (0 <= b < blocks) of the channels of all runs -> (run k, 32-channel block cb).
template <class T> __device__ bool find_block(const ConvArgs<T>& a, int b, int* k, int* cb) {
  for (int i = 0; i < a.n_runs; ++i) {
    const int nb = (ConvRun{a.runs + int64_t(kRunCols) * i}.mul() + 31) / 32;
    if (b < nb) {
      *k = i;
      *cb = b;
      return true;
    }
    b -= nb;
  }
  return false;
}

// Segment [beg, end) of node n's edges in perm order, clamped to the edge count.
template <class T> __device__ void segment(const ConvArgs<T>& a, int64_t n, int64_t* beg, int64_t* end) {
  *beg = min(max(int64_t(a.seg[n]), int64_t(0)), a.ne);
  *end = min(max(int64_t(a.seg[n + 1]), *beg), a.ne);
}

// Fills the tile with the edges among perm[t0 .. t0+n) that exist and belong to `owner`
// (own[e] == owner; after a vmap fold a segment can reach into padding of the next batch), packed
// to the front; returns how many. For each, its harmonics and its rows of w and of x, x's row
// being that of its other node (`other`, the sender in every caller; valid below other_n).
template <class T>
__device__ int load_tile(const ConvArgs<T>& a, EdgeTile<T>& tile, int64_t t0, int n,
                         const int32_t* own, int64_t owner, const int32_t* other, int64_t other_n) {
  const int lane = threadIdx.x & 31;
  int64_t e = -1, m = -1;
  if (lane < n) {
    e = a.perm[t0 + lane];
    if (e >= 0 && e < a.ne && own[e] == owner) m = other[e];
  }
  const bool ok = m >= 0 && m < other_n;
  const unsigned mask = __ballot_sync(0xffffffffu, ok);
  const int slot = __popc(mask & ((1u << lane) - 1u));
  __syncwarp();
  if (ok) {
    tile.e[slot] = int(e);
    tile.xrow[slot] = a.x + m * a.x_w;
    tile.wrow[slot] = a.w + e * a.w_w;
    conv_harmonics(a.v, a.t, e, tile.y[slot]);
  }
  __syncwarp();
  return __popc(mask);
}

// Inside for_each_conv_path: the path's (L2, L3), its slot, position and accumulator offset.
#define BJ_CONV_PATH_CONSTANTS(l2, l3)                                      \
  constexpr int L2 = decltype(l2)::value, L3 = decltype(l3)::value;         \
  constexpr int S = L2 * kConvL3 + L3;                                      \
  constexpr int P = conv_path_index(L1, L3MAX, L2, L3);                     \
  constexpr int OFF = conv_acc_offset(L1, L3MAX, L2, L3);                   \
  (void)P;                                                                  \
  (void)OFF

// Loads, for every path of set kSet (with kPathsMask every possible path of the run; absent
// ones read offset 0, in bounds), channel u's cotangent values times the path's scale,
// scale[S] row[o_at + k], into the accumulator layout: the backward's every result is linear in
// them, so the scale is paid here once per worker rather than per edge. Unconditional, so the
// loads of all paths are in flight together.
template <class T, int L1, int L3MAX, int kSet>
__device__ __forceinline__ void load_paths_o(const ConvRun& rn, const T* scale, int u, const T* row, T* c) {
  for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
    BJ_CONV_PATH_CONSTANTS(l2, l3);
    if constexpr (!conv_set_compiles(kSet, L1, L2, L3)) return;
    const T s = scale[S];
    const int o_at = conv_o_at(rn, S, u);
#pragma unroll
    for (int k = 0; k < 2 * L3 + 1; ++k) c[OFF + k] = s * row[o_at + k];
  });
}

// Calls f(P) (an integral constant) for the position among the run's possible paths of each
// path in set kSet (with kPathsMask: every possible path).
template <int L1, int L3MAX, int kSet, class F> __device__ __forceinline__ void for_each_set_path(F&& f) {
  for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
    constexpr int L2 = decltype(l2)::value, L3 = decltype(l3)::value;
    if constexpr (conv_set_compiles(kSet, L1, L2, L3))
      f(std::integral_constant<int, conv_path_index(L1, L3MAX, L2, L3)>{});
  });
}

// The weights of the paths of set kSet for one edge row (with kPathsMask every possible path of
// the run; absent ones read row[0]).
template <class T, int L1, int L3MAX, int kSet>
__device__ __forceinline__ void load_paths_w(const RunSlots<L1, L3MAX>& rs, const T* row, T* wv) {
  for_each_set_path<L1, L3MAX, kSet>([&](auto p) { wv[decltype(p)::value] = row[rs.w_at[decltype(p)::value]]; });
}

// Edges ahead of the one being summed whose x slice and weights are prefetched into L1: the
// loop otherwise issues an edge's loads just before it uses them and waits on each (long
// scoreboard was 44% of the forward's stall samples). A prefetch holds no register.
// W2 (H200): fwd 0.90 -> 0.82 ms, fwd+bwd 2.25 -> 2.08, dbl-bwd 2.14 -> 1.93; four ahead gained less.
constexpr int kPrefetchAhead = 2;

template <class T> __device__ __forceinline__ void prefetch_l1(const T* p) {
  asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}

// Prefetches what the edge loop will read for tile slot t: channel u's x slice of the sender
// (first and last element: the slice may straddle two lines) and the run's weights.
template <class T, int L1, int L3MAX, int kSet>
__device__ __forceinline__ void prefetch_edge(const ConvArgs<T>& a, const EdgeTile<T>& tile, int t, int64_t x_at,
                                              const RunSlots<L1, L3MAX>& rs, bool x, bool w) {
  if (x) {
    const T* xp = tile.xrow[t] + x_at;
    prefetch_l1(xp);
    prefetch_l1(xp + 2 * L1);
  }
  if (w) {
    const T* row = tile.wrow[t];
    for_each_set_path<L1, L3MAX, kSet>([&](auto p) { prefetch_l1(row + rs.w_at[decltype(p)::value]); });
  }
}

// f.body<L1, L3MAX, kSet>() with kSet the run's path set where the kernels have a compile-time
// variant for it (kFixed: the caller allows one; l_out <= 3 only), else kPathsMask. Shared by
// the forward and the receiver-owned backward (f.rn is the run).
template <int L1, int L3MAX, bool kFixed, class F> __device__ __forceinline__ void run_with_path_set(const F& f) {
  if constexpr (kFixed && L3MAX == kConvL3Small) {
    const int set = conv_run_path_set<L1, L3MAX>(f.rn);
    if (set == kPathsAll) return f.template body<L1, L3MAX, kPathsAll>();
    if constexpr (conv_even_is_distinct<L1, L3MAX>())
      if (set == kPathsEven) return f.template body<L1, L3MAX, kPathsEven>();
  }
  f.template body<L1, L3MAX, kPathsMask>();
}

// ---------------------------------------------------------------- forward
// A software-pipelined edge loop (edge t+1's x and weights loaded while edge t is summed) won
// at 3 blocks per SM (1.29 -> 1.08 ms on W2); without it the kernel fits 4 blocks (128
// registers, 48 B spill), which won again (W2 0.948 -> 0.891 ms), so it is gone.
template <class T> struct FwdRun {
  const ConvArgs<T>& a;
  ConvRun rn;
  const T* scale;
  int64_t r;
  int u;
  EdgeTile<T>& tile;

  // kSet: the run's path set, fixed at compile time where it is one of the fixed sets (see
  // BwdRcvRun).
  template <int L1, int L3MAX> __device__ __forceinline__ void run() const { run_with_path_set<L1, L3MAX, true>(*this); }

  template <int L1, int L3MAX, int kSet> __device__ __forceinline__ void body() const {
    constexpr int D1 = 2 * L1 + 1;
    using Slots = RunSlots<L1, L3MAX>;
    T acc[conv_acc_size(L1, L3MAX)];
#pragma unroll
    for (int i = 0; i < conv_acc_size(L1, L3MAX); ++i) acc[i] = T(0);
    const bool active = u < rn.mul();
    const Slots rs(rn, active ? u : 0);
    const int64_t x_at = rn.x_off() + int64_t(u) * rn.x_su();
    int64_t beg, end;
    segment(a, r, &beg, &end);
    for (int64_t t0 = beg; t0 < end; t0 += 32) {
      const int n = load_tile(a, tile, t0, int(min(int64_t(32), end - t0)), a.rcv, r, a.snd, a.nx);
      if (!active) continue;
      for (int t = 1; t < min(kPrefetchAhead, n); ++t) prefetch_edge<T, L1, L3MAX, kSet>(a, tile, t, x_at, rs, true, true);
      for (int t = 0; t < n; ++t) {
        if (t + kPrefetchAhead < n) prefetch_edge<T, L1, L3MAX, kSet>(a, tile, t + kPrefetchAhead, x_at, rs, true, true);
        T xl[D1], wv[Slots::NP];
        const T* xp = tile.xrow[t] + x_at;
#pragma unroll
        for (int i = 0; i < D1; ++i) xl[i] = xp[i];
        load_paths_w<T, L1, L3MAX, kSet>(rs, tile.wrow[t], wv);
        const T* Y = tile.y[t];
        for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
          BJ_CONV_PATH_CONSTANTS(l2, l3);
          if (conv_path_on<kSet, L1, L2, L3>(rs)) UvuTerm<L1, L2, L3, T>::out(wv[P], xl, Y + L2 * L2, acc + OFF);
        });
      }
    }
    if (!active) return;
    T* orow = a.out + r * a.o_w;
    for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
      BJ_CONV_PATH_CONSTANTS(l2, l3);
      if (!conv_path_on<kSet, L1, L2, L3>(rs)) return;
      const T s = scale[S];  // the path's scale, out of the edge sum
      const int o_at = conv_o_at(rn, S, u);
#pragma unroll
      for (int k = 0; k < 2 * L3 + 1; ++k) orow[o_at + k] = s * acc[OFF + k];
    });
  }
};

// fp32 with l_out <= 3 at 4 blocks (16 warps) per SM: 128 registers, 40 B spill (W2: 0.948 ms
// at 3 blocks with 166 registers, 0.891 at 4; 0.81 with the prefetch). l_out up to 6 would
// spill 548 B there: unbounded it takes 214 registers and does not spill.
template <class T, int L3MAX>
__global__ void __launch_bounds__(32 * kWarps, sizeof(T) == 4 && L3MAX == kConvL3Small ? 4 : 1) conv_fwd_kernel(ConvArgs<T> a, int blocks) {
  __shared__ EdgeTile<T> tiles[kWarps];
  const int64_t item = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (item >= a.no * blocks) return;
  const int64_t r = item % a.no;  // block-major (see kernel_order)
  int k, cb;
  if (!find_block(a, int(item / a.no), &k, &cb)) return;
  const ConvRun rn{a.runs + int64_t(kRunCols) * k};
  FwdRun<T> f{a, rn, a.scale + int64_t(kConvSlots) * k, r, cb * 32 + int(threadIdx.x & 31),
             tiles[threadIdx.x / 32]};
  dispatch_l1<L3MAX>(rn.l1(), f);
}

// ---------------------------------------------------------------- backward, receiver-owned
// For every edge into r: w_bar, the edge's x_bar contribution (x_part) and block b's part of
// dPhi/dY (y_part[e, b, 16]); each only when asked for (null otherwise). kWant fixes at compile
// time which of them the call wants (kWantW | kWantX | kWantY), or is kWantAny to read that
// from the null pointers at run time. The calls that run every step want a fixed set: all three
// (the first-order backward), dPhi/dY alone (forces, and the first half of force training) and
// w_bar alone (its tangent-mode second half). A fixed set drops the other results' code and
// registers (weights, x_bar and y_part accumulators).
constexpr int kWantW = 1, kWantX = 2, kWantY = 4, kWantAny = 0;
// Added to kWantY: the fp32 dPhi/dY-only kernel takes its edges in pairs (body_y_pairs). A
// separate kernel, chosen per call (bwd_y_pairs_pay), not a branch inside one kernel: with both
// bodies in one kernel (484 KB of code) W2s's double backward ran 21% slower (H200, 2026-11-29).
constexpr int kWantPairs = 8;

// The pairs pay where receivers have many edges: the double backward ran 1.3-3% faster at W2
// (30 edges per receiver) and 7.5% slower at W2s (20 per receiver; H200, 2026-11-29), through
// per-warp fixed costs (staging the cotangent values, a wasted half pair on odd tiles). The
// crossover between 20 and 30 was not measured; 24 splits the two.
constexpr int64_t kPairsMinMeanEdges = 24;
inline bool bwd_y_pairs_pay(int64_t edges, int64_t receivers) {
  return edges >= kPairsMinMeanEdges * receivers;
}

template <class T, int kWant> struct BwdRcvRun {
  const ConvArgs<T>& a;
  ConvRun rn;
  const T* scale;
  int64_t r;
  int u, b, blocks;
  T* y_part;
  EdgeTile<T>& tile;
  SumRows<T>& sum_rows;  // warp_sum16's rows (one per warp; a size-1 dummy where y_part is not wanted)
  T* o_rows;             // body_y_pairs' cotangent values, [value][lane] (else a dummy)

  // dPhi/dY alone, fp32, l_out <= 3, where the call asks for pairs (body_y_pairs)
  static constexpr bool kPairs = kWant == (kWantY | kWantPairs) && sizeof(T) == 4;

  // kSet: with the wanted set fixed, a run whose paths are one of the fixed path sets (all, or
  // the parity-filtered even set) takes a variant with that set fixed at compile time, so the
  // edge body is one basic block: no per-path branch, and the compiler can interleave the FMA
  // chains of different paths (sampled stalls: a quarter of them were fixed-latency
  // dependencies, with 3 warps per scheduler to hide them). fp64 too: W2 fp64 fwd+bwd went
  // 5.20 -> 4.63 ms with it, although its all-three variant then spilled 192 B (4 B since the
  // path scales left the edge loop).
  template <int L1, int L3MAX> __device__ __forceinline__ void run() const {
    run_with_path_set<L1, L3MAX, kWant != kWantAny>(*this);
  }

  template <int L1, int L3MAX, int kSet> __device__ __forceinline__ void body() const {
    if constexpr (kPairs && L3MAX == kConvL3Small) body_y_pairs<L1, kSet>();
    else body_direct<L1, L3MAX, kSet>();
  }

  // The receiver's edges, a tile of up to 32 at a time (load_tile), with the loads of each tile's
  // first edges prefetched; edges(n) then runs over the tile's n edges. Every lane walks every
  // tile, active or not: the bodies' warp sums need the whole warp. (The forward has its own
  // walk, which lets inactive lanes skip it.)
  template <int L1, int L3MAX, int kSet, class Edges>
  __device__ __forceinline__ void walk_tiles(int64_t x_at, const RunSlots<L1, L3MAX>& rs, bool active, bool read_x,
                                             bool read_w, Edges&& edges) const {
    int64_t beg, end;
    segment(a, r, &beg, &end);
    for (int64_t t0 = beg; t0 < end; t0 += 32) {
      const int n = load_tile(a, tile, t0, int(min(int64_t(32), end - t0)), a.rcv, r, a.snd, a.nx);
      if (active)
        for (int t = 1; t < min(kPrefetchAhead, n); ++t) prefetch_edge<T, L1, L3MAX, kSet>(a, tile, t, x_at, rs, read_x, read_w);
      edges(n);
    }
  }

  // dPhi/dY alone (forces, and force training's first half), l_out <= 3: edges in pairs, each
  // path's T_ij = sum_k C_ijk o_k built once for both (UvuTerm::y2). Per lane and edge at l1 = 3
  // that is 418 multiply-adds instead of 548 (T's 260 shared by two edges).
  template <int L1, int kSet> __device__ __forceinline__ void body_y_pairs() const {
    constexpr int L3MAX = kConvL3Small, D1 = 2 * L1 + 1;
    using Slots = RunSlots<L1, L3MAX>;
    const int lane = threadIdx.x & 31;
    const bool active = u < rn.mul();
    const Slots rs(rn, active ? u : 0);
    {
      // The scaled cotangent values go to shared memory, one column per lane, and are read back
      // per edge pair through a volatile pointer: held in registers across the loop (50 at l1 =
      // 3) they left too few for two edges' T (spill: 1.3 KB at 128 registers).
      T c[conv_acc_size(L1, L3MAX)];
      load_paths_o<T, L1, L3MAX, kSet>(rn, scale, active ? u : 0, a.ct + r * a.o_w, c);  // scaled
#pragma unroll
      for (int i = 0; i < conv_acc_size(L1, L3MAX); ++i) o_rows[i * 32 + lane] = c[i];
    }
    const volatile T* oc = o_rows + lane;
    const int64_t x_at = rn.x_off() + int64_t(u) * rn.x_su();
    walk_tiles<L1, L3MAX, kSet>(x_at, rs, active, true, true, [&](int n) {
      for (int t = 0; t < n; t += 2) {
        const bool two = t + 1 < n;  // the same for the whole warp
        const int t1 = two ? t + 1 : t;  // a lone last edge is computed twice, its copy dropped
        if (active)
          for (int p = t + kPrefetchAhead; p < min(t + kPrefetchAhead + 2, n); ++p)
            prefetch_edge<T, L1, L3MAX, kSet>(a, tile, p, x_at, rs, true, true);
        T yb0[16], yb1[16];
#pragma unroll
        for (int j = 0; j < 16; ++j) yb0[j] = yb1[j] = T(0);
        if (active) {
          T x0[D1], x1[D1];
#pragma unroll
          for (int i = 0; i < D1; ++i) {
            x0[i] = tile.xrow[t][x_at + i];
            x1[i] = tile.xrow[t1][x_at + i];
          }
          const T* wr0 = tile.wrow[t];
          const T* wr1 = tile.wrow[t1];
          T after = T(0);  // the previous path's last result (see UvuTerm::y2)
          for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
            BJ_CONV_PATH_CONSTANTS(l2, l3);
            if constexpr (conv_set_compiles(kSet, L1, L2, L3)) {
              if (!conv_path_on<kSet, L1, L2, L3>(rs)) return;
              T o[2 * L3 + 1];
#pragma unroll
              for (int k = 0; k < 2 * L3 + 1; ++k) o[k] = oc[(OFF + k) * 32];
              UvuTerm<L1, L2, L3, T>::y2(wr0[rs.w_at[P]], wr1[rs.w_at[P]], x0, x1, o, yb0 + L2 * L2,
                                         yb1 + L2 * L2, after);
              after = yb1[L2 * L2 + 2 * L2];
            }
          });
        }
        const T s0 = warp_sum16(yb0, sum_rows);
        if ((lane & 1) == 0) y_part[(int64_t(tile.e[t]) * blocks + b) * 16 + (lane >> 1)] = s0;
        if (!two) continue;
        const T s1 = warp_sum16(yb1, sum_rows);
        if ((lane & 1) == 0) y_part[(int64_t(tile.e[t1]) * blocks + b) * 16 + (lane >> 1)] = s1;
      }
    });
  }

  template <int L1, int L3MAX, int kSet> __device__ __forceinline__ void body_direct() const {
    constexpr int D1 = 2 * L1 + 1;
    constexpr bool kFixed = kWant != kWantAny;
    using Slots = RunSlots<L1, L3MAX>;
    const int lane = threadIdx.x & 31;
    const bool active = u < rn.mul();
    const Slots rs(rn, active ? u : 0);
    const bool want_w = kFixed ? (kWant & kWantW) != 0 : a.w_bar != nullptr;
    const bool want_x = kFixed ? (kWant & kWantX) != 0 : a.x_part != nullptr;
    const bool want_y = kFixed ? (kWant & kWantY) != 0 : y_part != nullptr;
    const bool read_x = want_w || want_y, read_w = want_x || want_y;
    T c[conv_acc_size(L1, L3MAX)];
    load_paths_o<T, L1, L3MAX, kSet>(rn, scale, active ? u : 0, a.ct + r * a.o_w, c);  // scaled
    const int64_t x_at = rn.x_off() + int64_t(u) * rn.x_su();
    walk_tiles<L1, L3MAX, kSet>(x_at, rs, active, read_x, read_w, [&](int n) {
      for (int t = 0; t < n; ++t) {
        if (active && t + kPrefetchAhead < n) prefetch_edge<T, L1, L3MAX, kSet>(a, tile, t + kPrefetchAhead, x_at, rs, read_x, read_w);
        const int64_t e = tile.e[t];
        const T* Y = tile.y[t];
        T yb[16];
#pragma unroll
        for (int j = 0; j < 16; ++j) yb[j] = T(0);
        if (active) {
          T xl[D1], wv[Slots::NP], xb[D1];
#pragma unroll
          for (int i = 0; i < D1; ++i) {
            xl[i] = read_x ? tile.xrow[t][x_at + i] : T(0);
            xb[i] = T(0);
          }
          if (read_w) load_paths_w<T, L1, L3MAX, kSet>(rs, tile.wrow[t], wv);
          T* wbrow = want_w ? a.w_bar + (tile.wrow[t] - a.w) : nullptr;  // the edge's row of w_bar
          for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
            BJ_CONV_PATH_CONSTANTS(l2, l3);
            using Term = UvuTerm<L1, L2, L3, T>;
            if (!conv_path_on<kSet, L1, L2, L3>(rs)) return;
            if (want_x) {  // g = dPhi/dx of the path with unit weight: gives x_bar and w_bar
              T g[D1];
#pragma unroll
              for (int i = 0; i < D1; ++i) g[i] = T(0);
              if (want_y)  // both roles through one T_ij (see UvuTerm::xy)
                Term::xy(wv[P], xl, Y + L2 * L2, c + OFF, g, yb + L2 * L2);
              else
                Term::x(T(1), Y + L2 * L2, c + OFF, g);
              T dot = T(0);
#pragma unroll
              for (int i = 0; i < D1; ++i) {
                xb[i] += wv[P] * g[i];
                dot += xl[i] * g[i];
              }
              if (want_w) wbrow[rs.w_at[P]] = dot;
            } else if (want_w) {
              wbrow[rs.w_at[P]] = Term::w(T(1), xl, Y + L2 * L2, c + OFF);
            }
            if (want_y && !want_x) Term::y(wv[P], xl, c + OFF, yb + L2 * L2);
          });
          if (want_x) {
            T* dst = a.x_part + e * a.x_w + x_at;
#pragma unroll
            for (int i = 0; i < D1; ++i) dst[i] = xb[i];
          }
        }
        if (!want_y) continue;
        const T sum = warp_sum16(yb, sum_rows);
        if ((lane & 1) == 0) y_part[(e * blocks + b) * 16 + (lane >> 1)] = sum;
      }
    });
  }
};

// fp32: the all-results variant at most 168 registers, 3 blocks (12 warps) per SM (unbounded
// the compiler takes 205 and 2 blocks fit); with the path set fixed, no spill. fp64: 255
// registers, 8 B spill (all three), 244-246 (one result). The w_bar-only and dPhi/dY-only
// variants fit 128 registers in fp32 (44 B and none spilled with the prefetch), so 4 blocks (16
// warps) per SM.
template <class T, int kWant> constexpr int rcv_min_blocks() {
  return sizeof(T) != 4 ? 1 : (kWant == kWantW || (kWant & ~kWantPairs) == kWantY) ? 4 : 3;
}

template <class T, int L3MAX, int kWant>
__global__ void __launch_bounds__(32 * kWarps, rcv_min_blocks<T, kWant>())
    conv_bwd_rcv_kernel(ConvArgs<T> a, int blocks, T* y_part) {
  __shared__ EdgeTile<T> tiles[kWarps];
  constexpr bool kSums = kWant == kWantAny || (kWant & kWantY) != 0;
  __shared__ SumRows<T> sum_rows[kSums ? kWarps : 1];
  constexpr bool kPairs = BwdRcvRun<T, kWant>::kPairs && L3MAX == kConvL3Small;
  __shared__ T o_rows[kPairs ? kWarps : 1][kPairs ? conv_acc_size_max(kConvL3Small) * 32 : 1];
  const int64_t item = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (item >= a.no * blocks) return;
  const int b = int(item / a.no);  // block-major (see kernel_order)
  int k, cb;
  if (!find_block(a, b, &k, &cb)) return;
  const ConvRun rn{a.runs + int64_t(kRunCols) * k};
  BwdRcvRun<T, kWant> f{a, rn, a.scale + int64_t(kConvSlots) * k, item % a.no,
                 cb * 32 + int(threadIdx.x & 31), b, blocks, y_part, tiles[threadIdx.x / 32],
                 sum_rows[kSums ? threadIdx.x / 32 : 0], o_rows[kPairs ? threadIdx.x / 32 : 0]};
  dispatch_l1<L3MAX>(rn.l1(), f);
}

// One thread per edge: v_bar = J^T (sum over blocks of y_part), and zero w_bar rows of edges that
// do not exist (no receiver-owned warp visits them; the warp zeroes those rows together, lanes
// over columns). With one warp per edge, lane 0 alone applied J^T while 31 lanes waited, and the
// w_bar-only call launched a warp per edge to zero nothing (W2: 0.066 and 0.026 ms under ncu).
constexpr int kEdgeThreads = 256;

template <class T> __device__ __forceinline__ void load16(const T* p, T* v);
template <> __device__ __forceinline__ void load16<float>(const float* p, float* v) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float4 f = reinterpret_cast<const float4*>(p)[q];
    v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
  }
}
template <> __device__ __forceinline__ void load16<double>(const double* p, double* v) {
#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const double2 d = reinterpret_cast<const double2*>(p)[q];
    v[2 * q] = d.x, v[2 * q + 1] = d.y;
  }
}

template <class T>
__global__ void __launch_bounds__(kEdgeThreads) conv_bwd_edge_kernel(ConvArgs<T> a, int blocks, const T* y_part) {
  const int64_t e = int64_t(blockIdx.x) * kEdgeThreads + threadIdx.x;
  const int lane = threadIdx.x & 31;
  int64_t s = 0, r = 0;
  const bool in_range = e < a.ne;
  const bool ok = in_range && conv_edge(a.snd, a.rcv, e, a.nx, a.no, &s, &r);
  if (a.w_bar) {  // the warp's missing edges, one after another, lanes over columns
    for (unsigned bad = __ballot_sync(0xffffffffu, in_range && !ok); bad; bad &= bad - 1) {
      const int64_t eb = int64_t(blockIdx.x) * kEdgeThreads + (threadIdx.x & ~31) + __ffs(bad) - 1;
      for (int64_t i = lane; i < a.w_w; i += 32) a.w_bar[eb * a.w_w + i] = T(0);
    }
  }
  if (!a.v_bar || !in_range) return;
  if (!ok) {
    for (int c = 0; c < 3; ++c) a.v_bar[3 * e + c] = T(0);
    return;
  }
  T g[16], part[16];  // component j, summed over blocks in order (as the receiver kernels wrote them)
#pragma unroll
  for (int j = 0; j < 16; ++j) g[j] = T(0);
  for (int b = 0; b < blocks; ++b) {
    load16(y_part + (e * blocks + b) * 16, part);
#pragma unroll
    for (int j = 0; j < 16; ++j) g[j] += part[j];
  }
  sh_vjp_row<3>(a.v + 3 * e, g, a.v_bar + 3 * e, true);
}

// ---------------------------------------------------------------- handlers
cudaError_t clear(ffi::AnyBuffer& b, cudaStream_t stream) {
  return b.element_count() ? cudaMemsetAsync(b.untyped_data(), 0, b.size_bytes(), stream) : cudaSuccess;
}

ffi::Error ConvFwdCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer v, ffi::AnyBuffer t, ffi::AnyBuffer w,
                       ffi::AnyBuffer runs, ffi::AnyBuffer scale, ffi::AnyBuffer snd,
                       ffi::AnyBuffer rcv, ffi::AnyBuffer perm, ffi::AnyBuffer seg,
                       ffi::Result<ffi::AnyBuffer> out, int64_t nx, int64_t ne, int64_t no,
                       int64_t x_w, int64_t w_w, int64_t o_w, int64_t blocks, int64_t l3max, int64_t zero_out) {
  const ConvShape shape{nx, ne, no, x_w, w_w, o_w, blocks, l3max};
  if (auto err = shape.validate(x, v, t, w, runs, scale, snd, rcv, perm, seg, no, out->element_type());
      !err.success())
    return err;
  if (!ConvShape::count_is(*out, no * o_w)) return ffi::Error::InvalidArgument("conv: bad output size");
  if (out->element_count() == 0) return ffi::Error::Success();
  if (zero_out || shape.empty()) clear(*out, stream);
  if (shape.empty() || blocks == 0) return cuda_status("message_passing");
  return dispatch_float(out->element_type(), "message_passing", [&](auto tag) {
    using T = decltype(tag);
    ConvArgs<T> a = shape.args<T>(x, v, t, w, runs, scale, snd, rcv, perm, seg);
    a.out = out->typed_data<T>();
    const unsigned grid = grid_for(no * blocks, kWarps);
    if (l3max <= kConvL3Small)
      conv_fwd_kernel<T, kConvL3Small><<<grid, 32 * kWarps, 0, stream>>>(a, int(blocks));
    else
      conv_fwd_kernel<T, 6><<<grid, 32 * kWarps, 0, stream>>>(a, int(blocks));
    return cuda_status("message_passing");
  });
}

ffi::Error ConvBwdCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer v, ffi::AnyBuffer t,
                       ffi::AnyBuffer w, ffi::AnyBuffer ct, ffi::AnyBuffer runs, ffi::AnyBuffer scale,
                       ffi::AnyBuffer snd, ffi::AnyBuffer rcv, ffi::AnyBuffer snd_perm,
                       ffi::AnyBuffer snd_seg, ffi::AnyBuffer rcv_perm, ffi::AnyBuffer rcv_seg,
                       ffi::Result<ffi::AnyBuffer> x_bar, ffi::Result<ffi::AnyBuffer> v_bar,
                       ffi::Result<ffi::AnyBuffer> w_bar, ffi::Result<ffi::AnyBuffer> y_part,
                       ffi::Result<ffi::AnyBuffer> x_part, int64_t nx, int64_t ne, int64_t no,
                       int64_t x_w, int64_t w_w, int64_t o_w, int64_t blocks, int64_t l3max,
                       int64_t zero_x, int64_t zero_w) {
  const ConvShape shape{nx, ne, no, x_w, w_w, o_w, blocks, l3max};
  const ConvReads reads(*x_bar, *v_bar, *w_bar);
  if (auto err = shape.validate(x, v, t, w, runs, scale, snd, rcv, snd_perm, snd_seg, nx,
                                ct.element_type(), reads.x, reads.w);
      !err.success())
    return err;
  if (auto err = shape.validate_bwd(ct, *x_bar, *v_bar, *w_bar, rcv_perm, rcv_seg, *y_part, *x_part);
      !err.success())
    return err;
  if (shape.empty() || blocks == 0) {
    for (ffi::AnyBuffer* b : {&*x_bar, &*v_bar, &*w_bar}) clear(*b, stream);
    return cuda_status("message_passing");
  }
  if (zero_x) clear(*x_part, stream);  // columns without a path keep a zero contribution
  if (zero_w) clear(*w_bar, stream);
  return dispatch_float(ct.element_type(), "message_passing", [&](auto tag) {
    using T = decltype(tag);
    const bool small = l3max <= kConvL3Small;
    ConvArgs<T> a = shape.args<T>(x, v, t, w, runs, scale, snd, rcv, rcv_perm, rcv_seg);
    a.ct = ct.typed_data<T>();
    a.v_bar = result_or_null<T>(*v_bar);
    a.w_bar = result_or_null<T>(*w_bar);
    a.x_bar = result_or_null<T>(*x_bar);
    a.x_part = result_or_null<T>(*x_part);
    T* part = a.v_bar ? y_part->typed_data<T>() : nullptr;
    const unsigned grid = grid_for(no * blocks, kWarps);
    // the wanted set, fixed at compile time where the paths' l_out <= 3 (the sets calls use)
    const int want = (a.w_bar ? kWantW : 0) | (a.x_part ? kWantX : 0) | (part ? kWantY : 0);
    const auto launch = [&](auto kernel) { kernel<<<grid, 32 * kWarps, 0, stream>>>(a, int(blocks), part); };
    if (small && want == kWantW) launch(conv_bwd_rcv_kernel<T, kConvL3Small, kWantW>);
    else if (small && want == kWantY) {
      if constexpr (sizeof(T) == 4) {
        if (bwd_y_pairs_pay(ne, no)) launch(conv_bwd_rcv_kernel<T, kConvL3Small, kWantY | kWantPairs>);
        else launch(conv_bwd_rcv_kernel<T, kConvL3Small, kWantY>);
      } else {
        launch(conv_bwd_rcv_kernel<T, kConvL3Small, kWantY>);
      }
    }
    else if (small && want == (kWantW | kWantX | kWantY)) launch(conv_bwd_rcv_kernel<T, kConvL3Small, kWantW | kWantX | kWantY>);
    else if (small) launch(conv_bwd_rcv_kernel<T, kConvL3Small, kWantAny>);
    else launch(conv_bwd_rcv_kernel<T, 6, kWantAny>);
    if (a.v_bar || a.w_bar)
      conv_bwd_edge_kernel<T><<<grid_for(ne, kEdgeThreads), kEdgeThreads, 0, stream>>>(a, int(blocks), part);
    if (a.x_bar)  // x_bar[s] = sum of the parts of s's existing edges, in sender order
      launch_segment_sum(SegmentSum<T>{a.x_part, a.x_bar, snd_perm.typed_data<int32_t>(),
                                       snd_seg.typed_data<int32_t>(), a.snd, a.rcv, ne, nx, x_w, no},
                         stream);
    return cuda_status("message_passing");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_conv_fwd_cuda, ConvFwdCuda,
                              BJ_CONV_FWD_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_conv_bwd_cuda, ConvBwdCuda,
                              BJ_CONV_BWD_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

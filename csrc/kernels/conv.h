// The fused convolution (gather x[sender], spherical harmonics of the edge vector, channel-wise
// product with per-edge weights, sum into the receiver), per element, shared by CPU and CUDA.
//
// A *run* is a block of `mul` channels of x with one l1 (x[x_off + u*x_su + i], i < 2l1+1),
// together with its paths to every (l2, l3): slot l2*7 + l3 holds the output and weight
// offsets of path (l1, l2, l3); bit `slot` of the run's mask says whether the path exists (an
// absent slot holds zeros, so that loads through it stay in bounds and can be issued
// unconditionally). Within a run the
// output and weight offsets of channel u are o_off + u*o_su and w_off + u*w_su. The harmonics
// of an edge are Y = sh(v / |v|) with blocks l2 at [l2^2, (l2+1)^2). batteries_jax/_conv_plan.py
// builds the run table from a path list.
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/hd.h"
#include "kernels/sh.h"
#include "kernels/uvu.h"

namespace bj {

constexpr int kConvL3 = 7;             // l3 = 0..6
constexpr int kConvSlots = 4 * kConvL3;  // (l2, l3), l2 = 0..3
constexpr int kRunHead = 5;            // l1, x_off, mul, x_su, slot mask
constexpr int kConvL3Small = 3;        // calls whose paths all have l_out <= 3
constexpr int kRunCols = kRunHead + 4 * kConvSlots;

struct ConvSlot {
  int o_off, o_su, w_off, w_su;
};

struct ConvRun {
  const int32_t* row;
  BJ_HD int l1() const { return row[0]; }
  BJ_HD int x_off() const { return row[1]; }
  BJ_HD int mul() const { return row[2]; }
  BJ_HD int x_su() const { return row[3]; }
  BJ_HD bool has(int slot) const { return (row[4] >> slot) & 1; }
  BJ_HD ConvSlot slot(int s) const {
    const int32_t* p = row + kRunHead + 4 * s;
    return ConvSlot{p[0], p[1], p[2], p[3]};
  }
};

// Calls f(integral_constant<B>), ..., f(integral_constant<E-1>) with compile-time indices.
template <int B, int E, class F> BJ_HD void static_for(F&& f) {
  if constexpr (B < E) {
    f(std::integral_constant<int, B>{});
    static_for<B + 1, E>(f);
  }
}

constexpr int conv_abs(int a) { return a < 0 ? -a : a; }
constexpr int conv_min(int a, int b) { return a < b ? a : b; }

// Calls f(l2, l3) (integral constants) for every path (L1, l2, l3) with l3 <= L3MAX.
template <int L1, int L3MAX, class F> BJ_HD void for_each_conv_path(F&& f) {
  static_for<0, 4>([&](auto l2) {
    constexpr int L2 = decltype(l2)::value;
    static_for<conv_abs(L1 - L2), conv_min(L1 + L2, L3MAX) + 1>([&](auto l3) { f(l2, l3); });
  });
}

// Registers a run needs to hold one channel's outputs of all its paths, and where path
// (L2, L3) starts among them.
constexpr int conv_acc_offset(int L1, int L3MAX, int L2e, int L3e) {
  int off = 0;
  for (int l2 = 0; l2 < 4; ++l2)
    for (int l3 = conv_abs(L1 - l2); l3 <= conv_min(L1 + l2, L3MAX); ++l3) {
      if (l2 == L2e && l3 == L3e) return off;
      off += 2 * l3 + 1;
    }
  return off;
}
constexpr int conv_acc_size(int L1, int L3MAX) { return conv_acc_offset(L1, L3MAX, 4, 0); }
// The largest of those over L1 = 0..3 (l1 = 2, not 3, has the most: 51 values at L3MAX = 3, 50
// at l1 = 3): the size of a buffer shared by every run of a kernel.
constexpr int conv_acc_size_max(int L3MAX) {
  int m = 0;
  for (int l1 = 0; l1 < 4; ++l1) m = conv_acc_size(l1, L3MAX) > m ? conv_acc_size(l1, L3MAX) : m;
  return m;
}
static_assert(conv_acc_size_max(3) == 51, "l1 = 2 has the most output values");

// The path sets the kernels can fix at compile time, so that the edge body is one basic block
// with no per-path branch:
//   kPathsAll   every possible path of the run (no filter);
//   kPathsEven  those with l1 + l2 + l3 even: what a parity filter keeps when x and the harmonics
//               have natural parity (MACE's filter_ir_out "0e+1o+2e+3o": 23 of the 34 paths;
//               with the mask test that case ran 0.825 / 1.774 / 1.788 ms fwd / fwd+bwd / dbl,
//               with this set 0.613 / 1.549 / 1.459: H200, N = 5k, E = 150k, C = 64, 2026-11-29);
//   kPathsMask  any other set: each path is tested against the run's mask at run time.
enum ConvPathSet : int { kPathsMask = 0, kPathsAll = 1, kPathsEven = 2 };
constexpr bool conv_set_holds(int set, int l1, int l2, int l3) {
  return set == kPathsAll || (set == kPathsEven && (l1 + l2 + l3) % 2 == 0);
}
// The slot bits (l2 * kConvL3 + l3) of the possible paths of a run that are in `set`.
constexpr unsigned conv_set_slots(int set, int L1, int L3MAX) {
  unsigned m = 0;
  for (int l2 = 0; l2 < 4; ++l2)
    for (int l3 = conv_abs(L1 - l2); l3 <= conv_min(L1 + l2, L3MAX); ++l3)
      if (conv_set_holds(set, L1, l2, l3)) m |= 1u << (l2 * kConvL3 + l3);
  return m;
}
// kPathsEven differs from kPathsAll only for l1 > 0 (every path of l1 = 0 has l3 = l2).
template <int L1, int L3MAX> constexpr bool conv_even_is_distinct() {
  return conv_set_slots(kPathsEven, L1, L3MAX) != conv_set_slots(kPathsAll, L1, L3MAX);
}
// The fixed set whose paths are exactly the run's, or kPathsMask.
template <int L1, int L3MAX> BJ_HD int conv_run_path_set(const ConvRun& rn) {
  constexpr unsigned kAll = conv_set_slots(kPathsAll, L1, L3MAX), kEven = conv_set_slots(kPathsEven, L1, L3MAX);
  const unsigned m = unsigned(rn.row[4]) & kAll;
  return m == kAll ? kPathsAll : m == kEven ? kPathsEven : kPathsMask;
}
// Whether a kernel variant for path set kSet has code for path (l1, l2, l3): with kPathsMask
// every possible path (each tested at run time, conv_path_on), else the set's own.
constexpr bool conv_set_compiles(int set, int l1, int l2, int l3) {
  return set == kPathsMask || conv_set_holds(set, l1, l2, l3);
}
// Whether path (L1, L2, L3) takes part, in a kernel variant for path set kSet.
template <int kSet, int L1, int L2, int L3, class Slots> BJ_HD bool conv_path_on(const Slots& rs) {
  if constexpr (kSet == kPathsMask) return rs.has(L2 * kConvL3 + L3);
  else return conv_set_holds(kSet, L1, L2, L3);
}

// Number of possible paths of a run, and the position of path (L2, L3) among them.
constexpr int conv_path_index(int L1, int L3MAX, int L2e, int L3e) {
  int n = 0;
  for (int l2 = 0; l2 < 4; ++l2)
    for (int l3 = conv_abs(L1 - l2); l3 <= conv_min(L1 + l2, L3MAX); ++l3) {
      if (l2 == L2e && l3 == L3e) return n;
      ++n;
    }
  return n;
}
constexpr int conv_path_count(int L1, int L3MAX) { return conv_path_index(L1, L3MAX, 4, 0); }

// A run's per-path weight offsets for channel u, read from the table once per worker and kept
// in registers (offsets within a row). The paths' output offsets and scales are not kept: each
// is needed once per worker (conv_o_at, scale[slot]), and registers held across the edge loop
// are what bounds the kernels' occupancy.
template <int L1, int L3MAX> struct RunSlots {
  static constexpr int NP = conv_path_count(L1, L3MAX);
  int w_at[NP];
  unsigned mask;

  BJ_HD RunSlots(const ConvRun& rn, int u) : mask(unsigned(rn.row[4])) {
    for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
      constexpr int S = decltype(l2)::value * kConvL3 + decltype(l3)::value;
      constexpr int P = conv_path_index(L1, L3MAX, decltype(l2)::value, decltype(l3)::value);
      const ConvSlot sl = rn.slot(S);
      w_at[P] = sl.w_off + u * sl.w_su;
    });
  }
  BJ_HD bool has(int slot) const { return (mask >> slot) & 1u; }
};

// Offset within an output row of channel u of the path in `slot`.
BJ_HD int conv_o_at(const ConvRun& rn, int slot, int u) {
  const ConvSlot sl = rn.slot(slot);
  return sl.o_off + u * sl.o_su;
}

// Rows of edge e, or false if it does not exist (either index outside [0, nodes)).
BJ_HD bool conv_edge(const int32_t* snd, const int32_t* rcv, int64_t e, int64_t nx,
                            int64_t no, int64_t* s, int64_t* r) {
  *s = snd[e];
  *r = rcv[e];
  return *s >= 0 && *s < nx && *r >= 0 && *r < no;
}

// The harmonics every conv kernel uses: all 16 components (blocks beyond the paths' l2 are
// computed and ignored; that costs less than a branch per l).
template <class T> BJ_HD void conv_sh(const T* v, T* Y) { sh_fwd_row<3>(v, Y, true); }

// What enters the product for edge e: the harmonics Y(v_e), or in tangent mode (t non-null)
// their directional derivative J(v_e) t_e.
template <class T> BJ_HD void conv_harmonics(const T* v, const T* t, int64_t e, T* Y) {
  if (t) sh_jvp_row<3>(v + 3 * e, t + 3 * e, Y, true);
  else conv_sh(v + 3 * e, Y);
}

// Runtime l1 -> f.template run<L1, L3MAX>(). L3MAX bounds the l_out of every path of the call
// (3 or 6), so that registers are sized for what the call needs.
template <int L3MAX, class F> BJ_HD void dispatch_l1(int l1, F&& f) {
  switch (l1) {
    case 0: f.template run<0, L3MAX>(); break;
    case 1: f.template run<1, L3MAX>(); break;
    case 2: f.template run<2, L3MAX>(); break;
    default: f.template run<3, L3MAX>(); break;
  }
}

}  // namespace bj

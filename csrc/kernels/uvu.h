// The channel-wise ("uvu") trilinear contraction, one (edge, path, channel) term at a time,
// shared by the CPU and CUDA handlers. See batteries_jax/_paths.py for the path list layout.
//
// The scalar form Phi(x, y, w, o) = sum s w_u C_ijk x_ui y_j o_uk is symmetric in its roles: the
// output of role R is dPhi/dR. Role O is the forward product; X, Y, W are its transposes.
#pragma once
#include <cstdint>

#include "kernels/hd.h"
#include "tables/cg_tables.h"

namespace bj {

enum Role : int { kRoleO = 0, kRoleX = 1, kRoleY = 2, kRoleW = 3 };

constexpr int kDescCols = 12;
struct PathDesc {
  int l1, l2, l3, mul, x_off, x_su, y_off, o_off, o_su, w_off, w_su, triple;
};

BJ_HD PathDesc load_desc(const int32_t* row) {
  return PathDesc{row[0], row[1], row[2], row[3], row[4],  row[5],
                  row[6], row[7], row[8], row[9], row[10], row[11]};
}

// Contributions of one (edge, path, channel): xu, ou point at the channel's segment of x and o,
// y at the path's segment of y; sw = scale * weight. Each adds into its role's local vector.
// The sums are factored so that every nonzero C costs one FMA on a product that other terms
// (and other paths of the same l1, l2, once inlined together) share, and sw multiplies once
// per output component.
template <int L1, int L2, int L3, class T> struct UvuTerm {
  static constexpr int D1 = 2 * L1 + 1, D2 = 2 * L2 + 1, D3 = 2 * L3 + 1;

  // role O: c[k] += sw sum_ij C x_i y_j
  BJ_HD static void out(T sw, const T* xu, const T* y, T* c) {
    T xl[D1], yl[D2], t[D3];
    for (int i = 0; i < D1; ++i) xl[i] = xu[i];
    for (int j = 0; j < D2; ++j) yl[j] = y[j];
    for (int k = 0; k < D3; ++k) t[k] = T(0);
    CG<L1, L2, L3>::visit([&](int i, int j, int k, double v) { t[k] += T(v) * (xl[i] * yl[j]); });
    for (int k = 0; k < D3; ++k) c[k] += sw * t[k];
  }
  // role X: c[i] += sw sum_jk C y_j o_k
  BJ_HD static void x(T sw, const T* y, const T* ou, T* c) {
    T yl[D2], ol[D3], t[D1];
    for (int j = 0; j < D2; ++j) yl[j] = y[j];
    for (int k = 0; k < D3; ++k) ol[k] = ou[k];
    for (int i = 0; i < D1; ++i) t[i] = T(0);
    CG<L1, L2, L3>::visit([&](int i, int j, int k, double v) { t[i] += T(v) * (yl[j] * ol[k]); });
    for (int i = 0; i < D1; ++i) c[i] += sw * t[i];
  }
  // role Y: c[j] += sw sum_ik C x_i o_k
  BJ_HD static void y(T sw, const T* xu, const T* ou, T* c) {
    T xl[D1], ol[D3], t[D2];
    for (int i = 0; i < D1; ++i) xl[i] = xu[i];
    for (int k = 0; k < D3; ++k) ol[k] = ou[k];
    for (int j = 0; j < D2; ++j) t[j] = T(0);
    CG<L1, L2, L3>::visit([&](int i, int j, int k, double v) { t[j] += T(v) * (xl[i] * ol[k]); });
    for (int j = 0; j < D2; ++j) c[j] += sw * t[j];
  }
  // T_ij = sum_k C_ijk o_k over C's pattern (i, j): seen[i][j] marks the entries that exist (the
  // rest stay unset and unused). `seen` is known at compile time once inlined (visit's indices
  // are literals), so only T's nonzero entries exist and no term multiplies a zero.
  BJ_HD static void build_tij(const T* ol, T (&tij)[D1][D2], bool (&seen)[D1][D2]) {
    CG<L1, L2, L3>::visit([&](int i, int j, int k, double v) {
      if (seen[i][j]) {
        tij[i][j] += T(v) * ol[k];
      } else {
        tij[i][j] = T(v) * ol[k];
        seen[i][j] = true;
      }
    });
  }
  // Roles X and Y together, for a backward that wants both: gx[i] += sum_jk C y_j o_k (unit
  // weight) and cy[j] += sw sum_ik C x_i o_k. Both go through T_ij = sum_k C_ijk o_k, built once:
  // nnz + 2 |pattern(i, j)| multiply-adds, where the two roles apart take 2 nnz plus the products
  // y_j o_k and x_i o_k (W2's l1 = 3 run, all paths: 736 against 840; all runs: 1,693 against
  // 2,019).
  BJ_HD static void xy(T sw, const T* xu, const T* y, const T* ou, T* gx, T* cy) {
    T ol[D3], tij[D1][D2], t[D2];
    bool seen[D1][D2] = {};
    for (int k = 0; k < D3; ++k) ol[k] = keep_here(ou[k]);
    build_tij(ol, tij, seen);
    for (int j = 0; j < D2; ++j) t[j] = T(0);
#pragma unroll
    for (int i = 0; i < D1; ++i)
#pragma unroll
      for (int j = 0; j < D2; ++j)
        if (seen[i][j]) {
          gx[i] += tij[i][j] * y[j];
          t[j] += xu[i] * tij[i][j];
        }
    for (int j = 0; j < D2; ++j) cy[j] += sw * t[j];
  }
  // Role Y for two edges of one channel (x0, x1, weights sw0, sw1) through one T_ij = sum_k
  // C_ijk o_k: nnz + 2 |pattern(i, j)| multiply-adds where the two edges apart take 2 (nnz +
  // |pattern(i, k)|).
  // `after`: a value of the previous path's result; T waits for it, so that the paths' T are
  // built one after another rather than all at once (which needs more registers than there are).
  BJ_HD static void y2(T sw0, T sw1, const T* x0, const T* x1, const T* ou, T* c0, T* c1, T after) {
    T ol[D3], tij[D1][D2], t0[D2], t1[D2];
    bool seen[D1][D2] = {};
    for (int k = 0; k < D3; ++k) ol[k] = keep_after(ou[k], after);
    build_tij(ol, tij, seen);
    for (int j = 0; j < D2; ++j) t0[j] = t1[j] = T(0);
#pragma unroll
    for (int i = 0; i < D1; ++i)
#pragma unroll
      for (int j = 0; j < D2; ++j)
        if (seen[i][j]) {
          t0[j] += x0[i] * tij[i][j];
          t1[j] += x1[i] * tij[i][j];
        }
    for (int j = 0; j < D2; ++j) {
      c0[j] += sw0 * t0[j];
      c1[j] += sw1 * t1[j];
    }
  }
  // T depends on o alone, which the CUDA backward holds for a whole edge loop: unpinned, the
  // compiler hoisted every path's T out of the loop and spilled them (1.5 KB per thread).
  BJ_HD static T keep_after(T v, T after) {
#if defined(__CUDA_ARCH__)
    if constexpr (sizeof(T) == 4) asm volatile("" : "+f"(v) : "f"(after));
    else asm volatile("" : "+d"(v) : "d"(after));
#endif
    (void)after;
    return v;
  }
  BJ_HD static T keep_here(T v) {
#if defined(__CUDA_ARCH__)
    if constexpr (sizeof(T) == 4) asm volatile("" : "+f"(v));
    else asm volatile("" : "+d"(v));
#endif
    return v;
  }
  // role W: returns s sum_ijk C x_i y_j o_k = s sum_k o_k t_k, t = role O with sw = 1
  BJ_HD static T w(T s, const T* xu, const T* y, const T* ou) {
    T t[D3];
    for (int k = 0; k < D3; ++k) t[k] = T(0);
    out(T(1), xu, y, t);
    T acc = T(0);
    for (int k = 0; k < D3; ++k) acc += t[k] * ou[k];
    return s * acc;
  }
};

// Calls f.template run<L1, L2, L3>() for the triple with table id `t`.
template <class F> BJ_HD bool dispatch_triple(int t, F&& f) {
  switch (t) {
#define BJ_TRIPLE_CASE(id, a, b, c) \
  case id:                          \
    f.template run<a, b, c>();      \
    return true;
    BJ_FOR_EACH_TRIPLE(BJ_TRIPLE_CASE)
#undef BJ_TRIPLE_CASE
    default:
      return false;
  }
}

// Operand pointers and sizes of one uvu call. Rows: x has nx, o has no, y and w have ne (edges).
// x_idx / o_idx (optional) map an edge to its x / o row; an index outside [0, nx) / [0, no)
// means the edge does not exist. seg/perm (optional): edges sorted by the output operand's
// index, so that one worker owns one output row (deterministic scatter without atomics).
template <class T> struct UvuArgs {
  const T* x;
  const T* y;
  const T* w;
  const T* o;
  T* out;   // the output operand (role's operand)
  const int32_t* desc;
  const T* scale;
  const int32_t* x_idx;
  const int32_t* o_idx;
  const int32_t* perm;
  const int32_t* seg;
  int64_t nx, ne, no;
  int64_t x_w, y_w, w_w, o_w;
  int n_paths;
  bool has_w;
};

// Rows of the operands touched by edge e, or false if the edge does not exist.
template <class T> BJ_HD bool edge_rows(const UvuArgs<T>& a, int64_t e, int64_t* xr, int64_t* orow) {
  *xr = a.x_idx ? int64_t(a.x_idx[e]) : e;
  *orow = a.o_idx ? int64_t(a.o_idx[e]) : e;
  return *xr >= 0 && *xr < a.nx && *orow >= 0 && *orow < a.no;
}

}  // namespace bj

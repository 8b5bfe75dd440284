// Spherical harmonics l <= 3 of one vector, e3nn-jax conventions, shared by CPU and CUDA.
//
// With normalize, Y = P(u) with u = v / |v|, except that |v| = 0 gives u = v (e3nn's guard:
// Y0 = 1, the rest 0, and du/dv = I there). P is e3nn's "component" polynomial (sh_poly.h).
#pragma once
#include <cmath>

#include "kernels/hd.h"
#include "tables/sh_poly.h"

namespace bj {

template <class T> BJ_HD T rsqrt_guarded(T r2) {
  using std::sqrt;
  return r2 == T(0) ? T(1) : T(1) / sqrt(r2);
}

// The point u where P is evaluated, and the scale s = du/dv's 1/|v| (1 where no normalisation).
template <class T> struct ShPoint {
  T u[3];
  T s;
  bool project;  // du/dv = (I - u u^T) s, else I
};

template <class T> BJ_HD ShPoint<T> sh_point(const T* v, bool normalize) {
  ShPoint<T> p;
  T r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
  p.project = normalize && r2 != T(0);
  p.s = normalize ? rsqrt_guarded(r2) : T(1);
  for (int a = 0; a < 3; ++a) p.u[a] = v[a] * p.s;
  return p;
}

// Y[(L+1)^2] = P(u(v))
template <int L, class T> BJ_HD void sh_fwd_row(const T* v, T* Y, bool normalize) {
  ShPoint<T> p = sh_point(v, normalize);
  sh_poly<L>(p.u[0], p.u[1], p.u[2], Y);
}

// dv[3] = J(v)^T g, with g[(L+1)^2]
template <int L, class T> BJ_HD void sh_vjp_row(const T* v, const T* g, T* dv, bool normalize) {
  constexpr int n = (L + 1) * (L + 1);
  ShPoint<T> p = sh_point(v, normalize);
  T dY[n][3];
  sh_poly_grad<L>(p.u[0], p.u[1], p.u[2], dY);
  T gu[3] = {T(0), T(0), T(0)};
#pragma unroll
  for (int k = 0; k < n; ++k)
#pragma unroll
    for (int a = 0; a < 3; ++a) gu[a] += dY[k][a] * g[k];
  if (p.project) {
    T ug = p.u[0] * gu[0] + p.u[1] * gu[1] + p.u[2] * gu[2];
    for (int a = 0; a < 3; ++a) dv[a] = (gu[a] - p.u[a] * ug) * p.s;
  } else {
    for (int a = 0; a < 3; ++a) dv[a] = gu[a];
  }
}

// dY[(L+1)^2] = J(v) t, with t[3]
template <int L, class T> BJ_HD void sh_jvp_row(const T* v, const T* t, T* dYout, bool normalize) {
  constexpr int n = (L + 1) * (L + 1);
  ShPoint<T> p = sh_point(v, normalize);
  T du[3];
  if (p.project) {
    T ut = p.u[0] * t[0] + p.u[1] * t[1] + p.u[2] * t[2];
    for (int a = 0; a < 3; ++a) du[a] = (t[a] - p.u[a] * ut) * p.s;
  } else {
    for (int a = 0; a < 3; ++a) du[a] = t[a];
  }
  T dY[n][3];
  sh_poly_grad<L>(p.u[0], p.u[1], p.u[2], dY);
#pragma unroll
  for (int k = 0; k < n; ++k) dYout[k] = dY[k][0] * du[0] + dY[k][1] * du[1] + dY[k][2] * du[2];
}

// The three row operations, by the number of operands each reads.
enum class ShOp : int { kFwd = 0, kJvp = 1, kVjp = 2 };


// Calls F::template run<L>() for the runtime L in 0..3; returns false for any other L (host).
template <class F> inline bool dispatch_l(int L, F&& f) {
  switch (L) {
    case 0: f.template run<0>(); return true;
    case 1: f.template run<1>(); return true;
    case 2: f.template run<2>(); return true;
    case 3: f.template run<3>(); return true;
    default: return false;
  }
}

}  // namespace bj

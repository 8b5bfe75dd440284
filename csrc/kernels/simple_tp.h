// tensor_product_simple of one row: out[16] = sum over the 34 seed paths (l1, l2, l3 <= 3) of
// the Clebsch-Gordan product of x's l1 block and y's l2 block, added into out's l3 block
// (parity ignored, paths with one l3 summed). Shared by the CPU and CUDA handlers of
// fused_sh_tp_simple (forward and first-order backward).
#pragma once
#include "kernels/conv.h"
#include "kernels/uvu.h"

namespace bj {

// Calls f(l1, l2, l3) (integral constants) for the 34 seed paths in lexicographic order.
template <class F> BJ_HD void for_each_seed_path(F&& f) {
  static_for<0, 4>([&](auto l1) {
    for_each_conv_path<decltype(l1)::value, 3>([&](auto l2, auto l3) { f(l1, l2, l3); });
  });
}

template <class T> BJ_HD void simple_tp_row(const T* x, const T* y, T* out) {
  for (int k = 0; k < 16; ++k) out[k] = T(0);
  for_each_seed_path([&](auto l1, auto l2, auto l3) {
    constexpr int L1 = decltype(l1)::value, L2 = decltype(l2)::value, L3 = decltype(l3)::value;
    UvuTerm<L1, L2, L3, T>::out(T(1), x + L1 * L1, y + L2 * L2, out + L3 * L3);
  });
}

// The first-order backward of one row: x_bar = d<ct, out>/dx and y_bar = d<ct, out>/dy (either
// may be null).
template <class T> BJ_HD void simple_tp_vjp_row(const T* x, const T* y, const T* ct, T* x_bar, T* y_bar) {
  if (x_bar)
    for (int i = 0; i < 16; ++i) x_bar[i] = T(0);
  if (y_bar)
    for (int j = 0; j < 16; ++j) y_bar[j] = T(0);
  for_each_seed_path([&](auto l1, auto l2, auto l3) {
    constexpr int L1 = decltype(l1)::value, L2 = decltype(l2)::value, L3 = decltype(l3)::value;
    using Term = UvuTerm<L1, L2, L3, T>;
    if (x_bar) Term::x(T(1), y + L2 * L2, ct + L3 * L3, x_bar + L1 * L1);
    if (y_bar) Term::y(T(1), x + L1 * L1, ct + L3 * L3, y_bar + L2 * L2);
  });
}

}  // namespace bj

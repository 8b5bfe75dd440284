// tensor_product_simple of one row: out[16] = sum over the 34 seed paths (l1, l2, l3 <= 3) of
// the Clebsch-Gordan product of x's l1 block and y's l2 block, added into out's l3 block
// (parity ignored, paths with one l3 summed). Shared by the CPU and CUDA handlers of
// fused_sh_tp_simple.
#pragma once
#include "kernels/conv.h"
#include "kernels/uvu.h"

namespace bj {

template <class T> BJ_HD void simple_tp_row(const T* x, const T* y, T* out) {
  for (int k = 0; k < 16; ++k) out[k] = T(0);
  static_for<0, 4>([&](auto l1) {
    constexpr int L1 = decltype(l1)::value;
    static_for<0, 4>([&](auto l2) {
      constexpr int L2 = decltype(l2)::value;
      static_for<conv_abs(L1 - L2), conv_min(L1 + L2, 3) + 1>([&](auto l3) {
        constexpr int L3 = decltype(l3)::value;
        UvuTerm<L1, L2, L3, T>::out(T(1), x + L1 * L1, y + L2 * L2, out + L3 * L3);
      });
    });
  });
}

}  // namespace bj

// XLA FFI CPU handlers of the fully connected product: one row at a time, one path at a time,
// through the per-row matrix M_p of kernels/fc.h (the CUDA kernels' factorisation).
#include <vector>

#include "fc_ffi.h"

namespace bj {
namespace {

template <class F> void for_each_seed_path_by_l3(F&& f) {
  static_for<0, 4>([&](auto l3) { for_each_fc_path<decltype(l3)::value>([&](auto l1, auto l2, auto p) { f(l1, l2, l3, p); }); });
}

// x [n, C_in, 16] -> out [n, C_out, 16] if public_out, else [n, 16, C_out] (fc_ffi.h). Each
// row's output is summed component-major in `acc` ([16][C_out], so that the innermost loop runs
// along contiguous channels), then written out.
template <class T> void fc_forward(const T* x, const T* y, const T* w, T* out, const FcDims& d, bool public_out) {
  std::vector<T> acc(16 * d.c_out), a(d.c_in);
  for (int64_t n = 0; n < d.n; ++n) {
    const T* wg = w + (n / d.rows_per_group) * d.w_size();
    const T* xn = x + n * d.c_in * 16;  // x[u * 16 + i]
    for (auto& v : acc) v = T(0);
    for_each_seed_path_by_l3([&](auto l1, auto l2, auto l3, auto p) {
      constexpr int L1 = decltype(l1)::value, L2 = decltype(l2)::value, L3 = decltype(l3)::value;
      constexpr int D1 = 2 * L1 + 1, D3 = 2 * L3 + 1;
      T m[D1 * D3];
      fc_row_matrix<L1, L2, L3>(y + 16 * n + L2 * L2, m);
      const T* wp = wg + decltype(p)::value * d.c_in * d.c_out;
      for (int k = 0; k < D3; ++k) {
        T* orow = acc.data() + (L3 * L3 + k) * d.c_out;
        for (int64_t u = 0; u < d.c_in; ++u) {
          T s = T(0);  // A[(n, k), (p, u)]
          for (int i = 0; i < D1; ++i) s += xn[u * 16 + L1 * L1 + i] * m[i * D3 + k];
          a[u] = s;
        }
        for (int64_t u = 0; u < d.c_in; ++u) {
          const T* wr = wp + u * d.c_out;
          for (int64_t o = 0; o < d.c_out; ++o) orow[o] += a[u] * wr[o];  // contiguous: vectorises
        }
      }
    });
    if (public_out) {
      for (int64_t o = 0; o < d.c_out; ++o)
        for (int c = 0; c < 16; ++c) out[(n * d.c_out + o) * 16 + c] = acc[c * d.c_out + o];
    } else {
      for (int64_t q = 0; q < 16 * d.c_out; ++q) out[n * 16 * d.c_out + q] = acc[q];
    }
  }
}

// xt, ctt, x_bart: [n, 16, C] (component axis first). Results are summed row after row
// (deterministic).
template <class T>
void fc_backward(const T* xt, const T* y, const T* w, const T* ctt, T* x_bart, T* y_bar, T* w_bar, const FcDims& d) {
  if (x_bart)
    for (int64_t q = 0; q < d.n * d.c_in * 16; ++q) x_bart[q] = T(0);
  if (y_bar)
    for (int64_t q = 0; q < d.n * 16; ++q) y_bar[q] = T(0);
  if (w_bar)
    for (int64_t q = 0; q < d.groups * d.w_size(); ++q) w_bar[q] = T(0);
  std::vector<T> g(7 * d.c_in);  // G[k, u] = sum_w ct[n, k, w] W[p, u, w]
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t grp = n / d.rows_per_group;
    for_each_seed_path_by_l3([&](auto l1, auto l2, auto l3, auto p) {
      constexpr int L1 = decltype(l1)::value, L2 = decltype(l2)::value, L3 = decltype(l3)::value;
      constexpr int D1 = 2 * L1 + 1, D2 = 2 * L2 + 1, D3 = 2 * L3 + 1;
      constexpr int P = decltype(p)::value;
      T m[D1 * D3];
      fc_row_matrix<L1, L2, L3>(y + 16 * n + L2 * L2, m);
      const T* ct = ctt + (n * 16 + L3 * L3) * d.c_out;  // ct[k * C_out + w]
      const T* xr = xt ? xt + (n * 16 + L1 * L1) * d.c_in : nullptr;  // x[i * C_in + u]
      if (x_bart || y_bar) {
        const T* wp = w + (grp * kSeedPaths + P) * d.c_in * d.c_out;
        for (int k = 0; k < D3; ++k)
          for (int64_t u = 0; u < d.c_in; ++u) {
            T s = T(0);
            for (int64_t o = 0; o < d.c_out; ++o) s += ct[k * d.c_out + o] * wp[u * d.c_out + o];
            g[k * d.c_in + u] = s;
          }
        if (x_bart)
          for (int64_t u = 0; u < d.c_in; ++u)
            for (int i = 0; i < D1; ++i) {
              T s = T(0);
              for (int k = 0; k < D3; ++k) s += m[i * D3 + k] * g[k * d.c_in + u];
              x_bart[(n * 16 + L1 * L1 + i) * d.c_in + u] += s;
            }
        if (y_bar) {  // H[i, k] = sum_u x[u, i] G[k, u], then y_bar_j += sum_ik C_ijk H[i, k]
          T h[D1 * D3];
          for (int i = 0; i < D1; ++i)
            for (int k = 0; k < D3; ++k) {
              T s = T(0);
              for (int64_t u = 0; u < d.c_in; ++u) s += xr[i * d.c_in + u] * g[k * d.c_in + u];
              h[i * D3 + k] = s;
            }
          T yb[D2] = {};
          CG<L1, L2, L3>::visit([&](int i, int j, int k, double c) { yb[j] += T(c) * h[i * D3 + k]; });
          for (int j = 0; j < D2; ++j) y_bar[16 * n + L2 * L2 + j] += yb[j];
        }
      }
      if (w_bar) {  // W_bar[p, u, w] += sum_k A[k, u] ct[k, w]
        T* wb = w_bar + (grp * kSeedPaths + P) * d.c_in * d.c_out;
        for (int64_t u = 0; u < d.c_in; ++u) {
          T* wr = wb + u * d.c_out;
          for (int k = 0; k < D3; ++k) {
            T a = T(0);
            for (int i = 0; i < D1; ++i) a += xr[i * d.c_in + u] * m[i * D3 + k];
            const T* cr = ct + k * d.c_out;
            for (int64_t o = 0; o < d.c_out; ++o) wr[o] += a * cr[o];  // contiguous: vectorises
          }
        }
      }
    });
  }
}

ffi::Error FcCpu(ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> out,
                 int64_t c_in, int64_t c_out, int64_t groups, int64_t public_out, int64_t /*tf32_passes*/) {
  FcDims d;
  if (auto err = fc_check(x, y, w, *out, c_in, c_out, groups, &d); !err.success()) return err;
  return dispatch_float(out->element_type(), "tensor_product", [&](auto tag) {
    using T = decltype(tag);
    fc_forward<T>(x.typed_data<T>(), y.typed_data<T>(), w.typed_data<T>(), out->typed_data<T>(), d, public_out != 0);
    return ffi::Error::Success();
  });
}

ffi::Error FcBwdCpu(ffi::AnyBuffer xt, ffi::AnyBuffer y, ffi::AnyBuffer w, ffi::AnyBuffer ctt,
                    ffi::Result<ffi::AnyBuffer> x_bar, ffi::Result<ffi::AnyBuffer> y_bar,
                    ffi::Result<ffi::AnyBuffer> w_bar, ffi::Result<ffi::AnyBuffer> scratch, int64_t c_in,
                    int64_t c_out, int64_t groups, int64_t slabs, int64_t /*tf32_passes*/) {
  FcDims d;
  if (auto err = fc_check_bwd(xt, y, w, ctt, *x_bar, *y_bar, *w_bar, *scratch, c_in, c_out, groups, slabs, &d,
                                /*with_scratch=*/false);
      !err.success())
    return err;
  return dispatch_float(ctt.element_type(), "tensor_product", [&](auto tag) {
    const FcBwdBuffers<decltype(tag)> b(xt, y, w, ctt, *x_bar, *y_bar, *w_bar, *scratch, d, slabs);
    fc_backward(b.xt, b.y, b.w, b.ctt, b.x_bart, b.y_bar, b.w_bar, d);
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_fc_cpu, FcCpu, BJ_FC_BINDING(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_fc_bwd_cpu, FcBwdCpu, BJ_FC_BWD_BINDING(ffi::Ffi::Bind()));

}  // namespace bj

// XLA FFI CPU handlers of tensor_product_simple: the row functions of kernels/simple_tp.h.
#include "kernels/simple_tp.h"
#include "simple_tp_ffi.h"

namespace bj {
namespace {

ffi::Error TpSimpleCpu(ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::Result<ffi::AnyBuffer> out) {
  int64_t n;
  if (auto err = simple_tp_check({&x, &y, &*out}, {}, &n); !err.success()) return err;
  return dispatch_float(out->element_type(), "tensor_product_simple", [&](auto tag) {
    using T = decltype(tag);
    for (int64_t r = 0; r < n; ++r)
      simple_tp_row(x.typed_data<T>() + 16 * r, y.typed_data<T>() + 16 * r, out->typed_data<T>() + 16 * r);
    return ffi::Error::Success();
  });
}

ffi::Error TpSimpleBwdCpu(ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer ct, ffi::Result<ffi::AnyBuffer> x_bar,
                          ffi::Result<ffi::AnyBuffer> y_bar) {
  int64_t n;
  if (auto err = simple_tp_check({&x, &y, &ct}, {&*x_bar, &*y_bar}, &n); !err.success()) return err;
  return dispatch_float(ct.element_type(), "tensor_product_simple", [&](auto tag) {
    const SimpleTpBwd<decltype(tag)> b(x, y, ct, *x_bar, *y_bar);
    for (int64_t r = 0; r < n; ++r)
      simple_tp_vjp_row(b.x + 16 * r, b.y + 16 * r, b.ct + 16 * r, b.x_bar ? b.x_bar + 16 * r : nullptr,
                        b.y_bar ? b.y_bar + 16 * r : nullptr);
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_tp_simple_cpu, TpSimpleCpu, BJ_TP_SIMPLE_BINDING(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_tp_simple_bwd_cpu, TpSimpleBwdCpu, BJ_TP_SIMPLE_BWD_BINDING(ffi::Ffi::Bind()));

}  // namespace bj

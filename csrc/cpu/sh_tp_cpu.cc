// XLA FFI CPU handler of fused_sh_tp_simple (one row at a time, kernels/simple_tp.h).
#include "kernels/simple_tp.h"
#include "sh_tp_ffi.h"

namespace bj {
namespace {

ffi::Error ShTpCpu(ffi::AnyBuffer v, ffi::AnyBuffer f, ffi::AnyBuffer src, ffi::Result<ffi::AnyBuffer> out) {
  ShTpShape shape;
  if (auto err = ShTpShape::check(v, f, src, *out, &shape); !err.success()) return err;
  return dispatch_float(out->element_type(), "fused_sh_tp_simple", [&](auto tag) {
    using T = decltype(tag);
    const T* vp = v.typed_data<T>();
    const T* fp = f.typed_data<T>();
    const int32_t* sp = src.typed_data<int32_t>();
    T* op = out->typed_data<T>();
    for (int64_t e = 0; e < shape.ne; ++e) {
      const int64_t s = sp[e];
      if (s < 0 || s >= shape.nn) {
        for (int k = 0; k < 16; ++k) op[16 * e + k] = T(0);
        continue;
      }
      T Y[16];
      conv_sh(vp + 3 * e, Y);
      simple_tp_row(fp + 16 * s, Y, op + 16 * e);
    }
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_tp_simple_cpu, ShTpCpu, BJ_SH_TP_BINDING(ffi::Ffi::Bind()));

}  // namespace bj

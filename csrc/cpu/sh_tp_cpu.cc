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

// Edges in their given order, f_bar summed directly (deterministic); f_part is unused here.
ffi::Error ShTpBwdCpu(ffi::AnyBuffer v, ffi::AnyBuffer f, ffi::AnyBuffer src, ffi::AnyBuffer ct,
                      ffi::AnyBuffer perm, ffi::AnyBuffer seg, ffi::Result<ffi::AnyBuffer> v_bar,
                      ffi::Result<ffi::AnyBuffer> f_bar, ffi::Result<ffi::AnyBuffer> f_part) {
  ShTpShape shape;
  if (auto err = ShTpShape::check_bwd(v, f, src, ct, perm, seg, *v_bar, *f_bar, *f_part, &shape); !err.success())
    return err;
  return dispatch_float(ct.element_type(), "fused_sh_tp_simple", [&](auto tag) {
    using T = decltype(tag);
    const T* vp = v.typed_data<T>();
    const T* fp = f.typed_data<T>();
    const T* cp = ct.typed_data<T>();
    const int32_t* sp = src.typed_data<int32_t>();
    T* vb = v_bar->element_count() ? v_bar->typed_data<T>() : nullptr;
    T* fb = f_bar->element_count() ? f_bar->typed_data<T>() : nullptr;
    if (fb)
      for (int64_t i = 0; i < 16 * shape.nn; ++i) fb[i] = T(0);
    for (int64_t e = 0; e < shape.ne; ++e) {
      const int64_t s = sp[e];
      if (s < 0 || s >= shape.nn) {
        if (vb)
          for (int a = 0; a < 3; ++a) vb[3 * e + a] = T(0);
        continue;
      }
      T Y[16], xb[16], yb[16];
      conv_sh(vp + 3 * e, Y);
      simple_tp_vjp_row(fp + 16 * s, Y, cp + 16 * e, fb ? xb : nullptr, vb ? yb : nullptr);
      if (fb)
        for (int i = 0; i < 16; ++i) fb[16 * s + i] += xb[i];
      if (vb) sh_vjp_row<3>(vp + 3 * e, yb, vb + 3 * e, true);
    }
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_tp_simple_cpu, ShTpCpu, BJ_SH_TP_BINDING(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_tp_simple_bwd_cpu, ShTpBwdCpu, BJ_SH_TP_BWD_BINDING(ffi::Ffi::Bind()));

}  // namespace bj

// XLA FFI CPU handlers for spherical harmonics: forward, JVP (J t) and VJP (J^T g).
#include "ffi_common.h"
#include "kernels/sh.h"

namespace bj {
namespace {

// `a` is the vector operand [rows, 3]; `b` the second operand (t [rows, 3] or g [rows, n]).
template <class T> struct ShCpuRows {
  ShOp op;
  bool normalize;
  int64_t rows;
  int n;  // (L+1)^2
  const T* v;
  const T* b;
  T* out;
  template <int L> void run() const {
    for (int64_t r = 0; r < rows; ++r) {
      const T* vr = v + 3 * r;
      if (op == ShOp::kFwd) sh_fwd_row<L>(vr, out + int64_t(n) * r, normalize);
      if (op == ShOp::kJvp) sh_jvp_row<L>(vr, b + 3 * r, out + int64_t(n) * r, normalize);
      if (op == ShOp::kVjp) sh_vjp_row<L>(vr, b + int64_t(n) * r, out + 3 * r, normalize);
    }
  }
};

ffi::Error ShCpu(ShOp op, ffi::AnyBuffer v, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                 int64_t L, bool normalize) {
  if (L < 0 || L > 3) return ffi::Error::InvalidArgument("spherical_harmonics: L must be 0..3");
  const int n = int((L + 1) * (L + 1));
  const int64_t rows = rows_of(v, 3);
  return dispatch_float(v.element_type(), "spherical_harmonics", [&](auto tag) {
    using T = decltype(tag);
    ShCpuRows<T> f{op, normalize, rows, n, v.typed_data<T>(),
                   op == ShOp::kFwd ? nullptr : b.typed_data<T>(), out->typed_data<T>()};
    dispatch_l(int(L), f);
    return ffi::Error::Success();
  });
}

ffi::Error ShFwdCpu(ffi::AnyBuffer v, ffi::Result<ffi::AnyBuffer> y, int64_t L, bool normalize) {
  return ShCpu(ShOp::kFwd, v, v, y, L, normalize);
}
ffi::Error ShJvpCpu(ffi::AnyBuffer v, ffi::AnyBuffer t, ffi::Result<ffi::AnyBuffer> dy, int64_t L,
                    bool normalize) {
  return ShCpu(ShOp::kJvp, v, t, dy, L, normalize);
}
ffi::Error ShVjpCpu(ffi::AnyBuffer v, ffi::AnyBuffer g, ffi::Result<ffi::AnyBuffer> dv, int64_t L,
                    bool normalize) {
  return ShCpu(ShOp::kVjp, v, g, dv, L, normalize);
}

}  // namespace

// The three handlers differ only in their operands: (v) or (v, t) or (v, g).
#define BJ_SH_CPU_BIND(...)                                                             \
  ffi::Ffi::Bind() __VA_ARGS__.Ret<ffi::AnyBuffer>().Attr<int64_t>("L").Attr<bool>("normalize")

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_fwd_cpu, ShFwdCpu, BJ_SH_CPU_BIND(.Arg<ffi::AnyBuffer>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_jvp_cpu, ShJvpCpu,
                              BJ_SH_CPU_BIND(.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_vjp_cpu, ShVjpCpu,
                              BJ_SH_CPU_BIND(.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()));

}  // namespace bj

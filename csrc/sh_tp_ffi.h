// The FFI signature of fused_sh_tp_simple, shared by its CPU and CUDA handlers:
//   v [E, 3], f [N, 16], src int32 [E]  ->  out [E, 16]
// out[e] = tensor_product_simple(f[src[e]], sh(v[e])); a row whose src is outside [0, N) is 0.
#pragma once
#include "ffi_common.h"

namespace bj {

#define BJ_SH_TP_BINDING(bind) \
  bind.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()

struct ShTpShape {
  int64_t ne, nn;

  static ffi::Error check(const ffi::AnyBuffer& v, const ffi::AnyBuffer& f, const ffi::AnyBuffer& src,
                          const ffi::AnyBuffer& out, ShTpShape* shape) {
    shape->ne = int64_t(src.element_count());
    shape->nn = int64_t(f.element_count() / 16);
    if (v.element_type() != out.element_type() || f.element_type() != out.element_type())
      return ffi::Error::InvalidArgument("fused_sh_tp_simple: operands must share one float dtype");
    if (src.element_type() != ffi::DataType::S32)
      return ffi::Error::InvalidArgument("fused_sh_tp_simple: source_idx must be int32");
    if (int64_t(v.element_count()) != 3 * shape->ne || int64_t(f.element_count()) != 16 * shape->nn ||
        int64_t(out.element_count()) != 16 * shape->ne)
      return ffi::Error::InvalidArgument("fused_sh_tp_simple: operand sizes do not match");
    return ffi::Error::Success();
  }
};

}  // namespace bj

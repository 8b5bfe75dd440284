// The FFI signatures of fused_sh_tp_simple, shared by its CPU and CUDA handlers:
//   bj_sh_tp_simple:      v [E, 3], f [N, 16], src int32 [E]  ->  out [E, 16]
//   bj_sh_tp_simple_bwd:  v, f, src, ct [E, 16], src_perm int32 [E], src_seg int32 [N + 1]
//                         -> v_bar [E, 3], f_bar [N, 16], f_part [E, 16]
// out[e] = tensor_product_simple(f[src[e]], sh(v[e])); a row whose src is outside [0, N) is 0
// (and gets no gradient). A backward result not asked for is empty; f_part is the CUDA
// kernels' scratch (each edge's f_bar contribution, summed per source in src_perm order) and is
// full size exactly when f_bar is asked for.
#pragma once
#include "ffi_common.h"

namespace bj {

#define BJ_SH_TP_BINDING(bind) bj::buffer_rets<1>(bj::buffer_args<3>(bind))
#define BJ_SH_TP_BWD_BINDING(bind) bj::buffer_rets<3>(bj::buffer_args<6>(bind))

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

  // The backward's operands: ct like out; results empty or full size; the sorted order over
  // the sources.
  static ffi::Error check_bwd(const ffi::AnyBuffer& v, const ffi::AnyBuffer& f, const ffi::AnyBuffer& src,
                              const ffi::AnyBuffer& ct, const ffi::AnyBuffer& perm, const ffi::AnyBuffer& seg,
                              const ffi::AnyBuffer& v_bar, const ffi::AnyBuffer& f_bar,
                              const ffi::AnyBuffer& f_part, ShTpShape* shape) {
    if (auto err = check(v, f, src, ct, shape); !err.success()) return err;
    const auto dt = ct.element_type();
    const int64_t part = f_bar.element_count() ? 16 * shape->ne : 0;
    if (!sized_as(v_bar, dt, 3 * shape->ne, true) || !sized_as(f_bar, dt, 16 * shape->nn, true) ||
        !sized_as(f_part, dt, part, false))
      return ffi::Error::InvalidArgument("fused_sh_tp_simple: result sizes do not match");
    if (perm.element_type() != ffi::DataType::S32 || seg.element_type() != ffi::DataType::S32 ||
        int64_t(perm.element_count()) != shape->ne || int64_t(seg.element_count()) != shape->nn + 1)
      return ffi::Error::InvalidArgument("fused_sh_tp_simple: bad source order");
    return ffi::Error::Success();
  }
};

}  // namespace bj

// The FFI signature of the uvu family, shared by its CPU and CUDA handlers.
//
// Operands (always ten, absent ones are empty arrays): x, y, w, o (the role's own operand is
// empty), desc int32 [P, 12], scale [P] (operands' dtype), x_idx, o_idx, perm, seg (int32). Result:
// out, the role's operand (zeroed, then accumulated).
#pragma once
#include <string>

#include "ffi_common.h"
#include "kernels/uvu.h"

namespace bj {

#define BJ_UVU_BINDING(bind)                          \
  bj::buffer_rets<1>(bj::buffer_args<10>(bind))       \
      .Attr<int64_t>("role")                          \
      .Attr<int64_t>("x_width")                       \
      .Attr<int64_t>("y_width")                       \
      .Attr<int64_t>("w_width")                       \
      .Attr<int64_t>("o_width")                       \
      .Attr<int64_t>("nx")                            \
      .Attr<int64_t>("ne")                            \
      .Attr<int64_t>("no")

struct UvuCall {
  int64_t role, x_w, y_w, w_w, o_w, nx, ne, no;

  bool empty() const { return ne == 0 || nx == 0 || no == 0; }

  ffi::Error validate(const ffi::AnyBuffer& desc, const ffi::AnyBuffer& scale,
                      ffi::DataType dtype) const {
    if (role < kRoleO || role > kRoleW) return ffi::Error::InvalidArgument("uvu: bad role");
    if (desc.element_type() != ffi::DataType::S32 ||
        desc.element_count() != scale.element_count() * kDescCols)
      return ffi::Error::InvalidArgument("uvu: bad path table");
    if (scale.element_type() != dtype)
      return ffi::Error::InvalidArgument("uvu: path scales must have the operands' dtype");
    return ffi::Error::Success();
  }

  template <class T>
  UvuArgs<T> args(const ffi::AnyBuffer& x, const ffi::AnyBuffer& y, const ffi::AnyBuffer& w,
                  const ffi::AnyBuffer& o, const ffi::AnyBuffer& desc, const ffi::AnyBuffer& scale,
                  const ffi::AnyBuffer& x_idx, const ffi::AnyBuffer& o_idx,
                  const ffi::AnyBuffer& perm, const ffi::AnyBuffer& seg, ffi::AnyBuffer out) const {
    auto ptr = [](const ffi::AnyBuffer& b) -> const T* {
      return b.element_count() ? b.typed_data<T>() : nullptr;
    };
    auto iptr = [](const ffi::AnyBuffer& b) -> const int32_t* {
      return b.element_count() ? b.typed_data<int32_t>() : nullptr;
    };
    UvuArgs<T> a{};
    a.x = ptr(x);
    a.y = ptr(y);
    a.w = ptr(w);
    a.o = ptr(o);
    a.out = out.element_count() ? out.typed_data<T>() : nullptr;
    a.desc = desc.typed_data<int32_t>();
    a.scale = scale.typed_data<T>();
    a.x_idx = iptr(x_idx);
    a.o_idx = iptr(o_idx);
    a.perm = iptr(perm);
    a.seg = seg.element_count() ? seg.typed_data<int32_t>() : nullptr;
    a.nx = nx;
    a.ne = ne;
    a.no = no;
    a.x_w = x_w;
    a.y_w = y_w;
    a.w_w = w_w;
    a.o_w = o_w;
    a.n_paths = int(scale.element_count());
    a.has_w = w_w > 0;
    return a;
  }
};

}  // namespace bj

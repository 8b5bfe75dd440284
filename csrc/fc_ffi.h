// The FFI signatures of the fully connected product (kernels/fc.h), shared by its CPU and
// CUDA handlers. Attributes: c_in, c_out, groups (weights per block of rows), tf32_passes
// (0, or the precision option's tensor-core passes: 3 for "tf32x3", 1 for "tf32"; the CUDA
// handler's float32 products then run on the tensor cores, tf32x3.cuh; the CPU handler computes
// in full float32 either way).
//   bj_fc:      x [n, C_in, 16], y [n, 16], w [groups, 34, C_in, C_out]
//               -> out [n, C_out, 16] if public_out, else [n, 16, C_out]
//   bj_fc_bwd:  xt [n, 16, C_in], y, w, ctt [n, 16, C_out]
//               -> x_bart [n, 16, C_in], y_bar [n, 16], w_bar [groups, 34, C_in, C_out],
//                  scratch [fc_scratch_size(...)]
// The forward reads x in the public layout [n, C, 16]; it writes out in that layout too for
// small grids (attribute public_out, chosen in fc.py), else component-major (fc_cuda.cu says why).
// The backward's channel-carrying operands have the component axis before the channel axis
// (transposed by XLA around the call), so that its kernels read and write channels
// contiguously (coalesced, vectorised). A result not asked for is empty;
// an operand that no requested result reads (x without y_bar / w_bar, w without x_bar /
// y_bar) may be empty. `scratch` is the CUDA handler's workspace (fc_scratch_size); the CPU
// handler's call passes it empty.
#pragma once
#include "ffi_common.h"
#include "kernels/fc.h"

namespace bj {

#define BJ_FC_ATTRS(bind) bind.Attr<int64_t>("c_in").Attr<int64_t>("c_out").Attr<int64_t>("groups")

#define BJ_FC_BINDING(bind) \
  BJ_FC_ATTRS(bj::buffer_rets<1>(bj::buffer_args<3>(bind))).Attr<int64_t>("public_out").Attr<int64_t>("tf32_passes")

#define BJ_FC_BWD_BINDING(bind) \
  BJ_FC_ATTRS(bj::buffer_rets<4>(bj::buffer_args<4>(bind))).Attr<int64_t>("slabs").Attr<int64_t>("tf32_passes")

inline ffi::Error fc_dims(const ffi::AnyBuffer& y, int64_t c_in, int64_t c_out, int64_t groups, FcDims* d) {
  d->n = int64_t(y.element_count() / 16);
  d->groups = groups;
  d->c_in = c_in;
  d->c_out = c_out;
  if (c_in < 0 || c_out < 0 || groups < 1 || d->n % groups != 0)
    return ffi::Error::InvalidArgument("tensor_product: bad channel counts or weight groups");
  d->rows_per_group = d->n / groups;
  return ffi::Error::Success();
}

inline ffi::Error fc_check(const ffi::AnyBuffer& x, const ffi::AnyBuffer& y, const ffi::AnyBuffer& w,
                           const ffi::AnyBuffer& out, int64_t c_in, int64_t c_out, int64_t groups, FcDims* d) {
  if (auto err = fc_dims(y, c_in, c_out, groups, d); !err.success()) return err;
  const auto dt = out.element_type();
  if (!sized_as(x, dt, d->n * c_in * 16, false) || !sized_as(y, dt, d->n * 16, false) ||
      !sized_as(w, dt, groups * d->w_size(), false) || !sized_as(out, dt, d->n * c_out * 16, false))
    return ffi::Error::InvalidArgument("tensor_product: operand sizes or dtypes do not match");
  return ffi::Error::Success();
}

inline ffi::Error fc_check_bwd(const ffi::AnyBuffer& xt, const ffi::AnyBuffer& y, const ffi::AnyBuffer& w,
                               const ffi::AnyBuffer& ctt, const ffi::AnyBuffer& x_bar,
                               const ffi::AnyBuffer& y_bar, const ffi::AnyBuffer& w_bar,
                               const ffi::AnyBuffer& scratch, int64_t c_in, int64_t c_out, int64_t groups,
                               int64_t slabs, FcDims* d, bool with_scratch = true) {
  if (auto err = fc_dims(y, c_in, c_out, groups, d); !err.success()) return err;
  const auto dt = ctt.element_type();
  const bool need_x = x_bar.element_count() > 0, need_y = y_bar.element_count() > 0,
             need_w = w_bar.element_count() > 0;
  const bool x_read = need_y || need_w, w_read = need_x || need_y;
  if (slabs < 1 || !sized_as(ctt, dt, d->n * c_out * 16, false) || !sized_as(y, dt, d->n * 16, false) ||
      !sized_as(xt, dt, d->n * c_in * 16, !x_read) || !sized_as(w, dt, groups * d->w_size(), !w_read) ||
      !sized_as(x_bar, dt, d->n * c_in * 16, true) || !sized_as(y_bar, dt, d->n * 16, true) ||
      !sized_as(w_bar, dt, groups * d->w_size(), true) ||
      !sized_as(scratch, dt, with_scratch ? fc_scratch_size(*d, slabs, need_x, need_y, need_w) : 0, false))
    return ffi::Error::InvalidArgument("tensor_product backward: operand sizes or dtypes do not match");
  return ffi::Error::Success();
}

// The backward's operands, typed; an operand or result that is empty is null. The scratch's
// parts (kernels/fc.h, fc_scratch_layout) are null when absent.
template <class T> struct FcBwdBuffers {
  const T *xt, *y, *w, *ctt;
  T *x_bart, *y_bar, *w_bar;
  T *w_part, *x_part, *y_part;  // in the scratch
  FcBwdBuffers(const ffi::AnyBuffer& xt_, const ffi::AnyBuffer& y_, const ffi::AnyBuffer& w_,
               const ffi::AnyBuffer& ctt_, ffi::AnyBuffer& x_bar_, ffi::AnyBuffer& y_bar_, ffi::AnyBuffer& w_bar_,
               ffi::AnyBuffer& scratch, const FcDims& d, int64_t slabs)
      : xt(or_null<const T>(xt_)), y(y_.typed_data<T>()), w(or_null<const T>(w_)), ctt(ctt_.typed_data<T>()),
        x_bart(or_null<T>(x_bar_)), y_bar(or_null<T>(y_bar_)), w_bar(or_null<T>(w_bar_)) {
    T* const at = or_null<T>(scratch);  // null: no workspace (the CPU handler's call, or no result asked for)
    const FcScratchLayout l = fc_scratch_layout(d, slabs, x_bart != nullptr, y_bar != nullptr, w_bar != nullptr);
    w_part = at && l.w_part >= 0 ? at + l.w_part : nullptr;
    x_part = at && l.x_part >= 0 ? at + l.x_part : nullptr;
    y_part = at && l.y_part >= 0 ? at + l.y_part : nullptr;
  }

 private:
  template <class U> static U* or_null(const ffi::AnyBuffer& b) {
    return b.element_count() ? static_cast<U*>(b.untyped_data()) : nullptr;
  }
};

}  // namespace bj

// The FFI signatures of tensor_product_simple (kernels/simple_tp.h), shared by its CPU and CUDA
// handlers; one row per work item:
//   bj_tp_simple:      x [n, 16], y [n, 16]           ->  out [n, 16]
//   bj_tp_simple_bwd:  x [n, 16], y [n, 16], ct [n, 16] ->  x_bar [n, 16], y_bar [n, 16]
// A backward result not asked for is empty; the backward reads each row once for both.
#pragma once
#include "ffi_common.h"

namespace bj {

#define BJ_TP_SIMPLE_BINDING(bind) bj::buffer_rets<1>(bj::buffer_args<2>(bind))
#define BJ_TP_SIMPLE_BWD_BINDING(bind) bj::buffer_rets<2>(bj::buffer_args<3>(bind))

// Every operand [n, 16] of one float dtype; results may be empty. Returns n through rows.
inline ffi::Error simple_tp_check(std::initializer_list<const ffi::AnyBuffer*> full,
                                  std::initializer_list<const ffi::AnyBuffer*> maybe_empty, int64_t* rows) {
  const ffi::AnyBuffer& first = **full.begin();
  *rows = rows_of(first, 16);
  for (const ffi::AnyBuffer* b : full)
    if (!sized_as(*b, first.element_type(), 16 * *rows, false))
      return ffi::Error::InvalidArgument("tensor_product_simple: operands must be [n, 16] of one float dtype");
  for (const ffi::AnyBuffer* b : maybe_empty)
    if (!sized_as(*b, first.element_type(), 16 * *rows, true))
      return ffi::Error::InvalidArgument("tensor_product_simple: result sizes do not match");
  return ffi::Error::Success();
}

// The backward's operands, typed; a result not asked for is null.
template <class T> struct SimpleTpBwd {
  const T *x, *y, *ct;
  T *x_bar, *y_bar;
  SimpleTpBwd(const ffi::AnyBuffer& xb, const ffi::AnyBuffer& yb, const ffi::AnyBuffer& cb, ffi::AnyBuffer& x_res,
              ffi::AnyBuffer& y_res)
      : x(xb.typed_data<T>()), y(yb.typed_data<T>()), ct(cb.typed_data<T>()),
        x_bar(x_res.element_count() ? x_res.typed_data<T>() : nullptr),
        y_bar(y_res.element_count() ? y_res.typed_data<T>() : nullptr) {}
};

}  // namespace bj

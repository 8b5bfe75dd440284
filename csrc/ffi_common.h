// Helpers shared by every XLA FFI handler: shapes, dtype dispatch, errors.
#pragma once
#include <cstdint>
#include <string>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace bj {
namespace ffi = xla::ffi;

// bind followed by N buffer operands (buffer_args) or N buffer results (buffer_rets): the
// handlers' long operand lists, counted instead of spelled out. Every operand and result of
// this extension is an ffi::AnyBuffer (the handlers check dtypes themselves, so one binding
// serves float32 and float64). N >= 1: each step returns the builder's prvalue, whose
// move constructor is private to the FFI API.
template <int N, class B> auto buffer_args(B&& bind) {
  static_assert(N >= 1, "at least one operand");
  if constexpr (N == 1) return std::move(bind).template Arg<ffi::AnyBuffer>();
  else return buffer_args<N - 1>(std::move(bind).template Arg<ffi::AnyBuffer>());
}
template <int N, class B> auto buffer_rets(B&& bind) {
  static_assert(N >= 1, "at least one result");
  if constexpr (N == 1) return std::move(bind).template Ret<ffi::AnyBuffer>();
  else return buffer_rets<N - 1>(std::move(bind).template Ret<ffi::AnyBuffer>());
}

// Number of rows of a buffer whose trailing axis has `width` elements (all leading dims).
inline int64_t rows_of(const ffi::AnyBuffer& b, int64_t width) {
  return width == 0 ? 0 : static_cast<int64_t>(b.element_count()) / width;
}

inline int64_t last_dim(const ffi::AnyBuffer& b) {
  auto d = b.dimensions();
  return d.size() == 0 ? 1 : d[d.size() - 1];
}

// b has dtype dt and n elements (or none, where may_be_empty: a result or operand not used).
inline bool sized_as(const ffi::AnyBuffer& b, ffi::DataType dt, int64_t n, bool may_be_empty) {
  return b.element_type() == dt && (int64_t(b.element_count()) == n || (may_be_empty && b.element_count() == 0));
}

inline ffi::Error bad_dtype(const char* who) {
  return ffi::Error::InvalidArgument(std::string(who) + ": only float32 and float64 are supported");
}

// Calls f(T{}) with T = float or double according to the buffer's dtype.
template <class F> ffi::Error dispatch_float(ffi::DataType dt, const char* who, F&& f) {
  switch (dt) {
    case ffi::DataType::F32: return f(float{});
    case ffi::DataType::F64: return f(double{});
    default: return bad_dtype(who);
  }
}

}  // namespace bj

// XLA FFI CUDA handlers of tensor_product_simple: one thread per row, the row functions of
// kernels/simple_tp.h in registers (each row's x, y and cotangent read once).
#include <cuda_runtime.h>

#include "cuda/cuda_common.h"
#include "kernels/simple_tp.h"
#include "simple_tp_ffi.h"

namespace bj {
namespace {

constexpr int kThreads = 128;

template <class T> __global__ void tp_simple_kernel(const T* x, const T* y, T* out, int64_t n) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  T xl[16], yl[16], o[16];
  for (int i = 0; i < 16; ++i) xl[i] = x[16 * r + i];
  for (int j = 0; j < 16; ++j) yl[j] = y[16 * r + j];
  simple_tp_row(xl, yl, o);
  for (int k = 0; k < 16; ++k) out[16 * r + k] = o[k];
}

// XB / YB: which results are written (compile-time, so that the row's results stay in registers).
template <class T, bool XB, bool YB>
__global__ void tp_simple_bwd_kernel(const T* x, const T* y, const T* ct, T* x_bar, T* y_bar, int64_t n) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  T xl[16], yl[16], cl[16], xb[16], yb[16];
  for (int i = 0; i < 16; ++i) {
    xl[i] = x[16 * r + i];
    yl[i] = y[16 * r + i];
    cl[i] = ct[16 * r + i];
  }
  // One result at a time from the same registers: in fp64 the two accumulators together
  // spill, each alone (nearly) does not.
  if constexpr (XB) {
    simple_tp_vjp_row(xl, yl, cl, xb, static_cast<T*>(nullptr));
    for (int i = 0; i < 16; ++i) x_bar[16 * r + i] = xb[i];
  }
  if constexpr (YB) {
    simple_tp_vjp_row(xl, yl, cl, static_cast<T*>(nullptr), yb);
    for (int j = 0; j < 16; ++j) y_bar[16 * r + j] = yb[j];
  }
}

ffi::Error TpSimpleCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::Result<ffi::AnyBuffer> out) {
  int64_t n;
  if (auto err = simple_tp_check({&x, &y, &*out}, {}, &n); !err.success()) return err;
  return dispatch_float(out->element_type(), "tensor_product_simple", [&](auto tag) {
    using T = decltype(tag);
    if (n > 0)
      tp_simple_kernel<T><<<grid_for(n, kThreads), kThreads, 0, stream>>>(x.typed_data<T>(), y.typed_data<T>(),
                                                                           out->typed_data<T>(), n);
    return cuda_status("tensor_product_simple");
  });
}

ffi::Error TpSimpleBwdCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer ct,
                           ffi::Result<ffi::AnyBuffer> x_bar, ffi::Result<ffi::AnyBuffer> y_bar) {
  int64_t n;
  if (auto err = simple_tp_check({&x, &y, &ct}, {&*x_bar, &*y_bar}, &n); !err.success()) return err;
  return dispatch_float(ct.element_type(), "tensor_product_simple", [&](auto tag) {
    using T = decltype(tag);
    const SimpleTpBwd<T> b(x, y, ct, *x_bar, *y_bar);
    const unsigned grid = grid_for(n, kThreads);
    if (n == 0) return ffi::Error::Success();
    if (b.x_bar && b.y_bar)
      tp_simple_bwd_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(b.x, b.y, b.ct, b.x_bar, b.y_bar, n);
    else if (b.x_bar)
      tp_simple_bwd_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(b.x, b.y, b.ct, b.x_bar, b.y_bar, n);
    else if (b.y_bar)
      tp_simple_bwd_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(b.x, b.y, b.ct, b.x_bar, b.y_bar, n);
    return cuda_status("tensor_product_simple");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_tp_simple_cuda, TpSimpleCuda,
                              BJ_TP_SIMPLE_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_tp_simple_bwd_cuda, TpSimpleBwdCuda,
                              BJ_TP_SIMPLE_BWD_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

// XLA FFI CUDA handler of fused_sh_tp_simple: one thread per edge computes the harmonics in
// registers, reads its source row once and writes its 16 outputs (every path has one channel,
// so edges, not channels, go on the lanes).
#include "cuda/cuda_common.h"
#include "kernels/simple_tp.h"
#include "sh_tp_ffi.h"

namespace bj {
namespace {

constexpr int kThreads = 128;

template <class T>
__global__ void __launch_bounds__(kThreads) sh_tp_kernel(const T* v, const T* f, const int32_t* src, T* out,
                                                         int64_t ne, int64_t nn) {
  const int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= ne) return;
  const int64_t s = src[e];
  T o[16];
  if (s < 0 || s >= nn) {
#pragma unroll
    for (int k = 0; k < 16; ++k) o[k] = T(0);
  } else {
    T x[16], Y[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) x[i] = f[16 * s + i];
    conv_sh(v + 3 * e, Y);
    simple_tp_row(x, Y, o);
  }
#pragma unroll
  for (int k = 0; k < 16; ++k) out[16 * e + k] = o[k];
}

ffi::Error ShTpCuda(cudaStream_t stream, ffi::AnyBuffer v, ffi::AnyBuffer f, ffi::AnyBuffer src,
                    ffi::Result<ffi::AnyBuffer> out) {
  ShTpShape shape;
  if (auto err = ShTpShape::check(v, f, src, *out, &shape); !err.success()) return err;
  if (shape.ne == 0) return ffi::Error::Success();
  return dispatch_float(out->element_type(), "fused_sh_tp_simple", [&](auto tag) {
    using T = decltype(tag);
    sh_tp_kernel<T><<<grid_for(shape.ne, kThreads), kThreads, 0, stream>>>(
        v.typed_data<T>(), f.typed_data<T>(), src.typed_data<int32_t>(), out->typed_data<T>(), shape.ne, shape.nn);
    return cuda_status("fused_sh_tp_simple");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_tp_simple_cuda, ShTpCuda,
                              BJ_SH_TP_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

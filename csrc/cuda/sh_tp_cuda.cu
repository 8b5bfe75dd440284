// XLA FFI CUDA handlers of fused_sh_tp_simple: one thread per edge computes the harmonics in
// registers, reads its source row once and writes its 16 outputs (every path has one channel,
// so edges, not channels, go on the lanes). The backward: one thread per edge writes v_bar and
// the edge's f_bar part; one segment sum over the source-sorted edges gives f_bar.
#include "cuda/cuda_common.h"
#include "cuda/segment_sum.cuh"
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

template <class T>
__global__ void __launch_bounds__(kThreads) sh_tp_bwd_kernel(const T* v, const T* f, const int32_t* src,
                                                             const T* ct, T* v_bar, T* f_part, int64_t ne,
                                                             int64_t nn) {
  const int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= ne) return;
  const int64_t s = src[e];
  if (s < 0 || s >= nn) {  // no edge: no gradient (its f_part row is skipped by the sum)
    if (v_bar)
      for (int a = 0; a < 3; ++a) v_bar[3 * e + a] = T(0);
    return;
  }
  T x[16], Y[16], c[16], xb[16], yb[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    x[i] = f[16 * s + i];
    c[i] = ct[16 * e + i];
  }
  conv_sh(v + 3 * e, Y);
  // fp32: both results, so that the arrays stay in registers (168, no stack); fp64 would spill
  // 2 KB that way and computes only what is asked for
  if constexpr (sizeof(T) == 4) simple_tp_vjp_row(x, Y, c, xb, yb);
  else simple_tp_vjp_row(x, Y, c, f_part ? xb : nullptr, v_bar ? yb : nullptr);
  if (f_part)
#pragma unroll
    for (int i = 0; i < 16; ++i) f_part[16 * e + i] = xb[i];
  if (v_bar) sh_vjp_row<3>(v + 3 * e, yb, v_bar + 3 * e, true);
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

ffi::Error ShTpBwdCuda(cudaStream_t stream, ffi::AnyBuffer v, ffi::AnyBuffer f, ffi::AnyBuffer src,
                       ffi::AnyBuffer ct, ffi::AnyBuffer perm, ffi::AnyBuffer seg,
                       ffi::Result<ffi::AnyBuffer> v_bar, ffi::Result<ffi::AnyBuffer> f_bar,
                       ffi::Result<ffi::AnyBuffer> f_part) {
  ShTpShape shape;
  if (auto err = ShTpShape::check_bwd(v, f, src, ct, perm, seg, *v_bar, *f_bar, *f_part, &shape); !err.success())
    return err;
  return dispatch_float(ct.element_type(), "fused_sh_tp_simple", [&](auto tag) {
    using T = decltype(tag);
    T* vb = v_bar->element_count() ? v_bar->typed_data<T>() : nullptr;
    T* fb = f_bar->element_count() ? f_bar->typed_data<T>() : nullptr;
    T* part = fb ? f_part->typed_data<T>() : nullptr;
    if (shape.ne > 0 && (vb || part))
      sh_tp_bwd_kernel<T><<<grid_for(shape.ne, kThreads), kThreads, 0, stream>>>(
          v.typed_data<T>(), f.typed_data<T>(), src.typed_data<int32_t>(), ct.typed_data<T>(), vb, part,
          shape.ne, shape.nn);
    if (fb)
      launch_segment_sum(SegmentSum<T>{part, fb, perm.typed_data<int32_t>(), seg.typed_data<int32_t>(),
                                       src.typed_data<int32_t>(), nullptr, shape.ne, shape.nn, 16, 0},
                         stream);
    return cuda_status("fused_sh_tp_simple");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_tp_simple_cuda, ShTpCuda,
                              BJ_SH_TP_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_tp_simple_bwd_cuda, ShTpBwdCuda,
                              BJ_SH_TP_BWD_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

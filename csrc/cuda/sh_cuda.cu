// XLA FFI CUDA handlers for spherical harmonics: forward, JVP (J t) and VJP (J^T g).
//
// One thread per row; a block stages its rows' inputs and outputs through shared memory so
// that every global load and store is coalesced (a row is 12 B in and up to 64 B out).
#include "cuda/cuda_common.h"
#include "kernels/sh.h"

namespace bj {
namespace {

constexpr int kRowsPerBlock = 128;

template <class T>
__device__ void stage_in(const T* __restrict__ src, T* dst, int64_t row0, int rows, int width) {
  const int64_t base = row0 * width;
  for (int i = threadIdx.x; i < rows * width; i += blockDim.x) dst[i] = src[base + i];
}

template <class T>
__device__ void stage_out(const T* src, T* __restrict__ dst, int64_t row0, int rows, int width) {
  const int64_t base = row0 * width;
  for (int i = threadIdx.x; i < rows * width; i += blockDim.x) dst[base + i] = src[i];
}

// in_w / out_w: widths of the second operand and of the output (3 or n).
template <class T, int L, ShOp OP>
__global__ void __launch_bounds__(kRowsPerBlock) sh_kernel(const T* __restrict__ v,
                                                           const T* __restrict__ b,
                                                           T* __restrict__ out, int64_t rows,
                                                           bool normalize) {
  constexpr int n = (L + 1) * (L + 1);
  constexpr int b_w = OP == ShOp::kJvp ? 3 : n;
  constexpr int o_w = OP == ShOp::kVjp ? 3 : n;
  __shared__ T sv[kRowsPerBlock * 3];
  __shared__ T sb[OP == ShOp::kFwd ? 1 : kRowsPerBlock * b_w];
  __shared__ T so[kRowsPerBlock * o_w];
  const int64_t row0 = int64_t(blockIdx.x) * kRowsPerBlock;
  const int here = int(rows - row0 < kRowsPerBlock ? rows - row0 : kRowsPerBlock);
  stage_in(v, sv, row0, here, 3);
  if constexpr (OP != ShOp::kFwd) stage_in(b, sb, row0, here, b_w);
  __syncthreads();
  const int r = threadIdx.x;
  if (r < here) {
    if constexpr (OP == ShOp::kFwd) sh_fwd_row<L>(sv + 3 * r, so + o_w * r, normalize);
    if constexpr (OP == ShOp::kJvp) sh_jvp_row<L>(sv + 3 * r, sb + b_w * r, so + o_w * r, normalize);
    if constexpr (OP == ShOp::kVjp) sh_vjp_row<L>(sv + 3 * r, sb + b_w * r, so + o_w * r, normalize);
  }
  __syncthreads();
  stage_out(so, out, row0, here, o_w);
}

template <class T, ShOp OP> struct ShLaunch {
  cudaStream_t stream;
  const T* v;
  const T* b;
  T* out;
  int64_t rows;
  bool normalize;
  template <int L> void run() const {
    sh_kernel<T, L, OP><<<grid_for(rows, kRowsPerBlock), kRowsPerBlock, 0, stream>>>(
        v, b, out, rows, normalize);
  }
};

template <ShOp OP>
ffi::Error ShCuda(cudaStream_t stream, ffi::AnyBuffer v, ffi::AnyBuffer b,
                  ffi::Result<ffi::AnyBuffer> out, int64_t L, bool normalize) {
  if (L < 0 || L > 3) return ffi::Error::InvalidArgument("spherical_harmonics: L must be 0..3");
  const int64_t rows = rows_of(v, 3);
  if (rows == 0) return ffi::Error::Success();
  return dispatch_float(v.element_type(), "spherical_harmonics", [&](auto tag) {
    using T = decltype(tag);
    ShLaunch<T, OP> f{stream, v.typed_data<T>(), OP == ShOp::kFwd ? nullptr : b.typed_data<T>(),
                      out->typed_data<T>(), rows, normalize};
    dispatch_l(int(L), f);
    return cuda_status("spherical_harmonics");
  });
}

ffi::Error ShFwdCuda(cudaStream_t s, ffi::AnyBuffer v, ffi::Result<ffi::AnyBuffer> y, int64_t L,
                     bool normalize) {
  return ShCuda<ShOp::kFwd>(s, v, v, y, L, normalize);
}
ffi::Error ShJvpCuda(cudaStream_t s, ffi::AnyBuffer v, ffi::AnyBuffer t,
                     ffi::Result<ffi::AnyBuffer> dy, int64_t L, bool normalize) {
  return ShCuda<ShOp::kJvp>(s, v, t, dy, L, normalize);
}
ffi::Error ShVjpCuda(cudaStream_t s, ffi::AnyBuffer v, ffi::AnyBuffer g,
                     ffi::Result<ffi::AnyBuffer> dv, int64_t L, bool normalize) {
  return ShCuda<ShOp::kVjp>(s, v, g, dv, L, normalize);
}

}  // namespace

#define BJ_SH_BIND(...)                                                   \
  ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>() __VA_ARGS__ \
      .Ret<ffi::AnyBuffer>()                                              \
      .Attr<int64_t>("L")                                                 \
      .Attr<bool>("normalize")

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_fwd_cuda, ShFwdCuda, BJ_SH_BIND(.Arg<ffi::AnyBuffer>()),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_jvp_cuda, ShJvpCuda,
                              BJ_SH_BIND(.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_sh_vjp_cuda, ShVjpCuda,
                              BJ_SH_BIND(.Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

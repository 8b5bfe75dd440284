// XLA FFI CUDA handlers of the fully connected product (kernels/fc.h).
//
// Each kernel is a register-tiled matrix product whose A operand is generated in shared
// memory from x and the per-row matrices M_p, so the [rows, paths, C_in, 2l+1] expansion is
// never written to memory:
//   forward   out[(n,k), w]  = sum_{p,u} A_p[(n,k), u] W[p, u, w]      one CTA: 128 (n,k) x 64 w
//   x/y_bar   G_p[(n,k), u]  = sum_w ct[(n,k), w] W[p, u, w], then contracted with M_p (x_bar)
//             and with x (y_bar)                           one CTA: 128 (n,k) (64 in fp64), all p
//             into l3; one launch, each l3's copy summed in a fixed order by a second kernel
//   w_bar     W_bar[p, u, w] = sum_{(n,k)} A_p[(n,k), u] ct[(n,k), w]  one CTA: one path, a slab
//             of rows; slabs summed in a fixed order by a second kernel (no atomics).
// A tile covers R = 128 / (2 l3 + 1) rows of one group and one l3, so that (n, k) fills 128.
// The backward's x, ct and x_bar are component-major ([n, 16, C], fc_ffi.h): (n, k) indexes rows
// of channel vectors, so every load and store along channels is contiguous. The forward reads x
// and writes out in the public layout [n, C, 16] (stage_a_chunk, the end of fwd_tile).
// Only the matrices M_p are built per path at compile time (build_matrices); the products are
// one copy per l3, which keeps the build time and the instruction footprint small.
// The products' inner loops run on one of four engines (fc_common.cuh, swz): FMA thread tiles
// (fp32, the default), 3xTF32 or TF32 on the tensor cores (fp32 with precision="tf32x3" or
// "tf32") or DMMA (fp64, float64 arithmetic); warp_tiles.cuh holds the tensor-core accumulators.
// The kernels live in fc_common.cuh (shared parts), fc_forward.cuh, fc_xy.cuh and fc_wbar.cuh.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/fc_common.cuh"
#include "cuda/fc_forward.cuh"
#include "cuda/fc_wbar.cuh"
#include "cuda/fc_xy.cuh"

namespace bj {
namespace {

// The FFI attribute tf32_passes (fc.py, from precision): 0, or the float32 engine's tensor-core
// passes, 1 (TF32) or 3 (3xTF32).
bool valid_tf32_passes(int64_t passes) { return passes == 0 || passes == 1 || passes == 3; }

// Whether p allows 16-byte vector access; null (an absent result) counts as aligned.
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// f(kTc) with kTc a std::integral_constant<int, passes> for a valid tf32_passes: 0 FMA thread
// tiles, 1 TF32, 3 3xTF32 in float32; float64 always runs DMMA (kTc 0, so no fp64 TF32 kernels
// are instantiated).
template <class T, class F> void with_engine(int64_t tf32_passes, F&& f) {
  if constexpr (sizeof(T) == 4) {
    if (tf32_passes == 1) return f(std::integral_constant<int, 1>{});
    if (tf32_passes == 3) return f(std::integral_constant<int, 3>{});
  }
  f(std::integral_constant<int, 0>{});
}

ffi::Error FcCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer w,
                  ffi::Result<ffi::AnyBuffer> out, int64_t c_in, int64_t c_out, int64_t groups,
                  int64_t public_out, int64_t tf32_passes) {
  FcDims d;
  if (auto err = fc_check(x, y, w, *out, c_in, c_out, groups, &d); !err.success()) return err;
  if (!valid_tf32_passes(tf32_passes)) return ffi::Error::InvalidArgument("tensor_product: tf32_passes must be 0, 1 or 3");
  return dispatch_float(out->element_type(), "tensor_product", [&](auto tag) {
    using T = decltype(tag);
    if (d.n == 0 || c_out == 0) return ffi::Error::Success();
    if (c_in == 0) {
      cudaMemsetAsync(out->untyped_data(), 0, out->size_bytes(), stream);
      return cuda_status("tensor_product");
    }
    const FwdArgs<T> args{x.typed_data<T>(), y.typed_data<T>(), w.typed_data<T>(), out->typed_data<T>(), d};
    if (!public_out && c_out % 4 != 0)  // the component-major (BN = 64) kernel has no scalar stores
      return ffi::Error::InvalidArgument("tensor_product: public_out must be set when C_out % 4 != 0");
    with_engine<T>(tf32_passes, [&](auto tc) { launch_fwd<T, decltype(tc)::value>(args, public_out != 0, stream); });
    return cuda_status("tensor_product");
  });
}

ffi::Error FcBwdCuda(cudaStream_t stream, ffi::AnyBuffer xt, ffi::AnyBuffer y, ffi::AnyBuffer w, ffi::AnyBuffer ctt,
                     ffi::Result<ffi::AnyBuffer> x_bar, ffi::Result<ffi::AnyBuffer> y_bar,
                     ffi::Result<ffi::AnyBuffer> w_bar, ffi::Result<ffi::AnyBuffer> scratch, int64_t c_in,
                     int64_t c_out, int64_t groups, int64_t slabs, int64_t tf32_passes) {
  FcDims d;
  if (auto err = fc_check_bwd(xt, y, w, ctt, *x_bar, *y_bar, *w_bar, *scratch, c_in, c_out, groups, slabs, &d);
      !err.success())
    return err;
  if (!valid_tf32_passes(tf32_passes))
    return ffi::Error::InvalidArgument("tensor_product backward: tf32_passes must be 0, 1 or 3");
  return dispatch_float(ctt.element_type(), "tensor_product backward", [&](auto tag) {
    using T = decltype(tag);
    const FcBwdBuffers<T> b(xt, y, w, ctt, *x_bar, *y_bar, *w_bar, *scratch, d, slabs);
    if (d.n == 0 || c_in == 0 || c_out == 0) {  // every non-empty result is zero
      if (b.x_bart) cudaMemsetAsync(b.x_bart, 0, x_bar->size_bytes(), stream);
      if (b.y_bar) cudaMemsetAsync(b.y_bar, 0, y_bar->size_bytes(), stream);
      if (b.w_bar) cudaMemsetAsync(b.w_bar, 0, w_bar->size_bytes(), stream);
      return cuda_status("tensor_product backward");
    }
    if (b.x_bart || b.y_bar) {
      const XyArgs<T> args{b.xt, b.y, b.w, b.ctt, b.x_bart, b.y_bar, b.x_part, b.y_part, d};
      const TileMap map = tile_map(d, kXyBM<T>);  // l3 = 3 first (the heaviest tiles)
      with_engine<T>(tf32_passes, [&](auto tc) { launch_xy<T, decltype(tc)::value>(args, map, stream); });
      const int64_t nx = b.x_bart ? d.n * 16 * c_in : 0, ny = b.y_bar ? d.n * 16 : 0;
      constexpr int V = 16 / sizeof(T);
      const bool vec = aligned16(b.x_bart) && aligned16(b.x_part) && aligned16(b.y_bar) && aligned16(b.y_part);
      const unsigned blocks = grid_for((nx + ny) / (vec ? V : 1), 256), cap = unsigned(32 * sm_count());
      if (vec)
        fc_xy_sum_kernel<T, V><<<blocks < cap ? blocks : cap, 256, 0, stream>>>(b.x_bart, b.x_part, nx, b.y_bar, b.y_part, ny);
      else
        fc_xy_sum_kernel<T, 1><<<blocks < cap ? blocks : cap, 256, 0, stream>>>(b.x_bart, b.x_part, nx, b.y_bar, b.y_part, ny);
    }
    if (b.w_bar) {
      const unsigned gy = grid_for(c_in, Chunk<T>::K), gz = grid_for(c_out, kBN);
      const int64_t used = w_slabs_used(d, slabs, groups * kSeedPaths * gy * gz);
      const int64_t slab_rows = (d.rows_per_group + used - 1) / used;
      const WArgs<T> args{b.xt, b.y, b.ctt, b.w_part, d, used, slab_rows};
      const dim3 grid(unsigned(groups * used * kSeedPaths), gy, gz);
      with_engine<T>(tf32_passes, [&](auto tc) { launch_w<T, decltype(tc)::value>(args, grid, stream); });
      const int64_t size = d.w_size();
      fc_slab_sum_kernel<T><<<grid_for(groups * size, 256), 256, 0, stream>>>(b.w_part, b.w_bar, groups, used, size);
    }
    return cuda_status("tensor_product backward");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_fc_cuda, FcCuda, BJ_FC_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_fc_bwd_cuda, FcBwdCuda,
                              BJ_FC_BWD_BINDING(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

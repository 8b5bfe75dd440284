// XLA FFI CUDA handler for the channel-wise tensor product family (roles O, X, Y, W).
//
// One warp owns one row of the output operand and is the only writer of it, so results are
// deterministic without atomics. For a gathered-and-scattered output (role O with receivers,
// role X with senders) the warp walks its row's edges through a sorted permutation (perm, seg).
// Lanes split the channels u of a path; each path's partial sums live in registers across the
// row's edges and are added to the output row once.
#include "cuda/cuda_common.h"
#include "kernels/uvu.h"
#include "uvu_ffi.h"

namespace bj {
namespace {

constexpr int kWarpsPerBlock = 4;

// The edges a warp visits for owner row r: perm[seg[r] .. seg[r+1]) or the single edge r.
struct EdgeRange {
  int64_t beg, end;
};

template <class T> __device__ EdgeRange edge_range(const UvuArgs<T>& a, int64_t r) {
  if (a.seg) return {a.seg[r], a.seg[r + 1]};
  return {r, r + 1};
}

template <class T> __device__ int64_t edge_at(const UvuArgs<T>& a, int64_t t) {
  return a.seg ? int64_t(a.perm[t]) : t;
}

template <class T> __device__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <class T, int ROLE> struct WarpPath {
  const UvuArgs<T>& a;
  const PathDesc& d;
  T s;
  int64_t r;  // owner row
  EdgeRange range;
  int lane;

  template <int L1, int L2, int L3> __device__ void run() const {
    using Term = UvuTerm<L1, L2, L3, T>;
    constexpr int N = ROLE == kRoleO ? Term::D3 : ROLE == kRoleX ? Term::D1 : ROLE == kRoleY ? Term::D2 : 1;
    for (int u0 = 0; u0 < d.mul; u0 += 32) {
      const int u = u0 + lane;
      const bool active = u < d.mul;
      T acc[N];
#pragma unroll
      for (int n = 0; n < N; ++n) acc[n] = T(0);
      int64_t xr = 0, orow = 0;
      for (int64_t t = range.beg; t < range.end; ++t) {
        const int64_t e = edge_at(a, t);
        if (!edge_rows(a, e, &xr, &orow) || !active) continue;
        const T* y = a.y ? a.y + e * a.y_w + d.y_off : nullptr;
        const T* xu = a.x ? a.x + xr * a.x_w + d.x_off + int64_t(u) * d.x_su : nullptr;
        const T* ou = a.o ? a.o + orow * a.o_w + d.o_off + int64_t(u) * d.o_su : nullptr;
        const T wu = a.w ? a.w[e * a.w_w + d.w_off + int64_t(u) * d.w_su] : T(1);
        if constexpr (ROLE == kRoleO) Term::out(s * wu, xu, y, acc);
        if constexpr (ROLE == kRoleX) Term::x(s * wu, y, ou, acc);
        if constexpr (ROLE == kRoleY) Term::y(s * wu, xu, ou, acc);
        if constexpr (ROLE == kRoleW) acc[0] += Term::w(s, xu, y, ou);
      }
      if constexpr (ROLE == kRoleY) {
        // every lane holds a part of the same y row: reduce over the channels
#pragma unroll
        for (int n = 0; n < N; ++n) acc[n] = warp_sum(acc[n]);
        if (lane == 0 && range.end > range.beg && edge_rows(a, edge_at(a, range.beg), &xr, &orow)) {
          T* dst = a.out + r * a.y_w + d.y_off;
#pragma unroll
          for (int n = 0; n < N; ++n) dst[n] += acc[n];
        }
      } else if (active) {
        T* dst;
        if constexpr (ROLE == kRoleO) dst = a.out + r * a.o_w + d.o_off + int64_t(u) * d.o_su;
        if constexpr (ROLE == kRoleX) dst = a.out + r * a.x_w + d.x_off + int64_t(u) * d.x_su;
        if constexpr (ROLE == kRoleW) dst = a.out + r * a.w_w + d.w_off + int64_t(u) * d.w_su;
#pragma unroll
        for (int n = 0; n < N; ++n) dst[n] += acc[n];
      }
    }
  }
};

template <class T, int ROLE>
__global__ void __launch_bounds__(32 * kWarpsPerBlock) uvu_kernel(UvuArgs<T> a, int64_t owners,
                                                                  int64_t out_w) {
  const int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= owners) return;
  T* row = a.out + r * out_w;
  for (int64_t i = lane; i < out_w; i += 32) row[i] = T(0);
  __syncwarp();
  const EdgeRange range = edge_range(a, r);
  for (int p = 0; p < a.n_paths; ++p) {
    const PathDesc d = load_desc(a.desc + int64_t(kDescCols) * p);
    dispatch_triple(d.triple, WarpPath<T, ROLE>{a, d, T(a.scale[p]), r, range, lane});
    __syncwarp();
  }
}

ffi::Error UvuCuda(cudaStream_t stream, ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer w,
                   ffi::AnyBuffer o, ffi::AnyBuffer desc, ffi::AnyBuffer scale,
                   ffi::AnyBuffer x_idx, ffi::AnyBuffer o_idx, ffi::AnyBuffer perm,
                   ffi::AnyBuffer seg, ffi::Result<ffi::AnyBuffer> out, int64_t role, int64_t x_w,
                   int64_t y_w, int64_t w_w, int64_t o_w, int64_t nx, int64_t ne, int64_t no) {
  UvuCall call{role, x_w, y_w, w_w, o_w, nx, ne, no};
  if (auto err = call.validate(desc, scale, out->element_type()); !err.success()) return err;
  if (out->element_count() == 0) return ffi::Error::Success();
  if (call.empty()) {
    cudaMemsetAsync(out->untyped_data(), 0, out->size_bytes(), stream);
    return cuda_status("tensor_product");
  }
  // owner rows and their width: the role's operand
  const int64_t owners = role == kRoleO ? no : role == kRoleX ? nx : ne;
  const int64_t out_w = role == kRoleO ? o_w : role == kRoleX ? x_w : role == kRoleY ? y_w : w_w;
  return dispatch_float(out->element_type(), "tensor_product", [&](auto tag) {
    using T = decltype(tag);
    UvuArgs<T> a = call.args<T>(x, y, w, o, desc, scale, x_idx, o_idx, perm, seg, *out);
    const unsigned grid = grid_for(owners, kWarpsPerBlock);
    const unsigned block = 32 * kWarpsPerBlock;
    switch (role) {
      case kRoleO: uvu_kernel<T, kRoleO><<<grid, block, 0, stream>>>(a, owners, out_w); break;
      case kRoleX: uvu_kernel<T, kRoleX><<<grid, block, 0, stream>>>(a, owners, out_w); break;
      case kRoleY: uvu_kernel<T, kRoleY><<<grid, block, 0, stream>>>(a, owners, out_w); break;
      default: uvu_kernel<T, kRoleW><<<grid, block, 0, stream>>>(a, owners, out_w); break;
    }
    return cuda_status("tensor_product");
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_uvu_cuda, UvuCuda,
                              BJ_UVU_BINDING(
                                  ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()),
                              {ffi::Traits::kCmdBufferCompatible});

}  // namespace bj

// XLA FFI CPU handler for the channel-wise tensor product family (roles O, X, Y, W).
// Edges are visited in order, one at a time, so scatter-adds are deterministic.
#include <cstring>

#include "ffi_common.h"
#include "kernels/uvu.h"
#include "uvu_ffi.h"

namespace bj {
namespace {

template <class T, int ROLE> struct CpuEdgePath {
  const UvuArgs<T>& a;
  const PathDesc& d;
  int64_t e, xr, orow;
  template <int L1, int L2, int L3> void run() const {
    using Term = UvuTerm<L1, L2, L3, T>;
    const T s = T(a.scale[0]);
    const T* y = a.y ? a.y + e * a.y_w + d.y_off : nullptr;
    for (int u = 0; u < d.mul; ++u) {
      const T wu = a.w ? a.w[e * a.w_w + d.w_off + int64_t(u) * d.w_su] : T(1);
      const T* xu = a.x ? a.x + xr * a.x_w + d.x_off + int64_t(u) * d.x_su : nullptr;
      const T* ou = a.o ? a.o + orow * a.o_w + d.o_off + int64_t(u) * d.o_su : nullptr;
      if constexpr (ROLE == kRoleO) {
        T c[Term::D3] = {};
        Term::out(s * wu, xu, y, c);
        T* dst = a.out + orow * a.o_w + d.o_off + int64_t(u) * d.o_su;
        for (int k = 0; k < Term::D3; ++k) dst[k] += c[k];
      } else if constexpr (ROLE == kRoleX) {
        T c[Term::D1] = {};
        Term::x(s * wu, y, ou, c);
        T* dst = a.out + xr * a.x_w + d.x_off + int64_t(u) * d.x_su;
        for (int i = 0; i < Term::D1; ++i) dst[i] += c[i];
      } else if constexpr (ROLE == kRoleY) {
        T c[Term::D2] = {};
        Term::y(s * wu, xu, ou, c);
        T* dst = a.out + e * a.y_w + d.y_off;
        for (int j = 0; j < Term::D2; ++j) dst[j] += c[j];
      } else {
        a.out[e * a.w_w + d.w_off + int64_t(u) * d.w_su] += Term::w(s, xu, y, ou);
      }
    }
  }
};

template <class T, int ROLE> void uvu_cpu(UvuArgs<T> a) {
  for (int64_t e = 0; e < a.ne; ++e) {
    int64_t xr, orow;
    if (!edge_rows(a, e, &xr, &orow)) continue;
    for (int p = 0; p < a.n_paths; ++p) {
      const PathDesc d = load_desc(a.desc + int64_t(kDescCols) * p);
      UvuArgs<T> ap = a;
      ap.scale = a.scale + p;
      dispatch_triple(d.triple, CpuEdgePath<T, ROLE>{ap, d, e, xr, orow});
    }
  }
}

ffi::Error UvuCpu(ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer w, ffi::AnyBuffer o,
                  ffi::AnyBuffer desc, ffi::AnyBuffer scale, ffi::AnyBuffer x_idx,
                  ffi::AnyBuffer o_idx, ffi::AnyBuffer perm, ffi::AnyBuffer seg,
                  ffi::Result<ffi::AnyBuffer> out, int64_t role,
                  int64_t x_w, int64_t y_w, int64_t w_w, int64_t o_w, int64_t nx, int64_t ne,
                  int64_t no) {
  (void)perm;
  (void)seg;
  UvuCall call{role, x_w, y_w, w_w, o_w, nx, ne, no};
  if (auto err = call.validate(desc, scale, out->element_type()); !err.success()) return err;
  std::memset(out->untyped_data(), 0, out->size_bytes());
  if (call.empty()) return ffi::Error::Success();
  return dispatch_float(out->element_type(), "tensor_product", [&](auto tag) {
    using T = decltype(tag);
    UvuArgs<T> a = call.args<T>(x, y, w, o, desc, scale, x_idx, o_idx, perm, seg, *out);
    switch (role) {
      case kRoleO: uvu_cpu<T, kRoleO>(a); break;
      case kRoleX: uvu_cpu<T, kRoleX>(a); break;
      case kRoleY: uvu_cpu<T, kRoleY>(a); break;
      default: uvu_cpu<T, kRoleW>(a); break;
    }
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_uvu_cpu, UvuCpu, BJ_UVU_BINDING(ffi::Ffi::Bind()));

}  // namespace bj

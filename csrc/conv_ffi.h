// The FFI signatures of the fused convolution, shared by its CPU and CUDA handlers.
//
// bj_conv_fwd:  x [nx, x_w], v [ne, 3], t [ne, 3] or [0], w [ne, w_w], runs int32 [R, kRunCols],
//               scale [R, 28], snd, rcv, rcv_perm int32 [ne], rcv_seg int32 [no + 1]
//               ->  out [no, o_w]
// bj_conv_bwd:  x, v, t, w, ct [no, o_w], runs, scale, snd, rcv, snd_perm [ne], snd_seg [nx + 1],
//               rcv_perm [ne], rcv_seg [no + 1]
//               -> x_bar [nx, x_w], v_bar [ne, 3], w_bar [ne, w_w], y_part [ne, blocks, 16],
//               x_part [ne, x_w]; a result that was not asked for is an empty array.
//               y_part is scratch for v_bar (each channel block's part of dPhi/dY; empty when
//               v_bar is not asked for), x_part scratch for x_bar (each edge's contribution,
//               summed per sender in sender order; empty when x_bar is not asked for).
// t: when present (tangent mode) the harmonics of edge e are replaced by their directional
// derivative J(v_e) t_e wherever they enter (out, x_bar, w_bar); v_bar is J(v)^T dPhi/dY in both
// modes. The family {fwd, bwd} x {Y, J t} is closed under differentiation (see
// batteries_jax/primitives/conv.py). x (w) may be empty when no requested result reads it.
// perm/seg: the edges sorted by receiver (forward) or sender (x_bar), and where each node's
// run of edges starts; one worker owns one node's row, so no atomics are needed. zero_*: the
// paths do not cover every column of that result, so it is cleared first. blocks: the number of
// 32-channel blocks over all runs (the CUDA kernels give each (node, block) one warp); l3max:
// the largest l_out of any path.
#pragma once
#include "ffi_common.h"
#include "kernels/conv.h"

namespace bj {

#define BJ_CONV_ATTRS(bind)     \
  bind.Attr<int64_t>("nx")      \
      .Attr<int64_t>("ne")      \
      .Attr<int64_t>("no")      \
      .Attr<int64_t>("x_width") \
      .Attr<int64_t>("w_width") \
      .Attr<int64_t>("o_width")   \
      .Attr<int64_t>("blocks")    \
      .Attr<int64_t>("l3max")

#define BJ_CONV_FWD_BINDING(bind) \
  BJ_CONV_ATTRS(bj::buffer_rets<1>(bj::buffer_args<10>(bind))).Attr<int64_t>("zero_out")

#define BJ_CONV_BWD_BINDING(bind) \
  BJ_CONV_ATTRS(bj::buffer_rets<5>(bj::buffer_args<13>(bind))).Attr<int64_t>("zero_x").Attr<int64_t>("zero_w")

// Operand pointers of one conv call; a result that is not computed is null.
template <class T> struct ConvArgs {
  const T* x;
  const T* v;
  const T* t;  // tangent vectors (tangent mode) or null
  const T* w;
  const T* ct;  // cotangent of out (backward)
  T* out;
  T* x_bar;
  T* v_bar;
  T* w_bar;
  T* x_part;  // backward scratch: each edge's x_bar contribution [ne, x_w], or null
  const int32_t* runs;
  const T* scale;
  const int32_t* snd;
  const int32_t* rcv;
  const int32_t* perm;  // edges sorted by the owner index of the pass
  const int32_t* seg;
  int64_t nx, ne, no, x_w, w_w, o_w;
  int n_runs;
};

struct ConvShape {
  int64_t nx, ne, no, x_w, w_w, o_w, blocks, l3max;

  bool empty() const { return nx == 0 || ne == 0 || no == 0; }

  static bool count_is(const ffi::AnyBuffer& b, int64_t n) {
    return static_cast<int64_t>(b.element_count()) == n;
  }

  // Checks every operand's size against the attributes, so the kernels never index past a
  // buffer; `owners` is the node count the seg array is over (no forward, nx backward). x and w
  // may be empty when no requested result reads them (need_x, need_w false); t is empty (the
  // harmonics themselves) or one vector per edge.
  ffi::Error validate(const ffi::AnyBuffer& x, const ffi::AnyBuffer& v, const ffi::AnyBuffer& t,
                      const ffi::AnyBuffer& w, const ffi::AnyBuffer& runs,
                      const ffi::AnyBuffer& scale, const ffi::AnyBuffer& snd,
                      const ffi::AnyBuffer& rcv, const ffi::AnyBuffer& perm,
                      const ffi::AnyBuffer& seg, int64_t owners, ffi::DataType dtype,
                      bool need_x = true, bool need_w = true) const {
    if (runs.element_type() != ffi::DataType::S32 || runs.element_count() % kRunCols != 0 ||
        !count_is(scale, int64_t(runs.element_count() / kRunCols) * kConvSlots))
      return ffi::Error::InvalidArgument("conv: bad run table");
    for (const ffi::AnyBuffer* b : {&x, &v, &t, &w, &scale})
      if (b->element_type() != dtype)
        return ffi::Error::InvalidArgument("conv: operands must share one float dtype");
    for (const ffi::AnyBuffer* b : {&snd, &rcv, &perm, &seg})
      if (b->element_type() != ffi::DataType::S32)
        return ffi::Error::InvalidArgument("conv: indices must be int32");
    const bool x_ok = count_is(x, nx * x_w) || (!need_x && x.element_count() == 0);
    const bool w_ok = count_is(w, ne * w_w) || (!need_w && w.element_count() == 0);
    const bool t_ok = t.element_count() == 0 || count_is(t, ne * 3);
    if (!x_ok || !count_is(v, ne * 3) || !t_ok || !w_ok || !count_is(snd, ne) || !count_is(rcv, ne) ||
        !count_is(perm, ne) || !count_is(seg, owners + 1))
      return ffi::Error::InvalidArgument("conv: operand sizes do not match the attributes");
    return ffi::Error::Success();
  }

  // The backward's extra operands and results: a result is empty (not asked for) or full
  // size; the scratch y_part (x_part) is full size exactly when v_bar (x_bar) is asked for.
  ffi::Error validate_bwd(const ffi::AnyBuffer& ct, const ffi::AnyBuffer& x_bar,
                          const ffi::AnyBuffer& v_bar, const ffi::AnyBuffer& w_bar,
                          const ffi::AnyBuffer& rcv_perm, const ffi::AnyBuffer& rcv_seg,
                          const ffi::AnyBuffer& y_part, const ffi::AnyBuffer& x_part) const {
    auto ok = [&](const ffi::AnyBuffer& b, int64_t n) {
      return (b.element_count() == 0 || count_is(b, n)) && b.element_type() == ct.element_type();
    };
    const bool part_ok = count_is(y_part, v_bar.element_count() ? ne * blocks * 16 : 0) &&
                         y_part.element_type() == ct.element_type() &&
                         count_is(x_part, x_bar.element_count() ? ne * x_w : 0) &&
                         x_part.element_type() == ct.element_type();
    if (!count_is(ct, no * o_w) || !ok(x_bar, nx * x_w) || !ok(v_bar, ne * 3) ||
        !ok(w_bar, ne * w_w) || !part_ok)
      return ffi::Error::InvalidArgument("conv: cotangent or result sizes do not match the attributes");
    if (rcv_perm.element_type() != ffi::DataType::S32 || rcv_seg.element_type() != ffi::DataType::S32 ||
        !count_is(rcv_perm, ne) || !count_is(rcv_seg, no + 1))
      return ffi::Error::InvalidArgument("conv: bad receiver order");
    return ffi::Error::Success();
  }

  template <class T>
  ConvArgs<T> args(const ffi::AnyBuffer& x, const ffi::AnyBuffer& v, const ffi::AnyBuffer& t,
                   const ffi::AnyBuffer& w,
                   const ffi::AnyBuffer& runs, const ffi::AnyBuffer& scale,
                   const ffi::AnyBuffer& snd, const ffi::AnyBuffer& rcv,
                   const ffi::AnyBuffer& perm, const ffi::AnyBuffer& seg) const {
    ConvArgs<T> a{};
    a.x = x.element_count() ? x.typed_data<T>() : nullptr;
    a.v = v.typed_data<T>();
    a.t = t.element_count() ? t.typed_data<T>() : nullptr;
    a.w = w.element_count() ? w.typed_data<T>() : nullptr;
    a.runs = runs.typed_data<int32_t>();
    a.scale = scale.typed_data<T>();
    a.snd = snd.typed_data<int32_t>();
    a.rcv = rcv.typed_data<int32_t>();
    a.perm = perm.typed_data<int32_t>();
    a.seg = seg.typed_data<int32_t>();
    a.nx = nx;
    a.ne = ne;
    a.no = no;
    a.x_w = x_w;
    a.w_w = w_w;
    a.o_w = o_w;
    a.n_runs = int(runs.element_count() / kRunCols);
    return a;
  }
};

// Which operands the requested backward results read: x_bar = B_x(H, w, ct) needs w,
// v_bar = J^T g(x, w, ct) needs both, w_bar = B_w(x, H, ct) needs x.
struct ConvReads {
  bool x, w;
  ConvReads(const ffi::AnyBuffer& x_bar, const ffi::AnyBuffer& v_bar, const ffi::AnyBuffer& w_bar)
      : x(v_bar.element_count() || w_bar.element_count()), w(x_bar.element_count() || v_bar.element_count()) {}
};

// The result buffer's data, or null when it is empty (not asked for).
template <class T> T* result_or_null(ffi::AnyBuffer& b) {
  return b.element_count() ? b.typed_data<T>() : nullptr;
}

}  // namespace bj

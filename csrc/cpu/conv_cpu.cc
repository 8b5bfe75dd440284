// XLA FFI CPU handlers of the fused convolution. Edges are visited in their given order, one
// at a time, so every sum is deterministic; the per-path math is the CUDA kernels'
// (UvuTerm in kernels/uvu.h, the harmonics of kernels/sh.h).
#include <cstring>

#include "conv_ffi.h"

namespace bj {
namespace {

// One run of one existing edge e (sender s, receiver r), every channel and path.
template <class T> struct CpuConvRun {
  const ConvArgs<T>& a;
  ConvRun run;
  const T* scale;  // the run's 28 path scales
  int64_t e, s, r;
  const T* Y;
  T* y_bar;  // backward: dPhi/dY of this edge, or null

  template <int L1, int L3MAX> void run_fwd() const {
    for (int u = 0; u < run.mul(); ++u) {
      const T* xu = a.x + s * a.x_w + run.x_off() + int64_t(u) * run.x_su();
      for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
        constexpr int L2 = decltype(l2)::value, L3 = decltype(l3)::value, S = L2 * kConvL3 + L3;
        if (!run.has(S)) return;
        const ConvSlot sl = run.slot(S);
        const T sw = scale[S] * a.w[e * a.w_w + sl.w_off + int64_t(u) * sl.w_su];
        UvuTerm<L1, L2, L3, T>::out(sw, xu, Y + L2 * L2,
                                    a.out + r * a.o_w + sl.o_off + int64_t(u) * sl.o_su);
      });
    }
  }

  template <int L1, int L3MAX> void run_bwd() const {
    for (int u = 0; u < run.mul(); ++u) {
      const int64_t x_at = s * a.x_w + run.x_off() + int64_t(u) * run.x_su();
      for_each_conv_path<L1, L3MAX>([&](auto l2, auto l3) {
        constexpr int L2 = decltype(l2)::value, L3 = decltype(l3)::value, S = L2 * kConvL3 + L3;
        using Term = UvuTerm<L1, L2, L3, T>;
        if (!run.has(S)) return;
        const ConvSlot sl = run.slot(S);
        const T* ou = a.ct + r * a.o_w + sl.o_off + int64_t(u) * sl.o_su;
        const int64_t w_at = e * a.w_w + sl.w_off + int64_t(u) * sl.w_su;
        // x (w) is absent when no requested result reads it (the handler checked)
        const T sw = a.w ? scale[S] * a.w[w_at] : T(0);
        if (a.w_bar) a.w_bar[w_at] = Term::w(scale[S], a.x + x_at, Y + L2 * L2, ou);
        if (a.x_bar) Term::x(sw, Y + L2 * L2, ou, a.x_bar + x_at);
        if (y_bar) Term::y(sw, a.x + x_at, ou, y_bar + L2 * L2);
      });
    }
  }
};

template <class T, bool FWD> struct CpuRunDispatch {
  const CpuConvRun<T>& c;
  template <int L1, int L3MAX> void run() const {
    if constexpr (FWD) c.template run_fwd<L1, L3MAX>();
    else c.template run_bwd<L1, L3MAX>();
  }
};

template <class T, bool FWD> void conv_cpu(const ConvArgs<T>& a) {
  for (int64_t e = 0; e < a.ne; ++e) {
    int64_t s, r;
    if (!conv_edge(a.snd, a.rcv, e, a.nx, a.no, &s, &r)) continue;
    T Y[16], y_bar[16] = {};
    conv_harmonics(a.v, a.t, e, Y);
    for (int k = 0; k < a.n_runs; ++k) {
      const ConvRun run{a.runs + int64_t(kRunCols) * k};
      const CpuConvRun<T> c{a, run, a.scale + int64_t(kConvSlots) * k, e, s, r, Y,
                            (!FWD && a.v_bar) ? y_bar : nullptr};
      dispatch_l1<6>(run.l1(), CpuRunDispatch<T, FWD>{c});
    }
    if (!FWD && a.v_bar) sh_vjp_row<3>(a.v + 3 * e, y_bar, a.v_bar + 3 * e, true);
  }
}

void clear(ffi::AnyBuffer& b) {
  if (b.element_count()) std::memset(b.untyped_data(), 0, b.size_bytes());
}

ffi::Error ConvFwdCpu(ffi::AnyBuffer x, ffi::AnyBuffer v, ffi::AnyBuffer t, ffi::AnyBuffer w, ffi::AnyBuffer runs,
                      ffi::AnyBuffer scale, ffi::AnyBuffer snd, ffi::AnyBuffer rcv,
                      ffi::AnyBuffer perm, ffi::AnyBuffer seg, ffi::Result<ffi::AnyBuffer> out,
                      int64_t nx, int64_t ne, int64_t no, int64_t x_w, int64_t w_w, int64_t o_w,
                      int64_t blocks, int64_t l3max, int64_t zero_out) {
  (void)zero_out;  // the CPU accumulates, so it always clears
  (void)l3max;     // and sizes nothing by it
  const ConvShape shape{nx, ne, no, x_w, w_w, o_w, blocks, l3max};
  if (auto err = shape.validate(x, v, t, w, runs, scale, snd, rcv, perm, seg, no, out->element_type());
      !err.success())
    return err;
  if (!ConvShape::count_is(*out, no * o_w)) return ffi::Error::InvalidArgument("conv: bad output size");
  clear(*out);
  if (shape.empty()) return ffi::Error::Success();
  return dispatch_float(out->element_type(), "message_passing", [&](auto tag) {
    using T = decltype(tag);
    ConvArgs<T> a = shape.args<T>(x, v, t, w, runs, scale, snd, rcv, perm, seg);
    a.out = out->typed_data<T>();
    conv_cpu<T, true>(a);
    return ffi::Error::Success();
  });
}

ffi::Error ConvBwdCpu(ffi::AnyBuffer x, ffi::AnyBuffer v, ffi::AnyBuffer t, ffi::AnyBuffer w, ffi::AnyBuffer ct,
                      ffi::AnyBuffer runs, ffi::AnyBuffer scale, ffi::AnyBuffer snd,
                      ffi::AnyBuffer rcv, ffi::AnyBuffer perm, ffi::AnyBuffer seg,
                      ffi::AnyBuffer rcv_perm, ffi::AnyBuffer rcv_seg,
                      ffi::Result<ffi::AnyBuffer> x_bar, ffi::Result<ffi::AnyBuffer> v_bar,
                      ffi::Result<ffi::AnyBuffer> w_bar, ffi::Result<ffi::AnyBuffer> y_part,
                      ffi::Result<ffi::AnyBuffer> x_part, int64_t nx, int64_t ne, int64_t no,
                      int64_t x_w, int64_t w_w, int64_t o_w, int64_t blocks, int64_t l3max, int64_t zero_x,
                      int64_t zero_w) {
  (void)zero_x;
  (void)l3max;
  (void)zero_w;
  const ConvShape shape{nx, ne, no, x_w, w_w, o_w, blocks, l3max};
  const ConvReads reads(*x_bar, *v_bar, *w_bar);
  if (auto err = shape.validate(x, v, t, w, runs, scale, snd, rcv, perm, seg, nx, ct.element_type(),
                                reads.x, reads.w);
      !err.success())
    return err;
  if (auto err = shape.validate_bwd(ct, *x_bar, *v_bar, *w_bar, rcv_perm, rcv_seg, *y_part, *x_part);
      !err.success())
    return err;
  // the scratch is the CUDA kernels'; here the edge loop adds into the results directly
  for (ffi::AnyBuffer* b : {&*x_bar, &*v_bar, &*w_bar}) clear(*b);
  if (shape.empty()) return ffi::Error::Success();
  return dispatch_float(ct.element_type(), "message_passing", [&](auto tag) {
    using T = decltype(tag);
    ConvArgs<T> a = shape.args<T>(x, v, t, w, runs, scale, snd, rcv, perm, seg);
    a.ct = ct.typed_data<T>();
    a.x_bar = result_or_null<T>(*x_bar);
    a.v_bar = result_or_null<T>(*v_bar);
    a.w_bar = result_or_null<T>(*w_bar);
    conv_cpu<T, false>(a);
    return ffi::Error::Success();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_conv_fwd_cpu, ConvFwdCpu, BJ_CONV_FWD_BINDING(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(bj_conv_bwd_cpu, ConvBwdCpu, BJ_CONV_BWD_BINDING(ffi::Ffi::Bind()));

}  // namespace bj

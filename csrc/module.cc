// The nanobind module: hands each FFI handler to Python as a PyCapsule.
//   registrations() -> {"cpu": {name: capsule}, "CUDA": {name: capsule}}
// "CUDA" is present only when the extension was built with the CUDA handlers.
//   fc_scratch_size(n, c_in, c_out, groups, slabs, need_x, need_y, need_w) -> elements of the
// FC backward's CUDA workspace (kernels/fc.h), for the lowering in fc.py.
#include <nanobind/nanobind.h>

#include "handlers.h"
#include "kernels/fc.h"

namespace nb = nanobind;

namespace {

template <class Fn> nb::capsule capsule(Fn* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

nb::dict registrations() {
  nb::dict cpu, out;
#define BJ_CPU(op) cpu["bj_" #op] = capsule(bj_##op##_cpu);
  BJ_OPS(BJ_CPU)
#undef BJ_CPU
  out["cpu"] = cpu;
#ifdef BJ_WITH_CUDA
  nb::dict cuda;
#define BJ_CUDA(op) cuda["bj_" #op] = capsule(bj_##op##_cuda);
  BJ_OPS(BJ_CUDA)
#undef BJ_CUDA
  out["CUDA"] = cuda;
#endif
  return out;
}

}  // namespace

NB_MODULE(_batteries_jax, m) {
  m.doc() = "XLA FFI handlers of batteries_jax";
  m.def("registrations", &registrations);
  m.def("fc_scratch_size", [](int64_t n, int64_t c_in, int64_t c_out, int64_t groups, int64_t slabs, bool need_x,
                              bool need_y, bool need_w) {
    const bj::FcDims d{n, groups, groups > 0 ? n / groups : 0, c_in, c_out};
    return bj::fc_scratch_size(d, slabs, need_x, need_y, need_w);
  });
#ifdef BJ_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}

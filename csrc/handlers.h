// Every FFI handler symbol, by platform. Names are "bj_<op>_<platform>".
#pragma once
#include "xla/ffi/api/c_api.h"

#define BJ_OPS(X) \
  X(sh_fwd)       \
  X(sh_jvp)       \
  X(sh_vjp)       \
  X(uvu)          \
  X(conv_fwd)     \
  X(conv_bwd)     \
  X(sh_tp_simple)   \
  X(sh_tp_simple_bwd) \
  X(fc)             \
  X(fc_bwd)         \
  X(tp_simple)      \
  X(tp_simple_bwd)

#define BJ_DECLARE(op)                                   \
  extern "C" XLA_FFI_Error* bj_##op##_cpu(XLA_FFI_CallFrame*); \
  extern "C" XLA_FFI_Error* bj_##op##_cuda(XLA_FFI_CallFrame*);
BJ_OPS(BJ_DECLARE)
#undef BJ_DECLARE

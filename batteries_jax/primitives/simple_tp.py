"""``tensor_product_simple`` (x [n, 16] (x) y [n, 16] -> [n, 16] over the 34 seed paths) as a
multilinear family (``_multilinear.MultilinearFamily``): a thread-per-row forward kernel and a
fused first-order backward that reads each row's x, y and cotangent once for both gradients.
"""
from __future__ import annotations

import jax

from batteries_jax.primitives._multilinear import MultilinearFamily


def _out_shape(x, y):
    return x.shape


def _lower(x, y):
    return jax.ffi.ffi_call("bj_tp_simple", jax.ShapeDtypeStruct(x.shape, x.dtype))(x, y)


def _lower_bwd(x, y, ct, *, need):
    results = [jax.ShapeDtypeStruct(x.shape if flag else (0,), ct.dtype) for flag in need]
    outs = jax.ffi.ffi_call("bj_tp_simple_bwd", results)(x, y, ct)
    return [o for o, flag in zip(outs, need) if flag]


TP_SIMPLE = MultilinearFamily("tp_simple", 2, _out_shape, _lower, _lower_bwd)
tp_simple_p = TP_SIMPLE.fwd

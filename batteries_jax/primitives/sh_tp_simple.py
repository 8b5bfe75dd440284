"""fused_sh_tp_simple as a primitive: the forward kernel computes the harmonics in registers.

    out[e] = tensor_product_simple(f[src[e]], sh(v[e]))      (a row with src outside [0, N) is 0)

Its derivatives (first order and up) are those of the same expression written with the
harmonics and uvu primitives (``_composite``), which are closed under differentiation; vmap
folds the batch into rows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from batteries_jax import _paths
from batteries_jax.primitives._common import (batch_size, composite_tangent, fold_rows, make_primitive,
                                             move_to_front, register_ffi_lowering)
from batteries_jax.primitives.spherical_harmonics import sh_p
from batteries_jax.primitives.uvu import uvu

sh_tp_simple_p = make_primitive("bj_sh_tp_simple")
_FOLD = ("e", "x", "x_idx", "perm", "x_seg")  # v, f, src, src_perm, src_seg


def _composite(v, f, src, src_perm, src_seg, n):
    e = v.shape[0]
    y = sh_p.bind(v, L=3, normalize=True)
    return uvu("o", _paths.simple_paths(), n, e, e, x=f, x_idx=src, x_perm=src_perm, x_seg=src_seg, y=y)


def _abstract(v, f, src, src_perm, src_seg, *, n):
    return jax.core.ShapedArray((v.shape[0], 16), v.dtype)


def _lower(v, f, src, src_perm, src_seg, *, n):
    call = jax.ffi.ffi_call("bj_sh_tp_simple", jax.ShapeDtypeStruct((v.shape[0], 16), v.dtype))
    return call(v, f, src)


def _jvp(primals, tangents, *, n):
    out = sh_tp_simple_p.bind(*primals, n=n)
    if all(type(t) is ad.Zero for t in tangents[:2]):
        return out, ad.Zero.from_primal_value(out)
    index = primals[2:]
    return out, composite_tangent(lambda v, f: _composite(v, f, *index, n), primals, tangents, 2)


def _batch(args, dims, *, n):
    B = batch_size(args, dims)
    e = jnp.shape(args[0])[1 if dims[0] == 0 else 0]  # v is [E, 3], batched or not
    folded = [fold_rows(move_to_front(a, d, B), k, B, n, e, e) for a, d, k in zip(args, dims, _FOLD)]
    out = sh_tp_simple_p.bind(*folded, n=B * n)
    return out.reshape(B, e, 16), 0


sh_tp_simple_p.def_abstract_eval(_abstract)
register_ffi_lowering(sh_tp_simple_p, _lower)
ad.primitive_jvps[sh_tp_simple_p] = _jvp
batching.primitive_batchers[sh_tp_simple_p] = _batch

"""fused_sh_tp_simple as primitives: the kernels compute the harmonics in registers.

    out[e] = tensor_product_simple(f[src[e]], sh(v[e]))      (a row with src outside [0, N) is 0)

* ``sh_tp_simple_p(v, f, src, src_perm, src_seg)``: the forward kernel (one thread per edge).
* ``sh_tp_simple_tan_p(v, f, *tangents, src, ...)``: the JVP, jointly linear in the tangents
  (dv, df) present; its transpose is one fused first-order backward:
* ``sh_tp_simple_bwd_p(v, f, ct, src, ...)`` -> the requested of (v_bar, f_bar): one thread per
  edge writes v_bar and its part of f_bar, one segment sum over the source-sorted edges adds
  the parts (deterministic).

Derivatives beyond the first are those of the same expression written with the harmonics and
uvu primitives (``_composite``), which are closed under differentiation; vmap folds the batch
into rows.
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
sh_tp_simple_tan_p = make_primitive("bj_sh_tp_simple_tangent")
sh_tp_simple_bwd_p = make_primitive("bj_sh_tp_simple_backward", multiple_results=True)
_INDEX_FOLD = ("x_idx", "perm", "x_seg")  # src, src_perm, src_seg
TANGENTS = ("dv", "df")


def _composite(v, f, src, src_perm, src_seg, n):
    e = v.shape[0]
    y = sh_p.bind(v, L=3, normalize=True)
    return uvu("o", _paths.simple_paths(), n, e, e, x=f, x_idx=src, x_perm=src_perm, x_seg=src_seg, y=y)


def _fold(args, dims, kinds, n):
    """Batch folded into rows: (folded operands, B, E)."""
    B = batch_size(args, dims)
    e = jnp.shape(args[0])[1 if dims[0] == 0 else 0]  # v is [E, 3], batched or not
    return [fold_rows(move_to_front(a, d, B), k, B, n, e, e) for a, d, k in zip(args, dims, kinds)], B, e


# ---------------------------------------------------------------- forward
def _abstract(v, f, src, src_perm, src_seg, *, n):
    return jax.core.ShapedArray((v.shape[0], 16), v.dtype)


def _lower(v, f, src, src_perm, src_seg, *, n):
    call = jax.ffi.ffi_call("bj_sh_tp_simple", jax.ShapeDtypeStruct((v.shape[0], 16), v.dtype))
    return call(v, f, src)


def _jvp(primals, tangents, *, n):
    out = sh_tp_simple_p.bind(*primals, n=n)
    present = tuple(name for name, t in zip(TANGENTS, tangents[:2]) if type(t) is not ad.Zero)
    if not present:
        return out, ad.Zero.from_primal_value(out)
    tans = [t for t in tangents[:2] if type(t) is not ad.Zero]
    return out, sh_tp_simple_tan_p.bind(*primals[:2], *tans, *primals[2:], tans=present, n=n)


def _batch(args, dims, *, n):
    folded, B, e = _fold(args, dims, ("e", "x") + _INDEX_FOLD, n)
    return sh_tp_simple_p.bind(*folded, n=B * n).reshape(B, e, 16), 0


sh_tp_simple_p.def_abstract_eval(_abstract)
register_ffi_lowering(sh_tp_simple_p, _lower)
ad.primitive_jvps[sh_tp_simple_p] = _jvp
batching.primitive_batchers[sh_tp_simple_p] = _batch


# ---------------------------------------------------------------- the tangent (jointly linear)
def _split(args, tans):
    k = 2 + len(tans)
    return args[0], args[1], dict(zip(tans, args[2:k])), tuple(args[k:])


def _tan_impl(*args, tans, n):
    v, f, t, index = _split(args, tans)
    out = 0
    if "df" in tans:
        out = sh_tp_simple_p.bind(v, t["df"], *index, n=n)
    if "dv" in tans:
        out = out + jax.jvp(lambda v_: _composite(v_, f, *index, n), (v,), (t["dv"],))[1]
    return out


def _tan_abstract(*args, tans, n):
    return jax.core.ShapedArray((args[0].shape[0], 16), args[0].dtype)


def _tan_jvp(primals, tangents, *, tans, n):
    k = 2 + len(tans)
    index = tuple(primals[k:])
    out = sh_tp_simple_tan_p.bind(*primals, tans=tans, n=n)
    f = lambda *floats: _tan_impl(*floats, *index, tans=tans, n=n)  # noqa: E731
    return out, composite_tangent(f, primals, tangents, k)


def _tan_transpose(ct, *args, tans, n):
    v, f, t, index = _split(args, tans)
    if any(ad.is_undefined_primal(a) for a in (v, f) + index):
        raise NotImplementedError("fused_sh_tp_simple: the tangent is linear in (dv, df) only")
    res = dict.fromkeys(TANGENTS)
    need = tuple(name in tans and ad.is_undefined_primal(t[name]) for name in TANGENTS)
    if type(ct) is not ad.Zero and any(need):
        outs = iter(sh_tp_simple_bwd_p.bind(v, f, ct, *index, need=need, n=n))
        res = {name: (next(outs) if flag else None) for name, flag in zip(TANGENTS, need)}
    return [None, None] + [res[name] for name in tans] + [None] * len(index)


def _tan_batch(args, dims, *, tans, n):
    B = batch_size(args, dims)
    args = [move_to_front(a, d, B) for a, d in zip(args, dims)]
    return jax.vmap(lambda *a: _tan_impl(*a, tans=tans, n=n))(*args), 0


sh_tp_simple_tan_p.def_abstract_eval(_tan_abstract)
register_ffi_lowering(sh_tp_simple_tan_p, _tan_impl)
ad.primitive_jvps[sh_tp_simple_tan_p] = _tan_jvp
ad.primitive_transposes[sh_tp_simple_tan_p] = _tan_transpose
batching.primitive_batchers[sh_tp_simple_tan_p] = _tan_batch


# ---------------------------------------------------------------- the fused backward
def _bwd_ref(v, f, ct, src, src_perm, src_seg, *, need, n):
    """(v_bar, f_bar) asked for by ``need``, as the VJP of the composite."""
    _, vjp = jax.vjp(lambda v_, f_: _composite(v_, f_, src, src_perm, src_seg, n), v, f)
    return [g for g, flag in zip(vjp(ct), need) if flag]


def _bwd_abstract(v, f, ct, src, src_perm, src_seg, *, need, n):
    shapes = [v.shape, (n, 16)]
    return [jax.core.ShapedArray(s, ct.dtype) for s, flag in zip(shapes, need) if flag]


def _bwd_lower(v, f, ct, src, src_perm, src_seg, *, need, n):
    e = v.shape[0]
    results = [jax.ShapeDtypeStruct((e, 3) if need[0] else (0,), ct.dtype),
               jax.ShapeDtypeStruct((n, 16) if need[1] else (0,), ct.dtype),
               # scratch: each edge's part of f_bar, summed per source in a fixed order
               jax.ShapeDtypeStruct((e, 16) if need[1] else (0,), ct.dtype)]
    outs = jax.ffi.ffi_call("bj_sh_tp_simple_bwd", results)(v, f, src, ct, src_perm, src_seg)
    return [o for o, flag in zip(outs[:2], need) if flag]


def _bwd_jvp(primals, tangents, *, need, n):
    outs = sh_tp_simple_bwd_p.bind(*primals, need=need, n=n)
    if all(type(t) is ad.Zero for t in tangents[:3]):
        return outs, [ad.Zero.from_primal_value(o) for o in outs]
    index = tuple(primals[3:])
    f = lambda v, f_, ct: _bwd_ref(v, f_, ct, *index, need=need, n=n)  # noqa: E731
    return outs, list(composite_tangent(f, primals, tangents, 3))


def _bwd_batch(args, dims, *, need, n):
    folded, B, e = _fold(args, dims, ("e", "x", "e") + _INDEX_FOLD, n)
    outs = sh_tp_simple_bwd_p.bind(*folded, need=need, n=B * n)
    return [o.reshape((B, -1) + o.shape[1:]) for o in outs], [0] * len(outs)


sh_tp_simple_bwd_p.def_abstract_eval(_bwd_abstract)
register_ffi_lowering(sh_tp_simple_bwd_p, _bwd_lower)
ad.primitive_jvps[sh_tp_simple_bwd_p] = _bwd_jvp
batching.primitive_batchers[sh_tp_simple_bwd_p] = _bwd_batch

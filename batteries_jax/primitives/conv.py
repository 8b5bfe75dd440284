"""The fused convolution (message passing) as three primitives on two kernels.

    out[n] = sum_{e: rcv(e) = n} T(x[snd(e)], Y(v[e]), w[e])

with T the channel-wise product of a ``ConvPlan`` and Y the normalised harmonics 0..L. Index
operands (``INDEX``) are a ``Graph``'s: sanitised senders/receivers (-1 = no edge) and both
sorted orders.

* ``conv_p(x, v, w, *index)`` -> out: the forward kernel (receiver-owned rows).
* ``conv_tan_p(x, v, w, *tangents, *index)``: the JVP, one primitive jointly linear in the
  tangents (dx, dv, dw) that are present. Its transpose is the fused first-order backward:
* ``conv_bwd_p(x, v, w, ct, *index)`` -> the requested of (x_bar, v_bar, w_bar): one pass over
  the edges for v_bar and w_bar (the harmonics' backward inside the kernel) and one
  sender-owned pass for x_bar.

Derivatives beyond the first (the JVP of ``conv_tan_p`` and ``conv_bwd_p``) use the same math
written with the uvu and harmonics primitives (``_ref_*``), which are closed under
differentiation, so every order works; vmap folds the batch into rows.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import ad, batching

from batteries_jax._conv_plan import ConvPlan
from batteries_jax.primitives._common import (batch_size, composite_tangent, fold_rows, make_primitive,
                                             move_to_front, register_ffi_lowering)
from batteries_jax.primitives.spherical_harmonics import sh_jvp_p, sh_p, sh_vjp_p
from batteries_jax.primitives.uvu import uvu

INDEX = ("snd", "rcv", "snd_perm", "snd_seg", "rcv_perm", "rcv_seg")
_INDEX_FOLD = ("x_idx", "o_idx", "perm", "x_seg", "perm", "o_seg")
TANGENTS = ("dx", "dv", "dw")

conv_p = make_primitive("bj_conv")
conv_tan_p = make_primitive("bj_conv_tangent")
conv_bwd_p = make_primitive("bj_conv_backward", multiple_results=True)


def _uvu_index(index):
    snd, rcv, sp, ss, rp, rs = index
    return dict(x_idx=snd, o_idx=rcv, x_perm=sp, x_seg=ss, o_perm=rp, o_seg=rs)


def _harmonics(v, plan):
    return sh_p.bind(v, L=plan.L, normalize=True)


def _attrs(plan, nx, ne, no):
    p = plan.paths
    return dict(nx=np.int64(nx), ne=np.int64(ne), no=np.int64(no), x_width=np.int64(p.x_width),
                w_width=np.int64(p.w_width), o_width=np.int64(p.o_width),
                blocks=np.int64(plan.blocks), l3max=np.int64(plan.l3max))


def _tables(plan, dtype):
    return jnp.asarray(plan.run_table()), jnp.asarray(plan.scale_table(), dtype)


# ---------------------------------------------------------------- forward
def _conv_abstract(x, v, w, *index, plan, nx, ne, no):
    return jax.core.ShapedArray((no, plan.paths.o_width), x.dtype)


def _conv_lower(x, v, w, snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg, *, plan, nx, ne, no):
    runs, scale = _tables(plan, x.dtype)
    call = jax.ffi.ffi_call("bj_conv_fwd", jax.ShapeDtypeStruct((no, plan.paths.o_width), x.dtype))
    return call(x, v, w, runs, scale, snd, rcv, rcv_perm, rcv_seg, **_attrs(plan, nx, ne, no),
                zero_out=np.int64(plan.zero_out))


def _conv_jvp(primals, tangents, *, plan, nx, ne, no):
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    out = conv_p.bind(*primals, **params)
    present = tuple(n for n, t in zip(TANGENTS, tangents[:3]) if type(t) is not ad.Zero)
    if not present:
        return out, ad.Zero.from_primal_value(out)
    tans = [t for t in tangents[:3] if type(t) is not ad.Zero]
    return out, conv_tan_p.bind(*primals[:3], *tans, *primals[3:], tans=present, **params)


conv_p.def_abstract_eval(_conv_abstract)
register_ffi_lowering(conv_p, _conv_lower)
ad.primitive_jvps[conv_p] = _conv_jvp


# ---------------------------------------------------------------- the tangent (jointly linear)
def _ref_tangent(x, v, w, tans: dict, index, plan, nx, ne, no):
    """sum of T(dx, Y, w), T(x, J dv, w), T(x, Y, dw) for the tangents present."""
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    terms = []
    if "dx" in tans:
        terms.append(conv_p.bind(tans["dx"], v, w, *index, **params))
    if "dw" in tans:
        terms.append(conv_p.bind(x, v, tans["dw"], *index, **params))
    if "dv" in tans:
        dy = sh_jvp_p.bind(v, tans["dv"], L=plan.L, normalize=True)
        terms.append(uvu("o", plan.paths, nx, ne, no, x=x, y=dy, w=w, **_uvu_index(index)))
    return sum(terms[1:], terms[0])


def _split_tangent_args(args, tans):
    x, v, w = args[:3]
    k = 3 + len(tans)
    return x, v, w, dict(zip(tans, args[3:k])), tuple(args[k:])


def _tan_abstract(*args, tans, plan, nx, ne, no):
    return jax.core.ShapedArray((no, plan.paths.o_width), args[0].dtype)


def _tan_impl_fn(*args, tans, plan, nx, ne, no):
    x, v, w, t, index = _split_tangent_args(args, tans)
    return _ref_tangent(x, v, w, t, index, plan, nx, ne, no)


def _tan_jvp(primals, tangents, *, tans, plan, nx, ne, no):
    n_float = 3 + len(tans)
    index = tuple(primals[n_float:])

    def f(*floats):
        x, v, w, t, _ = _split_tangent_args(floats + index, tans)
        return _ref_tangent(x, v, w, t, index, plan, nx, ne, no)

    out = conv_tan_p.bind(*primals, tans=tans, plan=plan, nx=nx, ne=ne, no=no)
    return out, composite_tangent(f, primals, tangents, n_float)


def _tan_transpose(ct, *args, tans, plan, nx, ne, no):
    x, v, w, t, index = _split_tangent_args(args, tans)
    if any(ad.is_undefined_primal(a) for a in (x, v, w) + index):
        raise NotImplementedError("conv: the tangent is linear in (dx, dv, dw) only")
    wanted = tuple(n for n in tans if ad.is_undefined_primal(t[n]))
    res = dict.fromkeys(TANGENTS)
    if type(ct) is not ad.Zero and wanted:
        need = tuple(n in wanted for n in TANGENTS)
        outs = iter(conv_bwd_p.bind(x, v, w, ct, *index, need=need, plan=plan, nx=nx, ne=ne, no=no))
        for n, flag in zip(TANGENTS, need):
            if flag:
                res[n] = next(outs)
    return [None] * 3 + [res[n] for n in tans] + [None] * len(index)


def _tan_batch(args, dims, *, tans, plan, nx, ne, no):
    B = batch_size(args, dims)
    args = [move_to_front(a, d, B) for a, d in zip(args, dims)]
    fn = lambda *a: _tan_impl_fn(*a, tans=tans, plan=plan, nx=nx, ne=ne, no=no)
    return jax.vmap(fn)(*args), 0


conv_tan_p.def_abstract_eval(_tan_abstract)
register_ffi_lowering(conv_tan_p, _tan_impl_fn)
ad.primitive_jvps[conv_tan_p] = _tan_jvp
ad.primitive_transposes[conv_tan_p] = _tan_transpose
batching.primitive_batchers[conv_tan_p] = _tan_batch


# ---------------------------------------------------------------- the fused backward
def _ref_backward(x, v, w, ct, index, need, plan, nx, ne, no):
    """(x_bar, v_bar, w_bar) asked for by ``need``, from the uvu and harmonics primitives."""
    y = _harmonics(v, plan)
    ops = _uvu_index(index)
    out = []
    if need[0]:
        out.append(uvu("x", plan.paths, nx, ne, no, y=y, w=w, o=ct, **ops))
    if need[1]:
        y_bar = uvu("y", plan.paths, nx, ne, no, x=x, w=w, o=ct, **ops)
        out.append(sh_vjp_p.bind(v, y_bar, L=plan.L, normalize=True))
    if need[2]:
        out.append(uvu("w", plan.paths, nx, ne, no, x=x, y=y, o=ct, **ops))
    return out


def _bwd_shapes(plan, nx, ne):
    """Shapes of (x_bar, v_bar, w_bar)."""
    return [(nx, plan.paths.x_width), (ne, 3), (ne, plan.paths.w_width)]


def _bwd_abstract(x, v, w, ct, *index, need, plan, nx, ne, no):
    return [jax.core.ShapedArray(s, ct.dtype) for s, n in zip(_bwd_shapes(plan, nx, ne), need) if n]


def _bwd_lower(x, v, w, ct, snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg, *, need, plan, nx, ne, no):
    runs, scale = _tables(plan, ct.dtype)
    results = [jax.ShapeDtypeStruct(s if n else (0,), ct.dtype)
               for s, n in zip(_bwd_shapes(plan, nx, ne), need)]
    # scratch of the CUDA kernels: each channel block's part of dPhi/dY, summed in fixed order
    results.append(jax.ShapeDtypeStruct((ne, plan.blocks, 16) if need[1] else (0,), ct.dtype))
    outs = jax.ffi.ffi_call("bj_conv_bwd", results)(
        x, v, w, ct, runs, scale, snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg,
        **_attrs(plan, nx, ne, no), zero_x=np.int64(plan.zero_x), zero_w=np.int64(plan.zero_w))
    return [o for o, n in zip(outs[:3], need) if n]


def _bwd_jvp(primals, tangents, *, need, plan, nx, ne, no):
    outs = conv_bwd_p.bind(*primals, need=need, plan=plan, nx=nx, ne=ne, no=no)
    index = tuple(primals[4:])
    if all(type(t) is ad.Zero for t in tangents[:4]):
        return outs, [ad.Zero.from_primal_value(o) for o in outs]
    f = lambda *a: _ref_backward(*a, index, need, plan, nx, ne, no)  # noqa: E731
    return outs, list(composite_tangent(f, primals, tangents, 4))


def _fold_batcher(prim, kinds, multiple):
    """vmap as one call: the batch folds into node and edge rows (``fold_rows``)."""
    def rule(args, dims, *, plan, nx, ne, no, **params):
        B = batch_size(args, dims)
        folded = [fold_rows(move_to_front(a, d, B), k, B, nx, ne, no)
                  for a, d, k in zip(args, dims, kinds)]
        outs = prim.bind(*folded, plan=plan, nx=B * nx, ne=B * ne, no=B * no, **params)
        unfold = lambda o: o.reshape((B, -1) + o.shape[1:])
        if multiple:
            return [unfold(o) for o in outs], [0] * len(outs)
        return unfold(outs), 0
    return rule


conv_bwd_p.def_abstract_eval(_bwd_abstract)
register_ffi_lowering(conv_bwd_p, _bwd_lower)
ad.primitive_jvps[conv_bwd_p] = _bwd_jvp
batching.primitive_batchers[conv_bwd_p] = _fold_batcher(conv_bwd_p, ("x", "e", "e", "o") + _INDEX_FOLD, True)
batching.primitive_batchers[conv_p] = _fold_batcher(conv_p, ("x", "e", "e") + _INDEX_FOLD, False)


def conv(x, v, w, index, plan: ConvPlan, nx: int, ne: int, no: int):
    """Bind the forward; ``index`` is (snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg)."""
    return conv_p.bind(x, v, w, *index, plan=plan, nx=nx, ne=ne, no=no)

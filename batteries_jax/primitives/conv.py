"""The fused convolution (message passing) as a closed family of primitives on two kernels.

    out[n] = sum_{e: rcv(e) = n} T(x[snd(e)], H_e, w[e]),   H_e = Y(v_e)  or  J(v_e) t_e

with T the channel-wise product of a ``ConvPlan``, Y the normalised harmonics 0..L and, in
*tangent mode*, H their directional derivative along a per-edge vector t. Index operands
(``INDEX``) are a ``Graph``'s: sanitised senders/receivers (-1 = no edge) and both sorted orders.

* ``conv_p(x, v, t, w, *index; tangent)`` -> out: the forward kernel (receiver-owned rows).
  Linear in x, w and (tangent mode) t.
* ``conv_tan_p(x, v, w, *tangents, *index)``: the first-order JVP of the Y-mode forward, one
  primitive jointly linear in the tangents (dx, dv, dw) present, so that its transpose is one
  fused first-order backward:
* ``conv_bwd_p(x, v, t, w, ct, *index; need, tangent)`` -> the requested of
  (x_bar, v_bar, w_bar) with x_bar = dPhi/dx, w_bar = dPhi/dw for Phi = <ct, out> (H as in the
  forward) and v_bar = J(v)^T dPhi/dY in both modes.

The family {forward, backward} x {Y, J t} is closed under JVP and transposition except for the
second derivative of the harmonics (a JVP in v of a tangent-mode member, or of v_bar), which is
written with the uvu and harmonics primitives (``_ref_*``). So the force-training step
grad_w |dE/dv|^2 runs on the fused kernels: its new work is one tangent-mode backward. An
operand that no requested result reads is passed as an empty array (``_absent``). vmap folds
the batch into rows.
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
NO_T = None  # the tangent-vector operand of a Y-mode call (an empty [0, 3] array)

conv_p = make_primitive("bj_conv")
conv_tan_p = make_primitive("bj_conv_tangent")
conv_bwd_p = make_primitive("bj_conv_backward", multiple_results=True)


def _absent(dtype, cols=0):
    """Placeholder for an operand no requested result reads (the kernels get an empty buffer)."""
    return jnp.zeros((0, cols) if cols else (0,), dtype)


def _uvu_index(index):
    snd, rcv, sp, ss, rp, rs = index
    return dict(x_idx=snd, o_idx=rcv, x_perm=sp, x_seg=ss, o_perm=rp, o_seg=rs)


def _h(v, t, plan, tangent):
    """What enters the product per edge: Y(v), or J(v) t in tangent mode."""
    if tangent:
        return sh_jvp_p.bind(v, t, L=plan.L, normalize=True)
    return sh_p.bind(v, L=plan.L, normalize=True)


def _attrs(plan, nx, ne, no):
    p = plan.paths
    return dict(nx=np.int64(nx), ne=np.int64(ne), no=np.int64(no), x_width=np.int64(p.x_width),
                w_width=np.int64(p.w_width), o_width=np.int64(p.o_width),
                blocks=np.int64(plan.blocks), l3max=np.int64(plan.l3max))


def _tables(plan, dtype):
    return jnp.asarray(plan.run_table()), jnp.asarray(plan.scale_table(), dtype)


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


# ---------------------------------------------------------------- forward
def fwd(x, v, t, w, index, *, tangent, plan, nx, ne, no):
    """Bind the forward; ``t`` is None in Y mode."""
    if t is None:
        t = _absent(x.dtype, 3)
    return conv_p.bind(x, v, t, w, *index, tangent=tangent, plan=plan, nx=nx, ne=ne, no=no)


def _conv_abstract(x, v, t, w, *index, tangent, plan, nx, ne, no):
    return jax.core.ShapedArray((no, plan.paths.o_width), x.dtype)


def _conv_lower(x, v, t, w, snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg, *, tangent, plan, nx, ne, no):
    runs, scale = _tables(plan, x.dtype)
    call = jax.ffi.ffi_call("bj_conv_fwd", jax.ShapeDtypeStruct((no, plan.paths.o_width), x.dtype))
    return call(x, v, t, w, runs, scale, snd, rcv, rcv_perm, rcv_seg, **_attrs(plan, nx, ne, no),
                zero_out=np.int64(plan.zero_out))


def _ref_fwd(x, v, t, w, index, tangent, plan, nx, ne, no):
    """The forward from the uvu and harmonics primitives (for the second derivative of H)."""
    return uvu("o", plan.paths, nx, ne, no, x=x, y=_h(v, t, plan, tangent), w=w, **_uvu_index(index))


def _conv_jvp(primals, tangents, *, tangent, plan, nx, ne, no):
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    x, v, t, w = primals[:4]
    index = tuple(primals[4:])
    out = conv_p.bind(*primals, tangent=tangent, **params)
    dx, dv, dt, dw = (None if type(d) is ad.Zero else d for d in tangents[:4])
    if not tangent:
        present = tuple(n for n, d in zip(TANGENTS, (dx, dv, dw)) if d is not None)
        if not present:
            return out, ad.Zero.from_primal_value(out)
        tans = [d for d in (dx, dv, dw) if d is not None]
        return out, conv_tan_p.bind(x, v, w, *tans, *index, tans=present, **params)
    # tangent mode: trilinear in (x, t, w); the v-derivative needs the harmonics' second
    # derivative and is the composite's
    dout = None
    if dx is not None:
        dout = _add(dout, fwd(dx, v, t, w, index, tangent=True, **params))
    if dt is not None:
        dout = _add(dout, fwd(x, v, dt, w, index, tangent=True, **params))
    if dw is not None:
        dout = _add(dout, fwd(x, v, t, dw, index, tangent=True, **params))
    if dv is not None:
        f = lambda v_: _ref_fwd(x, v_, t, w, index, True, plan, nx, ne, no)  # noqa: E731
        dout = _add(dout, jax.jvp(f, (v,), (dv,))[1])
    return out, (ad.Zero.from_primal_value(out) if dout is None else dout)


def _conv_transpose(ct, x, v, t, w, *index, tangent, plan, nx, ne, no):
    """conv_p is linear in x, w and (tangent mode) t: each cotangent is one backward call."""
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    if ad.is_undefined_primal(v) or any(ad.is_undefined_primal(i) for i in index):
        raise NotImplementedError("conv: the forward is linear in x, w and t only")
    res = [None] * (4 + len(index))
    if type(ct) is ad.Zero:
        return res
    if ad.is_undefined_primal(x):
        res[0] = bwd(None, v, t, w, ct, index, (True, False, False), tangent=tangent, **params)[0]
    if ad.is_undefined_primal(w):
        res[3] = bwd(x, v, t, None, ct, index, (False, False, True), tangent=tangent, **params)[2]
    if tangent and ad.is_undefined_primal(t):
        res[2] = bwd(x, v, None, w, ct, index, (False, True, False), tangent=False, **params)[1]
    return res


conv_p.def_abstract_eval(_conv_abstract)
register_ffi_lowering(conv_p, _conv_lower)
ad.primitive_jvps[conv_p] = _conv_jvp
ad.primitive_transposes[conv_p] = _conv_transpose


# ---------------------------------------------------------------- the tangent (jointly linear)
def _ref_tangent(x, v, w, tans: dict, index, plan, nx, ne, no):
    """sum of T(dx, Y, w), T(x, J dv, w), T(x, Y, dw) for the tangents present."""
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    terms = []
    if "dx" in tans:
        terms.append(fwd(tans["dx"], v, None, w, index, tangent=False, **params))
    if "dw" in tans:
        terms.append(fwd(x, v, None, tans["dw"], index, tangent=False, **params))
    if "dv" in tans:
        terms.append(fwd(x, v, tans["dv"], w, index, tangent=True, **params))
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
        outs = bwd(x, v, None, w, ct, index, need, tangent=False, plan=plan, nx=nx, ne=ne, no=no)
        res = dict(zip(TANGENTS, outs))
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
# which of (x, w) each result reads: x_bar = B_x(H, w, ct), v_bar = J^T g(x, w, ct),
# w_bar = B_w(x, H, ct)
_READS_X = (False, True, True)
_READS_W = (True, True, False)


def bwd(x, v, t, w, ct, index, need, *, tangent, plan, nx, ne, no):
    """The requested of (x_bar, v_bar, w_bar) as a 3-list (None where not requested); x, w or
    t may be None when no requested result reads them."""
    need = tuple(bool(n) for n in need)
    if not any(need):
        return [None] * 3
    dtype = ct.dtype
    if x is None or not any(n and r for n, r in zip(need, _READS_X)):
        x = _absent(dtype)
    if w is None or not any(n and r for n, r in zip(need, _READS_W)):
        w = _absent(dtype)
    if t is None or not tangent:
        t = _absent(dtype, 3)
    outs = iter(conv_bwd_p.bind(x, v, t, w, ct, *index, need=need, tangent=tangent, plan=plan,
                                nx=nx, ne=ne, no=no))
    return [next(outs) if n else None for n in need]


def _ref_backward(x, v, t, w, ct, index, need, tangent, plan, nx, ne, no):
    """(x_bar, v_bar, w_bar) asked for by ``need`` (None elsewhere), from the uvu and harmonics
    primitives."""
    ops = _uvu_index(index)
    out = [None] * 3
    if need[0] or need[2]:
        h = _h(v, t, plan, tangent)
    if need[0]:
        out[0] = uvu("x", plan.paths, nx, ne, no, y=h, w=w, o=ct, **ops)
    if need[1]:
        y_bar = uvu("y", plan.paths, nx, ne, no, x=x, w=w, o=ct, **ops)
        out[1] = sh_vjp_p.bind(v, y_bar, L=plan.L, normalize=True)
    if need[2]:
        out[2] = uvu("w", plan.paths, nx, ne, no, x=x, y=h, o=ct, **ops)
    return out


def _bwd_shapes(plan, nx, ne):
    """Shapes of (x_bar, v_bar, w_bar)."""
    return [(nx, plan.paths.x_width), (ne, 3), (ne, plan.paths.w_width)]


def _bwd_abstract(x, v, t, w, ct, *index, need, tangent, plan, nx, ne, no):
    return [jax.core.ShapedArray(s, ct.dtype) for s, n in zip(_bwd_shapes(plan, nx, ne), need) if n]


def _bwd_lower(x, v, t, w, ct, snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg, *, need, tangent, plan,
               nx, ne, no):
    runs, scale = _tables(plan, ct.dtype)
    results = [jax.ShapeDtypeStruct(s if n else (0,), ct.dtype)
               for s, n in zip(_bwd_shapes(plan, nx, ne), need)]
    # scratch of the CUDA kernels: each channel block's part of dPhi/dY, and each edge's part of
    # x_bar, summed in a fixed order
    results.append(jax.ShapeDtypeStruct((ne, plan.blocks, 16) if need[1] else (0,), ct.dtype))
    results.append(jax.ShapeDtypeStruct((ne, plan.paths.x_width) if need[0] else (0,), ct.dtype))
    outs = jax.ffi.ffi_call("bj_conv_bwd", results)(
        x, v, t, w, ct, runs, scale, snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg,
        **_attrs(plan, nx, ne, no), zero_x=np.int64(plan.zero_x), zero_w=np.int64(plan.zero_w))
    return [o for o, n in zip(outs[:3], need) if n]


def _bwd_jvp(primals, tangents, *, need, tangent, plan, nx, ne, no):
    """Multilinear in (x, w, ct, t): one backward per tangent, asking only for the results that
    read that operand; dv: a tangent-mode backward for x_bar and w_bar (Y mode), the composite
    for the harmonics' second derivative."""
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    x, v, t, w, ct = primals[:5]
    index = tuple(primals[5:])
    outs = conv_bwd_p.bind(*primals, need=need, tangent=tangent, **params)
    dx, dv, dt, dw, dct = (None if type(d) is ad.Zero else d for d in tangents[:5])
    nx_, nv, nw = need
    acc = [None] * 3

    def add(terms):
        for i, term in enumerate(terms):
            acc[i] = _add(acc[i], term)

    if dx is not None and x.size:
        add(bwd(dx, v, t, w, ct, index, (False, nv, nw), tangent=tangent, **params))
    if dw is not None and w.size:
        add(bwd(x, v, t, dw, ct, index, (nx_, nv, False), tangent=tangent, **params))
    if dct is not None:
        add(bwd(x, v, t, w, dct, index, need, tangent=tangent, **params))
    if dt is not None and tangent:
        add(bwd(x, v, dt, w, ct, index, (nx_, False, nw), tangent=True, **params))
    if dv is not None:
        if not tangent:
            add(bwd(x, v, dv, w, ct, index, (nx_, False, nw), tangent=True, **params))
        composite_need = (tangent and nx_, nv, tangent and nw)
        if any(composite_need):
            f = lambda v_: _ref_backward(x, v_, t, w, ct, index, composite_need, tangent,  # noqa: E731
                                         plan, nx, ne, no)
            add(jax.jvp(f, (v,), (dv,))[1])
    live = [o for o, n in zip(acc, need) if n]
    return outs, [ad.Zero.from_primal_value(o) if d is None else d for o, d in zip(outs, live)]


def _bwd_transpose(cts, x, v, t, w, ct, *index, need, tangent, plan, nx, ne, no):
    """The backward is linear in each of x, w, ct and (tangent mode) t; cotangents (X, V, W) of
    (x_bar, v_bar, w_bar) map back through forwards (for ct) or backwards (for x, w, t)."""
    params = dict(plan=plan, nx=nx, ne=ne, no=no)
    if ad.is_undefined_primal(v) or any(ad.is_undefined_primal(i) for i in index):
        raise NotImplementedError("conv: the backward is linear in x, w, ct and t only")
    cts = iter(cts)
    X, V, W = (next(cts) if n else None for n in need)
    X, V, W = (None if c is None or type(c) is ad.Zero else c for c in (X, V, W))
    tt = t if tangent else None
    res = [None] * (5 + len(index))
    if ad.is_undefined_primal(ct):
        g = None
        if X is not None:
            g = _add(g, fwd(X, v, tt, w, index, tangent=tangent, **params))
        if V is not None:
            g = _add(g, fwd(x, v, V, w, index, tangent=True, **params))
        if W is not None:
            g = _add(g, fwd(x, v, tt, W, index, tangent=tangent, **params))
        res[4] = g
    if ad.is_undefined_primal(x):
        g = None
        if W is not None:
            g = _add(g, bwd(None, v, tt, W, ct, index, (True, False, False), tangent=tangent, **params)[0])
        if V is not None:
            g = _add(g, bwd(None, v, V, w, ct, index, (True, False, False), tangent=True, **params)[0])
        res[0] = g
    if ad.is_undefined_primal(w):
        g = None
        if X is not None:
            g = _add(g, bwd(X, v, tt, None, ct, index, (False, False, True), tangent=tangent, **params)[2])
        if V is not None:
            g = _add(g, bwd(x, v, V, None, ct, index, (False, False, True), tangent=True, **params)[2])
        res[3] = g
    if tangent and ad.is_undefined_primal(t):
        g = None
        if X is not None:
            g = _add(g, bwd(X, v, None, w, ct, index, (False, True, False), tangent=False, **params)[1])
        if W is not None:
            g = _add(g, bwd(x, v, None, W, ct, index, (False, True, False), tangent=False, **params)[1])
        res[2] = g
    return res


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
ad.primitive_transposes[conv_bwd_p] = _bwd_transpose
batching.primitive_batchers[conv_bwd_p] = _fold_batcher(conv_bwd_p, ("x", "e", "e", "e", "o") + _INDEX_FOLD, True)
batching.primitive_batchers[conv_p] = _fold_batcher(conv_p, ("x", "e", "e", "e") + _INDEX_FOLD, False)


def conv(x, v, w, index, plan: ConvPlan, nx: int, ne: int, no: int):
    """Bind the forward; ``index`` is (snd, rcv, snd_perm, snd_seg, rcv_perm, rcv_seg)."""
    return fwd(x, v, None, w, tuple(index), tangent=False, plan=plan, nx=nx, ne=ne, no=no)

"""The fully connected product (the seed's ``tensor_product`` with shared weights) as primitives.

    out[n, w, k] = sum_p sum_u sum_ij C_p[i, j, k] x[n, u, i] y[n, j] W[g(n), p, u, w]

x ``[n, C_in, 16]``, y ``[n, 16]``, W ``[groups, 34, C_in, C_out]`` (rows in ``groups`` equal
blocks, each with its own weights: one group unless the weights are vmapped), out
``[n, C_out, 16]``. The scalar form Phi(x, y, W, ct) = <ct, out> is linear in each operand, so
every derivative of every order is a member of this family:

* ``fc_p(x, y, w)``: the forward kernel.
* ``fc_tan_p(x, y, w, *tangents, tans)``: the JVP, jointly linear in the tangents present (a sum
  of forward calls); its transpose is one fused backward.
* ``fc_bwd_p(x, y, w, ct, need)``: the first-order backward, the requested of
  (x_bar, y_bar, w_bar) = (dPhi/dx, dPhi/dy, dPhi/dW) in one call. Its JVP is one backward call
  per operand with a tangent (that operand replaced by its tangent); its transpose with respect
  to one operand D is, per result r with a cotangent, dPhi/dD with r's slot holding that
  cotangent: a forward call for D = ct, a single-result backward call otherwise.

vmap folds the batch into the rows and the weight groups (no Python loop).
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from batteries_jax.primitives._common import (batch_size, composite_tangent, make_primitive, move_to_front,
                                             register_ffi_lowering)

fc_p = make_primitive("bj_fc")
fc_tan_p = make_primitive("bj_fc_tangent")
fc_bwd_p = make_primitive("bj_fc_backward", multiple_results=True)

OPERANDS = ("x", "y", "w", "ct")
RESULTS = ("x", "y", "w")       # the backward's results, by the operand they are the gradient of
TANGENTS = ("dx", "dy", "dw")
ROWS_PER_SLAB = 128             # w_bar: rows summed per CTA before the fixed-order slab sum
MAX_SLABS = 64


def _dims(x, w):
    """(n, C_in, C_out, groups) of a call."""
    return x.shape[0], x.shape[1], w.shape[3], w.shape[0]


def _attrs(x, w):
    n, c_in, c_out, groups = _dims(x, w)
    return dict(c_in=np.int64(c_in), c_out=np.int64(c_out), groups=np.int64(groups))


def _fold(args, dims):
    """Every operand's vmapped axis folded into its leading axis (rows, or weight groups)."""
    B = batch_size(args, dims)
    out = []
    for a, d in zip(args, dims):
        a = move_to_front(a, d, B)
        out.append(a.reshape((B * a.shape[1],) + a.shape[2:]))
    return out, B


def _unfold(a, B):
    return a.reshape((B, a.shape[0] // B) + a.shape[1:])


# ---------------------------------------------------------------- forward
def _abstract(x, y, w):
    n, _, c_out, _ = _dims(x, w)
    return jax.core.ShapedArray((n, c_out, 16), x.dtype)


def _lower(x, y, w):
    n, c_in, c_out, _ = _dims(x, w)
    if n * c_in * c_out == 0:
        return jnp.zeros((n, c_out, 16), x.dtype)
    # the kernels use [n, 16, C] (channels contiguous); XLA transposes around the call
    call = jax.ffi.ffi_call("bj_fc", jax.ShapeDtypeStruct((n, 16, c_out), x.dtype))
    return jnp.swapaxes(call(jnp.swapaxes(x, 1, 2), y, w, **_attrs(x, w)), 1, 2)


def _jvp(primals, tangents):
    out = fc_p.bind(*primals)
    present = tuple(name for name, t in zip(TANGENTS, tangents) if type(t) is not ad.Zero)
    if not present:
        return out, ad.Zero.from_primal_value(out)
    tans = [t for t in tangents if type(t) is not ad.Zero]
    return out, fc_tan_p.bind(*primals, *tans, tans=present)


def _batch(args, dims):
    folded, B = _fold(args, dims)
    return _unfold(fc_p.bind(*folded), B), 0


fc_p.def_abstract_eval(_abstract)
register_ffi_lowering(fc_p, _lower)
ad.primitive_jvps[fc_p] = _jvp
batching.primitive_batchers[fc_p] = _batch


# ---------------------------------------------------------------- the tangent (jointly linear)
def _tan_impl(x, y, w, *tangents, tans):
    t = dict(zip(tans, tangents))
    terms = []
    if "dx" in t:
        terms.append(fc_p.bind(t["dx"], y, w))
    if "dy" in t:
        terms.append(fc_p.bind(x, t["dy"], w))
    if "dw" in t:
        terms.append(fc_p.bind(x, y, t["dw"]))
    return sum(terms[1:], terms[0])


def _tan_abstract(x, y, w, *tangents, tans):
    return _abstract(x, y, w)


def _tan_jvp(primals, tangents, *, tans):
    out = fc_tan_p.bind(*primals, tans=tans)
    f = lambda *a: _tan_impl(*a, tans=tans)  # noqa: E731
    return out, composite_tangent(f, primals, tangents, len(primals))


def _tan_transpose(ct, x, y, w, *tangents, tans):
    if any(ad.is_undefined_primal(a) for a in (x, y, w)):
        raise NotImplementedError("tensor_product: the tangent is linear in (dx, dy, dw) only")
    t = dict(zip(tans, tangents))
    need = tuple(name in t and ad.is_undefined_primal(t[name]) for name in TANGENTS)
    res = dict.fromkeys(TANGENTS)
    if type(ct) is not ad.Zero and any(need):
        outs = iter(fc_bwd_p.bind(x, y, w, ct, need=need))
        res = {name: (next(outs) if flag else None) for name, flag in zip(TANGENTS, need)}
    return [None, None, None] + [res[name] for name in tans]


def _tan_batch(args, dims, *, tans):
    B = batch_size(args, dims)
    args = [move_to_front(a, d, B) for a, d in zip(args, dims)]
    return jax.vmap(lambda *a: _tan_impl(*a, tans=tans))(*args), 0


fc_tan_p.def_abstract_eval(_tan_abstract)
register_ffi_lowering(fc_tan_p, _tan_impl)
ad.primitive_jvps[fc_tan_p] = _tan_jvp
ad.primitive_transposes[fc_tan_p] = _tan_transpose
batching.primitive_batchers[fc_tan_p] = _tan_batch


# ---------------------------------------------------------------- the fused backward
def _bwd_shapes(x, y, w):
    return {"x": x.shape, "y": y.shape, "w": w.shape}


def _bwd_abstract(x, y, w, ct, *, need):
    shapes = _bwd_shapes(x, y, w)
    return [jax.core.ShapedArray(shapes[r], ct.dtype) for r, flag in zip(RESULTS, need) if flag]


def _slabs(rows_per_group: int) -> int:
    return int(max(1, min(MAX_SLABS, -(-rows_per_group // ROWS_PER_SLAB))))


def _bwd_lower(x, y, w, ct, *, need):
    n, c_in, c_out, groups = _dims(x, w)
    shapes = _bwd_shapes(x, y, w)
    dt = ct.dtype
    if n * c_in * c_out == 0:
        return [jnp.zeros(shapes[r], dt) for r, flag in zip(RESULTS, need) if flag]
    x_read, w_read = need[1] or need[2], need[0] or need[1]
    slabs = _slabs(n // groups)
    empty = jnp.zeros((0,), dt)
    xt = jnp.swapaxes(x, 1, 2) if x_read else empty   # [n, 16, C_in]: channels contiguous
    ctt = jnp.swapaxes(ct, 1, 2)                       # [n, 16, C_out]
    kernel_shapes = dict(shapes, x=(n, 16, c_in))  # x_bar comes back as [n, 16, C_in]
    results = [jax.ShapeDtypeStruct(kernel_shapes[r] if flag else (0,), dt) for r, flag in zip(RESULTS, need)]
    results.append(jax.ShapeDtypeStruct((groups * slabs * 34 * c_in * c_out if need[2] else 0,), dt))
    outs = jax.ffi.ffi_call("bj_fc_bwd", results)(xt, y, w if w_read else empty, ctt, **_attrs(x, w),
                                                  slabs=np.int64(slabs))
    outs = [jnp.swapaxes(outs[0], 1, 2) if need[0] else None] + list(outs[1:3])
    return [o for o, flag in zip(outs, need) if flag]


def _bwd_jvp(primals, tangents, *, need):
    outs = fc_bwd_p.bind(*primals, need=need)
    acc = [None] * len(outs)
    for d, (name, t) in enumerate(zip(OPERANDS, tangents)):
        if type(t) is ad.Zero:
            continue
        sub = tuple(flag and r != name for r, flag in zip(RESULTS, need))  # result r ignores operand r
        if not any(sub):
            continue
        args = list(primals)
        args[d] = t
        terms = iter(fc_bwd_p.bind(*args, need=sub))
        slot = 0
        for r, flag, s in zip(RESULTS, need, sub):
            if s:
                term = next(terms)
                acc[slot] = term if acc[slot] is None else acc[slot] + term
            slot += flag
    return outs, [a if a is not None else ad.Zero.from_primal_value(o) for a, o in zip(acc, outs)]


def _bwd_transpose(cts, x, y, w, ct, *, need):
    ops = [x, y, w, ct]
    undefined = [d for d, a in enumerate(ops) if ad.is_undefined_primal(a)]
    if len(undefined) != 1:
        raise NotImplementedError("tensor_product backward: transpose with respect to one operand")
    D = undefined[0]
    ops[D] = jnp.zeros(ops[D].aval.shape, ops[D].aval.dtype)  # not read by dPhi/dD
    total = None
    for r, c in zip([i for i, flag in enumerate(need) if flag], cts):
        if type(c) is ad.Zero or r == D:
            continue
        args = list(ops)
        args[r] = c
        if D == 3:
            term = fc_p.bind(*args[:3])
        else:
            term = fc_bwd_p.bind(*args, need=tuple(i == D for i in range(3)))[0]
        total = term if total is None else total + term
    return [total if d == D else None for d in range(4)]


def _bwd_batch(args, dims, *, need):
    folded, B = _fold(args, dims)
    outs = fc_bwd_p.bind(*folded, need=need)
    return [_unfold(o, B) for o in outs], [0] * len(outs)


fc_bwd_p.def_abstract_eval(_bwd_abstract)
register_ffi_lowering(fc_bwd_p, _bwd_lower)
ad.primitive_jvps[fc_bwd_p] = _bwd_jvp
ad.primitive_transposes[fc_bwd_p] = _bwd_transpose
batching.primitive_batchers[fc_bwd_p] = _bwd_batch

"""Spherical harmonics l <= 3 as three primitives that close under differentiation.

    sh_p(v)         Y = P(v / |v|)               (nonlinear in v)
    sh_jvp_p(v, t)  J(v) t                       (linear in t)
    sh_vjp_p(v, g)  J(v)^T g                     (linear in g)

The JVP of sh_p is sh_jvp_p; sh_jvp_p and sh_vjp_p are each other's transposes, so forward and
reverse first derivatives run on the kernels. Their derivatives with respect to v (second order
and up) are the jnp expression of the same polynomial (`sh_reference`), which JAX differentiates
to any order. All three act row-wise on the leading axes, so vmap is a reshape.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from batteries_jax import _paths
from batteries_jax.primitives._common import batch_size, make_primitive, move_to_front, register_ffi_lowering


def num_components(L: int) -> int:
    return (L + 1) ** 2


# ---------------------------------------------------------------- jnp reference (higher orders)
def sh_reference(v, L: int, normalize: bool):
    """e3nn-jax's spherical harmonics in plain jnp, with e3nn's guard at v = 0."""
    if normalize:
        r2 = jnp.sum(v * v, axis=-1, keepdims=True)
        r2 = jnp.where(r2 == 0.0, 1.0, r2)
        v = v / jnp.sqrt(r2)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    comps = []
    for terms in _paths.SH_MONOMIALS[: num_components(L)]:
        acc = None
        for (a, b, c), coef in terms:
            t = coef * x**a * y**b * z**c if (a, b, c) != (0, 0, 0) else jnp.full_like(x, coef)
            acc = t if acc is None else acc + t
        comps.append(acc)
    return jnp.stack(comps, axis=-1)


def _ref_jvp(v, t, L, normalize):
    return jax.jvp(lambda v_: sh_reference(v_, L, normalize), (v,), (t,))[1]


def _ref_vjp(v, g, L, normalize):
    return jax.vjp(lambda v_: sh_reference(v_, L, normalize), v)[1](g)[0]


# ---------------------------------------------------------------- primitives
sh_p = make_primitive("bj_spherical_harmonics")
sh_jvp_p = make_primitive("bj_spherical_harmonics_jvp")
sh_vjp_p = make_primitive("bj_spherical_harmonics_vjp")


def _aval(shape, dtype):
    return jax.core.ShapedArray(shape, dtype)


sh_p.def_abstract_eval(lambda v, *, L, normalize: _aval(v.shape[:-1] + (num_components(L),), v.dtype))
sh_jvp_p.def_abstract_eval(
    lambda v, t, *, L, normalize: _aval(v.shape[:-1] + (num_components(L),), v.dtype))
sh_vjp_p.def_abstract_eval(lambda v, g, *, L, normalize: _aval(v.shape, v.dtype))


def _call(target, out_shape, *args, L, normalize):
    dtype = args[0].dtype
    if int(np.prod(out_shape)) == 0:  # empty: no kernel launch
        return jnp.zeros(out_shape, dtype)
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(out_shape, dtype))(
        *args, L=np.int64(L), normalize=bool(normalize))


register_ffi_lowering(sh_p, lambda v, *, L, normalize: _call(
    "bj_sh_fwd", v.shape[:-1] + (num_components(L),), v, L=L, normalize=normalize))
register_ffi_lowering(sh_jvp_p, lambda v, t, *, L, normalize: _call(
    "bj_sh_jvp", v.shape[:-1] + (num_components(L),), v, t, L=L, normalize=normalize))
register_ffi_lowering(sh_vjp_p, lambda v, g, *, L, normalize: _call(
    "bj_sh_vjp", v.shape, v, g, L=L, normalize=normalize))


# ---------------------------------------------------------------- differentiation rules
def _sh_jvp_rule(primals, tangents, *, L, normalize):
    (v,), (vd,) = primals, tangents
    y = sh_p.bind(v, L=L, normalize=normalize)
    if type(vd) is ad.Zero:
        return y, ad.Zero.from_primal_value(y)
    return y, sh_jvp_p.bind(v, vd, L=L, normalize=normalize)


def _linear_jvp_rule(prim, ref):
    """JVP of prim(v, a), linear in a: d/dv[prim(v, a)] vd (from the jnp reference) + prim(v, ad)."""
    def rule(primals, tangents, *, L, normalize):
        v, a = primals
        vd, ad_ = tangents
        out = prim.bind(v, a, L=L, normalize=normalize)
        terms = []
        if type(vd) is not ad.Zero:
            terms.append(jax.jvp(lambda v_: ref(v_, a, L, normalize), (v,), (vd,))[1])
        if type(ad_) is not ad.Zero:
            terms.append(prim.bind(v, ad_, L=L, normalize=normalize))
        if not terms:
            return out, ad.Zero.from_primal_value(out)
        return out, sum(terms[1:], terms[0])
    return rule


def _linear_transpose_rule(other):
    """prim(v, a) is linear in a; its transpose is `other`(v, ct)."""
    def rule(ct, v, a, *, L, normalize):
        if ad.is_undefined_primal(v):
            raise NotImplementedError("spherical harmonics are not linear in the vectors")
        if type(ct) is ad.Zero:
            return None, None
        return None, other.bind(v, ct, L=L, normalize=normalize)
    return rule


ad.primitive_jvps[sh_p] = _sh_jvp_rule
ad.primitive_jvps[sh_jvp_p] = _linear_jvp_rule(sh_jvp_p, _ref_jvp)
ad.primitive_jvps[sh_vjp_p] = _linear_jvp_rule(sh_vjp_p, _ref_vjp)
ad.primitive_transposes[sh_jvp_p] = _linear_transpose_rule(sh_vjp_p)
ad.primitive_transposes[sh_vjp_p] = _linear_transpose_rule(sh_jvp_p)


def _rowwise_batcher(prim):
    """Every operand is a stack of rows over the same leading axes: put the vmapped axis first."""
    def rule(args, dims, **params):
        size = batch_size(args, dims)
        args = [move_to_front(a, d, size) for a, d in zip(args, dims)]
        return prim.bind(*args, **params), 0
    return rule


for _p in (sh_p, sh_jvp_p, sh_vjp_p):
    batching.primitive_batchers[_p] = _rowwise_batcher(_p)

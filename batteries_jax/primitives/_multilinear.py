"""A multilinear op as a closed family of three primitives.

For f(a_1, ..., a_k) linear in each input, the scalar form Phi(a_1, ..., a_k, ct) = <ct, f(...)>
is linear in each of its k + 1 operands, and every derivative of every order of f is built from:

* ``fwd(a...)``: the forward kernel;
* ``tan(a..., *tangents, tans)``: the JVP, jointly linear in the tangents present (a sum of
  forward calls); its transpose is one fused backward call;
* ``bwd(a..., ct, need)``: the first-order backward, the requested gradients dPhi/da_i in one
  call. Its JVP is one backward call per operand with a tangent (that operand replaced by its
  tangent; result i ignores operand i); its transpose with respect to one operand D is, per
  result r with a cotangent, dPhi/dD with r's slot holding that cotangent: a forward call for
  D = ct, a single-result backward call otherwise.

vmap folds the batch into every operand's leading axis (rows, or weight groups) and the op is
called once. A family supplies only the abstract forward shape and the two lowerings. Static
parameters of a call (e.g. the FC product's ``tf32_passes``) ride on all three primitives: every
rule passes them on to the binds it makes, and both lowerings receive them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from batteries_jax.primitives._common import (batch_size, composite_tangent, make_primitive, move_to_front,
                                             register_ffi_lowering)


def _fold(args, dims):
    """Every operand's vmapped axis folded into its leading axis."""
    B = batch_size(args, dims)
    out = []
    for a, d in zip(args, dims):
        a = move_to_front(a, d, B)
        out.append(a.reshape((B * a.shape[1],) + a.shape[2:]))
    return out, B


def _unfold(a, B):
    return a.reshape((B, a.shape[0] // B) + a.shape[1:])


class MultilinearFamily:
    """``out_shape(*inputs)`` -> forward shape; ``lower_fwd(*inputs)`` and
    ``lower_bwd(*inputs, ct, need)`` build the FFI calls (jnp values in, jnp values out; the
    backward returns the requested gradients in input order). With ``bwd_by_platform``,
    lower_bwd also gets ``platform`` ("cpu" or "cuda")."""

    def __init__(self, name: str, n_inputs: int, out_shape, lower_fwd, lower_bwd, bwd_by_platform: bool = False):
        self.k = n_inputs
        self.out_shape = out_shape
        self.fwd = make_primitive(f"bj_{name}")
        self.tan = make_primitive(f"bj_{name}_tangent")
        self.bwd = make_primitive(f"bj_{name}_backward", multiple_results=True)

        self.fwd.def_abstract_eval(lambda *a, **params: jax.core.ShapedArray(out_shape(*a), a[0].dtype))
        register_ffi_lowering(self.fwd, lower_fwd)
        ad.primitive_jvps[self.fwd] = self._fwd_jvp
        batching.primitive_batchers[self.fwd] = self._fwd_batch

        self.tan.def_abstract_eval(lambda *a, tans, **params: jax.core.ShapedArray(out_shape(*a[:self.k]), a[0].dtype))
        register_ffi_lowering(self.tan, self._tan_impl)
        ad.primitive_jvps[self.tan] = self._tan_jvp
        ad.primitive_transposes[self.tan] = self._tan_transpose
        batching.primitive_batchers[self.tan] = self._tan_batch

        self.bwd.def_abstract_eval(self._bwd_abstract)
        register_ffi_lowering(self.bwd, lower_bwd, by_platform=bwd_by_platform)
        ad.primitive_jvps[self.bwd] = self._bwd_jvp
        ad.primitive_transposes[self.bwd] = self._bwd_transpose
        batching.primitive_batchers[self.bwd] = self._bwd_batch

    # ------------------------------------------------------------ forward
    def _fwd_jvp(self, primals, tangents, **params):
        out = self.fwd.bind(*primals, **params)
        present = tuple(i for i, t in enumerate(tangents) if type(t) is not ad.Zero)
        if not present:
            return out, ad.Zero.from_primal_value(out)
        return out, self.tan.bind(*primals, *[tangents[i] for i in present], tans=present, **params)

    def _fwd_batch(self, args, dims, **params):
        folded, B = _fold(args, dims)
        return _unfold(self.fwd.bind(*folded, **params), B), 0

    # ------------------------------------------------------------ tangent (jointly linear)
    def _tan_impl(self, *args, tans, **params):
        inputs, tangents = list(args[:self.k]), args[self.k:]
        terms = []
        for i, t in zip(tans, tangents):
            sub = list(inputs)
            sub[i] = t
            terms.append(self.fwd.bind(*sub, **params))
        return sum(terms[1:], terms[0])

    def _tan_jvp(self, primals, tangents, *, tans, **params):
        out = self.tan.bind(*primals, tans=tans, **params)
        f = lambda *a: self._tan_impl(*a, tans=tans, **params)  # noqa: E731
        return out, composite_tangent(f, primals, tangents, len(primals))

    def _tan_transpose(self, ct, *args, tans, **params):
        if any(ad.is_undefined_primal(a) for a in args[:self.k]):
            raise NotImplementedError("the tangent is linear in the tangents only")
        t = dict(zip(tans, args[self.k:]))
        need = tuple(i in t and ad.is_undefined_primal(t[i]) for i in range(self.k))
        res = [None] * self.k
        if type(ct) is not ad.Zero and any(need):
            outs = iter(self.bwd.bind(*args[:self.k], ct, need=need, **params))
            res = [next(outs) if flag else None for flag in need]
        return [None] * self.k + [res[i] for i in tans]

    def _tan_batch(self, args, dims, *, tans, **params):
        B = batch_size(args, dims)
        args = [move_to_front(a, d, B) for a, d in zip(args, dims)]
        return jax.vmap(lambda *a: self._tan_impl(*a, tans=tans, **params))(*args), 0

    # ------------------------------------------------------------ fused backward
    def _bwd_abstract(self, *args, need, **params):
        ct = args[self.k]
        return [jax.core.ShapedArray(a.shape, ct.dtype) for a, flag in zip(args[:self.k], need) if flag]

    def _bwd_jvp(self, primals, tangents, *, need, **params):
        outs = self.bwd.bind(*primals, need=need, **params)
        acc = [None] * len(outs)
        for d, t in enumerate(tangents):
            if type(t) is ad.Zero:
                continue
            sub = tuple(flag and r != d for r, flag in enumerate(need))  # result r ignores operand r
            if not any(sub):
                continue
            args = list(primals)
            args[d] = t
            terms = iter(self.bwd.bind(*args, need=sub, **params))
            slot = 0
            for flag, s in zip(need, sub):
                if s:
                    term = next(terms)
                    acc[slot] = term if acc[slot] is None else acc[slot] + term
                slot += flag
        return outs, [a if a is not None else ad.Zero.from_primal_value(o) for a, o in zip(acc, outs)]

    def _bwd_transpose(self, cts, *args, need, **params):
        ops = list(args)
        undefined = [d for d, a in enumerate(ops) if ad.is_undefined_primal(a)]
        if len(undefined) != 1:
            raise NotImplementedError("backward: transpose with respect to exactly one operand")
        D = undefined[0]
        ops[D] = jnp.zeros(ops[D].aval.shape, ops[D].aval.dtype)  # not read by dPhi/dD
        total = None
        for r, c in zip([i for i, flag in enumerate(need) if flag], cts):
            if type(c) is ad.Zero or r == D:
                continue
            sub = list(ops)
            sub[r] = c
            if D == self.k:
                term = self.fwd.bind(*sub[:self.k], **params)
            else:
                term = self.bwd.bind(*sub, need=tuple(i == D for i in range(self.k)), **params)[0]
            total = term if total is None else total + term
        return [total if d == D else None for d in range(len(ops))]

    def _bwd_batch(self, args, dims, *, need, **params):
        folded, B = _fold(args, dims)
        outs = self.bwd.bind(*folded, need=need, **params)
        return [_unfold(o, B) for o in outs], [0] * len(outs)

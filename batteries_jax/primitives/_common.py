"""Plumbing shared by the primitive families."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, mlir

from batteries_jax import _ffi

_ffi.register()


@functools.lru_cache(maxsize=None)
def _jitted_bind(prim: Primitive, params: tuple):
    kw = dict(params)
    return jax.jit(lambda *a: prim.bind(*a, **kw))


def make_primitive(name: str, multiple_results: bool = False) -> Primitive:
    prim = Primitive(name)
    prim.multiple_results = multiple_results

    def impl(*args, **params):  # eager calls run the same lowering, compiled once per params
        return _jitted_bind(prim, tuple(sorted(params.items())))(*args)

    prim.def_impl(impl)
    return prim


def register_ffi_lowering(prim: Primitive, build_call, by_platform: bool = False) -> None:
    """``build_call(*operands, **params)`` calls ``jax.ffi.ffi_call`` on jnp values; the same
    target name has a CPU and a CUDA handler, so one lowering serves both platforms. With
    ``by_platform``, build_call also gets ``platform`` ("cpu" or "cuda"): for calls whose
    operands differ by handler (e.g. a workspace only the CUDA handler uses)."""
    if not by_platform:
        mlir.register_lowering(prim, mlir.lower_fun(build_call, multiple_results=prim.multiple_results))
        return
    for platform in ("cpu", "cuda"):
        rule = mlir.lower_fun(functools.partial(build_call, platform=platform), multiple_results=prim.multiple_results)
        mlir.register_lowering(prim, rule, platform=platform)


def composite_tangent(fn, primals, tangents, n: int):
    """Tangent of ``fn(*primals[:n])`` by ``jax.jvp``: for primitives whose derivatives are
    written with other primitives that are closed under differentiation (the same math as the
    fused kernel). Symbolic zero tangents among the first n are instantiated."""
    dots = tuple(ad.instantiate_zeros(t) for t in tangents[:n])
    return jax.jvp(fn, tuple(primals[:n]), dots)[1]


def move_to_front(x, bdim, size):
    """Operand with its vmapped axis at 0 (broadcast when it has none)."""
    if bdim is None:  # batching.not_mapped
        return jnp.broadcast_to(x, (size,) + jnp.shape(x))
    return jnp.moveaxis(x, bdim, 0)


def batch_size(args, dims):
    return next(jnp.shape(a)[d] for a, d in zip(args, dims) if d is not None)


#: how each operand of a graph primitive folds a vmapped axis into its rows
FOLD_KINDS = ("x", "e", "o", "x_idx", "o_idx", "perm", "x_seg", "o_seg")


def fold_rows(a, kind: str, B: int, nx: int, ne: int, no: int):
    """Operand ``a`` (vmapped axis at 0, size B) as one call over B * rows.

    Data rows of x, edges and o stack up; batch b's indices into x / o shift by b*nx / b*no
    (padding, -1, stays -1); edge ids in a sorted order shift by b*ne; segment starts over x
    or o rows shift by b*ne and keep a single end.
    """
    b = jnp.arange(B, dtype=jnp.int32)[:, None]
    if kind in ("x", "e", "o"):
        return a.reshape((B * a.shape[1],) + a.shape[2:])
    if kind in ("x_idx", "o_idx"):
        n = nx if kind == "x_idx" else no
        return jnp.where(a >= 0, a + b * n, -1).reshape(-1)
    if kind == "perm":
        return (a + b * ne).reshape(-1)
    if kind in ("x_seg", "o_seg"):  # [B, n + 1] -> [B * n + 1]
        starts = (a[:, :-1] + b * ne).reshape(-1)
        return jnp.concatenate([starts, a[-1:, -1] + (B - 1) * ne])
    raise ValueError(f"unknown fold kind {kind!r}")

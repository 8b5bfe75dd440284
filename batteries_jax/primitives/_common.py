"""Plumbing shared by the primitive families."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import mlir

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


def register_ffi_lowering(prim: Primitive, build_call) -> None:
    """``build_call(*operands, **params)`` calls ``jax.ffi.ffi_call`` on jnp values; the same
    target name has a CPU and a CUDA handler, so one lowering serves both platforms."""
    mlir.register_lowering(prim, mlir.lower_fun(build_call, multiple_results=prim.multiple_results))


def move_to_front(x, bdim, size):
    """Operand with its vmapped axis at 0 (broadcast when it has none)."""
    if bdim is None:  # batching.not_mapped
        return jnp.broadcast_to(x, (size,) + jnp.shape(x))
    return jnp.moveaxis(x, bdim, 0)


def batch_size(args, dims):
    return next(jnp.shape(a)[d] for a, d in zip(args, dims) if d is not None)

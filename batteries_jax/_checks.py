"""Trace-time argument checks with messages that name the argument."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def float_array(name: str, x):
    """x as a jnp array of float32/float64; TypeError for anything else."""
    x = jnp.asarray(x)
    if x.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    return x


def promote(*named):
    """Check and promote float operands to their common dtype (as jnp would)."""
    arrays = [float_array(n, a) for n, a in named]
    dtype = jnp.result_type(*arrays)
    return [a.astype(dtype) for a in arrays]


def index_array(name: str, idx, length: int | None = None):
    idx = jnp.asarray(idx)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {idx.dtype}")
    if idx.ndim != 1 or (length is not None and idx.shape[0] != length):
        want = f"[{length}]" if length is not None else "one-dimensional"
        raise ValueError(f"{name} must be {want}, got shape {idx.shape}")
    return idx


def last_axis(name: str, x, size: int):
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name} must have a last axis of size {size}, got shape {x.shape}")


def static_int(name: str, v, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def broadcast_rows(*arrays_and_trailing):
    """Broadcast operands over their common leading shape and flatten it into rows.

    Takes (array, number of trailing axes) pairs; returns (leading shape, [array [rows, ...]]).
    """
    lead = np.broadcast_shapes(*[a.shape[: a.ndim - t] for a, t in arrays_and_trailing])
    flat = [jnp.broadcast_to(a, lead + a.shape[a.ndim - t:]).reshape((-1,) + a.shape[a.ndim - t:])
            for a, t in arrays_and_trailing]
    return lead, flat

"""Public spherical-harmonics functions (seed layout: plain arrays)."""
from __future__ import annotations

from batteries_jax import _checks
from batteries_jax.primitives.spherical_harmonics import sh_p, sh_vjp_p

_N_TO_L = {1: 0, 4: 1, 9: 2, 16: 3}


def spherical_harmonics(edge_vectors, L_max: int = 3, normalize: bool = True):
    """Real spherical harmonics l = 0..L_max of vectors, e3nn-jax's conventions.

    Equals ``e3nn_jax.spherical_harmonics(irreps 0e+1o+2e+3o up to L_max, IrrepsArray("1o", v),
    normalize, normalization="component").array``: output ``[..., (L_max+1)**2]`` with the
    input's dtype. At a zero vector (normalize=True) Y0 = 1 and the rest is 0, as in e3nn-jax.

    >>> import jax.numpy as jnp, batteries_jax as bj
    >>> bj.spherical_harmonics(jnp.array([[0.0, 0.0, 2.0]]), L_max=1)
    Array([[1.       , 0.       , 0.       , 1.7320508]], dtype=float32)
    """
    v = _checks.float_array("edge_vectors", edge_vectors)
    _checks.last_axis("edge_vectors", v, 3)
    L = _checks.static_int("L_max", L_max, 0, 3)
    return sh_p.bind(v, L=L, normalize=bool(normalize))


def spherical_harmonics_backward(edge_vectors, grad_Y, normalize: bool = True):
    """The VJP of :func:`spherical_harmonics`: ``[..., 3]`` = J(edge_vectors)^T grad_Y.

    L_max is read off ``grad_Y.shape[-1]`` (1, 4, 9 or 16).
    """
    v, g = _checks.promote(("edge_vectors", edge_vectors), ("grad_Y", grad_Y))
    _checks.last_axis("edge_vectors", v, 3)
    if g.ndim < 1 or g.shape[-1] not in _N_TO_L:
        raise ValueError(f"grad_Y must have a last axis of 1, 4, 9 or 16, got shape {g.shape}")
    if g.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"grad_Y's leading shape {g.shape[:-1]} differs from edge_vectors' {v.shape[:-1]}")
    return sh_vjp_p.bind(v, g, L=_N_TO_L[g.shape[-1]], normalize=bool(normalize))

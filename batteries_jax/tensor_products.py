"""Public tensor products in the seed's layout ([..., 16] blocks l = 0..3)."""
from __future__ import annotations

import numpy as np

from batteries_jax import _checks, _paths
from batteries_jax.primitives.fc import fc_p
from batteries_jax.primitives.sh_tp_simple import sh_tp_simple_p
from batteries_jax.primitives.simple_tp import tp_simple_p
from batteries_jax.primitives.uvu import sanitize_index, sorted_segments


def get_tp_num_paths() -> int:
    """Number of seed paths (l1, l2, l_out), l <= 3: 34."""
    return len(_paths.SEED_PATHS)


def get_tp_path_info() -> np.ndarray:
    """int32 [34, 3]: (l1, l2, l_out) of each seed path, lexicographic order."""
    return _paths.seed_path_info()


def tensor_product_simple(x, y):
    """out[..., k] = sum_p sum_ij C_p[i, j, k] x[..., i] y[..., j] over the 34 seed paths.

    ``x``, ``y``: ``[..., 16]`` (leading shapes broadcast); paths with the same l_out add up,
    parity is ignored; C_p = e3nn_jax.clebsch_gordan(l1, l2, l_out) * sqrt(2 l_out + 1).
    """
    x, y = _checks.promote(("x", x), ("y", y))
    _checks.last_axis("x", x, 16)
    _checks.last_axis("y", y, 16)
    lead, (x, y) = _checks.broadcast_rows((x, 1), (y, 1))
    return tp_simple_p.bind(x, y).reshape(lead + (16,))


#: ``tensor_product``'s precision options (how its float32 channel contraction runs on a GPU),
#: each with its tensor-core passes per product (0: FMAs).
TF32_PASSES = {"highest": 0, "tf32x3": 3, "tf32": 1}
PRECISIONS = tuple(TF32_PASSES)


def tensor_product(x, y, weights, *, precision="highest"):
    """Fully connected product with shared weights (the seed's ``uvw``).

    ``x [..., C_in, 16]``, ``y [..., 16]``, ``weights [34, C_in, C_out]`` ->
    ``[..., C_out, 16]``: out[w, k] = sum_p sum_u sum_ij C_p[i,j,k] x[u,i] y[j] W[p,u,w].

    One fused kernel (the Clebsch-Gordan expansion is generated in shared memory and
    contracted with the weights, never written out); the backward is one fused call for every
    requested gradient. vmap over the weights (ensembles) runs as one call with one weight
    block per batch entry.

    ``precision`` (float32 on a GPU only; float64 always runs float64 arithmetic, on the
    tensor cores' DMMA where the card has them, and the CPU always computes in full float32):

    * ``"highest"`` (default): float32 FMAs.
    * ``"tf32x3"``: the channel contractions on the tensor cores in 3xTF32 (each operand split
      into two TF32 parts, three products), forward and every derivative. Errors are a few
      1e-6 of the output's scale (H200: 3.4e-6 on the forward, up to 5.8e-6 on a weight
      gradient summed over 48k terms; the FMA path is at a few 1e-7).
    * ``"tf32"``: the channel contractions on the tensor cores in TF32 (operands rounded to 10
      mantissa bits, one product), forward and every derivative: the precision of JAX's
      default float32 matmuls on these GPUs (H200: 3.0e-4 of max |out| on the forward, the
      same as a float32 ``jnp.dot`` at ``Precision.DEFAULT``), for training where that is
      acceptable.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    x, y, weights = _checks.promote(("x", x), ("y", y), ("weights", weights))
    _checks.last_axis("x", x, 16)
    _checks.last_axis("y", y, 16)
    if x.ndim < 2:
        raise ValueError(f"x must be [..., C_in, 16], got shape {x.shape}")
    c_in = x.shape[-2]
    if weights.ndim != 3 or weights.shape[0] != 34 or weights.shape[1] != c_in:
        raise ValueError(f"weights must be [34, C_in={c_in}, C_out], got shape {weights.shape}")
    c_out = weights.shape[2]
    lead, (xf, yf) = _checks.broadcast_rows((x, 2), (y, 1))
    out = fc_p.bind(xf.reshape(-1, c_in, 16), yf, weights[None], tf32_passes=TF32_PASSES[precision])
    return out.reshape(lead + (c_out, 16))


def fused_sh_tp_simple(edge_vectors, node_features, source_idx):
    """``tensor_product_simple(node_features[source_idx], spherical_harmonics(edge_vectors))``.

    ``edge_vectors [E, 3]``, ``node_features [N, 16]``, ``source_idx [E]`` (any integer dtype)
    -> ``[E, 16]``. A row whose source index is outside [0, N) is zero (the edge does not
    exist), and contributes nothing to any gradient.
    """
    v, f = _checks.promote(("edge_vectors", edge_vectors), ("node_features", node_features))
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"edge_vectors must be [E, 3], got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 16:
        raise ValueError(f"node_features must be [N, 16], got shape {f.shape}")
    e, n = v.shape[0], f.shape[0]
    src = sanitize_index(_checks.index_array("source_idx", source_idx, e), n)
    x_perm, x_seg = sorted_segments(src, n)  # for the gradient w.r.t. node_features
    return sh_tp_simple_p.bind(v, f, src, x_perm, x_seg, n=n)

"""Drop-ins for e3nn-jax functions, taking and returning ``e3nn_jax.IrrepsArray``.

Same irreps, order, parity rules and values as e3nn-jax; the work runs on batteries_jax's
kernels. Inputs are limited to l <= 3 (outputs of a product reach l = 6).
"""
from __future__ import annotations

import functools

import e3nn_jax as e3nn
import jax.numpy as jnp
import numpy as np

from batteries_jax import _checks, _paths
from batteries_jax.graph import Graph
from batteries_jax._conv_plan import conv_plan
from batteries_jax.primitives.conv import conv
from batteries_jax.primitives.spherical_harmonics import sh_p
from batteries_jax.primitives.uvu import uvu

_SH_NORM = {"component": lambda l: 1.0, "norm": lambda l: 1.0 / np.sqrt(2 * l + 1),
            "integral": lambda l: 1.0 / np.sqrt(4 * np.pi)}


# ---------------------------------------------------------------- spherical harmonics
def _sh_irreps(irreps_out, vec_p):
    if isinstance(irreps_out, str):
        irreps_out = e3nn.Irreps(irreps_out)
    if isinstance(irreps_out, range):
        irreps_out = list(irreps_out)
    if isinstance(irreps_out, (int, np.integer)) and not isinstance(irreps_out, bool):
        irreps_out = [int(irreps_out)]
    if isinstance(irreps_out, (list, tuple)) and all(isinstance(l, (int, np.integer)) for l in irreps_out):
        if vec_p is None:
            raise ValueError("spherical_harmonics: irreps_out given as l values needs an IrrepsArray input")
        irreps_out = e3nn.Irreps([(1, (int(l), vec_p ** int(l))) for l in irreps_out])
    irreps_out = e3nn.Irreps(irreps_out)
    for _, ir in irreps_out:
        if ir.l > 3:
            raise ValueError(f"spherical_harmonics: l <= 3 only, got {ir} in {irreps_out}")
        if ir.l % 2 == 0 and ir.p != 1:
            raise ValueError(f"spherical_harmonics: even l must have even parity, got {ir}")
        if ir.l % 2 == 1 and vec_p is not None and ir.p != vec_p:
            raise ValueError(f"spherical_harmonics: {ir} does not match the input's parity")
    odd = {ir.p for _, ir in irreps_out if ir.l % 2 == 1}
    if len(odd) > 1:
        raise ValueError(f"spherical_harmonics: odd l with both parities in {irreps_out}")
    return irreps_out


def spherical_harmonics(irreps_out, input, normalize: bool, normalization: str = "component"):
    """Drop-in for ``e3nn_jax.spherical_harmonics`` (l <= 3; any normalization).

    >>> import e3nn_jax as e3nn, jax.numpy as jnp, batteries_jax.e3nn as bje
    >>> bje.spherical_harmonics([0, 1], e3nn.IrrepsArray("1o", jnp.array([0.0, 0.0, 2.0])), True)
    1x0e+1x1o [1.        0.        0.        1.7320508]
    """
    if normalization is None:
        normalization = "component"
    if normalization not in _SH_NORM:
        raise ValueError(f"spherical_harmonics: normalization must be one of {list(_SH_NORM)}")
    vec_p = None
    if isinstance(input, e3nn.IrrepsArray):
        if input.irreps.num_irreps != 1 or input.irreps[0].ir.l != 1 or input.irreps[0].mul != 1:
            raise ValueError(f"spherical_harmonics: input must be a single vector, got {input.irreps}")
        vec_p = input.irreps[0].ir.p
        input = input.array
    irreps_out = _sh_irreps(irreps_out, vec_p)
    v = _checks.float_array("input", input)
    _checks.last_axis("input", v, 3)
    if irreps_out.dim == 0:
        return e3nn.IrrepsArray(irreps_out, jnp.zeros(v.shape[:-1] + (0,), v.dtype))
    L = max(ir.l for _, ir in irreps_out)
    y = sh_p.bind(v, L=L, normalize=bool(normalize))
    cols, scale = [], []
    for mul, ir in irreps_out:
        for _ in range(mul):
            cols += range(ir.l ** 2, (ir.l + 1) ** 2)
            scale += [_SH_NORM[normalization](ir.l)] * ir.dim
    if cols != list(range(y.shape[-1])):
        y = y[..., np.asarray(cols)]
    if any(s != 1.0 for s in scale):
        y = y * jnp.asarray(scale, y.dtype)
    return e3nn.IrrepsArray(irreps_out, y)


# ---------------------------------------------------------------- tensor products
def _runs(irreps: e3nn.Irreps, regroup: bool):
    """Chunks of ``irreps`` in the order e3nn's product visits them (regrouped or not).

    Returns [(mul, ir, [(orig_offset, mul_run, u_start)])]: each chunk's channels as runs that
    are contiguous in the original layout, so x[u, i] = x[orig_offset + (u-u_start)*dim + i].
    """
    pos = np.arange(irreps.dim, dtype=np.float64)
    arr = e3nn.IrrepsArray(irreps, pos)
    if regroup:
        arr = arr.regroup()
    orig = np.asarray(arr.array, np.int64)
    chunks, off = [], 0
    for mul, ir in arr.irreps:
        runs = []
        for u in range(mul):
            start = int(orig[off + u * ir.dim])
            if runs and runs[-1][0] + (u - runs[-1][2]) * ir.dim == start:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1, runs[-1][2])
            else:
                runs.append((start, 1, u))
        chunks.append((mul, ir, runs))
        off += mul * ir.dim
    return chunks


@functools.lru_cache(maxsize=256)
def tensor_product_plan(irreps1: e3nn.Irreps, irreps2: e3nn.Irreps, filter_ir_out, normalization: str,
                        regroup_output: bool, with_weights: bool):
    """(PathList, output irreps) reproducing e3nn_jax.tensor_product's output layout."""
    if normalization not in ("component", "norm", "none"):
        raise ValueError(f"irrep_normalization={normalization!r} not supported "
                         "(use 'component', 'norm' or 'none')")
    for name, irreps in (("input1", irreps1), ("input2", irreps2)):
        if any(ir.l > 3 for _, ir in irreps):
            raise ValueError(f"tensor_product: {name} has l > 3 ({irreps}); kernels cover l <= 3")
    c1, c2 = _runs(irreps1, regroup_output), _runs(irreps2, regroup_output)
    outs = []  # (chunk1, chunk2, ir_out) in e3nn's visiting order
    for a, (m1, ir1, _) in enumerate(c1):
        for b, (m2, ir2, _) in enumerate(c2):
            for ir_out in ir1 * ir2:
                if filter_ir_out is None or ir_out in filter_ir_out:
                    outs.append((a, b, ir_out))
    unsorted = e3nn.Irreps([(c1[a][0] * c2[b][0], ir) for a, b, ir in outs])
    # where each unsorted chunk lands after e3nn's sort (and regroup, which moves no data)
    starts = np.concatenate([[0], np.cumsum([m * ir.dim for m, ir in unsorted])])[:-1]
    moved = e3nn.IrrepsArray(unsorted, np.arange(unsorted.dim, dtype=np.float64)).sort()
    final = np.asarray(moved.array, np.int64)
    landing = np.empty_like(final)
    landing[final] = np.arange(final.size)
    irreps_out = moved.irreps.regroup() if regroup_output else moved.irreps
    o_offs = [int(landing[s]) for s in starts] if unsorted.dim else []
    order = np.argsort(o_offs, kind="stable")
    w_base, acc = [0] * len(outs), 0
    for c in order:
        w_base[c] = acc
        acc += unsorted[c].mul
    rows, scales = [], []
    for c, (a, b, ir3) in enumerate(outs):
        (_, ir1, runs1), (m2, ir2, runs2) = c1[a], c2[b]
        d1, d2, d3 = ir1.dim, ir2.dim, ir3.dim
        scale = {"component": 1.0, "norm": np.sqrt(d1 * d2 / d3), "none": 1.0 / np.sqrt(d3)}[normalization]
        for x_off, mul_a, u0 in runs1:
            for y_off, mul_b, v0 in runs2:
                for v in range(mul_b):
                    ch = u0 * m2 + v0 + v  # output channel of (u0, v0 + v)
                    rows.append(_paths.path_row(
                        ir1.l, ir2.l, ir3.l, mul_a, x_off, d1, y_off + v * d2, o_offs[c] + ch * d3,
                        m2 * d3, (w_base[c] + ch) if with_weights else -1, m2 if with_weights else 0))
                    scales.append(float(scale))
    paths = _paths.PathList(tuple(rows), tuple(scales), irreps1.dim, irreps2.dim,
                            irreps_out.num_irreps if with_weights else 0, irreps_out.dim)
    return paths, irreps_out


def _filter(filter_ir_out):
    if filter_ir_out is None:
        return None
    if isinstance(filter_ir_out, str):
        filter_ir_out = e3nn.Irreps(filter_ir_out)
    if isinstance(filter_ir_out, e3nn.Irrep):
        filter_ir_out = [filter_ir_out]
    return tuple(sorted({ir if isinstance(ir, e3nn.Irrep) else
                         (ir.ir if isinstance(ir, e3nn.MulIrrep) else e3nn.Irrep(ir))
                         for ir in filter_ir_out}, key=lambda ir: (ir.l, ir.p)))


def tensor_product(input1: e3nn.IrrepsArray, input2: e3nn.IrrepsArray, *, filter_ir_out=None,
                   irrep_normalization: str = None, regroup_output: bool = True, weights=None):
    """Drop-in for ``e3nn_jax.tensor_product`` (inputs with l <= 3), in one kernel.

    With ``weights [..., out.irreps.num_irreps]`` it returns
    ``e3nn_jax.tensor_product(...) * weights`` (the channel-wise product with per-row weights),
    still in one kernel. Weight columns follow the output irreps in e3nn's order.
    """
    if irrep_normalization is None:
        irrep_normalization = e3nn.config("irrep_normalization")
    if not isinstance(input1, e3nn.IrrepsArray) or not isinstance(input2, e3nn.IrrepsArray):
        raise TypeError("tensor_product: input1 and input2 must be e3nn_jax.IrrepsArray")
    paths, irreps_out = tensor_product_plan(input1.irreps, input2.irreps, _filter(filter_ir_out),
                                            irrep_normalization, regroup_output, weights is not None)
    named = [("input1", input1.array), ("input2", input2.array)]
    if weights is not None:
        named.append(("weights", weights))
    arrays = _checks.promote(*named)
    if weights is not None:
        _checks.last_axis("weights", arrays[2], irreps_out.num_irreps)
    lead, flat = _checks.broadcast_rows(*[(a, 1) for a in arrays])
    n = flat[0].shape[0]
    out = uvu("o", paths, n, n, n, x=flat[0], y=flat[1], w=flat[2] if weights is not None else None)
    return e3nn.IrrepsArray(irreps_out, out.reshape(lead + (irreps_out.dim,)))


# ---------------------------------------------------------------- message passing
def message_passing(node_feats: e3nn.IrrepsArray, edge_vectors, edge_weights, senders, receivers,
                    num_nodes: int, *, filter_ir_out=None, L_max: int = 3, graph: Graph = None):
    """The MACE/NequIP convolution: gather, spherical harmonics, weighted product, scatter-sum.

    Equals, for in-range indices::

        Y = e3nn.spherical_harmonics(list(range(L_max + 1)), IrrepsArray("1o", edge_vectors), True)
        m = e3nn.tensor_product(node_feats[senders], Y, filter_ir_out=filter_ir_out) * edge_weights
        e3nn.scatter_sum(m, dst=receivers, output_size=num_nodes)

    An index outside [0, num_nodes) marks an edge that does not exist: it adds nothing to the
    output or to any gradient. Pass ``graph=Graph.build(senders, receivers, num_nodes)`` to
    reuse the sorted orders across layers (``senders``/``receivers`` are then ignored and may
    be None).
    """
    if not isinstance(node_feats, e3nn.IrrepsArray):
        raise TypeError("message_passing: node_feats must be an e3nn_jax.IrrepsArray")
    L = _checks.static_int("L_max", L_max, 0, 3)
    if node_feats.ndim != 2:
        raise ValueError(f"message_passing: node_feats must be [N, irreps], got shape {node_feats.shape}")
    if graph is None:
        graph = Graph.build(senders, receivers, num_nodes)
    elif graph.num_nodes != num_nodes:
        raise ValueError(f"message_passing: graph has {graph.num_nodes} nodes, num_nodes={num_nodes}")
    x, v, w = _checks.promote(("node_feats", node_feats.array), ("edge_vectors", edge_vectors),
                              ("edge_weights", edge_weights))
    E = graph.num_edges
    if v.shape != (E, 3):
        raise ValueError(f"message_passing: edge_vectors must be [{E}, 3], got shape {v.shape}")
    y_irreps = e3nn.Irreps([(1, (l, (-1) ** l)) for l in range(L + 1)])
    paths, irreps_out = tensor_product_plan(node_feats.irreps, y_irreps, _filter(filter_ir_out),
                                            "component", True, True)
    if w.shape != (E, irreps_out.num_irreps):
        raise ValueError(f"message_passing: edge_weights must be [{E}, {irreps_out.num_irreps}] "
                         f"(one column per irrep of {irreps_out}), got shape {w.shape}")
    plan = conv_plan(paths)
    if plan is not None:  # the fused kernels: harmonics in registers, receiver-owned sums
        out = conv(x, v, w, graph.conv_index(), plan, x.shape[0], E, int(num_nodes))
    else:  # a layout the fused kernels do not take: harmonics, then the generic product
        y = sh_p.bind(v, L=L, normalize=True)
        out = uvu("o", paths, x.shape[0], E, int(num_nodes), x=x, y=y, w=w, **graph.index_operands())
    return e3nn.IrrepsArray(irreps_out, out)

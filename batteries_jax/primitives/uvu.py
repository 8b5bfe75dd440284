"""The channel-wise ("uvu") tensor-product family as one primitive.

For a path list P (``batteries_jax._paths.PathList``) the scalar form

    Phi(x, y, w, o) = sum_e sum_paths s w[e] C_ijk x[xi(e)]_ui y[e]_j o[oi(e)]_uk

is linear in each of x, y, w (optional) and o. ``uvu_p`` with ``role=R`` returns dPhi/dR from
the other operands: role "o" is the forward product (a scatter-sum into o's rows when o_idx is
given), roles "x", "y", "w" are its transposes. Hence:

* JVP of role R: sum over the other data operands D of the same role with D replaced by its
  tangent (zero tangents are skipped);
* transpose of role R with respect to operand D: role D, with R's slot filled by the cotangent.

Row maps: x_idx (gather x rows per edge) and o_idx (gather/scatter o rows per edge); an index
outside [0, rows) means the edge does not exist. When the output is indexed, the CUDA kernel
needs the edges sorted by that index (``x_perm, x_seg`` / ``o_perm, o_seg``): one warp owns one
output row, which makes scatters deterministic. vmap folds the batch into the rows.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from batteries_jax._paths import PathList
from batteries_jax.primitives._common import (batch_size, fold_rows, make_primitive, move_to_front,
                                             register_ffi_lowering)

DATA = ("x", "y", "w", "o")
INDEX = ("x_idx", "o_idx", "x_perm", "x_seg", "o_perm", "o_seg")
SLOTS = DATA + INDEX
ROLE_CODE = {"o": 0, "x": 1, "y": 2, "w": 3}

uvu_p = make_primitive("bj_uvu")


def sorted_segments(idx, n: int):
    """(perm, seg): edges sorted by idx (stable) and the start of each row 0..n in that order.
    Indices outside [0, n) fall outside every row."""
    perm = jnp.argsort(idx, stable=True).astype(jnp.int32)
    seg = jnp.searchsorted(idx[perm], jnp.arange(n + 1, dtype=idx.dtype), side="left")
    return perm, seg.astype(jnp.int32)


def sanitize_index(idx, n: int):
    """int32 indices with everything outside [0, n) mapped to -1 (an edge that does not exist)."""
    idx = jnp.asarray(idx)
    ok = (idx >= 0) & (idx < n)
    return jnp.where(ok, idx, -1).astype(jnp.int32)


def uvu(role: str, paths: PathList, nx: int, ne: int, no: int, **ops):
    """Bind the primitive with the operands present in ``ops`` (names from SLOTS)."""
    slots = tuple(s for s in SLOTS if ops.get(s) is not None)
    return uvu_p.bind(*[ops[s] for s in slots], role=role, paths=paths, slots=slots,
                      nx=nx, ne=ne, no=no)


def _out_shape(role, paths, nx, ne, no):
    return {"o": (no, paths.o_width), "x": (nx, paths.x_width), "y": (ne, paths.y_width),
            "w": (ne, paths.w_width)}[role]


def _abstract_eval(*args, role, paths, slots, nx, ne, no):
    dtype = next(a.dtype for a, s in zip(args, slots) if s in DATA)
    return jax.core.ShapedArray(_out_shape(role, paths, nx, ne, no), dtype)


uvu_p.def_abstract_eval(_abstract_eval)


def _lower(*args, role, paths, slots, nx, ne, no):
    ops = dict(zip(slots, args))
    dtype = next(ops[s].dtype for s in DATA if s in ops)
    shape = _out_shape(role, paths, nx, ne, no)
    if int(np.prod(shape)) == 0:
        return jnp.zeros(shape, dtype)
    empty_f = jnp.zeros((0,), dtype)
    empty_i = jnp.zeros((0,), jnp.int32)
    data = [ops.get(s, empty_f) for s in DATA]
    scatter = {"o": ("o_idx", "o_perm", "o_seg"), "x": ("x_idx", "x_perm", "x_seg")}.get(role)
    if scatter and scatter[0] in ops:
        if scatter[1] not in ops:
            raise ValueError("uvu: an indexed output needs its sorted order")
        perm, seg = ops[scatter[1]], ops[scatter[2]]
    else:
        perm, seg = empty_i, empty_i
    call = jax.ffi.ffi_call("bj_uvu", jax.ShapeDtypeStruct(shape, dtype))
    return call(*data, jnp.asarray(paths.int_table()), jnp.asarray(paths.scale_table(), dtype),
                ops.get("x_idx", empty_i), ops.get("o_idx", empty_i), perm, seg,
                role=np.int64(ROLE_CODE[role]), x_width=np.int64(paths.x_width),
                y_width=np.int64(paths.y_width), w_width=np.int64(paths.w_width),
                o_width=np.int64(paths.o_width), nx=np.int64(nx), ne=np.int64(ne), no=np.int64(no))


register_ffi_lowering(uvu_p, _lower)


def _inputs_of(role, paths):
    """The data operands role R reads: every operand of Phi but R itself."""
    return [s for s in DATA if s != role and (s != "w" or paths.has_weights)]


def _jvp(primals, tangents, *, role, paths, slots, nx, ne, no):
    params = dict(role=role, paths=paths, slots=slots, nx=nx, ne=ne, no=no)
    out = uvu_p.bind(*primals, **params)
    terms = []
    for i, s in enumerate(slots):
        if s in DATA and type(tangents[i]) is not ad.Zero:
            args = list(primals)
            args[i] = tangents[i]
            terms.append(uvu_p.bind(*args, **params))
    if not terms:
        return out, ad.Zero.from_primal_value(out)
    return out, sum(terms[1:], terms[0])


def _transpose(ct, *args, role, paths, slots, nx, ne, no):
    undefined = [s for a, s in zip(args, slots) if ad.is_undefined_primal(a)]
    if len(undefined) != 1 or undefined[0] not in DATA:
        raise NotImplementedError("uvu: transpose with respect to exactly one data operand")
    target = undefined[0]
    if type(ct) is ad.Zero:
        return [None] * len(args)
    ops = {s: a for a, s in zip(args, slots) if s != target}
    ops[role] = ct
    res = uvu(target, paths, nx, ne, no, **ops)
    return [res if s == target else None for s in slots]


ad.primitive_jvps[uvu_p] = _jvp
ad.primitive_transposes[uvu_p] = _transpose


_FOLD = {"x": "x", "y": "e", "w": "e", "o": "o", "x_idx": "x_idx", "o_idx": "o_idx",
         "x_perm": "perm", "o_perm": "perm", "x_seg": "x_seg", "o_seg": "o_seg"}


def _batch(args, dims, *, role, paths, slots, nx, ne, no):
    """Fold the vmapped axis into the rows (``fold_rows``): one call over B * rows."""
    B = batch_size(args, dims)
    folded = [fold_rows(move_to_front(a, d, B), _FOLD[s], B, nx, ne, no)
              for a, d, s in zip(args, dims, slots)]
    out = uvu_p.bind(*folded, role=role, paths=paths, slots=slots, nx=B * nx, ne=B * ne, no=B * no)
    return out.reshape((B, -1) + out.shape[1:]), 0


batching.primitive_batchers[uvu_p] = _batch

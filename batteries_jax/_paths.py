"""The one source of truth for paths and coefficients (numpy only).

Coefficient values live in ``_tables_data.py`` (generated from e3nn-jax by
``tools/gen_tables.py``); this module turns them into the path lists that the kernels and the
Python rules use. The C++ tables in ``csrc/tables`` are rendered from this module too.

A *path list* describes a channel-wise ("uvu") trilinear contraction over rows e:

    out[o_off + u*o_su + k] += scale * w[w_off + u*w_su] * C_{ijk} x[x_off + u*x_su + i] y[y_off + j]

for u < mul and every nonzero C_{ijk} of the triple (l1, l2, l3). One row of the int table holds
(l1, l2, l3, mul, x_off, x_su, y_off, o_off, o_su, w_off, w_su, triple_id); ``w_off < 0`` means
the path has no weight (factor 1). Offsets are in elements within a row.
"""
from __future__ import annotations

import dataclasses


import numpy as np

from batteries_jax._tables_data import CG as _CG
from batteries_jax._tables_data import SH as _SH

L_MAX = 3  # inputs to every kernel have l <= 3
#: every (l1, l2, l3) with l1, l2 <= 3 and |l1-l2| <= l3 <= l1+l2 (44 triples), table order
TRIPLES: tuple = tuple(sorted(_CG))
TRIPLE_ID = {t: i for i, t in enumerate(TRIPLES)}
#: (l1, l2, l3) -> [(i, j, k, C)] with e3nn's "component" normalisation
CG_NONZEROS = {t: list(_CG[t]) for t in TRIPLES}
#: SH_MONOMIALS[k] = [((a, b, c), coef)]: Y_k = sum coef x^a y^b z^c (e3nn, component)
SH_MONOMIALS = [list(terms) for terms in _SH]

#: the seed's 34 paths: l1, l2 <= 3, |l1-l2| <= l_out <= min(l1+l2, 3), lexicographic order
SEED_PATHS: tuple = tuple(t for t in TRIPLES if t[2] <= L_MAX)
assert len(SEED_PATHS) == 34

DESC_COLUMNS = ("l1", "l2", "l3", "mul", "x_off", "x_su", "y_off", "o_off", "o_su", "w_off",
                "w_su", "triple")


def cg_dense(l1: int, l2: int, l3: int) -> np.ndarray:
    """C_p as a dense float64 array [2l1+1, 2l2+1, 2l3+1] (component normalisation)."""
    c = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for i, j, k, v in CG_NONZEROS[(l1, l2, l3)]:
        c[i, j, k] = v
    return c


@dataclasses.dataclass(frozen=True)
class PathList:
    """A static, hashable description of a uvu contraction (see the module docstring).

    ``rows`` is a tuple of int tuples (DESC_COLUMNS), ``scales`` one float per path; the widths
    are the row lengths of x, y, w (0 when there are no weights) and out.
    """
    rows: tuple
    scales: tuple
    x_width: int
    y_width: int
    w_width: int
    o_width: int

    @property
    def has_weights(self) -> bool:
        return self.w_width > 0

    def int_table(self) -> np.ndarray:
        return np.asarray(self.rows, np.int32).reshape(-1, len(DESC_COLUMNS))

    def scale_table(self) -> np.ndarray:
        return np.asarray(self.scales, np.float64)


def path_row(l1, l2, l3, mul, x_off, x_su, y_off, o_off, o_su, w_off=-1, w_su=0):
    """One int row of a path list (columns DESC_COLUMNS)."""
    return (l1, l2, l3, mul, x_off, x_su, y_off, o_off, o_su, w_off, w_su, TRIPLE_ID[(l1, l2, l3)])


def simple_paths() -> PathList:
    """tensor_product_simple: x[16] (x) y[16] -> out[16], the 34 seed paths summed by l_out."""
    rows = [path_row(l1, l2, l3, 1, l1 * l1, 0, l2 * l2, l3 * l3, 0) for l1, l2, l3 in SEED_PATHS]
    return PathList(tuple(rows), (1.0,) * len(rows), 16, 16, 0, 16)


def seed_path_info() -> np.ndarray:
    return np.asarray(SEED_PATHS, np.int32)



__all__ = ["TRIPLES", "SEED_PATHS", "CG_NONZEROS", "SH_MONOMIALS", "PathList", "cg_dense",
           "simple_paths", "path_row", "seed_path_info"]


"""The run table of the fused convolution kernels, derived from a uvu path list.

The convolution's product is ``x[sender] (x) Y(edge vector)`` with per-edge weights, where Y
holds one irrep per l2 (the harmonics 0..L). The kernels group the paths by the block of x
channels they read (a *run*: ``mul`` channels with one l1 at ``x_off + u*x_su``) and hold all
of a run's outputs in registers, so a run's paths are stored by slot ``l2 * 7 + l3``
(``csrc/kernels/conv.h``). A path list the kernels cannot take (outputs or weight columns
written by two paths, Y not laid out as the harmonics) gives ``None``, and the caller keeps
the generic uvu route.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import numpy as np

from batteries_jax._paths import DESC_COLUMNS, PathList

L3_SLOTS = 7
SLOTS = 4 * L3_SLOTS
RUN_HEAD = ("l1", "x_off", "mul", "x_su", "mask")
RUN_COLS = len(RUN_HEAD) + 4 * SLOTS  # + (o_off, o_su, w_off, w_su) per slot
CHANNEL_BLOCK = 32  # channels per CUDA warp


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    """Static description of one convolution: the run table and what the kernels need to know."""
    paths: PathList  # the same product as a uvu path list (the differentiable reference)
    L: int           # harmonics 0..L (y width (L+1)^2)
    run_rows: tuple  # RUN_COLS ints per run
    run_scales: tuple  # SLOTS floats per run
    blocks: int      # 32-channel blocks over all runs
    l3max: int       # largest l_out of any path
    zero_out: bool   # the paths leave some output column unwritten
    zero_x: bool     # ... some x column without a path (its gradient is zero)
    zero_w: bool     # ... some weight column unused

    def run_table(self) -> np.ndarray:
        return np.asarray(self.run_rows, np.int32).reshape(-1, RUN_COLS)

    def scale_table(self) -> np.ndarray:
        return np.asarray(self.run_scales, np.float64).reshape(-1, SLOTS)


def _cover(width: int, cells) -> Optional[np.ndarray]:
    """How often each column is touched, or None if some column is touched twice."""
    count = np.zeros(width, np.int64)
    for c in cells:
        np.add.at(count, c, 1)
    return None if (count > 1).any() else count


@functools.lru_cache(maxsize=256)
def conv_plan(paths: PathList) -> Optional[ConvPlan]:
    """The run table for ``paths`` (a product with Y = harmonics 0..L), or None if unsupported."""
    if not paths.has_weights or not paths.rows:
        return None
    L = int(round(np.sqrt(paths.y_width))) - 1
    if (L + 1) ** 2 != paths.y_width or L > 3:
        return None
    col = {name: i for i, name in enumerate(DESC_COLUMNS)}
    runs: dict = {}
    o_cells, w_cells, x_cells = [], [], []
    for row, scale in zip(paths.rows, paths.scales):
        r = {name: row[i] for name, i in col.items()}
        l1, l2, l3, mul = r["l1"], r["l2"], r["l3"], r["mul"]
        if r["y_off"] != l2 * l2 or r["w_off"] < 0 or mul <= 0:
            return None
        key = (l1, r["x_off"], mul, r["x_su"])
        slots = runs.setdefault(key, {})
        slot = l2 * L3_SLOTS + l3
        if slot in slots:
            return None
        slots[slot] = ((r["o_off"], r["o_su"], r["w_off"], r["w_su"]), scale)
        u = np.arange(mul)[:, None]
        o_cells.append((r["o_off"] + u * r["o_su"] + np.arange(2 * l3 + 1)).ravel())
        w_cells.append(r["w_off"] + u[:, 0] * r["w_su"])
    for l1, x_off, mul, x_su in runs:
        x_cells.append((x_off + np.arange(mul)[:, None] * x_su + np.arange(2 * l1 + 1)).ravel())
    cover = [_cover(paths.o_width, o_cells), _cover(paths.w_width, w_cells),
             _cover(paths.x_width, x_cells)]
    if any(c is None for c in cover):
        return None
    rows, scales = [], []
    # Heaviest runs first: the kernels number their warps block-major in run order, so the
    # last wave holds the lightest runs' warps and the tail is short. A run's cost per edge and
    # channel is its products' size, sum over its paths of (2 l1 + 1)(2 l3 + 1).
    def cost(item):
        (l1, _, mul, _), slots = item
        return -mul * sum((2 * l1 + 1) * (2 * (s % L3_SLOTS) + 1) for s in slots)

    for key, slots in sorted(runs.items(), key=cost):
        mask = sum(1 << s for s in slots)
        table = [(0, 0, 0, 0)] * SLOTS  # absent (mask bit clear): offsets 0 stay in bounds
        scale = [0.0] * SLOTS
        for s, (offsets, sc) in slots.items():
            table[s], scale[s] = offsets, sc
        rows.append(tuple(key) + (mask,) + tuple(v for t in table for v in t))
        scales.append(tuple(scale))
    blocks = sum(-(-key[2] // CHANNEL_BLOCK) for key in runs)
    l3max = max(row[col["l3"]] for row in paths.rows)
    return ConvPlan(paths, L, tuple(rows), tuple(scales), blocks, l3max,
                    zero_out=bool((cover[0] == 0).any()), zero_w=bool((cover[1] == 0).any()),
                    zero_x=bool((cover[2] == 0).any()))

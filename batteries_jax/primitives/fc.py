"""The fully connected product (the seed's ``tensor_product`` with shared weights) as a
multilinear family (``_multilinear.MultilinearFamily``: forward, jointly linear tangent, fused
first-order backward, closed under JVP and transposition):

    out[n, w, k] = sum_p sum_u sum_ij C_p[i, j, k] x[n, u, i] y[n, j] W[g(n), p, u, w]

x ``[n, C_in, 16]``, y ``[n, 16]``, W ``[groups, 34, C_in, C_out]`` (rows in ``groups`` equal
blocks, each with its own weights: one group unless the weights are vmapped, which folds the
batch into the groups), out ``[n, C_out, 16]``. The forward kernel reads x in this layout and,
for small grids, writes out in it too (``_public_out``); otherwise it writes out component-major
``[n, 16, C_out]``, as the backward kernels read and write every channel-carrying operand
(channels contiguous), and XLA transposes around those calls.

Static parameter ``tf32_passes`` (default 0): 3 or 1 run the CUDA kernels' float32 products on
the tensor cores in 3xTF32 or TF32 (``tensor_product``'s ``precision="tf32x3"`` or ``"tf32"``);
float64 and the CPU handler ignore it.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from batteries_jax import _ffi
from batteries_jax.primitives._multilinear import MultilinearFamily

# w_bar sums each group's rows in slabs (one CTA per path and slab), then adds the slabs in a
# fixed order. This sizes the slab scratch: room for a slab per MIN_ROWS_PER_SLAB rows, at most
# MAX_SLABS. The CUDA handler uses as many of them as fill the GPU (fc_cuda.cu, w_slabs_used).
MIN_ROWS_PER_SLAB = 32
MAX_SLABS = 64


def _dims(x, w):
    """(n, C_in, C_out, groups) of a call."""
    return x.shape[0], x.shape[1], w.shape[3], w.shape[0]


def _attrs(x, w):
    _, c_in, c_out, groups = _dims(x, w)
    return dict(c_in=np.int64(c_in), c_out=np.int64(c_out), groups=np.int64(groups))


def _out_shape(x, y, w):
    n, _, c_out, _ = _dims(x, w)
    return (n, c_out, 16)


# A forward tile holds TILE_PAIRS (row, component) pairs of one l_out, so 128 // (2 l + 1) rows
# (fc_cuda.cu: kBM, Tile<L3>::R). Under SMALL_GRID tiles x channel blocks (about two CTAs per SM
# on a 132-SM card) the forward kernel writes the public layout itself; see fc_cuda.cu at
# fc_fwd_kernel for the measurements.
TILE_PAIRS = 128
SMALL_GRID = 256


def _public_out(n, c_out, groups):
    if c_out % 4:  # the component-major kernel (BN = 64) takes C_out % 4 == 0 only (fc_forward.cuh)
        return True
    rows = n // groups
    tiles = groups * sum(-(-rows // (TILE_PAIRS // (2 * l + 1))) for l in range(4))
    return tiles * -(-c_out // 64) < SMALL_GRID


def _lower(x, y, w, *, tf32_passes=0):
    n, c_in, c_out, groups = _dims(x, w)
    if n * c_in * c_out == 0:
        return jnp.zeros((n, c_out, 16), x.dtype)
    public = _public_out(n, c_out, groups)
    call = jax.ffi.ffi_call("bj_fc", jax.ShapeDtypeStruct((n, c_out, 16) if public else (n, 16, c_out), x.dtype))
    out = call(x, y, w, **_attrs(x, w), public_out=np.int64(public),
               tf32_passes=np.int64(tf32_passes))
    return out if public else jnp.swapaxes(out, 1, 2)


def _slabs(rows_per_group: int) -> int:
    return int(max(1, min(MAX_SLABS, -(-rows_per_group // MIN_ROWS_PER_SLAB))))


def _lower_bwd(x, y, w, ct, *, need, platform, tf32_passes=0):
    n, c_in, c_out, groups = _dims(x, w)
    shapes = (x.shape, y.shape, w.shape)
    dt = ct.dtype
    if n * c_in * c_out == 0:
        return [jnp.zeros(s, dt) for s, flag in zip(shapes, need) if flag]
    x_read, w_read = need[1] or need[2], need[0] or need[1]
    slabs = _slabs(n // groups)
    empty = jnp.zeros((0,), dt)
    kernel_shapes = ((n, 16, c_in), y.shape, w.shape)  # x_bar comes back as [n, 16, C_in]
    results = [jax.ShapeDtypeStruct(s if flag else (0,), dt) for s, flag in zip(kernel_shapes, need)]
    # the CUDA handler's workspace (kernels/fc.h, fc_scratch_size: w_bar's slab partials, then the
    # x_bar and y_bar partials of the l3 = 2, 1, 0 tiles); the CPU handler takes none
    scratch = 0 if platform == "cpu" else _ffi.ext().fc_scratch_size(n, c_in, c_out, groups, slabs, *need)
    results.append(jax.ShapeDtypeStruct((scratch,), dt))
    outs = jax.ffi.ffi_call("bj_fc_bwd", results)(
        jnp.swapaxes(x, 1, 2) if x_read else empty, y, w if w_read else empty, jnp.swapaxes(ct, 1, 2),
        **_attrs(x, w), slabs=np.int64(slabs), tf32_passes=np.int64(tf32_passes))
    outs = [jnp.swapaxes(outs[0], 1, 2) if need[0] else None] + list(outs[1:3])
    return [o for o, flag in zip(outs, need) if flag]


FC = MultilinearFamily("fc", 3, _out_shape, _lower, _lower_bwd, bwd_by_platform=True)
fc_p, fc_tan_p, fc_bwd_p = FC.fwd, FC.tan, FC.bwd

"""Run every CUDA kernel once on small inputs with padding indices, for compute-sanitizer:

    XLA_FLAGS=--xla_gpu_autotune_level=0 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 \
        compute-sanitizer --tool memcheck python3 benchmarks/sanitize_kernels.py [fc]

(On the H200, with XLA's autotuning on and 90% of the memory preallocated, compute-sanitizer
itself segfaulted after XLA warned of a very slow compile; with both settings changed the whole
run took ~20 s and passed. Which of the two matters was not isolated.)

On 2026-11-28 it segfaulted again, every time, right after XLA's "very slow compile" warning
for the conv's grad-of-grad program. So XLA should not compile under the sanitizer at all: with
BJ_SANITIZE_CACHE=DIR the script uses a persistent compilation cache there; run it once without
compute-sanitizer to fill the cache, then under it (ab_run.sh does both), and the sanitized run
only loads the compiled programs and runs the kernels.

With the argument `fc`, only the fully connected product's kernels run (a quicker check); with
`conv`, only the others; `f32` or `f64` keeps one dtype.
"""
import functools
import itertools
import os
import sys

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

import batteries_jax as bj
import batteries_jax.e3nn as bje

jax.config.update("jax_enable_x64", True)
if os.environ.get("BJ_SANITIZE_CACHE"):  # every program, however small or quick to compile
    jax.config.update("jax_compilation_cache_dir", os.environ["BJ_SANITIZE_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
rng = np.random.default_rng(0)


def conv_sh_and_simple_kernels(dtype):
    """Message passing (with padding indices), harmonics, the simple and fused SH-TP products."""
    # a parity filter (runs miss paths), every path with l_out <= 3 (the compile-time path-set
    # variants) and no filter (l_out up to 6)
    # n, e: 8 edges per receiver (n = 50) for every filter, and 33 (n = 12) for the two filters
    # (fp32's dPhi/dY-only backward takes its edge-pair kernel from 24 per receiver on)
    filters = ("0e+1o+2e+3o", "0e+0o+1e+1o+2e+2o+3e+3o")
    cases = [("40x0e+33x1o+8x2e+3x3o", filt, n) for filt in filters for n in (50, 12)]
    for irreps, filt, n in cases + [("2x0e+2x1o+1x2e+1x3o", None, 50)]:
        e = 400
        snd = rng.integers(-2, n + 2, e)
        rcv = rng.integers(-2, n + 2, e)
        x = e3nn.IrrepsArray(irreps, jnp.asarray(rng.normal(size=(n, e3nn.Irreps(irreps).dim)), dtype))
        v = jnp.asarray(rng.normal(size=(e, 3)), dtype).at[0].set(0.0)
        nw = e3nn.tensor_product(e3nn.Irreps(irreps), e3nn.Irreps("0e+1o+2e+3o"), filter_ir_out=filt).num_irreps
        w = jnp.asarray(rng.normal(size=(e, nw)), dtype)
        f = lambda x, v, w: jnp.sum(bje.message_passing(e3nn.IrrepsArray(irreps, x), v, w, snd, rcv, n, filter_ir_out=filt).array ** 2)
        g = jax.jit(jax.grad(f, (0, 1, 2)))(x.array, v, w)
        jax.block_until_ready(g)
        # force training: the tangent-mode backward
        forces = lambda w: jax.grad(lambda v: f(x.array, v, w))(v)
        jax.block_until_ready(jax.jit(jax.grad(lambda w: jnp.sum(forces(w) ** 2)))(w))
    y = bj.spherical_harmonics(v)
    jax.block_until_ready(jax.grad(lambda v: jnp.sum(bj.spherical_harmonics(v) ** 2))(v))
    jax.block_until_ready(bj.tensor_product_simple(y, y))
    jax.block_until_ready(jax.grad(lambda a, b: jnp.sum(bj.tensor_product_simple(a, b) ** 2), (0, 1))(y, y))
    src = jnp.asarray(rng.integers(-2, n + 2, e))
    jax.block_until_ready(bj.fused_sh_tp_simple(v, y[:n], src))
    jax.block_until_ready(jax.grad(lambda v, f: jnp.sum(bj.fused_sh_tp_simple(v, f, src) ** 2), (0, 1))(v, y[:n]))


def fc_kernels(dtype):
    """The fully connected product (every float32 engine): partial tiles, several channel chunks, weight groups (vmap);
    channel counts that rule out the vector loads and copies (37, 67), then ones that take them
    (32, 64) with rows enough for several w_bar builds and chunks per slab."""
    precisions = ("highest", "tf32x3", "tf32") if dtype == jnp.float32 else ("highest",)  # TF32: fp32 only
    for (n, c_in, c_out), precision in itertools.product(((43, 37, 67), (1501, 32, 64)), precisions):
        x = jnp.asarray(rng.normal(size=(n, c_in, 16)), dtype)
        yy = jnp.asarray(rng.normal(size=(n, 16)), dtype)
        W = jnp.asarray(rng.normal(size=(2, 34, c_in, c_out)), dtype)
        tp = functools.partial(bj.tensor_product, precision=precision)
        fc = lambda x, y, W: jnp.sum(jax.vmap(tp, (None, None, 0))(x, y, W) ** 2)  # noqa: E731
        jax.block_until_ready(jax.jit(jax.grad(fc, (0, 1, 2)))(x, yy, W))


# arguments narrow the run: "fc" or "conv" (the conv, harmonics and simple-product kernels),
# "f32" or "f64"
ARGS = set(sys.argv[1:])
for name, dtype in (("f32", jnp.float32), ("f64", jnp.float64)):
    if ARGS & {"f32", "f64"} and name not in ARGS:
        continue
    if "fc" not in ARGS:
        conv_sh_and_simple_kernels(dtype)
    if "conv" not in ARGS:
        fc_kernels(dtype)
print("sanitize run done")

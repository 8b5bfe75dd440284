"""The fully connected product at N rows (arguments, each in turn; default 20,000), C_in = 32,
C_out = 64 (fp32, fp32 with precision="tf32x3" and "tf32", then fp64; or only the engines named
among the arguments: fp32, tf32x3, tf32, fp64), forward and forward+backward once each after warm-up, for
Nsight Compute's per-kernel time:

    ncu --kernel-name regex:fc_ --metrics gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,\\
        sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active python3 benchmarks/profile_fc.py > ncu.log
    python3 benchmarks/ncu_kernel_times.py ncu.log   # one line per launch: ms, kernel
"""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

import batteries_jax as bj

jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(0)
# Arguments: row counts, and optionally engine names (fp32, tf32x3, tf32, fp64) to profile only those
# (ncu prints nothing until the script exits, so a short run matters under a timeout).
ENGINES = {"fp32": (jnp.float32, "highest"), "tf32x3": (jnp.float32, "tf32x3"), "tf32": (jnp.float32, "tf32"),
           "fp64": (jnp.float64, "highest")}
picked = [ENGINES[a] for a in sys.argv[1:] if a in ENGINES] or list(ENGINES.values())
for N in [int(a) for a in sys.argv[1:] if a not in ENGINES] or [20_000]:
    for dt, precision in picked:
        x = jnp.asarray(rng.normal(size=(N, 32, 16)), dt)
        y = jnp.asarray(rng.normal(size=(N, 16)), dt)
        W = jnp.asarray(rng.normal(size=(34, 32, 64)), dt)
        ct = jnp.asarray(rng.normal(size=(N, 64, 16)), dt)
        tp = functools.partial(bj.tensor_product, precision=precision)
        fwd = jax.jit(tp)
        bwd = jax.jit(jax.grad(lambda *a: jnp.sum(tp(*a) * ct), (0, 1, 2)))
        jax.block_until_ready(fwd(x, y, W))
        jax.block_until_ready(bwd(x, y, W))
print("profile run done")

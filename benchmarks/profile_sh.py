"""Spherical harmonics forward and forward+backward at E = 1M and 150k edges (fp32), one call
each after warm-up, for Nsight Compute's kernel time and DRAM bytes:

    ncu --kernel-name regex:sh_ --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
        python3 benchmarks/profile_sh.py
"""
import jax
import jax.numpy as jnp
import numpy as np

import batteries_jax as bj

rng = np.random.default_rng(0)
for E in (1_000_000, 150_000):
    v = jnp.asarray(rng.normal(size=(E, 3)), jnp.float32)
    ct = jnp.asarray(rng.normal(size=(E, 16)), jnp.float32)
    fwd = jax.jit(bj.spherical_harmonics)
    bwd = jax.jit(jax.grad(lambda v: jnp.sum(bj.spherical_harmonics(v) * ct)))
    jax.block_until_ready(fwd(v))
    jax.block_until_ready(bwd(v))
print("profile run done")

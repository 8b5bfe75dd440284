"""One forward + backward of the W2 convolution (N=5k, E=150k, C=64, 34 paths, random graph),
for Nsight Compute:

    ncu --kernel-name regex:conv_ --launch-count 4 --section SpeedOfLight --section Occupancy \
        --section LaunchStats --section WarpStateStats python3 benchmarks/profile_conv.py
"""
import sys

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

import batteries_jax as bj
import batteries_jax.e3nn as bje

filt = sys.argv[1] if len(sys.argv) > 1 else "0e+0o+1e+1o+2e+2o+3e+3o"
N, E, C = 5000, 150_000, 64
rng = np.random.default_rng(0)
irreps = e3nn.Irreps(f"{C}x0e+{C}x1o+{C}x2e+{C}x3o")
graph = bj.Graph.build(rng.integers(0, N, E), rng.integers(0, N, E), N)
x = jnp.asarray(rng.normal(size=(N, irreps.dim)), jnp.float32)
v = jnp.asarray(rng.normal(size=(E, 3)), jnp.float32)
nw = e3nn.tensor_product(irreps, e3nn.Irreps("0e+1o+2e+3o"), filter_ir_out=filt).num_irreps
w = jnp.asarray(rng.normal(size=(E, nw)), jnp.float32)


def loss(x, v, w):
    out = bje.message_passing(e3nn.IrrepsArray(irreps, x), v, w, None, None, N, filter_ir_out=filt, graph=graph)
    return jnp.sum(out.array ** 2)


f = jax.jit(jax.grad(loss, (0, 1, 2)))
jax.block_until_ready(f(x, v, w))
print("profile run done")

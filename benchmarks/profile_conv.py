"""One call of the W2 convolution (N=5k, E=150k, C=64, 34 paths; --size W2s: N=1k, E=20k,
C=32) for Nsight Compute: the forward, forward+backward (default) or the force-training double
backward, on the random graph (default) or the realistic one, in float32 (or --f64). Per-kernel
times, as ab_run.sh takes them:

    ncu --kernel-name regex:"conv_|segment" --metrics gpu__time_duration.sum \
        python3 benchmarks/profile_conv.py --graph real --mode dbl

or add --section SpeedOfLight --section Occupancy --section WarpStateStats for the reasons.
Without a GPU it runs a tiny graph (N=60), to check the script.
"""
import argparse

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

import _harness as H
import batteries_jax as bj
import batteries_jax.e3nn as bje

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("filter", nargs="?", default="0e+0o+1e+1o+2e+2o+3e+3o")
ap.add_argument("--graph", choices=["random", "real"], default="random")
ap.add_argument("--mode", choices=["fwd", "bwd", "dbl"], default="bwd")
ap.add_argument("--f64", action="store_true")
ap.add_argument("--size", choices=["W2", "W2s"], default="W2", help="W2s: N=1k, E=20k, C=32")
args = ap.parse_args()
if args.f64:
    jax.config.update("jax_enable_x64", True)
dt = jnp.float64 if args.f64 else jnp.float32

filt = args.filter
N, E, C = ((5000, 150_000, 64) if args.size == "W2" else (1000, 20_000, 32)) if H.ON_GPU else (60, 900, 4)
rng = np.random.default_rng(0)
if args.graph == "real":
    snd, rcv, vec = H.real_graph(N, E / N, 0)
    E = len(snd)
else:
    snd, rcv, vec = rng.integers(0, N, E), rng.integers(0, N, E), rng.normal(size=(E, 3))
irreps = e3nn.Irreps(f"{C}x0e+{C}x1o+{C}x2e+{C}x3o")
graph = bj.Graph.build(snd, rcv, N)
x = jnp.asarray(rng.normal(size=(N, irreps.dim)), dt)
v = jnp.asarray(vec, dt)
nw = e3nn.tensor_product(irreps, e3nn.Irreps("0e+1o+2e+3o"), filter_ir_out=filt).num_irreps
w = jnp.asarray(rng.normal(size=(E, nw)), dt)


def energy(x, v, w):
    out = bje.message_passing(e3nn.IrrepsArray(irreps, x), v, w, None, None, N, filter_ir_out=filt, graph=graph)
    return jnp.sum(out.array ** 2)


if args.mode == "fwd":
    f, a = jax.jit(energy), (x, v, w)
elif args.mode == "bwd":
    f, a = jax.jit(jax.grad(energy, (0, 1, 2))), (x, v, w)
else:  # the force-training step: grad_w |dE/dvectors|^2
    f, a = jax.jit(jax.grad(lambda w: jnp.sum(jax.grad(energy, 1)(x, v, w) ** 2))), (w,)
jax.block_until_ready(f(*a))
print(f"profile run done ({args.graph} graph, {args.mode}, E={E})")

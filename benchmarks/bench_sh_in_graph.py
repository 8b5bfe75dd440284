"""Spherical harmonics per call inside one jitted loop, against the host dispatch floor.

The issue's pipelined figure (calls back to back, one block at the end) includes each call's
host dispatch. This script separates the two at E = 20k, 150k and 1M edges:
  * dispatch floor: the pipelined time of a jitted trivial op on the same array (v * 1.0 + 0);
  * in-graph: K = 200 forward (or forward+backward) evaluations in one jitted fori_loop, each
    depending on the last through a negligible update (so XLA cannot hoist or merge them; the
    forward's [E, 16] output enters the update through a fixed [16, 3] projection, so that
    no component can be pruned),
    minus the same loop with the harmonics replaced by the update alone, divided by K.
Each library is timed the same way in the same process.
"""
import jax
import jax.numpy as jnp

import _harness as H

ap = H.parser(__doc__)
ap.add_argument("--k", type=int, default=200)
args = ap.parse_args()
H.setup(args)
import batteries_jax as bj  # noqa: E402

e3nn, cu = H.peers()
dt = jnp.float64 if args.f64 else jnp.float32
K = args.k


def sh_bj(v):
    return bj.spherical_harmonics(v)


libs = {"bj": sh_bj}
if e3nn is not None:
    libs["e3nn"] = lambda v: e3nn.spherical_harmonics([0, 1, 2, 3], e3nn.IrrepsArray("1o", v), True,
                                                      normalization="component").array
if cu is not None:
    cue, cuex = cu
    libs["cuex"] = lambda v: cuex.spherical_harmonics([0, 1, 2, 3], cuex.RepArray(cue.Irreps("O3", "1o"), v, cue.ir_mul),
                                                      normalize=True).array


def looped(step):
    """K dependent evaluations of step in one jitted loop."""
    def run(v):
        return jax.lax.fori_loop(0, K, lambda i, u: u + 1e-30 * step(u), v)
    return jax.jit(run)


for E in ([2000, 20_000] if args.cpu_size else [20_000, 150_000, 1_000_000]):
    v = jax.random.normal(jax.random.key(E), (E, 3), dt)
    ct = jax.random.normal(jax.random.key(E + 1), (E, 16), dt)
    proj = jax.random.normal(jax.random.key(E + 2), (16, 3), dt)
    H.bench(f"dispatch floor E={E}", "jax", jax.jit(lambda v: v * 1.0 + 0.0), v, reps=args.reps, warmup=args.warmup)
    base = H.bench(f"loop of {K} updates E={E}", "jax", looped(lambda u: u), v, reps=5, warmup=1)
    for name, f in libs.items():
        # every component feeds the next step (a slice would let XLA prune a jnp peer down to
        # the components it keeps); the projection costs the same for every library
        fwd = lambda u, f=f: f(u) @ proj  # noqa: E731
        bwd = lambda u, f=f: jax.grad(lambda w: jnp.sum(f(w) * ct))(u)  # noqa: E731
        for mode, step in (("fwd", fwd), ("fwd+bwd", bwd)):
            row = H.bench(f"loop of {K} SH {mode} E={E}", name, looped(step), v, reps=5, warmup=1)
            if "pipelined_ms" in row and "pipelined_ms" in base:
                per = (row["pipelined_ms"] - base["pipelined_ms"]) / K
                print(f"  -> {name} SH {mode} E={E}: {per * 1e3:.1f} us per call in-graph", flush=True)
H.finish(args)

"""Spherical harmonics l <= 3: batteries_jax vs e3nn-jax vs cuequivariance-jax.

E = 20k, 150k, 1M edges; forward and forward+backward (grad of sum(Y * fixed cotangent)).
Bandwidth is counted from the pipelined time: forward reads 3 and writes 16 values per edge,
forward+backward reads 3 + 16 and writes 3 (the peers may move more).
"""
import jax
import jax.numpy as jnp

import _harness as H

args = H.parser(__doc__).parse_args()
H.setup(args)
import batteries_jax as bj  # noqa: E402

e3nn, cu = H.peers()
dt = jnp.float64 if args.f64 else jnp.float32
isz = 8 if args.f64 else 4
BW = H.copy_bandwidth()  # this card's copy bandwidth (bytes read + written per second)

libs = {"bj": lambda v: bj.spherical_harmonics(v, 3)}
if e3nn is not None:
    libs["e3nn"] = lambda v: e3nn.spherical_harmonics("0e+1o+2e+3o", v, True, normalization="component").array
if cu is not None:
    cue, cuex = cu
    libs["cuex"] = lambda v: cuex.spherical_harmonics(
        [0, 1, 2, 3], cuex.RepArray(cue.Irreps("O3", "1x1o"), v, cue.ir_mul), normalize=True).array

sizes = [200, 5000] if args.cpu_size else [20_000, 150_000, 1_000_000]
for E in sizes:
    k1, k2 = jax.random.split(jax.random.key(E))
    v = jax.random.normal(k1, (E, 3), dt)
    c = jax.random.normal(k2, (E, 16), dt)
    ref = jax.jit(libs["bj"])(v)
    for name, f in libs.items():
        if name != "bj":
            H.check(f"SH E={E} bj vs {name}", ref, jax.jit(f)(v), 1e-5 if not args.f64 else 1e-12)
    for name, f in libs.items():
        fwd = jax.jit(f)
        bwd = jax.jit(jax.grad(lambda v, c, f=f: jnp.sum(f(v) * c)))
        by_f, by_b = E * 19 * isz, E * 22 * isz
        H.bench(f"SH E={E} fwd", name, fwd, v, reps=args.reps, warmup=args.warmup,
                floor_ms=1e3 * by_f / BW, bytes_moved=by_f)
        H.bench(f"SH E={E} fwd+bwd", name, bwd, v, c, reps=args.reps, warmup=args.warmup,
                floor_ms=1e3 * by_b / BW, bytes_moved=by_b)
H.finish(args)

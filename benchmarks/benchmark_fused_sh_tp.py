"""fused_sh_tp_simple (gather + SH + simple product in one call) vs the unfused composition
(spherical_harmonics, gather, tensor_product_simple as three calls), forward and backward."""
import jax
import jax.numpy as jnp

import _harness as H

args = H.parser(__doc__).parse_args()
H.setup(args)
import batteries_jax as bj  # noqa: E402

dt = jnp.float64 if args.f64 else jnp.float32
for N, E in ([(100, 2000)] if args.cpu_size else [(5000, 150_000), (50_000, 1_000_000)]):
    k = jax.random.split(jax.random.key(E), 4)
    v = jax.random.normal(k[0], (E, 3), dt)
    f = jax.random.normal(k[1], (N, 16), dt)
    src = jax.random.randint(k[2], (E,), 0, N)
    c = jax.random.normal(k[3], (E, 16), dt)
    fused = lambda v, f: bj.fused_sh_tp_simple(v, f, src)  # noqa: E731
    unfused = lambda v, f: bj.tensor_product_simple(f[src], bj.spherical_harmonics(v))  # noqa: E731
    H.check(f"fused vs unfused E={E}", jax.jit(fused)(v, f), jax.jit(unfused)(v, f), 1e-5 if not args.f64 else 1e-12)
    for name, fn in (("fused", fused), ("unfused", unfused)):
        H.bench(f"SH+TP E={E} fwd", name, jax.jit(fn), v, f, reps=args.reps, warmup=args.warmup)
        H.bench(f"SH+TP E={E} fwd+bwd", name,
                jax.jit(jax.grad(lambda v, f, fn=fn: jnp.sum(fn(v, f) * c), (0, 1))), v, f,
                reps=args.reps, warmup=args.warmup)
H.finish(args)

"""Tensor products: the seed's fully connected product and the channel-wise product.

FC: x [N, 32, 16], y [N, 16], W [34, 32, 64], N = 1k and 20k, forward and forward+backward,
against e3nn-jax (legacy FunctionalFullyConnectedTensorProduct) and cuequivariance-jax
(weightless uniform_1d product then per-l_out einsum, its fastest route in ../shared/anchors).
The harness sets jax_default_matmul_precision to "highest", so the peers' channel contractions
(XLA dots) run in full float32, as batteries_jax does, not on TF32. An ACCURACY line per
cuequivariance-jax route checks it: its forward's largest difference from batteries_jax,
relative to max |out| (e3nn-jax's legacy product applies its own path normalisation, so it is
timed but not compared).
bj-tf32x3 and bj-tf32 are batteries_jax with precision="tf32x3" and "tf32" (fp32 only); their
ACCURACY lines are against batteries_jax's default (FMA) forward. For scale, an ACCURACY line
also gives the error of a float32 jnp.dot at JAX's DEFAULT precision (what JAX uses without the
harness's "highest") against HIGHEST, on the same card.
Channel-wise: 64x0e+64x1o+64x2e+64x3o (x) 0e+1o+2e+3o, 34 paths, per-row weights, 150k rows.
"""
import jax
import jax.numpy as jnp
import numpy as np

import _harness as H

ap = H.parser(__doc__)
ap.add_argument("--fc-only", action="store_true", help="only the fully connected product")
ap.add_argument("--libs", default="bj,e3nn,cuex,bj-tf32x3,bj-tf32",
                help="libraries to time in the FC part (A/B runs: bj); bj-tf32x3 and bj-tf32 are "
                     "batteries_jax with precision='tf32x3' and 'tf32' (float32 only)")
args = ap.parse_args()
H.setup(args)
import batteries_jax as bj  # noqa: E402
import batteries_jax.e3nn as bje  # noqa: E402

e3nn, cu = H.peers()
dt = jnp.float64 if args.f64 else jnp.float32
info = bj.get_tp_path_info()
by_l = {l: [p for p in range(34) if info[p, 2] == l] for l in range(4)}


def seed_to_blocks(a, ir_mul):  # [N, C, 16] -> [N, C*16], per-l blocks in mul_ir or ir_mul order
    blk = [a[:, :, l * l:(l + 1) ** 2] for l in range(4)]
    return jnp.concatenate([(b.transpose(0, 2, 1) if ir_mul else b).reshape(a.shape[0], -1) for b in blk], -1)


def blocks_to_seed(a, c, ir_mul):  # the inverse of seed_to_blocks, for C = c channels
    outs, i = [], 0
    for l in range(4):
        d = 2 * l + 1
        blk = a[:, i:i + c * d]
        i += c * d
        outs.append(blk.reshape(-1, d, c).transpose(0, 2, 1) if ir_mul else blk.reshape(-1, c, d))
    return jnp.concatenate(outs, -1)


def modes(f):
    fwd = jax.jit(f)
    bwd = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a[:-1]) * a[-1]), argnums=(0, 1, 2)))
    return fwd, bwd


if not args.f64:  # what JAX's own float32 matmuls give at DEFAULT precision on this card
    a, b = (jax.random.normal(jax.random.key(i), (2048, 2048), jnp.float32) for i in (1, 2))
    dot = jax.jit(lambda a, b, p: jnp.dot(a, b, precision=p), static_argnums=2)
    err = H.relerr(dot(a, b, jax.lax.Precision.DEFAULT), dot(a, b, jax.lax.Precision.HIGHEST))
    print(f"ACCURACY jnp.dot float32 2048^2 at Precision.DEFAULT differs from HIGHEST by {err:.1e} of max |out|",
          flush=True)

for N in ([50, 300] if args.cpu_size else [1000, 20_000]):
    k = jax.random.split(jax.random.key(N), 4)
    x = jax.random.normal(k[0], (N, 32, 16), dt)
    y = jax.random.normal(k[1], (N, 16), dt)
    W = jax.random.normal(k[2], (34, 32, 64), dt)
    cot = jax.random.normal(k[3], (N, 64, 16), dt)
    libs = {"bj": (lambda x, y, W: bj.tensor_product(x, y, W), (x, y, W), cot, lambda o: o)}
    if not args.f64:  # the opt-in tensor-core engine (float32 only; float64 runs DMMA by default)
        for p in ("tf32x3", "tf32"):
            libs[f"bj-{p}"] = (lambda x, y, W, p=p: bj.tensor_product(x, y, W, precision=p), (x, y, W), cot, lambda o: o)
    if e3nn is not None:
        import e3nn_jax.legacy  # noqa: F401
        irx, iry, iro = "32x0e+32x1e+32x2e+32x3e", "0e+1e+2e+3e", "64x0e+64x1e+64x2e+64x3e"
        tp = e3nn.legacy.FunctionalFullyConnectedTensorProduct(irx, iry, iro)

        def e3nn_fc(xm, y, W):
            return jax.vmap(tp.left_right, (None, 0, 0))([W[p].reshape(32, 1, 64) for p in range(34)],
                                                         e3nn.IrrepsArray(irx, xm), e3nn.IrrepsArray(iry, y)).array
        libs["e3nn"] = (e3nn_fc, (seed_to_blocks(x, False), y, W), seed_to_blocks(cot, False), lambda o: blocks_to_seed(o, 64, False))
    if cu is not None:
        cue, cuex = cu
        ft = cue.descriptors.full_tensor_product(cue.Irreps("O3", "32x0e+32x1e+32x2e+32x3e"),
                                                 cue.Irreps("O3", "0e+1e+2e+3e"), [cue.O3(l, 1) for l in range(4)])
        poly = ft.squeeze_modes().flatten_coefficient_modes().polynomial
        method = "uniform_1d" if H.ON_GPU else "naive"

        def cuex_fc(xc, y, W):  # xc: ir_mul layout; returns ir_mul layout
            [t] = cuex.segmented_polynomial(poly, [xc, y], [jax.ShapeDtypeStruct((xc.shape[0], poly.outputs[0].size), xc.dtype)],
                                            method=method)
            outs, i = [], 0
            for l in range(4):
                P, d = len(by_l[l]), 2 * l + 1
                tl = t[:, i:i + P * d * 32].reshape(-1, P, d, 32)
                i += P * d * 32
                outs.append(jnp.einsum("npiu,puw->niw", tl, W[np.asarray(by_l[l])]).reshape(-1, d * 64))
            return jnp.concatenate(outs, -1)
        xc, cc = seed_to_blocks(x, True), seed_to_blocks(cot, True)
        from_ir_mul = lambda o: blocks_to_seed(o, 64, True)  # noqa: E731
        libs["cuex"] = (cuex_fc, (xc, y, W), cc, from_ir_mul)
    ref = None
    for name, (f, a, c, to_seed) in libs.items():
        if name not in args.libs.split(","):
            continue
        fwd, bwd = modes(f)
        out = to_seed(fwd(*a))
        if name == "bj":
            ref = out
        elif ref is not None and name != "e3nn":  # (e3nn's legacy FC normalises its paths itself)
            print(f"ACCURACY FC N={N} {name}: forward differs from bj by {H.relerr(out, ref):.1e} of max |out|", flush=True)
        H.bench(f"FC N={N} fwd", name, fwd, *a, reps=args.reps, warmup=args.warmup)
        H.bench(f"FC N={N} fwd+bwd", name, bwd, *a, c, reps=args.reps, warmup=args.warmup)

if args.fc_only:
    H.finish(args)
    raise SystemExit(0)
# channel-wise, per-row weights
E = 2000 if args.cpu_size else 150_000
C = 8 if args.cpu_size else 64
irx = f"{C}x0e+{C}x1o+{C}x2e+{C}x3o"
filt = "0e+0o+1e+1o+2e+2o+3e+3o"
k = jax.random.split(jax.random.key(7), 4)
xa = e3nn.IrrepsArray(irx, jax.random.normal(k[0], (E, 16 * C), dt)) if e3nn else None
ya = e3nn.IrrepsArray("0e+1o+2e+3o", jax.random.normal(k[1], (E, 16), dt)) if e3nn else None
if e3nn is not None:
    irreps_out = e3nn.tensor_product(xa.irreps, ya.irreps, filter_ir_out=filt)
    w = jax.random.normal(k[2], (E, irreps_out.num_irreps), dt)
    f_bj = lambda x, y, w: bje.tensor_product(e3nn.IrrepsArray(irx, x), e3nn.IrrepsArray("0e+1o+2e+3o", y), filter_ir_out=filt, weights=w).array  # noqa: E731
    f_e3 = lambda x, y, w: (e3nn.tensor_product(e3nn.IrrepsArray(irx, x), e3nn.IrrepsArray("0e+1o+2e+3o", y), filter_ir_out=filt) * w).array  # noqa: E731
    H.check("uvu bj vs e3nn", jax.jit(f_bj)(xa.array[:500], ya.array[:500], w[:500]),
            jax.jit(f_e3)(xa.array[:500], ya.array[:500], w[:500]), 1e-5 if not args.f64 else 1e-12)
    cot = jax.random.normal(k[3], (E, irreps_out.dim), dt)
    for name, f in (("bj", f_bj), ("e3nn", f_e3)):
        fwd, bwd = modes(f)
        H.bench(f"uvu E={E} C={C} fwd", name, fwd, xa.array, ya.array, w, reps=args.reps, warmup=args.warmup)
        H.bench(f"uvu E={E} C={C} fwd+bwd", name, bwd, xa.array, ya.array, w, cot, reps=args.reps, warmup=args.warmup)
H.finish(args)

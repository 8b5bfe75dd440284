"""MACE convolution (gather + SH + weighted uvu product + scatter-sum): batteries_jax vs peers.

Cases: W2 (N=5k, E=150k, C=64, 34 paths), W2n (same, MACE filter 0e+1o+2e+3o, 23 paths), W2s
(N=1k, E=20k, C=32); graphs 'random' (random indices) and 'real' (positions in a periodic box,
radius cutoff, atoms in cell order, edges sorted by receiver). Modes: forward, forward+backward
(grads w.r.t. node features, vectors, weights) and the force-training double backward
grad_w |dE/dvectors|^2. batteries_jax gets a prebuilt Graph (as a model would reuse it).

Unless --no-layer, also a whole interaction layer: radial MLP (8 Bessel functions x polynomial
cutoff at 5 -> 64 -> 64 -> one weight per output irrep) -> convolution -> per-irrep linear to C
channels -> energy; modes: energy, forces (grad w.r.t. vectors) and the force-training step
(grad of |forces|^2 w.r.t. the MLP and linear parameters).
"""
import jax
import jax.numpy as jnp
import numpy as np

import _harness as H

ap = H.parser(__doc__)
ap.add_argument("--cases", default="W2s,W2,W2n")
ap.add_argument("--graphs", default="random,real")
ap.add_argument("--libs", default="bj,cuex,e3nn")
ap.add_argument("--no-layer", dest="layer", action="store_false", help="skip the whole interaction layer")
args = ap.parse_args()
H.setup(args)
import batteries_jax as bj  # noqa: E402
import batteries_jax.e3nn as bje  # noqa: E402

e3nn, cu = H.peers()
dt = jnp.float64 if args.f64 else jnp.float32
isz = 8 if args.f64 else 4
BW = H.copy_bandwidth()  # this card's, measured (bytes read + written per second)
ALL = "0e+0o+1e+1o+2e+2o+3e+3o"
NAT = "0e+1o+2e+3o"
CASES = {"W2": (5000, 150_000, 64, ALL), "W2n": (5000, 150_000, 64, NAT), "W2s": (1000, 20_000, 32, ALL)}
if args.cpu_size:
    CASES = {"W2": (100, 1500, 8, ALL), "W2n": (100, 1500, 8, NAT), "W2s": (50, 400, 4, ALL)}


def modes(conv):
    def fwd(x, v, w, cot):
        return conv(x, v, w)

    def bwd(x, v, w, cot):
        return jax.grad(lambda x, v, w: jnp.sum(conv(x, v, w) * cot), argnums=(0, 1, 2))(x, v, w)

    def dbl(x, v, w, cot):
        def loss(w):
            forces = -jax.grad(lambda v: jnp.sum(conv(x, v, w) * cot))(v)
            return jnp.sum(forces ** 2)
        return jax.grad(loss)(w)
    return {"fwd": jax.jit(fwd), "fwd+bwd": jax.jit(bwd), "dbl-bwd": jax.jit(dbl)}


def layer_modes(conv, irreps_out, C, key):
    """Interaction layer around `conv(x, v, w)` whose output is in e3nn layout."""
    blocks = [(mul, ir.dim) for mul, ir in irreps_out]
    k = jax.random.split(key, 4)
    params = dict(
        m1=jax.random.normal(k[0], (8, 64), dt) / np.sqrt(8),
        m2=jax.random.normal(k[1], (64, 64), dt) / 8.0,
        m3=jax.random.normal(k[2], (64, irreps_out.num_irreps), dt) / 8.0,
        lin=[jax.random.normal(jax.random.fold_in(k[3], i), (mul, C), dt) / np.sqrt(mul) for i, (mul, _) in enumerate(blocks)],
    )

    def energy(p, x, v):
        u = jnp.sqrt(jnp.sum(v * v, axis=-1, keepdims=True) + 1e-12) / 5.0  # cutoff 5
        n = jnp.arange(1, 9, dtype=v.dtype)
        basis = jnp.sin(n * jnp.pi * u) / u * jnp.where(u < 1, (1 - u ** 6) ** 2, 0.0)
        h = jax.nn.silu(basis @ p["m1"])
        h = jax.nn.silu(h @ p["m2"])
        out = conv(x, v, h @ p["m3"])
        e, i = 0.0, 0
        for (mul, d), wl in zip(blocks, p["lin"]):
            blk = out[:, i:i + mul * d].reshape(-1, mul, d)
            i += mul * d
            e = e + jnp.sum(jnp.einsum("nud,uc->ncd", blk, wl) ** 2)
        return e

    def forces(p, x, v):
        return -jax.grad(energy, argnums=2)(p, x, v)

    def train(p, x, v):
        return jax.grad(lambda p: jnp.sum(forces(p, x, v) ** 2))(p)
    return params, {"layer-energy": jax.jit(energy), "layer-forces": jax.jit(forces), "layer-train": jax.jit(train)}


def run(tag, N, E, C, filt, graph_kind):
    k = jax.random.split(jax.random.key(E + C), 6)
    if graph_kind == "real":
        s, r, v = H.real_graph(N, E / N, 0)
        snd, rcv, vec = jnp.asarray(s, jnp.int32), jnp.asarray(r, jnp.int32), jnp.asarray(v, dt)
        E = int(snd.shape[0])
    else:
        snd = jax.random.randint(k[0], (E,), 0, N, jnp.int32)
        rcv = jax.random.randint(k[1], (E,), 0, N, jnp.int32)
        vec = jax.random.normal(k[2], (E, 3), dt)
    irx = f"{C}x0e+{C}x1o+{C}x2e+{C}x3o"
    irreps_out = e3nn.tensor_product(e3nn.Irreps(irx), e3nn.Irreps(NAT), filter_ir_out=filt)
    P = irreps_out.num_irreps // C
    x = jax.random.normal(k[3], (N, 16 * C), dt)
    w = jax.random.normal(k[4], (E, irreps_out.num_irreps), dt)
    cot = jax.random.normal(k[5], (N, irreps_out.dim), dt)
    # Memory floors: each array read or written once, and nothing else (indices: 8 bytes per edge).
    # fwd reads x, v, w and writes out. The fwd+bwd mode is the gradient of a loss linear in out,
    # which needs only the backward (XLA drops the unused forward call: the compiled program holds
    # only bj_conv_bwd): it reads x, v, w, the cotangent and writes x_bar, v_bar, w_bar.
    # The double backward reads x, v, w, the cotangent and writes w_bar (dPhi/dY needs w, the
    # tangent pass writes w_bar; everything else is per node or per edge vector).
    x_b, v_b, w_b, o_b = N * 16 * C, E * 3, E * P * C, N * irreps_out.dim
    floors = {m: 1e3 * (isz * n + 8 * E) / BW for m, n in (
        ("fwd", x_b + v_b + w_b + o_b),
        ("fwd+bwd", 2 * x_b + 2 * v_b + 2 * w_b + o_b),
        ("dbl-bwd", x_b + v_b + 2 * w_b + o_b))}
    print(f"{tag} [{graph_kind}] N={N} E={E} C={C} paths={P} out={irreps_out} memory floors (ms) "
          + ", ".join(f"{m} {f:.3f}" for m, f in floors.items()), flush=True)
    graph = bj.Graph.build(snd, rcv, N)
    filt_list = [e3nn.Irrep(i) for i in filt.split("+")]

    def conv_bj(x, v, w):
        return bje.message_passing(e3nn.IrrepsArray(irx, x), v, w, None, None, N, filter_ir_out=filt, graph=graph).array

    def conv_e3nn(x, v, w):
        Y = e3nn.spherical_harmonics(NAT, v, True, normalization="component")
        m = e3nn.tensor_product(e3nn.IrrepsArray(irx, x)[snd], Y, filter_ir_out=filt_list) * w
        return e3nn.scatter_sum(m, dst=rcv, output_size=N).array

    libs = {"bj": (conv_bj, lambda a: a, lambda a: a), "e3nn": (conv_e3nn, lambda a: a, lambda a: a)}
    if cu is not None:
        cue, cuex = cu
        desc = cue.descriptors.channelwise_tensor_product(
            cue.Irreps("O3", irx), cue.Irreps("O3", NAT), [cue.O3(int(i[0]), 1 if i[1] == "e" else -1) for i in filt.split("+")])
        poly = desc.squeeze_modes().flatten_coefficient_modes().polynomial
        method = "uniform_1d" if H.ON_GPU else "naive"
        xb = [(C, 2 * l + 1) for l in range(4)]
        # cuex keeps one block per path (e.g. 4x 64x0e where e3nn has 256x0e): its ir_mul layout
        # transposes each path's block on its own
        ob = [(mul, ir.dim) for mul, ir in desc.outputs[0].irreps]

        def to_irmul(a, blocks):
            out, i = [], 0
            for m, d in blocks:
                out.append(a[:, i:i + m * d].reshape(-1, m, d).swapaxes(1, 2).reshape(a.shape[0], -1))
                i += m * d
            return jnp.concatenate(out, -1)

        def conv_cuex(x, v, w):
            Y = cuex.spherical_harmonics([0, 1, 2, 3], cuex.RepArray(cue.Irreps("O3", "1x1o"), v, cue.ir_mul), normalize=True).array
            [o] = cuex.segmented_polynomial(poly, [w, x, Y], [jax.ShapeDtypeStruct((N, poly.outputs[0].size), x.dtype)],
                                            indices=[None, snd, None, rcv], method=method)
            return o
        libs["cuex"] = (conv_cuex, lambda a: to_irmul(a, xb), lambda a: to_irmul(a, ob))
    # correctness of this run's data on a slice of the edges
    small = slice(0, min(E, 3000))
    try:
        sg = bj.Graph.build(snd[small], rcv[small], N)
        a = bje.message_passing(e3nn.IrrepsArray(irx, x), vec[small], w[small], None, None, N, filter_ir_out=filt, graph=sg).array
        Y = e3nn.spherical_harmonics(NAT, vec[small], True, normalization="component")
        b = e3nn.scatter_sum(e3nn.tensor_product(e3nn.IrrepsArray(irx, x)[snd[small]], Y, filter_ir_out=filt_list) * w[small],
                             dst=rcv[small], output_size=N).array
        H.check(f"{tag} fwd bj vs e3nn (first {small.stop} edges)", a, b, 1e-4 if not args.f64 else 1e-11)
    except Exception as e:  # noqa: BLE001
        print("CHECK failed to run:", e)
    for mode in ("fwd", "fwd+bwd", "dbl-bwd"):
        for lib in args.libs.split(","):
            if lib not in libs:
                continue
            if lib == "e3nn" and not args.cpu_size and (C >= 64 and mode != "fwd"):
                continue  # 50-140 ms per call: timed in ../shared/anchors, skipped to fit the lease
            conv, tx, tc = libs[lib]
            f = modes(conv)[mode]
            H.bench(f"{tag}[{graph_kind}] {mode}", lib, f, tx(x), vec, w, tc(cot), reps=args.reps if lib != "e3nn" else 5,
                    warmup=args.warmup, floor_ms=floors[mode])
    if args.layer:
        energies = {}
        for lib in args.libs.split(","):
            if lib not in ("bj", "cuex") or lib not in libs:
                continue  # e3nn-jax's layer takes 50-140 ms per backward at C=64
            conv, tx, _ = libs[lib]
            if lib == "cuex":
                # cuex returns ir_mul; bring it to e3nn's layout for the shared linear
                def conv_l(x, v, w, conv=conv):
                    o, i, outs = conv(x, v, w), 0, []
                    for mul, d in ob:
                        outs.append(o[:, i:i + mul * d].reshape(-1, d, mul).swapaxes(1, 2).reshape(N, -1))
                        i += mul * d
                    return jnp.concatenate(outs, -1)
                H.check(f"{tag} conv bj vs cuex (e3nn layout)", conv_bj(x, vec, w), conv_l(tx(x), vec, w),
                        1e-4 if not args.f64 else 1e-11)
            else:
                conv_l = conv
            params, lm = layer_modes(conv_l, irreps_out, C, jax.random.key(3))
            energies[lib] = lm["layer-energy"](params, tx(x), vec)
            print(f"{tag} layer energy {lib}: {float(energies[lib]):.9g}", flush=True)
            if len(energies) == 2:
                H.check(f"{tag} layer energy bj vs cuex", energies["bj"], energies["cuex"],
                        1e-4 if not args.f64 else 1e-11)
            for mode, f in lm.items():
                H.bench(f"{tag}[{graph_kind}] {mode}", lib, f, params, tx(x), vec,
                        reps=args.reps, warmup=args.warmup)
    print(f"peak GPU memory so far {H.peak_memory_mb():.0f} MiB", flush=True)


for tag in args.cases.split(","):
    for g in args.graphs.split(","):
        if g == "real" and tag == "W2n":
            continue
        run(tag, *CASES[tag], g)
H.finish(args)

"""Where the time of one FC forward call goes at small N (GPU): pipelined ms per call of

  floor       a trivial jitted op on x (v * 1 + 0): the host dispatch of one call
  full        bj.tensor_product (transpose x, kernel, transpose out)
  kernel      the bj_fc custom call alone (for large grids its output stays component-major)
  transposes  the two XLA transposes alone
  full x8     eight independent products in one jitted call, per product: GPU time with one
              dispatch spread over eight (what the call costs when the host is not the limit)
  e3nn        e3nn-jax's product, as in benchmark_tensor_product.py (the issue's 5x reference)

Each case is timed in `--trials` separate pipelined runs of `--reps` calls; min and median are
printed. Rows N are the arguments (default 1000 2000 5000 20000).
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import batteries_jax as bj

ap = argparse.ArgumentParser()
ap.add_argument("rows", type=int, nargs="*", default=[1000, 2000, 5000, 20000])
ap.add_argument("--reps", type=int, default=100)
ap.add_argument("--trials", type=int, default=5)
args = ap.parse_args()
jax.config.update("jax_default_matmul_precision", "highest")
print(f"jax {jax.__version__} device {jax.devices()[0].device_kind!r} date {time.strftime('%Y-%m-%d %H:%M')}")


def pipelined(fn, *a):
    jax.block_until_ready(fn(*a))
    for _ in range(3):
        jax.block_until_ready(fn(*a))
    ts = []
    for _ in range(args.trials):
        t = time.perf_counter()
        for _ in range(args.reps):
            out = fn(*a)
        jax.block_until_ready(out)
        ts.append((time.perf_counter() - t) / args.reps * 1e3)
    return min(ts), float(np.median(ts))


def e3nn_fn():
    try:
        import e3nn_jax as e3nn
        import e3nn_jax.legacy  # noqa: F401
    except Exception:  # noqa: BLE001
        return None
    irx, iry, iro = "32x0e+32x1e+32x2e+32x3e", "0e+1e+2e+3e", "64x0e+64x1e+64x2e+64x3e"
    tp = e3nn.legacy.FunctionalFullyConnectedTensorProduct(irx, iry, iro)

    def f(xm, y, W):
        return jax.vmap(tp.left_right, (None, 0, 0))([W[p].reshape(32, 1, 64) for p in range(34)],
                                                     e3nn.IrrepsArray(irx, xm), e3nn.IrrepsArray(iry, y)).array
    return jax.jit(f)


e3 = e3nn_fn()
for N in args.rows:
    k = jax.random.split(jax.random.key(N), 3)
    x = jax.random.normal(k[0], (N, 32, 16), jnp.float32)
    y = jax.random.normal(k[1], (N, 16), jnp.float32)
    W = jax.random.normal(k[2], (34, 32, 64), jnp.float32)
    from batteries_jax.primitives import fc
    public = bool(fc._public_out(N, 64, 1))
    xs = [x * (1 + i) for i in range(8)]
    kernel = jax.jit(lambda x, y, W: jax.ffi.ffi_call(
        "bj_fc", jax.ShapeDtypeStruct((N, 64, 16) if public else (N, 16, 64), jnp.float32))(
        x, y, W[None], c_in=np.int64(32), c_out=np.int64(64), groups=np.int64(1), public_out=np.int64(public)))
    out = jnp.zeros((N, 16, 64), jnp.float32)
    cases = {
        "floor": (jax.jit(lambda v: v * 1.0 + 0.0), x),
        "full": (jax.jit(bj.tensor_product), x, y, W),
        "kernel": (kernel, x, y, W),
        "transposes": (jax.jit(lambda x, o: (jnp.swapaxes(x, 1, 2), jnp.swapaxes(o, 1, 2))), x, out),
        "full x8": (jax.jit(lambda xs, y, W: [bj.tensor_product(v, y, W) for v in xs]), xs, y, W),
    }
    if e3 is not None:
        cases["e3nn"] = (e3, x.reshape(N, -1), y, W)  # (the layout does not change its cost)
    for name, (fn, *a) in cases.items():
        lo, med = pipelined(fn, *a)
        per = " (per product)" if name == "full x8" else ""
        if name == "full x8":
            lo, med = lo / 8, med / 8
        print(f"N={N:<6} {name:<11} pipelined min {lo:8.4f} ms  median {med:8.4f} ms{per}", flush=True)

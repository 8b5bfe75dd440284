"""Timing and reporting shared by the benchmarks.

Each case reports the median of host-timed calls (each followed by block_until_ready) and the
pipelined time (``reps`` calls back to back, one block at the end, divided by ``reps``), after
warm-up. Peers (e3nn-jax, cuequivariance-jax) are timed in the same process on the same data.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

ON_GPU = jax.default_backend() == "gpu"
RESULTS = []


def parser(doc):
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--reps", type=int, default=30 if ON_GPU else 5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--f64", action="store_true")
    ap.add_argument("--cpu-size", action="store_true", default=not ON_GPU,
                    help="tiny sizes (default without a GPU)")
    ap.add_argument("--json", default=os.environ.get("BJ_BENCH_JSON", ""))
    return ap


def setup(args):
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.f64:
        jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__} backend {jax.default_backend()} device {jax.devices()[0].device_kind!r} "
          f"dtype {'float64' if args.f64 else 'float32'} date {time.strftime('%Y-%m-%d')}", flush=True)


def real_graph(N, nbrs, seed):
    """A realistic graph: N atoms at random positions in a periodic box sized for `nbrs`
    neighbours within radius 1, atoms sorted by cell (spatial order, as MD codes keep them),
    edges grouped by receiver. Returns (senders, receivers, edge vectors) as numpy arrays."""
    rng = np.random.default_rng(seed)
    L = (N * 4.0 / 3.0 * np.pi / nbrs) ** (1.0 / 3.0)
    pos = rng.uniform(0, L, (N, 3))
    nc = max(1, int(L))
    cell = np.floor(pos / (L / nc)).astype(int) % nc
    pos = pos[np.lexsort((cell[:, 2], cell[:, 1], cell[:, 0]))]
    snd, rcv, vec = [], [], []
    for i in range(N):
        d = pos - pos[i]
        d -= L * np.round(d / L)
        nb = np.nonzero((np.einsum("ij,ij->i", d, d) < 1.0) & (np.arange(N) != i))[0]
        snd.append(nb); rcv.append(np.full(nb.shape, i)); vec.append(d[nb])
    return np.concatenate(snd), np.concatenate(rcv), np.concatenate(vec)


def peers():
    """(e3nn_jax or None, (cuequivariance, cuequivariance_jax) or None)."""
    try:
        import e3nn_jax as e3nn
    except Exception:  # noqa: BLE001
        e3nn = None
    try:
        import cuequivariance as cue
        import cuequivariance_jax as cuex
        cu = (cue, cuex)
    except Exception:  # noqa: BLE001
        cu = None
    return e3nn, cu


def pipelined_s(fn, *a, reps):
    """Seconds per call of `reps` calls issued back to back, one block at the end."""
    t = time.perf_counter()
    out = None
    for _ in range(reps):
        out = fn(*a)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / reps


def bench(case, lib, fn, *a, reps=30, warmup=3, floor_ms=None, bytes_moved=None):
    try:
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*a))
        compile_s = time.perf_counter() - t0
        for _ in range(warmup):
            jax.block_until_ready(fn(*a))
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(fn(*a))
            ts.append(time.perf_counter() - t)
        pipe = pipelined_s(fn, *a, reps=reps)
        med = float(np.median(ts))
        row = dict(case=case, lib=lib, median_ms=1e3 * med, pipelined_ms=1e3 * pipe, compile_s=compile_s)
        extra = ""
        if bytes_moved:
            row["GBps"] = bytes_moved / pipe / 1e9
            extra += f" {row['GBps']:.0f} GB/s"
        if floor_ms:
            row["floor_fraction"] = floor_ms / (1e3 * pipe)
            extra += f" floor {floor_ms:.3f} ms ({100 * row['floor_fraction']:.0f}%)"
        print(f"{case:<40} {lib:<6} median {1e3 * med:9.3f} ms  pipelined {1e3 * pipe:9.3f} ms{extra}", flush=True)
    except Exception as e:  # noqa: BLE001
        row = dict(case=case, lib=lib, error=f"{type(e).__name__}: {str(e)[:300]}")
        print(f"{case:<40} {lib:<6} ERROR {row['error']}", flush=True)
    RESULTS.append(row)
    return row


_COPY_BW = None


def copy_bandwidth():
    """This device's copy bandwidth in bytes (read + written) per second, measured once per
    process: x + 1 over 1 GiB of float32 on a GPU (16 MiB otherwise), pipelined as in bench().
    Memory floors divide by it, so that a floor fraction belongs to the card it was measured on
    (the H200's peak bandwidth is ~1.4x the H100's, whose 3.0 TB/s the scripts used to assume)."""
    global _COPY_BW
    if _COPY_BW is None:
        import jax.numpy as jnp
        n = (1 << 28) if ON_GPU else (1 << 22)
        x = jnp.zeros((n,), jnp.float32)
        f = jax.jit(lambda x: x + 1.0)
        for _ in range(3):
            jax.block_until_ready(f(x))
        _COPY_BW = 2 * 4 * n / pipelined_s(f, x, reps=20)
        del x
        print(f"copy bandwidth {_COPY_BW / 1e9:.0f} GB/s (x + 1 over {4 * n >> 20} MiB, pipelined)", flush=True)
    return _COPY_BW


def relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check(name, a, b, tol):
    r = relerr(a, b)
    print(f"CHECK {name}: max rel err {r:.2e} {'OK' if r < tol else 'MISMATCH'}", flush=True)
    return r < tol


def peak_memory_mb():
    try:
        stats = jax.devices()[0].memory_stats()
        return stats.get("peak_bytes_in_use", 0) / 2**20
    except Exception:  # noqa: BLE001
        return float("nan")


def finish(args):
    if args.json:
        with open(args.json, "a") as f:
            for r in RESULTS:
                f.write(json.dumps(r) + "\n")

import re

import e3nn_jax as e3nn
import e3nn_jax.legacy  # noqa: F401
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import batteries_jax as bj
import batteries_jax.e3nn as bje
from batteries_jax import _paths
from conftest import assert_close, requires_gpu


def cg(l1, l2, l3):
    return np.asarray(e3nn.clebsch_gordan(int(l1), int(l2), int(l3))) * np.sqrt(2 * l3 + 1)


def blk(a, l):
    return a[..., l * l:(l + 1) ** 2]


def ref_simple(x, y):
    out = jnp.zeros(jnp.broadcast_shapes(x.shape, y.shape))
    for l1, l2, l3 in bj.get_tp_path_info():
        out = out.at[..., l3 * l3:(l3 + 1) ** 2].add(
            jnp.einsum("...i,...j,ijk->...k", blk(x, l1), blk(y, l2), cg(l1, l2, l3)))
    return out


def ref_fc(x, y, W):
    outs = [0.0] * 4
    for p, (l1, l2, l3) in enumerate(bj.get_tp_path_info()):
        outs[l3] = outs[l3] + jnp.einsum("...ui,...j,ijk,uw->...wk", blk(x, l1), blk(y, l2), cg(l1, l2, l3), W[p])
    return jnp.concatenate(outs, axis=-1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_simple_values_and_grads(rng, dtype):
    x = jnp.asarray(rng.normal(size=(37, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(37, 16)), dtype)
    out = jax.jit(bj.tensor_product_simple)(x, y)
    assert out.dtype == dtype
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    assert_close(out, ref_simple(x64, y64), dtype, scale=3)
    c = rng.normal(size=(37, 16))
    g = jax.grad(lambda x, y: jnp.sum(bj.tensor_product_simple(x, y) * c.astype(dtype)), (0, 1))(x, y)
    gr = jax.grad(lambda x, y: jnp.sum(ref_simple(x, y) * c), (0, 1))(x64, y64)
    for a, b in zip(g, gr):
        assert_close(a, b, dtype, scale=3)


def test_simple_backward_is_one_fused_call(rng):
    """Both gradients from one cotangent: one backward kernel reading each row once; the
    gradient of a gradient stays in the family (no generic expansion)."""
    x = jnp.asarray(rng.normal(size=(7, 16)))
    y = jnp.asarray(rng.normal(size=(7, 16)))
    f = jax.grad(lambda x, y: jnp.sum(bj.tensor_product_simple(x, y) ** 2), (0, 1))
    calls = re.findall(r"custom_call @(bj_[a-z_]+)", jax.jit(f).lower(x, y).as_text())
    assert sorted(calls) == ["bj_tp_simple", "bj_tp_simple_bwd"]
    g2 = jax.grad(lambda y: jnp.sum(jax.grad(lambda x: jnp.sum(bj.tensor_product_simple(x, y) ** 2))(x) ** 2))
    calls = re.findall(r"custom_call @(bj_[a-z_]+)", jax.jit(g2).lower(y).as_text())
    assert set(calls) <= {"bj_tp_simple", "bj_tp_simple_bwd"}
    ref = jax.grad(lambda y: jnp.sum(jax.grad(lambda x: jnp.sum(ref_simple(x, y) ** 2))(x) ** 2))
    assert_close(jax.jit(g2)(y), ref(y))


def test_simple_single_gradient_and_cotangent_vmap(rng):
    x = jnp.asarray(rng.normal(size=(6, 16)))
    y = jnp.asarray(rng.normal(size=(6, 16)))
    cs = jnp.asarray(rng.normal(size=(3, 6, 16)))
    for i in range(2):
        g = jax.jit(jax.grad(lambda *a: jnp.sum(bj.tensor_product_simple(*a) * cs[0]), i))(x, y)
        assert_close(g, jax.grad(lambda *a: jnp.sum(ref_simple(*a) * cs[0]), i)(x, y))
    _, vjp = jax.vjp(bj.tensor_product_simple, x, y)
    _, ref_vjp = jax.vjp(ref_simple, x, y)
    got = jax.vmap(vjp)(cs)
    for b in range(3):
        for a, r in zip((got[0][b], got[1][b]), ref_vjp(cs[b])):
            assert_close(a, r)


def test_simple_check_grads_order3(rng):
    x = jnp.asarray(rng.normal(size=(5, 16)))
    y = jnp.asarray(rng.normal(size=(5, 16)))
    check_grads(bj.tensor_product_simple, (x, y), order=3, modes=("fwd", "rev"))


def test_simple_broadcast_vmap_empty(rng):
    x = jnp.asarray(rng.normal(size=(3, 4, 16)))
    y = jnp.asarray(rng.normal(size=(4, 16)))
    assert_close(bj.tensor_product_simple(x, y), ref_simple(x, y))
    assert_close(jax.vmap(bj.tensor_product_simple, (0, None))(x, y), ref_simple(x, y))
    assert_close(jax.vmap(bj.tensor_product_simple, (1, 0))(x, y), jnp.swapaxes(ref_simple(x, y), 0, 1))
    assert bj.tensor_product_simple(jnp.zeros((0, 16)), jnp.zeros((0, 16))).shape == (0, 16)
    g = jax.grad(lambda x: jnp.sum(bj.tensor_product_simple(x, x)))(jnp.zeros((0, 16)))
    assert g.shape == (0, 16)


def test_mixed_dtypes_promote(rng):
    x = jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(3, 16)), jnp.float64)
    assert bj.tensor_product_simple(x, y).dtype == jnp.float64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fc_values_and_grads(rng, dtype):
    x = jnp.asarray(rng.normal(size=(9, 5, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(9, 16)), dtype)
    W = jnp.asarray(rng.normal(size=(34, 5, 3)), dtype)
    out = jax.jit(bj.tensor_product)(x, y, W)
    assert out.shape == (9, 3, 16) and out.dtype == dtype
    args64 = [np.asarray(a, np.float64) for a in (x, y, W)]
    assert_close(out, ref_fc(*args64), dtype, scale=5)
    c = rng.normal(size=(9, 3, 16))
    g = jax.grad(lambda *a: jnp.sum(bj.tensor_product(*a) * c.astype(dtype)), (0, 1, 2))(x, y, W)
    gr = jax.grad(lambda *a: jnp.sum(ref_fc(*a) * c), (0, 1, 2))(*args64)
    for a, b in zip(g, gr):
        assert_close(a, b, dtype, scale=10)


def test_fc_check_grads_and_vmap(rng):
    x = jnp.asarray(rng.normal(size=(3, 2, 16)))
    y = jnp.asarray(rng.normal(size=(3, 16)))
    W = jnp.asarray(rng.normal(size=(34, 2, 2)))
    check_grads(bj.tensor_product, (x, y, W), order=2, modes=("fwd", "rev"))
    Ws = jnp.asarray(rng.normal(size=(4, 34, 2, 2)))  # an ensemble of weights
    out = jax.vmap(bj.tensor_product, (None, None, 0))(x, y, Ws)
    assert_close(out[3], ref_fc(x, y, Ws[3]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fc_tile_edges(rng, dtype):
    """Channel counts and row counts that do not fill the kernels' tiles (C_in > 32 and
    C_out > 64 take several chunks; 43 rows leave partial tiles for every l_out)."""
    x = jnp.asarray(rng.normal(size=(43, 37, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(43, 16)), dtype)
    W = jnp.asarray(rng.normal(size=(34, 37, 67)) / 10, dtype)
    c = jnp.asarray(rng.normal(size=(43, 67, 16)), dtype)
    args64 = [np.asarray(a, np.float64) for a in (x, y, W)]
    assert_close(jax.jit(bj.tensor_product)(x, y, W), ref_fc(*args64), dtype, scale=10)
    g = jax.jit(jax.grad(lambda *a: jnp.sum(bj.tensor_product(*a) * c), (0, 1, 2)))(x, y, W)
    gr = jax.grad(lambda *a: jnp.sum(ref_fc(*a) * np.asarray(c, np.float64)), (0, 1, 2))(*args64)
    for a, b in zip(g, gr):
        assert_close(a, b, dtype, scale=30)


@pytest.mark.parametrize("n", [40, 2100])
def test_fc_forward_out_layouts(rng, n):
    """The forward kernel writes out in the public layout for small grids and component-major
    (transposed by XLA) for large ones (fc._public_out); both against the reference."""
    from batteries_jax.primitives import fc
    assert fc._public_out(n, 4, 1) == (n == 40)
    assert fc._public_out(n, 3, 1)  # C_out % 4 != 0 always takes the public-layout kernel
    x = jnp.asarray(rng.normal(size=(n, 2, 16)))
    y = jnp.asarray(rng.normal(size=(n, 16)))
    W = jnp.asarray(rng.normal(size=(34, 2, 4)))
    assert_close(jax.jit(bj.tensor_product)(x, y, W), ref_fc(x, y, W), np.float64)


def test_fc_backward_workspace_only_on_cuda():
    """The backward's workspace (slab and per-l3 partials) is allocated for the CUDA handler only:
    the CPU lowering passes an empty one."""
    f = jax.jit(jax.grad(lambda *a: jnp.sum(bj.tensor_product(*a) ** 2), (0, 1, 2)))
    args = (jnp.ones((300, 3, 16)), jnp.ones((300, 16)), jnp.ones((34, 3, 5)))
    sizes = {}
    for platform in ("cpu", "cuda"):
        checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in ("bj_fc", "bj_fc_bwd")]
        text = jax.export.export(f, platforms=[platform], disabled_checks=checks)(*args).mlir_module()
        call = next(line for line in text.splitlines() if "custom_call @bj_fc_bwd" in line)
        sizes[platform] = int(re.findall(r"tensor<(\d+)x?f\d+>", call.split("->")[-1])[-1])
    # the CUDA size is the handler's own formula (kernels/fc.h, fc_scratch_size), here with 10 slabs
    # of w_bar partials (300 rows / 32 per slab) and the x_bar / y_bar partials of three l3
    assert sizes["cpu"] == 0 and sizes["cuda"] == 10 * 34 * 3 * 5 + 3 * 300 * 16 * 3 + 3 * 300 * 16, sizes


@pytest.mark.parametrize("precision,passes", [("tf32x3", 3), ("tf32", 1)])
def test_fc_precision_option_reaches_every_call(rng, precision, passes):
    """precision="tf32x3" / "tf32" is a static parameter of the whole family: every FC custom
    call of a force-matching style double backward (forward, tangent, fused backward, their
    transposes) carries its tensor-core passes, and the default carries 0. The CPU handler
    computes in full float32 either way, so the values match the reference."""
    x = jnp.asarray(rng.normal(size=(7, 3, 16)))
    y = jnp.asarray(rng.normal(size=(7, 16)))
    W = jnp.asarray(rng.normal(size=(34, 3, 2)))

    def dbl(f):
        return lambda x, y, W: jax.grad(lambda W: jnp.sum(jax.grad(lambda y: jnp.sum(f(x, y, W) ** 2))(y) ** 2))(W)
    tc = lambda *a: bj.tensor_product(*a, precision=precision)  # noqa: E731
    assert_close(jax.jit(dbl(tc))(x, y, W), dbl(ref_fc)(x, y, W))
    assert_close(jax.vmap(tc, (None, None, 0))(x, y, jnp.stack([W, -W]))[1], -ref_fc(x, y, W))
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in ("bj_fc", "bj_fc_bwd")]
    for f, flag in ((tc, passes), (bj.tensor_product, 0)):
        text = jax.export.export(jax.jit(dbl(f)), platforms=["cuda"], disabled_checks=checks)(x, y, W).mlir_module()
        calls = [line for line in text.splitlines() if re.search(r"custom_call @bj_fc(_bwd)?\(", line)]
        assert len(calls) >= 3
        assert all(f"tf32_passes = {flag} : i64" in line for line in calls), calls
    with pytest.raises(ValueError, match="precision"):
        bj.tensor_product(x, y, W, precision="bf16")


def test_fc_ensemble_vmap_and_gradients(rng):
    """vmap over weights, over rows and weights together, and the ensemble's weight gradient."""
    x = jnp.asarray(rng.normal(size=(4, 6, 3, 16)))
    y = jnp.asarray(rng.normal(size=(6, 16)))
    Ws = jnp.asarray(rng.normal(size=(4, 34, 3, 2)))
    out = jax.vmap(bj.tensor_product, (0, None, 0))(x, y, Ws)
    for b in range(4):
        assert_close(out[b], ref_fc(x[b], y, Ws[b]))
    loss = lambda x, W: jnp.sum(bj.tensor_product(x, y, W) ** 2)  # noqa: E731
    ref_loss = lambda x, W: jnp.sum(ref_fc(x, y, W) ** 2)  # noqa: E731
    g = jax.jit(jax.vmap(jax.grad(loss, (0, 1)), (0, 0)))(x, Ws)
    for b in range(4):
        gr = jax.grad(ref_loss, (0, 1))(x[b], Ws[b])
        assert_close(g[0][b], gr[0])
        assert_close(g[1][b], gr[1])
    jvp = jax.vmap(lambda W, dW: jax.jvp(lambda W: bj.tensor_product(x[0], y, W), (W,), (dW,))[1])(Ws, Ws[::-1])
    assert_close(jvp[1], ref_fc(x[0], y, Ws[2]))


def test_fc_second_order_is_fused_family():
    """grad, the force-matching style grad of a gradient norm, and the HLO: every call is one of
    the FC kernels (no generic expansion)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(5, 2, 16)))
    y = jnp.asarray(rng.normal(size=(5, 16)))
    W = jnp.asarray(rng.normal(size=(34, 2, 3)))

    def dbl(f):
        return lambda x, y, W: jax.grad(lambda W: jnp.sum(jax.grad(lambda y: jnp.sum(f(x, y, W) ** 2))(y) ** 2))(W)
    assert_close(jax.jit(dbl(bj.tensor_product))(x, y, W), dbl(ref_fc)(x, y, W))
    hlo = jax.jit(dbl(bj.tensor_product)).lower(x, y, W).as_text()
    assert "bj_fc_bwd" in hlo and "bj_uvu" not in hlo
    hlo = jax.jit(jax.grad(lambda *a: jnp.sum(bj.tensor_product(*a) ** 2), (0, 1, 2))).lower(x, y, W).as_text()
    assert sorted(re.findall(r"custom_call @(bj_[a-z_]+)", hlo)) == ["bj_fc", "bj_fc_bwd"]


def test_fc_single_gradients_hessian_and_cotangent_vmap(rng):
    """Each gradient alone (the backward then gets empty buffers for operands it does not
    read), the Hessian in W (the backward's JVP with a weight tangent), and vmap over
    cotangents (the backward folding the batch into weight groups)."""
    x = jnp.asarray(rng.normal(size=(4, 3, 16)))
    y = jnp.asarray(rng.normal(size=(4, 16)))
    W = jnp.asarray(rng.normal(size=(34, 3, 2)))
    c = jnp.asarray(rng.normal(size=(4, 2, 16)))
    loss = lambda *a: jnp.sum(bj.tensor_product(*a) * c)  # noqa: E731
    ref_loss = lambda *a: jnp.sum(ref_fc(*a) * c)  # noqa: E731
    for i in range(3):
        assert_close(jax.jit(jax.grad(loss, i))(x, y, W), jax.grad(ref_loss, i)(x, y, W))
    sq = lambda W: jnp.sum(jnp.sin(bj.tensor_product(x, y, W)))  # noqa: E731
    ref_sq = lambda W: jnp.sum(jnp.sin(ref_fc(x, y, W)))  # noqa: E731
    hv = jax.jvp(jax.grad(sq), (W,), (W[::-1],))[1]
    assert_close(hv, jax.jvp(jax.grad(ref_sq), (W,), (W[::-1],))[1])
    _, vjp = jax.vjp(bj.tensor_product, x, y, W)
    cs = jnp.stack([c, -2 * c, c ** 2])
    got = jax.vmap(vjp)(cs)
    _, ref_vjp = jax.vjp(ref_fc, x, y, W)
    for b in range(3):
        for a, r in zip(jax.tree.leaves(jax.tree.map(lambda t: t[b], got)), ref_vjp(cs[b])):
            assert_close(a, r)


def test_fc_empty(rng):
    W = jnp.asarray(rng.normal(size=(34, 2, 3)))
    assert bj.tensor_product(jnp.zeros((0, 2, 16)), jnp.zeros((0, 16)), W).shape == (0, 3, 16)
    g = jax.grad(lambda W: jnp.sum(bj.tensor_product(jnp.zeros((0, 2, 16)), jnp.zeros((0, 16)), W)))(W)
    assert g.shape == W.shape and not np.any(np.asarray(g))


def test_fc_matches_e3nn_legacy(rng):
    irx, iry, iro = "4x0e+4x1e+4x2e+4x3e", "0e+1e+2e+3e", "3x0e+3x1e+3x2e+3x3e"
    tp = e3nn.legacy.FunctionalFullyConnectedTensorProduct(irx, iry, iro)
    W = jnp.asarray(rng.normal(size=(34, 4, 3)))
    x = jnp.asarray(rng.normal(size=(6, 4 * 16)))
    y = jnp.asarray(rng.normal(size=(6, 16)))
    ref = jax.vmap(tp.left_right, (None, 0, 0))([W[p].reshape(4, 1, 3) for p in range(34)],
                                                 e3nn.IrrepsArray(irx, x), e3nn.IrrepsArray(iry, y)).array
    # e3nn's path normalisation: 1/sqrt(fan_in) per l_out, fan_in = (paths into l_out) * C_in
    info = bj.get_tp_path_info()
    norm = np.concatenate([np.full(3 * (2 * l + 1), 1 / np.sqrt(4 * np.sum(info[:, 2] == l))) for l in range(4)])

    def seed(a, mul):
        return jnp.concatenate([a[:, sum(mul * (2 * k + 1) for k in range(l)):][:, :mul * (2 * l + 1)]
                                .reshape(-1, mul, 2 * l + 1) for l in range(4)], -1)
    out = bj.tensor_product(seed(x, 4), y, W)
    ref_seed = seed(ref, 3) / seed(jnp.asarray(norm)[None], 3)
    assert_close(out, ref_seed)


def test_tp_bad_input():
    with pytest.raises(ValueError, match="weights"):
        bj.tensor_product(jnp.ones((2, 3, 16)), jnp.ones((2, 16)), jnp.ones((34, 4, 5)))
    with pytest.raises(ValueError, match="x"):
        bj.tensor_product_simple(jnp.ones((2, 15)), jnp.ones((2, 16)))
    with pytest.raises(TypeError, match="y"):
        bj.tensor_product_simple(jnp.ones((2, 16)), jnp.ones((2, 16), jnp.int32))


E3NN_CASES = [
    ("4x0e+3x1o+2x2e+1x3o", "0e+1o+2e+3o", None),
    ("2x1o+0e+1o+1e", "2x0e+1o", None),
    ("3x0e+2x1o+2x2e+3o", "0e+1o+2e+3o", "0e+0o+1e+1o+2e+2o+3e+3o"),
    ("2x0e+2x1o+2x2e+2x3o", "0e+1o+2e+3o", "0e+1o+2e+3o"),
    ("3o+2e", "2x3e+1o", None),
]


@pytest.mark.parametrize("irreps1, irreps2, filt", E3NN_CASES)
@pytest.mark.parametrize("normalization", ["component", "norm", "none"])
def test_e3nn_dropin(rng, irreps1, irreps2, filt, normalization):
    a = e3nn.IrrepsArray(irreps1, jnp.asarray(rng.normal(size=(5, e3nn.Irreps(irreps1).dim))))
    b = e3nn.IrrepsArray(irreps2, jnp.asarray(rng.normal(size=(5, e3nn.Irreps(irreps2).dim))))
    ref = e3nn.tensor_product(a, b, filter_ir_out=filt, irrep_normalization=normalization)
    out = bje.tensor_product(a, b, filter_ir_out=filt, irrep_normalization=normalization)
    assert out.irreps == ref.irreps
    assert_close(out.array, ref.array)
    w = jnp.asarray(rng.normal(size=(5, ref.irreps.num_irreps)))
    outw = bje.tensor_product(a, b, filter_ir_out=filt, irrep_normalization=normalization, weights=w)
    assert_close(outw.array, (ref * w).array)


def test_e3nn_dropin_unregrouped(rng):
    a = e3nn.IrrepsArray("1o+0e+1o", jnp.asarray(rng.normal(size=(3, 7))))
    b = e3nn.IrrepsArray("1e+0e", jnp.asarray(rng.normal(size=(3, 4))))
    for regroup in (True, False):
        ref = e3nn.tensor_product(a, b, regroup_output=regroup)
        out = bje.tensor_product(a, b, regroup_output=regroup)
        assert out.irreps == ref.irreps
        assert_close(out.array, ref.array)


def test_e3nn_dropin_grads(rng):
    a = e3nn.IrrepsArray("2x0e+2x1o+1x2e+1x3o", jnp.asarray(rng.normal(size=(4, 2 + 6 + 5 + 7))))
    b = e3nn.IrrepsArray("0e+1o+2e+3o", jnp.asarray(rng.normal(size=(4, 16))))
    ref = e3nn.tensor_product(a, b)
    w = jnp.asarray(rng.normal(size=(4, ref.irreps.num_irreps)))

    def f(x, y, w, impl):
        return impl.tensor_product(e3nn.IrrepsArray(a.irreps, x), e3nn.IrrepsArray(b.irreps, y), weights=w).array \
            if impl is bje else (impl.tensor_product(e3nn.IrrepsArray(a.irreps, x), e3nn.IrrepsArray(b.irreps, y)) * w).array
    c = jnp.asarray(rng.normal(size=ref.shape))
    g = jax.grad(lambda *t: jnp.sum(f(*t, bje) * c), (0, 1, 2))(a.array, b.array, w)
    gr = jax.grad(lambda *t: jnp.sum(f(*t, e3nn) * c), (0, 1, 2))(a.array, b.array, w)
    for x, y in zip(g, gr):
        assert_close(x, y)
    check_grads(lambda *t: f(*t, bje), (a.array[:2], b.array[:2], w[:2]), order=2, modes=("fwd", "rev"))


def test_e3nn_dropin_errors():
    a = e3nn.IrrepsArray("4e", jnp.ones((2, 9)))
    with pytest.raises(ValueError, match="l > 3"):
        bje.tensor_product(a, a)
    b = e3nn.IrrepsArray("1o", jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="irrep_normalization"):
        bje.tensor_product(b, b, irrep_normalization="bogus")
    with pytest.raises(ValueError, match="weights"):
        bje.tensor_product(b, b, weights=jnp.ones((2, 7)))


def test_paths_single_source():
    # the simple product's table is the seed path list, in order, with component coefficients
    rows = _paths.simple_paths().int_table()
    assert [tuple(r[:3]) for r in rows] == [tuple(p) for p in bj.get_tp_path_info()]


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,c_in,c_out", [(3001, 40, 70), (1001, 29, 30), (2001, 32, 64), (1003, 16, 128)])
def test_gpu_fc_matches_cpu(rng, dtype, n, c_in, c_out):
    """The CUDA kernels against the CPU handler on sizes with many tiles and slabs; channel
    counts over and under 32 and 64 (the kernels' chunk and block widths), multiples of 4 (the
    vector loads) and not; both forward kernels (fc._public_out): C_out % 4 != 0 takes the
    public-layout one, the others here have grids large enough for the component-major one."""
    from batteries_jax.primitives import fc
    assert fc._public_out(n, c_out, 1) == (c_out % 4 != 0)
    x = jnp.asarray(rng.normal(size=(n, c_in, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(n, 16)), dtype)
    W = jnp.asarray(rng.normal(size=(34, c_in, c_out)) / 10, dtype)
    c = jnp.asarray(rng.normal(size=(n, c_out, 16)), dtype)
    f = jax.jit(lambda *a: (bj.tensor_product(*a[:3]),
                            jax.grad(lambda *b: jnp.sum(bj.tensor_product(*b) * a[3]), (0, 1, 2))(*a[:3])))
    gpu = f(x, y, W, c)
    with jax.default_device(jax.devices("cpu")[0]):
        ref = f(*[jax.device_put(a, jax.devices("cpu")[0]) for a in (x, y, W, c)])
    for a, b in zip(jax.tree.leaves(gpu), jax.tree.leaves(ref)):
        assert_close(a, b, dtype, scale=30)


@requires_gpu
@pytest.mark.parametrize("n,c_in,c_out", [(3001, 40, 68), (1001, 32, 64)])
def test_gpu_fc_tensor_core_accuracy(rng, n, c_in, c_out):
    """precision="tf32x3" (3xTF32 on the tensor cores) and "tf32" (one TF32 product): forward
    and all three gradients against the float64 reference, with both output layouts and channel
    counts that leave partial chunks and blocks. 3xTF32 is held to float32-level error (the FMA
    kernels' bound too); TF32 to TF32's, and it must differ from 3xTF32 (one pass really ran).
    Neither gives the FMA kernels' bits, which shows that the tensor-core kernels ran. The
    BN = 64 case (3001, 40, 68) replaced (3001, 40, 70), which moved to the public-layout kernel
    with every C_out % 4 != 0."""
    from batteries_jax.primitives import fc
    assert fc._public_out(n, c_out, 1) == (n == 1001)  # both forward kernels
    x, y, W, c = (rng.normal(size=s) for s in ((n, c_in, 16), (n, 16), (34, c_in, c_out), (n, c_out, 16)))
    W = W / 10

    def f(precision):
        tp = lambda *a: bj.tensor_product(*a, precision=precision)  # noqa: E731
        return jax.jit(lambda x, y, W, c: (tp(x, y, W), jax.grad(lambda *b: jnp.sum(tp(*b) * c), (0, 1, 2))(x, y, W)))
    args32 = [jnp.asarray(a, jnp.float32) for a in (x, y, W, c)]
    tc3, tc1, fma = f("tf32x3")(*args32), f("tf32")(*args32), f("highest")(*args32)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        ref = f("highest")(*[jax.device_put(np.asarray(a, np.float64), cpu) for a in args32])
    for a3, a1, b, r in zip(*(jax.tree.leaves(t) for t in (tc3, tc1, fma, ref))):
        r = np.asarray(r)
        scale = np.abs(r).max()
        err = lambda a: np.abs(np.asarray(a, np.float64) - r).max() / scale  # noqa: E731
        # 2e-5: w_bar sums 3001 rows x 16 components per entry, and the tensor cores' float32
        # accumulation rounds less carefully than FMAs (H200, 2026-11-29: 5.8e-6 of the scale)
        assert err(a3) <= 2e-5 and err(b) <= 2e-5
        # TF32: operands rounded to 10 mantissa bits (2^-11 relative each)
        assert err(a1) <= 2e-3
        assert not np.array_equal(np.asarray(a3), np.asarray(b))
        assert not np.array_equal(np.asarray(a1), np.asarray(a3))


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_fc_ensemble_matches_cpu(rng, dtype):
    """Weights vmapped over an ensemble (the kernels' weight groups, each with its own w_bar
    slabs), forward and all three gradients, against the CPU handler."""
    x = jnp.asarray(rng.normal(size=(3, 700, 24, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(3, 700, 16)), dtype)
    W = jnp.asarray(rng.normal(size=(3, 34, 24, 40)) / 10, dtype)
    c = jnp.asarray(rng.normal(size=(3, 700, 40, 16)), dtype)
    tp = jax.vmap(bj.tensor_product)
    f = jax.jit(lambda *a: (tp(*a[:3]), jax.grad(lambda *b: jnp.sum(tp(*b) * a[3]), (0, 1, 2))(*a[:3])))
    gpu = f(x, y, W, c)
    cpu_dev = jax.devices("cpu")[0]
    with jax.default_device(cpu_dev):
        ref = f(*[jax.device_put(a, cpu_dev) for a in (x, y, W, c)])
    for a, b in zip(jax.tree.leaves(gpu), jax.tree.leaves(ref)):
        assert_close(a, b, dtype, scale=30)


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_simple_matches_cpu(rng, dtype):
    x = jnp.asarray(rng.normal(size=(5001, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(5001, 16)), dtype)
    c = jnp.asarray(rng.normal(size=(5001, 16)), dtype)
    f = jax.jit(lambda x, y, c: (bj.tensor_product_simple(x, y),
                                 jax.grad(lambda x, y: jnp.sum(bj.tensor_product_simple(x, y) * c), (0, 1))(x, y)))
    gpu = f(x, y, c)
    cpu_dev = jax.devices("cpu")[0]
    with jax.default_device(cpu_dev):
        ref = f(*[jax.device_put(a, cpu_dev) for a in (x, y, c)])
    for a, b in zip(jax.tree.leaves(gpu), jax.tree.leaves(ref)):
        assert_close(a, b, dtype, scale=10)


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_fc_deterministic(rng, dtype):
    x = jnp.asarray(rng.normal(size=(2000, 8, 16)), dtype)
    y = jnp.asarray(rng.normal(size=(2000, 16)), dtype)
    W = jnp.asarray(rng.normal(size=(34, 8, 8)), dtype)
    f = jax.jit(jax.grad(lambda x, y, W: jnp.sum(bj.tensor_product(x, y, W) ** 2), (0, 1, 2)))
    first = f(x, y, W)
    for _ in range(3):
        for a, b in zip(first, f(x, y, W)):
            assert np.array_equal(np.asarray(a), np.asarray(b))

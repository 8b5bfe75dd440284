import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import batteries_jax as bj
import batteries_jax.e3nn as bje
from conftest import assert_close, requires_gpu

IRREPS = "3x0e+2x1o+2x2e+1x3o"
FILTERS = [None, "0e+1o+2e+3o", "0e+0o+1e+1o+2e+2o+3e+3o"]


def ref_mp(x, vec, w, snd, rcv, n, filt=None, L=3, irreps=IRREPS):
    """The e3nn-jax expression, with edges whose indices are out of range dropped."""
    ok = (snd >= 0) & (snd < n) & (rcv >= 0) & (rcv < n)
    Y = e3nn.spherical_harmonics(list(range(L + 1)), e3nn.IrrepsArray("1o", vec), True, normalization="component")
    m = e3nn.tensor_product(e3nn.IrrepsArray(irreps, x)[jnp.where(ok, snd, 0)], Y, filter_ir_out=filt)
    m = m * (w * ok[:, None])
    return e3nn.scatter_sum(m, dst=jnp.where(ok, rcv, 0), output_size=n).array


def bj_mp(x, vec, w, snd, rcv, n, filt=None, L=3, irreps=IRREPS, graph=None):
    return bje.message_passing(e3nn.IrrepsArray(irreps, x), vec, w, snd, rcv, n, filter_ir_out=filt,
                               L_max=L, graph=graph).array


def problem(rng, n=7, e=30, dtype=np.float64, filt=None, irreps=IRREPS, pad=False, zero_edge=True):
    snd = rng.integers(0, n, e)
    rcv = rng.integers(0, n, e)
    if pad:
        snd[:3] = [-1, n, 2]
        rcv[:3] = [1, 0, n + 5]
    vec = rng.normal(size=(e, 3))
    if e and zero_edge:
        vec[-1] = 0.0  # a zero-length edge
    x = rng.normal(size=(n, e3nn.Irreps(irreps).dim))
    nw = e3nn.tensor_product(e3nn.Irreps(irreps), e3nn.Irreps("0e+1o+2e+3o"), filter_ir_out=filt).num_irreps
    w = rng.normal(size=(e, nw))
    cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    return cast(x), cast(vec), cast(w), jnp.asarray(snd), jnp.asarray(rcv), n


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("filt", FILTERS)
def test_forward_and_grads(rng, dtype, filt):
    x, vec, w, snd, rcv, n = problem(rng, dtype=dtype, filt=filt)
    out = jax.jit(bj_mp, static_argnums=(5, 6))(x, vec, w, snd, rcv, n, filt)
    args64 = [np.asarray(a, np.float64) for a in (x, vec, w)]
    scale = 1 if dtype == np.float64 else 2.5  # float32 tolerance 5e-6
    assert_close(out, ref_mp(*args64, snd, rcv, n, filt), dtype, scale=scale)
    c = rng.normal(size=out.shape)
    g = jax.grad(lambda *a: jnp.sum(bj_mp(*a, snd, rcv, n, filt) * c.astype(dtype)), (0, 1, 2))(x, vec, w)
    gr = jax.grad(lambda *a: jnp.sum(ref_mp(*a, snd, rcv, n, filt) * c), (0, 1, 2))(*args64)
    for a, b in zip(g, gr):
        assert_close(a, b, dtype, scale=scale * 4)


def test_padded_shuffled_and_graph(rng):
    x, vec, w, snd, rcv, n = problem(rng, pad=True)
    ref = ref_mp(x, vec, w, snd, rcv, n)
    assert_close(bj_mp(x, vec, w, snd, rcv, n), ref)
    perm = rng.permutation(snd.shape[0])
    assert_close(bj_mp(x, vec[perm], w[perm], snd[perm], rcv[perm], n), ref)
    g = bj.Graph.build(snd.astype(jnp.int16), rcv, n)
    assert_close(jax.jit(lambda x, g: bj_mp(x, vec, w, None, None, n, graph=g))(x, g), ref)
    # padded edges add nothing to any gradient
    c = rng.normal(size=ref.shape)
    gw, gv = jax.grad(lambda w, v: jnp.sum(bj_mp(x, v, w, snd, rcv, n) * c), (0, 1))(w, vec)
    assert np.all(np.asarray(gw[:3]) == 0) and np.all(np.asarray(gv[:3]) == 0)
    gwr, gvr = jax.grad(lambda w, v: jnp.sum(ref_mp(x, v, w, snd, rcv, n) * c), (0, 1))(w, vec)
    assert_close(gw, gwr)
    assert_close(gv, gvr)


def test_jvp_hvp_and_symmetry(rng):
    x, vec, w, snd, rcv, n = problem(rng, n=5, e=14)
    c = jnp.asarray(rng.normal(size=ref_mp(x, vec, w, snd, rcv, n).shape))
    t = [jnp.asarray(rng.normal(size=a.shape)) for a in (x, vec, w)]
    _, d = jax.jvp(lambda *a: bj_mp(*a, snd, rcv, n), (x, vec, w), tuple(t))
    _, dr = jax.jvp(lambda *a: ref_mp(*a, snd, rcv, n), (x, vec, w), tuple(t))
    assert_close(d, dr)
    energy = lambda v, f: jnp.sum(f(x, v, w, snd, rcv, n) * c)  # noqa: E731
    hvp = lambda f: jax.jvp(jax.grad(lambda v: energy(v, f)), (vec,), (t[1],))[1]  # noqa: E731
    assert_close(hvp(bj_mp), hvp(ref_mp))
    H = jax.hessian(lambda v: energy(v, bj_mp))(vec).reshape(vec.size, vec.size)
    np.testing.assert_allclose(H, H.T, atol=1e-10)


def test_force_training_double_backward(rng):
    x, vec, w, snd, rcv, n = problem(rng, n=6, e=20, filt="0e+1o+2e+3o")
    c = jnp.asarray(rng.normal(size=ref_mp(x, vec, w, snd, rcv, n, "0e+1o+2e+3o").shape))

    def loss(w, f):
        forces = -jax.grad(lambda v: jnp.sum(f(x, v, w, snd, rcv, n, "0e+1o+2e+3o") * c))(vec)
        return jnp.sum(forces ** 2)
    assert_close(jax.jit(jax.grad(lambda w: loss(w, bj_mp)))(w), jax.grad(lambda w: loss(w, ref_mp))(w))


def test_check_grads(rng):
    # no zero-length edge: finite differences across |v| = 0 are meaningless
    x, vec, w, snd, rcv, n = problem(rng, n=4, e=6, irreps="2x0e+1x1o+1x2e", zero_edge=False)
    f = lambda *a: bj_mp(*a, snd, rcv, n, None, 3, "2x0e+1x1o+1x2e")  # noqa: E731
    check_grads(f, (x, vec, w), order=2, modes=("fwd", "rev"), eps=1e-6)


def test_vmap_over_node_features(rng):
    x, vec, w, snd, rcv, n = problem(rng, pad=True)
    xs = jnp.stack([x, 2 * x + 1, -x])
    out = jax.vmap(lambda x: bj_mp(x, vec, w, snd, rcv, n))(xs)
    for b in range(3):
        assert_close(out[b], ref_mp(xs[b], vec, w, snd, rcv, n))
    g = jax.vmap(jax.grad(lambda x: jnp.sum(bj_mp(x, vec, w, snd, rcv, n) ** 2)))(xs)
    gr = jax.grad(lambda x: jnp.sum(ref_mp(x, vec, w, snd, rcv, n) ** 2))(xs[1])
    assert_close(g[1], gr)


def test_empty_graph(rng):
    x, vec, w, snd, rcv, n = problem(rng, e=0)
    out = bj_mp(x, vec, w, snd, rcv, n)
    assert out.shape[0] == n and np.all(np.asarray(out) == 0)
    gx = jax.grad(lambda x: jnp.sum(bj_mp(x, vec, w, snd, rcv, n)))(x)
    assert np.all(np.asarray(gx) == 0)


def test_bad_input(rng):
    x, vec, w, snd, rcv, n = problem(rng)
    with pytest.raises(ValueError, match="edge_weights"):
        bj_mp(x, vec, w[:, :-1], snd, rcv, n)
    with pytest.raises(TypeError, match="senders"):
        bj_mp(x, vec, w, snd.astype(jnp.float32), rcv, n)
    with pytest.raises(ValueError, match="receivers"):
        bj_mp(x, vec, w, snd, rcv[:-1], n)
    with pytest.raises(ValueError, match="l > 3"):
        bje.message_passing(e3nn.IrrepsArray("4e", jnp.ones((n, 9))), vec, w, snd, rcv, n)


def test_fused_sh_tp_simple(rng):
    n, e = 9, 40
    v = jnp.asarray(rng.normal(size=(e, 3)))
    f = jnp.asarray(rng.normal(size=(n, 16)))
    src = jnp.asarray(rng.integers(-2, n + 2, e))
    out = bj.fused_sh_tp_simple(v, f, src)
    ok = (src >= 0) & (src < n)
    ref = bj.tensor_product_simple(f[jnp.clip(src, 0, n - 1)], bj.spherical_harmonics(v)) * ok[:, None]
    assert_close(out, ref)
    c = jnp.asarray(rng.normal(size=(e, 16)))
    g = jax.grad(lambda f, v: jnp.sum(bj.fused_sh_tp_simple(v, f, src) * c), (0, 1))(f, v)
    gr = jax.grad(lambda f, v: jnp.sum(bj.tensor_product_simple(f[jnp.clip(src, 0, n - 1)], bj.spherical_harmonics(v)) * ok[:, None] * c), (0, 1))(f, v)
    assert_close(g[0], gr[0])
    assert_close(g[1], gr[1])
    # one fused kernel in the forward (no harmonics array), one in the first-order backward
    assert _targets(jax.jit(bj.fused_sh_tp_simple).lower(v, f, src).as_text()) == ["bj_sh_tp_simple"]
    loss = lambda v, f: jnp.sum(bj.fused_sh_tp_simple(v, f, src) * c)  # noqa: E731
    assert _targets(jax.jit(jax.grad(loss, (0, 1))).lower(v, f).as_text()) == ["bj_sh_tp_simple_bwd"]
    only_v = jax.grad(loss)(v, f)
    assert_close(only_v, gr[1])
    # vmap over edge vectors and features folds into one call
    vs, fs = jnp.stack([v, -2 * v]), jnp.stack([f, f ** 2])
    outs = jax.vmap(lambda v, f: bj.fused_sh_tp_simple(v, f, src))(vs, fs)
    grads = jax.vmap(jax.grad(loss, (0, 1)))(vs, fs)  # the fused backward, folded
    for b in range(2):
        assert_close(outs[b], bj.fused_sh_tp_simple(vs[b], fs[b], src))
        for gb, g1 in zip(grads, jax.grad(loss, (0, 1))(vs[b], fs[b])):
            assert_close(gb[b], g1)
    check_grads(lambda v, f: bj.fused_sh_tp_simple(v, f, src[:6]), (v[:6], f), order=2, modes=("fwd", "rev"), eps=1e-6)


@requires_gpu
def test_gpu_deterministic(rng):
    n, e = 400, 6000
    x, vec, w, snd, rcv, _ = problem(rng, n=n, e=e, dtype=np.float32, irreps="16x0e+16x1o+16x2e+16x3o")
    graph = bj.Graph.build(snd, rcv, n)
    c = jnp.asarray(rng.normal(size=(n, bj_mp(x, vec, w, None, None, n, graph=graph, irreps="16x0e+16x1o+16x2e+16x3o").shape[1])), jnp.float32)
    f = jax.jit(lambda x, v, w: (bj_mp(x, v, w, None, None, n, graph=graph, irreps="16x0e+16x1o+16x2e+16x3o"),
                                 jax.grad(lambda x, v, w: jnp.sum(bj_mp(x, v, w, None, None, n, graph=graph, irreps="16x0e+16x1o+16x2e+16x3o") * c), (0, 1, 2))(x, v, w)))
    first = jax.tree_util.tree_leaves(f(x, vec, w))
    for _ in range(9):
        for a, b in zip(first, jax.tree_util.tree_leaves(f(x, vec, w))):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    # fused_sh_tp_simple's backward sums many edges into each source row
    feats = jnp.asarray(rng.normal(size=(50, 16)), jnp.float32)
    src = jnp.asarray(snd % 50)
    ct = jnp.asarray(rng.normal(size=(e, 16)), jnp.float32)
    g = jax.jit(jax.grad(lambda v, f: jnp.sum(bj.fused_sh_tp_simple(v, f, src) * ct), (0, 1)))
    first = g(vec, feats)
    for _ in range(9):
        for a, b in zip(first, g(vec, feats)):
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_zero_length_edge_third_order(rng):
    x, vec, w, snd, rcv, n = problem(rng, n=4, e=5)
    assert np.all(np.asarray(vec[-1]) == 0)
    c = jnp.asarray(rng.normal(size=ref_mp(x, vec, w, snd, rcv, n).shape))
    t = jnp.asarray(rng.normal(size=vec.shape))

    def third(f):
        e = lambda v: jnp.sum(f(x, v, w, snd, rcv, n) * c)  # noqa: E731
        g = lambda v: jnp.sum(jax.grad(e)(v) * t)  # noqa: E731
        return jax.jvp(jax.grad(g), (vec,), (t,))[1]

    out = third(bj_mp)
    assert np.all(np.isfinite(np.asarray(out)))
    assert_close(out, third(ref_mp))


def _targets(hlo: str) -> list:
    import re
    return re.findall(r"custom_call @(bj_[a-z_]+)", hlo)


def test_fused_kernels_carry_forward_and_first_backward(rng):
    """Forward and the first-order backward run on the fused kernels only: no harmonics array,
    no generic product, one backward call for all three gradients."""
    x, vec, w, snd, rcv, n = problem(rng)
    fwd = jax.jit(lambda x, v, w: bj_mp(x, v, w, snd, rcv, n)).lower(x, vec, w).as_text()
    assert _targets(fwd) == ["bj_conv_fwd"]
    loss = lambda x, v, w: jnp.sum(bj_mp(x, v, w, snd, rcv, n) ** 2)  # noqa: E731
    bwd = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, vec, w).as_text()
    assert sorted(_targets(bwd)) == ["bj_conv_bwd", "bj_conv_fwd"]


@pytest.mark.parametrize("irreps,filt", [("40x0e+33x1o+2x1e", None), ("2x0e+1x1e", "0e")])
def test_channel_blocks_and_unused_inputs(rng, irreps, filt):
    """More than 32 channels (several CUDA channel blocks), two parities of one l, and an input
    block no path reads (its gradient is zero)."""
    x, vec, w, snd, rcv, n = problem(rng, irreps=irreps, filt=filt, pad=True)
    assert_close(bj_mp(x, vec, w, snd, rcv, n, filt, irreps=irreps), ref_mp(x, vec, w, snd, rcv, n, filt, irreps=irreps))
    c = jnp.asarray(rng.normal(size=ref_mp(x, vec, w, snd, rcv, n, filt, irreps=irreps).shape))
    g = jax.grad(lambda *a: jnp.sum(bj_mp(*a, snd, rcv, n, filt, irreps=irreps) * c), (0, 1, 2))(x, vec, w)
    gr = jax.grad(lambda *a: jnp.sum(ref_mp(*a, snd, rcv, n, filt, irreps=irreps) * c), (0, 1, 2))(x, vec, w)
    for a, b in zip(g, gr):
        assert_close(a, b)


def test_vmap_over_edges_and_weights(rng):
    """A batch of vectors and weights on one graph folds into one call of each kernel."""
    x, vec, w, snd, rcv, n = problem(rng, pad=True)
    vs = jnp.stack([vec, 0.5 * vec, -vec])
    ws = jnp.stack([w, w ** 2, -w])
    f = lambda v, w: bj_mp(x, v, w, snd, rcv, n)  # noqa: E731
    out = jax.vmap(f)(vs, ws)
    g = jax.vmap(jax.grad(lambda v, w: jnp.sum(f(v, w) ** 2), (0, 1)))(vs, ws)
    for b in range(3):
        assert_close(out[b], ref_mp(x, vs[b], ws[b], snd, rcv, n))
        gr = jax.grad(lambda v, w: jnp.sum(ref_mp(x, v, w, snd, rcv, n) ** 2), (0, 1))(vs[b], ws[b])
        assert_close(g[0][b], gr[0])
        assert_close(g[1][b], gr[1])
    hlo = jax.jit(jax.vmap(jax.grad(lambda v, w: jnp.sum(f(v, w) ** 2), (0, 1)))).lower(vs, ws).as_text()
    assert sorted(_targets(hlo)) == ["bj_conv_bwd", "bj_conv_fwd"]


def test_vmap_of_jvp(rng):
    """Forward mode under vmap: the joint tangent primitive batches (a batch of tangents)."""
    x, vec, w, snd, rcv, n = problem(rng, pad=True)
    f = lambda v: bj_mp(x, v, w, snd, rcv, n)  # noqa: E731
    ts = jnp.asarray(rng.normal(size=(3,) + vec.shape))
    dots = jax.vmap(lambda t: jax.jvp(f, (vec,), (t,))[1])(ts)
    for b in range(3):
        ref = jax.jvp(lambda v: ref_mp(x, v, w, snd, rcv, n), (vec,), (ts[b],))[1]
        assert_close(dots[b], ref)


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("irreps", ["33x0e+33x1o+32x2e+32x3o", IRREPS])
def test_gpu_matches_cpu(rng, dtype, filt, irreps):
    """The CUDA kernels against the CPU handlers (which the CPU tests hold to e3nn-jax): output,
    the three gradients, the forces alone and the force-training gradient, with padding and two
    hub nodes whose segments pass 128 edges (the segment sum's chunk). The irreps give channel
    blocks with idle lanes and x widths that are and are not a multiple of the 16-byte column
    group. The kernels' compile-time path sets: the full filter gives runs with every path,
    "0e+1o+2e+3o" (natural parities) the even set l1 + l2 + l3; no filter reaches l_out = 6."""
    gpu_vs_cpu(rng, dtype, filt, irreps)


@requires_gpu
@pytest.mark.parametrize("filt", ["0e+0o+1e+1o+2e+2o+3e+3o", "0e+1o+2e+3o"])
def test_gpu_matches_cpu_sparse(rng, filt):
    """Fewer than 24 edges per receiver (10 here): the fp32 dPhi/dY-only backward takes its
    direct kernel, where the denser graph of test_gpu_matches_cpu (25 per receiver) takes the
    edge-pair kernel (bwd_y_pairs_pay in conv_cuda.cu)."""
    gpu_vs_cpu(rng, np.float32, filt, IRREPS, e=600)


@requires_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpu_matches_cpu_masked_paths(rng, dtype):
    """Runs whose paths are neither all nor the even set (unnatural parities under MACE's filter
    keep the odd set l1 + l2 + l3): the variants that test each path against the run's mask at
    run time, with l_out <= 3."""
    gpu_vs_cpu(rng, dtype, "0e+1o+2e+3o", "33x0o+33x1e+32x2o+32x3e")


def gpu_vs_cpu(rng, dtype, filt, irreps, e=1500):
    n = 60
    x, vec, w, snd, rcv, _ = problem(rng, n=n, e=e, dtype=dtype, filt=filt, irreps=irreps, pad=True)
    rcv = rcv.at[3:303].set(0)
    snd = snd.at[303:603].set(1)
    c = jnp.asarray(rng.normal(size=(n, bj_mp(x, vec, w, snd, rcv, n, filt, irreps=irreps).shape[1])), dtype)

    def out_and_grads(x, vec, w, snd, rcv, c):
        f = lambda x, v, w: bj_mp(x, v, w, snd, rcv, n, filt, irreps=irreps)  # noqa: E731
        phi = lambda x, v, w: jnp.sum(f(x, v, w) * c)  # noqa: E731
        # forces alone (the backward that wants dPhi/dY only) and the force-training gradient
        # (that one again, then a tangent-mode backward that wants w_bar only): each call
        # takes its own kernel variant
        forces = lambda w: jax.grad(phi, 1)(x, vec, w)  # noqa: E731
        train = jax.grad(lambda w: jnp.sum(forces(w) ** 2))(w)
        return f(x, vec, w), jax.grad(phi, (0, 1, 2))(x, vec, w), forces(w), train

    f = jax.jit(out_and_grads)
    args = (x, vec, w, snd, rcv, c)
    gpu = jax.tree_util.tree_leaves(f(*args))
    cpu_dev = jax.devices("cpu")[0]
    with jax.default_device(cpu_dev):
        cpu = jax.tree_util.tree_leaves(f(*(jax.device_put(a, cpu_dev) for a in args)))
    for a, b in zip(gpu, cpu):
        assert_close(a, b, dtype, scale=10.0)

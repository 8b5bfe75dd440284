import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import batteries_jax as bj
import batteries_jax.e3nn as bje
from conftest import assert_close, requires_gpu

IRREPS = ["0e", "0e+1o", "0e+1o+2e", "0e+1o+2e+3o"]


def ref_sh(v, L, normalize=True):
    return e3nn.spherical_harmonics(IRREPS[L], e3nn.IrrepsArray("1o", v), normalize,
                                    normalization="component").array


def vectors(rng, n, dtype, zero=True):
    v = rng.normal(size=(n, 3))
    if zero:
        v[0] = 0.0
    return jnp.asarray(v, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("L", [0, 1, 2, 3])
@pytest.mark.parametrize("normalize", [True, False])
def test_values(rng, dtype, L, normalize):
    v = vectors(rng, 257, dtype)
    y = jax.jit(bj.spherical_harmonics, static_argnums=(1, 2))(v, L, normalize)
    assert y.dtype == dtype and y.shape == (257, (L + 1) ** 2)
    assert_close(y, ref_sh(np.asarray(v, np.float64), L, normalize), dtype, scale=1 if normalize else 10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("L", [1, 3])
def test_grad_and_backward(rng, dtype, L):
    v = vectors(rng, 100, dtype)
    c = jnp.asarray(rng.normal(size=(100, (L + 1) ** 2)), dtype)
    g = jax.jit(jax.grad(lambda v: jnp.sum(bj.spherical_harmonics(v, L) * c)))(v)
    gr = jax.grad(lambda v: jnp.sum(ref_sh(v, L) * c))(np.asarray(v, np.float64))
    assert_close(g, gr, dtype, scale=4)
    assert_close(jax.jit(bj.spherical_harmonics_backward)(v, c), gr, dtype, scale=4)


def test_zero_vector_matches_e3nn():
    z = jnp.zeros((1, 3))
    assert_close(bj.spherical_harmonics(z), ref_sh(z, 3))
    jac = jax.jacobian(lambda v: bj.spherical_harmonics(v)[0])(z)[:, 0, :]
    jac_ref = jax.jacobian(lambda v: ref_sh(v, 3)[0])(z)[:, 0, :]
    assert_close(jac, jac_ref)
    assert_close(jac[1:4], np.sqrt(3) * np.eye(3))
    # higher orders at zero are finite and equal e3nn's
    h = jax.hessian(lambda v: jnp.sum(bj.spherical_harmonics(v) ** 2))(z)
    h_ref = jax.hessian(lambda v: jnp.sum(ref_sh(v, 3) ** 2))(z)
    assert_close(h, h_ref)


def test_jvp(rng):
    v, t = vectors(rng, 50, np.float64), jnp.asarray(rng.normal(size=(50, 3)))
    y, dy = jax.jvp(bj.spherical_harmonics, (v,), (t,))
    yr, dyr = jax.jvp(lambda v: ref_sh(v, 3), (v,), (t,))
    assert_close(y, yr)
    assert_close(dy, dyr)


@pytest.mark.parametrize("normalize", [True, False])
def test_check_grads_order2(rng, normalize):
    v = vectors(rng, 12, np.float64, zero=False)
    # eps=1e-6: at the default 1e-4 the finite differences of the degree-3 polynomial's second
    # derivative are off by ~2e-4 relative (the pure-jnp reference fails the same way)
    check_grads(lambda v: bj.spherical_harmonics(v, 3, normalize), (v,), order=2,
                modes=("fwd", "rev"), eps=1e-6)
    c = jnp.asarray(rng.normal(size=(12, 16)))
    check_grads(lambda v, c: bj.spherical_harmonics_backward(v, c, normalize), (v, c), order=2,
                modes=("fwd", "rev"), eps=1e-6)


def test_third_order_against_e3nn(rng):
    v = vectors(rng, 6, np.float64, zero=False)
    c = jnp.asarray(rng.normal(size=(6, 16)))
    t = jnp.asarray(rng.normal(size=(6, 3)))

    def third(f):
        e = lambda v: jnp.sum(f(v) * c)  # noqa: E731
        g = lambda v: jnp.sum(jax.grad(e)(v) * t)  # noqa: E731  (rev)
        h = lambda v: jax.jvp(jax.grad(g), (v,), (t,))[1]  # noqa: E731 (fwd over rev over rev)
        return h(v)

    assert_close(third(bj.spherical_harmonics), third(lambda v: ref_sh(v, 3)))


def test_vmap(rng):
    v = jnp.asarray(rng.normal(size=(4, 9, 3)))
    out = jax.vmap(bj.spherical_harmonics)(v)
    assert_close(out, ref_sh(v.reshape(-1, 3), 3).reshape(4, 9, 16))
    c = jnp.asarray(rng.normal(size=(4, 9, 16)))
    g = jax.vmap(jax.grad(lambda v, c: jnp.sum(bj.spherical_harmonics(v) * c)), in_axes=(1, 1))(v, c)
    gr = jax.grad(lambda v: jnp.sum(ref_sh(v, 3) * c.reshape(-1, 16)))(v.reshape(-1, 3))
    assert_close(jnp.swapaxes(g, 0, 1), gr.reshape(4, 9, 3))
    gb = jax.vmap(bj.spherical_harmonics_backward, in_axes=(0, None))(v, c[0])
    assert_close(gb[2], bj.spherical_harmonics_backward(v[2], c[0]))


def test_empty_and_leading_shapes():
    assert bj.spherical_harmonics(jnp.zeros((0, 3))).shape == (0, 16)
    assert bj.spherical_harmonics(jnp.zeros((2, 0, 3)), L_max=2).shape == (2, 0, 9)
    assert jax.grad(lambda v: jnp.sum(bj.spherical_harmonics(v)))(jnp.zeros((0, 3))).shape == (0, 3)
    assert bj.spherical_harmonics(jnp.ones(3)).shape == (16,)


def test_bad_input():
    with pytest.raises(ValueError, match="edge_vectors"):
        bj.spherical_harmonics(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="L_max"):
        bj.spherical_harmonics(jnp.ones((4, 3)), L_max=4)
    with pytest.raises(ValueError, match="L_max"):
        bj.spherical_harmonics(jnp.ones((4, 3)), L_max=-1)
    with pytest.raises(TypeError, match="edge_vectors"):
        bj.spherical_harmonics(jnp.ones((4, 3), jnp.int32))
    with pytest.raises(TypeError, match="edge_vectors"):
        bj.spherical_harmonics(jnp.ones((4, 3), jnp.complex64))
    with pytest.raises(ValueError, match="grad_Y"):
        bj.spherical_harmonics_backward(jnp.ones((4, 3)), jnp.ones((4, 5)))


@pytest.mark.parametrize("irreps", ["0e+1o+2e+3o", [0, 1, 2, 3], 2, "1o+0e+2x2e", [1, 3]])
@pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
def test_e3nn_dropin(rng, irreps, normalization):
    x = e3nn.IrrepsArray("1o", jnp.asarray(rng.normal(size=(11, 3))))
    ref = e3nn.spherical_harmonics(irreps, x, True, normalization=normalization)
    out = bje.spherical_harmonics(irreps, x, True, normalization=normalization)
    assert out.irreps == ref.irreps
    assert_close(out.array, ref.array)
    xe = e3nn.IrrepsArray("1e", x.array)
    assert bje.spherical_harmonics([1, 2], xe, False).irreps == e3nn.spherical_harmonics([1, 2], xe, False).irreps


def test_e3nn_dropin_errors():
    x = e3nn.IrrepsArray("1o", jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="l <= 3"):
        bje.spherical_harmonics(4, x, True)
    with pytest.raises(ValueError, match="parity"):
        bje.spherical_harmonics("1e", x, True)


@requires_gpu
def test_gpu_matches_cpu(rng):
    v = vectors(rng, 5000, np.float64)
    c = jnp.asarray(rng.normal(size=(5000, 16)))
    f = jax.jit(lambda v, c: (bj.spherical_harmonics(v), bj.spherical_harmonics_backward(v, c)))
    cpu = jax.devices("cpu")[0]
    g_out = f(v, c)
    with jax.default_device(cpu):
        c_out = f(jax.device_put(v, cpu), jax.device_put(c, cpu))
    for a, b in zip(g_out, c_out):
        assert_close(a, b)

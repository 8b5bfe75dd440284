"""The build, the registration and the lowering: what every primitive stands on."""
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batteries_jax as bj
from batteries_jax import _ffi, _paths
from batteries_jax import _batteries_jax as ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registrations_cover_every_op_on_cpu():
    regs = ext.registrations()
    assert set(regs["cpu"]) == {"bj_sh_fwd", "bj_sh_jvp", "bj_sh_vjp", "bj_uvu", "bj_conv_fwd",
                                "bj_conv_bwd", "bj_sh_tp_simple", "bj_sh_tp_simple_bwd", "bj_fc", "bj_fc_bwd",
                                "bj_tp_simple", "bj_tp_simple_bwd"}
    if _ffi.WITH_CUDA:
        assert set(regs["CUDA"]) == set(regs["cpu"])


def test_hlo_contains_custom_call():
    v = jnp.ones((4, 3))
    hlo = jax.jit(bj.spherical_harmonics).lower(v).as_text()
    assert "bj_sh_fwd" in hlo
    hlo = jax.jit(bj.tensor_product_simple).lower(jnp.ones((4, 16)), jnp.ones((4, 16))).as_text()
    assert "bj_tp_simple" in hlo


def _mp_energy(x, v, w):
    import e3nn_jax as e3nn
    import batteries_jax.e3nn as bje
    out = bje.message_passing(e3nn.IrrepsArray("1x0e+1x1o", x), v, w, jnp.array([0, 1, 2, 0, 1]),
                              jnp.array([1, 2, 0, 0, -1]), 3, L_max=1, filter_ir_out="0e+1o")
    return jnp.sum(out.array ** 2)


@pytest.mark.parametrize("fn, args, targets", [
    (lambda v: jax.grad(lambda v: jnp.sum(bj.spherical_harmonics(v) ** 2))(v), (jnp.ones((8, 3)),),
     ["bj_sh_fwd", "bj_sh_vjp"]),
    (lambda x, y: jax.grad(lambda x: jnp.sum(bj.tensor_product_simple(x, y) ** 2))(x),
     (jnp.ones((8, 16)), jnp.ones((8, 16))), ["bj_tp_simple", "bj_tp_simple_bwd"]),
    (lambda x, y, w: jax.grad(lambda *a: jnp.sum(bj.tensor_product(*a) ** 2), (0, 1, 2))(x, y, w),
     (jnp.ones((8, 3, 16)), jnp.ones((8, 16)), jnp.ones((34, 3, 5))), ["bj_fc", "bj_fc_bwd"]),
    (lambda x, v, w: jax.grad(_mp_energy, (0, 1, 2))(x, v, w),
     (jnp.ones((3, 4)), jnp.ones((5, 3)), jnp.ones((5, 4))), ["bj_conv_fwd", "bj_conv_bwd"]),
])
def test_cuda_lowering_exports_on_any_machine(fn, args, targets):
    checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in targets]
    exp = jax.export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=checks)(*args)
    text = exp.mlir_module()
    for t in targets:
        assert t in text


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_tables", os.path.join(ROOT, "tools", "gen_tables.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checked_in_headers_match_the_generator():
    gen = _load_generator()
    for rel, text in gen.render_all(_paths).items():
        with open(os.path.join(ROOT, rel)) as f:
            assert f.read() == text, f"{rel} is stale: run tools/gen_tables.py"


def test_tables_match_e3nn():
    e3nn = pytest.importorskip("e3nn_jax")
    for (l1, l2, l3) in _paths.TRIPLES:
        ref = np.asarray(e3nn.clebsch_gordan(l1, l2, l3), np.float64) * np.sqrt(2 * l3 + 1)
        np.testing.assert_allclose(_paths.cg_dense(l1, l2, l3), ref, rtol=0, atol=1e-15)
    assert len(_paths.TRIPLES) == 44 and len(_paths.SEED_PATHS) == 34
    v = np.random.default_rng(0).normal(size=(20, 3))
    from batteries_jax.primitives.spherical_harmonics import sh_reference
    ref = e3nn.spherical_harmonics("0e+1o+2e+3o", e3nn.IrrepsArray("1o", v), False, "component").array
    np.testing.assert_allclose(sh_reference(jnp.asarray(v), 3, False), ref, rtol=1e-13, atol=1e-13)


def test_path_info():
    info = bj.get_tp_path_info()
    assert bj.get_tp_num_paths() == 34 and info.shape == (34, 3)
    assert [tuple(r) for r in info] == sorted(tuple(r) for r in info)
    for l1, l2, l3 in info:
        assert abs(l1 - l2) <= l3 <= min(l1 + l2, 3)


def test_default_float32_mode_runs_every_family():
    """The suite enables x64; users mostly don't. Run the three families in a fresh process."""
    import subprocess
    code = ("import jax, jax.numpy as jnp, batteries_jax as bj\n"
            "v = jnp.ones((5, 3)); x = jnp.ones((5, 16)); assert v.dtype == jnp.float32\n"
            "jax.block_until_ready(jax.grad(lambda v: jnp.sum(bj.spherical_harmonics(v)))(v))\n"
            "jax.block_until_ready(jax.grad(lambda x: jnp.sum(bj.tensor_product_simple(x, x)))(x))\n"
            "jax.block_until_ready(bj.tensor_product(jnp.ones((5, 2, 16)), x, jnp.ones((34, 2, 3))))\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(ROOT))
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]

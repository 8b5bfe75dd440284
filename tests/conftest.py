import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

# Tests import the installed package (site-packages, or a --target prefix on PYTHONPATH for
# A/B builds), never the uncompiled package in the source tree next to this folder.
from pathlib import Path  # noqa: E402

import batteries_jax  # noqa: E402

_SOURCE_PACKAGE = Path(__file__).resolve().parents[1] / "batteries_jax"
assert Path(batteries_jax.__file__).resolve().parent != _SOURCE_PACKAGE, (
    f"tests must run against the installed package, got {batteries_jax.__file__}")

ON_GPU = jax.default_backend() == "gpu"
requires_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU")

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-6, atol=2e-6)}


def assert_close(a, b, dtype=np.float64, scale=1.0):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    t = TOL[dtype]
    np.testing.assert_allclose(a, b, rtol=t["rtol"] * scale, atol=t["atol"] * scale * max(1.0, np.abs(b).max(initial=0)))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

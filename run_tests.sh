#!/usr/bin/env bash
# Fresh machine -> virtual environment, build (CPU handlers; CUDA handlers too when nvcc is
# found), then the test suite. GPU-only tests skip without a GPU. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${BJ_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "jax>=0.10,<0.12" "e3nn-jax>=0.20" "nanobind>=2.2" "scikit-build-core>=0.10" pytest
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps .
cd tests  # import the installed package, never the source tree
exec "../$VENV/bin/python" -m pytest -q "$@"

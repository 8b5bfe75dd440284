#!/usr/bin/env bash
# Fresh machine -> virtual environment, build, then the benchmark suite: full sizes against
# e3nn-jax and cuequivariance-jax on a GPU, the CPU-sized version (tiny problems) without one.
# Results are printed and appended to benchmarks/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${BJ_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "jax>=0.10,<0.12" "e3nn-jax>=0.20" "nanobind>=2.2" "scikit-build-core>=0.10"
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps .
export BJ_BENCH_JSON=${BJ_BENCH_JSON:-$PWD/benchmarks/results.jsonl}
cd benchmarks
for b in bench_spherical_harmonics benchmark_tensor_product benchmark_fused_sh_tp benchmark_e2e_mace; do
  "../$VENV/bin/python" "$b.py" "$@"
done

#!/usr/bin/env bash
# Build, test and benchmark on the GPU machine in one go (no network there).
# Usage (device tool, repo root, carry .whl): bash benchmarks/gpu_run.sh [pytest-args]
# Logs go to $OUT (or ./gpu_out). BJ_BENCHES="" builds (and tests) without benchmarks.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source benchmarks/device_env.sh
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
# BJ_PYTEST_ARGS: files/flags (split on spaces); BJ_PYTEST_K: one -k expression (may hold spaces);
# BJ_TEST_TIMEOUT: seconds for the whole test run (the full suite takes > 9 min on the H100)
[ -n "${BJ_SKIP_TESTS:-}" ] || { cd tests && timeout ${BJ_TEST_TIMEOUT:-420} python3 -m pytest -q ${BJ_PYTEST_ARGS:-} ${BJ_PYTEST_K:+-k "$BJ_PYTEST_K"} > "$OUT/tests.log" 2>&1; echo "tests rc=$?"; tail -5 "$OUT/tests.log"; cd ..; }
export BJ_BENCH_JSON="$OUT/bench.jsonl"
for b in ${BJ_BENCHES-bench_spherical_harmonics benchmark_tensor_product benchmark_e2e_mace}; do
  (cd benchmarks && timeout ${BJ_BENCH_TIMEOUT:-300} python3 $b.py ${BJ_BENCH_ARGS:-}) 2>&1 | tee "$OUT/$b.log" | grep -v "^CHECK.*OK" | grep -v Warning
done

#!/usr/bin/env bash
# A/B several branches in one GPU call (benchmarks/ab_run.sh runs them). Here: export each branch's tree into .ab/<branch>
# (git-ignored) and pass carry [".whl", ".ab"] to the device tool. There, build each tree into
# its own prefix and run a script against it:
#   bash benchmarks/gpu_run.sh                      # main, as usual (installs into site-packages)
#   pip install --no-build-isolation --no-deps -q --target /tmp/ab/<branch> .ab/<branch>
#   PYTHONPATH=/tmp/ab/<branch>:/tmp/site python3 benchmarks/benchmark_tensor_product.py --fc-only
# (each extra tree costs one build, ~60-80 s on the H100 machine).
# Usage: bash benchmarks/ab_prepare.sh BRANCH [BRANCH ...]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
for b in "$@"; do
  rm -rf ".ab/$b" && mkdir -p ".ab/$b"
  git archive "$b" | tar -x -C ".ab/$b"
  echo ".ab/$b <- $(git rev-parse --short "$b")"
done

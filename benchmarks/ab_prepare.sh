#!/usr/bin/env bash
# Export each branch's tree into .ab/<branch> (git-ignored) for an A/B in one GPU call:
# carry [".whl", ".ab"] and run benchmarks/ab_run.sh there (its header lists the options).
# Usage: bash benchmarks/ab_prepare.sh BRANCH [BRANCH ...]
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
for b in "$@"; do
  rm -rf ".ab/$b" && mkdir -p ".ab/$b"
  git archive "$b" | tar -x -C ".ab/$b"
  echo ".ab/$b <- $(git rev-parse --short "$b")"
done

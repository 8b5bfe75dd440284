#!/usr/bin/env bash
# One line per kernel of a CUDA source: its name and a hash of its machine code (the .text
# section of the sm_90 cubin), without a GPU. Run it before and after a refactor and diff the
# two: equal hashes mean the kernels did not change at all.
#   bash benchmarks/cubin_text_hashes.sh csrc/cuda/fc_cuda.cu [python] > before.txt
# The optional python is one with jax installed (for the XLA FFI headers; default python3).
# Kernel names lose the anonymous namespace's per-file hash, which changes with the file.
# Compare builds made in the same directory (e.g. one worktree, checked out at each commit):
# the same commit built under /work/main and under another worktree gave different hashes for
# every kernel (2026-11-29), each stable run after run in its own directory.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
source benchmarks/_cubin.sh  # src, py, a temporary $cubin; build_cubin
build_cubin "$src" "$py" "$cubin"
for s in $(readelf -S --wide "$cubin" 2>/dev/null | awk '$2 ~ /^\.text\./ {print $2}'); do
  echo "$(echo "$s" | sed -E 's/_GLOBAL__N__[0-9a-f]+_[0-9]+_[A-Za-z0-9_]+_[0-9a-f]{8}//') $(readelf -x "$s" "$cubin" 2>/dev/null | md5sum | cut -c1-12)"
done | sort

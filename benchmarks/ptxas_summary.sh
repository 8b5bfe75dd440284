#!/usr/bin/env bash
# Registers and spill bytes per kernel of one CUDA source, without a GPU (nvcc, sm_90):
#   bash benchmarks/ptxas_summary.sh csrc/cuda/fc_cuda.cu [python]
# The optional python is one with jax installed (for the XLA FFI headers; default python3).
# Prints "kernel  regs=N spill=B" per kernel, names demangled.
set -euo pipefail
src=$1; py=${2:-python3}
cd "$(git rev-parse --show-toplevel)"
inc=$("$py" -c "import jax; print(jax.ffi.include_dir())")
obj=$(mktemp --suffix .o)
trap 'rm -f "$obj"' EXIT
nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr -diag-suppress=940,2473,177 -I csrc -I "$inc" \
  -Xptxas -v -c "$src" -o "$obj" 2>&1 | python3 -c '
import re, subprocess, sys
kernel, spill = None, "?"
for line in sys.stdin:
    m = re.search(r"Compiling entry function .(\S+). for", line)
    if m:
        kernel = subprocess.run(["c++filt"], input=m.group(1), capture_output=True, text=True).stdout.strip()
        kernel = re.sub(r"bj::(\(anonymous namespace\)::)?", "", kernel)
    m = re.search(r"(\d+) bytes spill stores", line)
    if m and kernel:
        spill = m.group(1)
    m = re.search(r"Used (\d+) registers", line)
    if m and kernel:
        print(f"{kernel[:90]:90s} regs={m.group(1)} spill={spill}")
        kernel = None
'

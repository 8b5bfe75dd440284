#!/usr/bin/env bash
# Registers, spill bytes and machine-code size per kernel of one CUDA source, without a GPU
# (nvcc, sm_90):
#   bash benchmarks/ptxas_summary.sh csrc/cuda/fc_cuda.cu [python]
# The optional python is one with jax installed (for the XLA FFI headers; default python3).
# Prints "kernel  regs=N spill=B code=KB" per kernel, names demangled. The code size (the
# kernel's .text section in the cubin, 16 bytes per instruction) matters where the stall
# samples show "no instruction" (instruction-cache misses).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
source benchmarks/_cubin.sh  # src, py, a temporary $cubin; build_cubin
log=$(build_cubin "$src" "$py" "$cubin" -Xptxas -v 2>&1)
sizes=$(readelf -S --wide "$cubin" 2>/dev/null | awk '$2 ~ /^\.text\./ {print substr($2, 7), $6}')
SIZES="$sizes" python3 -c '
import os, re, subprocess, sys
size = {name: int(hexsize, 16) for name, hexsize in (l.split() for l in os.environ["SIZES"].splitlines() if l.strip())}
kernel, mangled, spill = None, None, "?"
for line in sys.stdin:
    m = re.search(r"Compiling entry function .(\S+). for", line)
    if m:
        mangled = m.group(1)
        kernel = subprocess.run(["c++filt"], input=mangled, capture_output=True, text=True).stdout.strip()
        kernel = re.sub(r"bj::(\(anonymous namespace\)::)?", "", kernel)
    m = re.search(r"(\d+) bytes spill stores", line)
    if m and kernel:
        spill = m.group(1)
    m = re.search(r"Used (\d+) registers", line)
    if m and kernel:
        code = size.get(mangled)
        code = f"{code / 1024:.0f}KB" if code is not None else "?"
        print(f"{kernel[:90]:90s} regs={m.group(1)} spill={spill} code={code}")
        kernel = None
' <<< "$log"

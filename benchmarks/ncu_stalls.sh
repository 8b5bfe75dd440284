#!/usr/bin/env bash
# Why a kernel waits: Nsight Compute's stall, occupancy, memory and per-source-line sections for
# the fp32 FC kernels (N = 20k) and the conv kernels (W2, real graph, backward), on the GPU
# machine (device tool, repo root, carry [".whl"]). Builds this tree once into /tmp/ab/stalls.
# Writes to $OUT: the section reports (*.txt), all metrics (*_raw.csv), per-CUDA-line tables (*_source.csv) and the
# reports themselves (*.ncu-rep, for the Nsight Compute GUI).
#   STALL_FC_KERNELS  ncu regex on demangled names (default fc_(fwd|xy|w)_kernel<float; "" skips)
#   STALL_PREFIX      an installed tree to profile (e.g. /tmp/ab/main from ab_run.sh in the same
#                     call) instead of building this one
#   STALL_CONV_ARGS   profile_conv.py arguments ("" skips; default --graph real --mode bwd)
#   STALL_LAUNCHES    ncu --launch-count (default: every matching launch)
#   STALL_FC_ARGS     profile_fc.py arguments (row counts; default 20000)
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
source benchmarks/device_env.sh
if [ -n "${STALL_PREFIX:-}" ]; then  # a tree ab_run.sh built in the same call
  export PYTHONPATH=$STALL_PREFIX:/tmp/site
else
  rm -rf /tmp/ab/stalls
  python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/ab/stalls . > "$OUT/build.log" 2>&1 || { tail "$OUT/build.log"; exit 1; }
  export PYTHONPATH=/tmp/ab/stalls:/tmp/site
fi
# ncu saves and restores the device memory around every replay pass: with XLA's default
# preallocation (90% of the card) each of the ~23 passes per kernel copied ~125 GB, and the
# first run of this script (550 s) lost most of its kernels to the timeout
export XLA_PYTHON_CLIENT_PREALLOCATE=false
SECTIONS="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section LaunchStats --section SourceCounters"
profile() {  # name, kernel regex, script and arguments
  local name=$1 regex=$2; shift 2
  timeout 240 ncu --kernel-name-base demangled --kernel-name "regex:$regex" ${STALL_LAUNCHES:+--launch-count $STALL_LAUNCHES} \
    $SECTIONS --import-source yes \
    -f -o "$OUT/$name" python3 "$@" > "$OUT/${name}_run.log" 2>&1
  pkill -9 -f "$1"  # timeout stops ncu, not the python it launched
  ncu -i "$OUT/$name.ncu-rep" > "$OUT/$name.txt" 2>&1
  ncu -i "$OUT/$name.ncu-rep" --page raw --csv > "$OUT/${name}_raw.csv" 2>&1  # every metric, stall reasons too
  ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source cuda > "$OUT/${name}_source.csv" 2>&1
  # per machine instruction (stall samples and executed counts of each SASS line)
  ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/${name}_sass.csv" 2>&1
  grep -E "^  [a-z_ ]*void|Duration|Warp Cycles Per Issued|Achieved Occupancy|Registers Per|Eligible Warps|No Eligible|Issued Warp|Memory Throughput|Compute \(SM\)" "$OUT/$name.txt"
}
[ -n "${STALL_FC_KERNELS-x}" ] && profile fc "${STALL_FC_KERNELS:-fc_(fwd|xy|w)_kernel<float}" benchmarks/profile_fc.py ${STALL_FC_ARGS:-20000}
[ -n "${STALL_CONV_ARGS-x}" ] && profile conv "conv_|segment_sum" benchmarks/profile_conv.py ${STALL_CONV_ARGS---graph real --mode bwd}
ls -la "$OUT"

"""Per-kernel durations from an Nsight Compute text report, one line per launch:

    ncu --kernel-name regex:fc_ --metrics gpu__time_duration.sum python3 benchmarks/profile_fc.py > ncu.log
    python3 benchmarks/ncu_kernel_times.py ncu.log
"""
import re
import sys

SCALE_TO_MS = {"ms": 1.0, "us": 1e-3, "ns": 1e-6}

name = None
for line in open(sys.argv[1]):
    launch = re.search(r"(\w+_kernel)(<[^>(]*>)?\(", line)
    if launch and "Context" in line:  # the header line of one profiled launch
        name = launch.group(1) + (launch.group(2) or "")
        continue
    metric = re.search(r"gpu__time_duration.sum\s+(\S+)\s+([\d.,]+)", line)
    if metric and name:
        ms = float(metric.group(2).replace(",", "")) * SCALE_TO_MS[metric.group(1)]
        print(f"{ms:8.3f} ms  {name}")
        name = None

#!/usr/bin/env bash
# A/B several source trees in one GPU call (device tool, repo root, carry [".whl", ".ab"]).
# Builds every tree in parallel into its own prefix /tmp/ab/<name> (sm_90 only), then for each
# tree in turn: GPU tests, a benchmark, per-kernel times under Nsight Compute, memcheck.
#   AB_TREES   "name=path ..."   trees to build (default "main=."); make branch trees with
#                                benchmarks/ab_prepare.sh BRANCH (-> .ab/BRANCH)
#   AB_TEST_K  pytest -k expression, run from the tree's tests/ ("" skips; default gpu_fc)
#   AB_TEST_TIMEOUT  seconds for that pytest run (default 200; the whole -k gpu_ suite needs more)
#   AB_NO_TEST tree names whose tests are skipped (e.g. "main", already tested on main)
#   AB_BENCH   script + args ("" skips; default "benchmark_tensor_product.py --fc-only --libs bj");
#              several runs separated by ';' (e.g. the same script in fp32 and with --f64)
#   AB_BENCH_<name>, AB_NCU_<name>, AB_TEST_K_<name>, AB_SAN_<name>  per-tree overrides (set,
#              even to "", they replace the general setting: e.g. the FC benchmark for FC trees
#              and the conv one for conv trees in one call)
#   AB_BENCH_FROM  "root" (default): AB_BENCH and AB_NCU come from this checkout's benchmarks/,
#              the same script for every tree; "tree": from each tree's own benchmarks/
#   AB_NCU     profile script for ncu per-kernel times ("" skips; default profile_fc.py)
#   AB_NCU_KERNELS  ncu --kernel-name filter (default regex:fc_)
#   AB_NCU_EXTRA    more ncu arguments, e.g. "--section WarpStateStats --section Occupancy" (the
#              stall reasons land in logs.tgz; the summary still prints the times only)
#   AB_SAN     sanitize_kernels.py arguments under compute-sanitizer memcheck ("" skips; default fc);
#              run without XLA autotuning and without preallocation (memcheck segfaulted with
#              autotuning and 90% preallocated, and again on 2026-11-28 with half preallocated)
#   AB_NO_SAN  tree names that skip memcheck (trees whose kernels another tree already covers)
#   AB_REUSE_BUILD  set: keep a tree already built in /tmp/ab by an earlier pass of this call
#              (e.g. a second pass for ncu alone, run last: ncu has left the GPU unusable for
#              whatever ran after it in the same call)
# Summaries go to stdout; full logs to $OUT/logs.tgz (one file: the device tool returns few).
set -uo pipefail
OUT=${OUT:-gpu_out}; LOGS=/tmp/ab_logs; mkdir -p "$OUT" "$LOGS"
source benchmarks/device_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
declare -A SRC
for spec in ${AB_TREES:-main=.}; do SRC[${spec%%=*}]=${spec#*=}; done
for name in "${!SRC[@]}"; do
  [ -n "${AB_REUSE_BUILD:-}" ] && [ -d /tmp/ab/$name ] && continue  # a second pass in the same call
  rm -rf /tmp/ab/$name  # pip --target keeps an existing package: a warm machine would test a stale build
  (python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/ab/$name "${SRC[$name]}" > $LOGS/build_$name.log 2>&1
   echo "build $name rc=$? after $(( $(date +%s) - t0 )) s"; tail -3 $LOGS/build_$name.log) &
done
wait
root=$PWD
for spec in ${AB_TREES:-main=.}; do  # in the order given
  name=${spec%%=*}; tree=$root/${SRC[$name]}
  export PYTHONPATH=/tmp/ab/$name:/tmp/site
  echo "=== $name (${SRC[$name]})"
  v=AB_TEST_K_$name; test_k=${!v-${AB_TEST_K-gpu_fc}}
  v=AB_BENCH_$name; bench=${!v-${AB_BENCH-benchmark_tensor_product.py --fc-only --libs bj}}
  v=AB_NCU_$name; ncu_script=${!v-${AB_NCU-profile_fc.py}}
  v=AB_SAN_$name; san=${!v-${AB_SAN-fc}}
  if [ -n "$test_k" ] && [[ " ${AB_NO_TEST:-} " != *" $name "* ]]; then
    (cd $tree/tests && timeout ${AB_TEST_TIMEOUT:-200} python3 -m pytest -q -x -k "$test_k" > $LOGS/tests_$name.log 2>&1
     echo "tests rc=$?"; tail -2 $LOGS/tests_$name.log)
  fi
  bdir=$root/benchmarks; [ "${AB_BENCH_FROM:-root}" = tree ] && bdir=$tree/benchmarks
  if [ -n "$bench" ]; then
    IFS=';' read -ra runs <<< "$bench"
    for i in "${!runs[@]}"; do
      (cd $bdir && timeout 200 python3 ${runs[$i]}) > $LOGS/bench_${name}_$i.log 2>&1
      grep -vE "^CHECK.*OK|Warning" $LOGS/bench_${name}_$i.log | tail -25
    done
  fi
  if [ -n "$ncu_script" ]; then
    # without preallocation: ncu saves and restores device memory around every replay pass, and
    # with XLA's 90% preallocated a run with sections timed out (2026-11-29), leaving its killed
    # python holding the GPU memory so that the next tree's run failed to start
    XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 120 ncu --kernel-name ${AB_NCU_KERNELS:-regex:fc_} --metrics gpu__time_duration.sum ${AB_NCU_EXTRA:-} \
      python3 $bdir/$ncu_script > $LOGS/ncu_$name.log 2>&1
    # timeout stops ncu but not the python it launched; a hung one would hold the GPU for the next tree
    pkill -9 -f "$bdir/$ncu_script"
    python3 $root/benchmarks/ncu_kernel_times.py $LOGS/ncu_$name.log
  fi
  if [ -n "$san" ] && [[ " ${AB_NO_SAN:-} " != *" $name "* ]]; then
    # XLA compiles outside the sanitizer first, into a persistent cache (sanitize_kernels.py's
    # header: the sanitizer segfaults during the conv's long compile); the sanitized run loads
    # it. Both runs take the same settings, or the cache would miss.
    san_env=(env BJ_SANITIZE_CACHE=/tmp/san_cache_$name XLA_FLAGS=--xla_gpu_autotune_level=0
             XLA_PYTHON_CLIENT_PREALLOCATE=false timeout 150)
    (cd $tree && "${san_env[@]}" python3 benchmarks/sanitize_kernels.py $san > $LOGS/san_${name}_warm.log 2>&1)
    echo "memcheck warm-up (no sanitizer) rc=$? $(ls /tmp/san_cache_$name 2>/dev/null | wc -l) cached programs"
    # compute-sanitizer itself segfaults now and then (rc 139 with nothing but its banner in the
    # log, seconds into the run; the same kernels passed in the next call): one retry
    for try in 1 2; do
      (cd $tree && "${san_env[@]}" compute-sanitizer --tool memcheck python3 benchmarks/sanitize_kernels.py $san \
         > $LOGS/san_${name}_$try.log 2>&1); rc=$?
      echo "memcheck rc=$rc (try $try)"; tail -1 $LOGS/san_${name}_$try.log
      [ $rc -eq 139 ] || break
    done
  fi
done
tar czf "$OUT/logs.tgz" -C $LOGS .
echo "total $(( $(date +%s) - t0 )) s"

#!/usr/bin/env bash
# One command for a machine with a GPU: every `cuda` test and each GPU benchmark, at sizes that
# fit in about 8 minutes on one H200, with a report file of everything they printed.
#
#   benchmarks/gpu_check.sh [REPORT]        (default REPORT: gpu_check_<UTC time>.txt)
#
# Runs from the source tree (PYTHONPATH=.; nothing is installed). Needs torch with CUDA,
# gpytorch, matplotlib, PyYAML, tqdm, pytest (scipy for a few tests). Real data for the posterior
# benchmark and the data-backed tests: $WIDENN_DATA (a folder holding mnist/, cifar10/, uci/),
# default ../shared/data. Each step has its own time limit; a failing or timed-out step is
# recorded and the next one runs. Exit status: the number of failed steps (0 = all passed).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} WIDENN_NO_PROGRESS=1 MPLBACKEND=Agg
export WIDENN_DATA="${WIDENN_DATA:-$(cd .. && pwd)/shared/data}"
REPORT="${1:-gpu_check_$(date -u +%Y%m%dT%H%M%SZ).txt}"
PY="${PYTHON:-python3}"
failed=0
start=$(date +%s)

log() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# step NAME SECONDS COMMAND...: run one step under its own limit, append its output to the report
step() {
  local name="$1" limit="$2"; shift 2
  log "" "=== $name (limit ${limit} s) — $(date -u +%H:%M:%S) ===" "\$ $*"
  local t0=$(date +%s) rc
  timeout --kill-after=15 "$limit" "$@" >>"$REPORT" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    log "--- $name: ok ($(( $(date +%s) - t0 )) s)"
  else
    failed=$((failed + 1))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      log "--- $name: TIMED OUT after ${limit} s (rc $rc)"
    else
      log "--- $name: FAILED (rc $rc, $(( $(date +%s) - t0 )) s)"
    fi
  fi
}

: >"$REPORT"
log "wideNN GPU check — $(date -u +%Y-%m-%dT%H:%M:%SZ) — $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
log "data: $WIDENN_DATA $( [ -d "$WIDENN_DATA" ] && echo '(present)' || echo '(absent: data steps skip)')"
step "machine" 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c 'import torch, gpytorch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\"); print(\"gpytorch\", gpytorch.__version__)'"

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  failed=$((failed + 1))
  log "!!! no CUDA device visible to torch: the cuda tests will all skip and the benchmarks fail"
fi

# every cuda-marked test (slow ones included); -rs lists why anything skipped
step "cuda tests" 200 "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider --durations=15 tests

# the benchmarks, each printing its reference as a ratio in the same run
step "bench_analytic" 60 "$PY" benchmarks/bench_analytic.py --device cuda --n 2000 --gpu-n 20000 --repeats 2
step "bench_empirical" 100 "$PY" benchmarks/bench_empirical.py --device cuda --timeout 25
step "bench_training" 45 "$PY" benchmarks/bench_training.py --device cuda --size 64 --width 512 --n 1000 --steps 30 --repeats 2 --lin-steps 10
step "bench_auto_method" 35 "$PY" benchmarks/bench_auto_method.py --device cuda --repeats 2
if [ -d "$WIDENN_DATA/mnist" ]; then
  step "bench_posterior" 40 "$PY" benchmarks/bench_posterior.py --device cuda --root "$WIDENN_DATA/mnist" --n-train 20000 --n-test 2000 --repeats 2
else
  log "" "=== bench_posterior: skipped (no MNIST under $WIDENN_DATA) ==="
fi

log "" "=== done in $(( $(date +%s) - start )) s; $failed step(s) failed; report: $REPORT ==="
exit "$failed"

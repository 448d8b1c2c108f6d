#!/usr/bin/env bash
# The prepared GPU check: one command for a fresh CUDA machine (made for an H200 with torch 2.11 and
# triton 3.6 preinstalled, no network, this working tree copied in) that installs fastmtl from the
# tree and runs, each step under its own timeout and within one total time budget, in the order of
# what decides (issue 21, item 6):
#
#   install       pip install --no-deps --no-build-isolation --no-index -e .  (a PYTHONPATH shim if pip fails)
#   env           nvidia-smi, python / torch / triton versions, the CUDA device torch sees
#   doctor        fastmtl doctor --json: the self-check of every fused op (bf16, fp32, NCHW, channels_last; no gate)
#   train_step    ONE process: fastmtl bench --models default,joint@resnet18 --phases train, impls eager, compile,
#                 fused, fused_compile, compile_graphs, fused_compile_graphs, layouts channels_last then nchw,
#                 size full, 10 steps: images/s and peak memory. The default model's channels_last rows come
#                 first; every row is appended to train_step.jsonl as it is measured, so a timeout loses
#                 only the rows it cuts off (the report reads the jsonl when the JSON is missing)
#   kernel_table  fastmtl bench --models default --kernel-table: the top 25 kernels of one eager and one
#                 compiled train step (torch.profiler, channels_last)
#   bench_ops     fastmtl bench --size full, every op of fastmtl.perf.cases.OPS (bn_relu included) and pass, eager,
#                 compile, fused and fused_compile in one process
#   pytest_core   TRITON_INTERPRET=0 pytest tests/test_kernels_cuda.py without the torch.compile tests
#   pytest_compile  the torch.compile tests of tests/test_kernels_cuda.py
#   gate          fastmtl gate --json: the compile gate for sm_80/90/100 (the prediction to compare with)
#
# A failed step is recorded and the next one runs. A step whose expected time (its TIMEOUT entry:
# estimates for an H200 with cold Triton and Inductor caches, not measurements) is more than what is
# left of the budget is skipped ("budget"), not started. With the default budget (470 s, one
# 8-minute call) the estimates put install, env and doctor within ~40 s and the default model's
# channels_last train-step rows within ~4 minutes; train_step is cut at 240 s (its later rows are a
# second call's job). The steps are in priority order: what a first call cannot fit, a second one
# runs with --only. Outputs (a few files) in --out DIR (default $OUT):
#   summary.md      every step's status, exit code, duration and timeout; test counts and failures;
#                   the doctor verdicts; the bench tables (written after every step, tables at the end)
#   results.json    every step's JSON output (doctor, train_step, kernel_table, bench_ops, gate) and the test counts
#   gpu_check.log   every step's full output, in order
#   train_step.jsonl  the train-step rows, one JSON line each, as measured
#   pytest_core.xml, pytest_compile.xml   JUnit XML of the two test steps
# Exit code: 0 when every step that ran passed, 1 otherwise (also when a step was skipped for time).
#
# --dry-run (CI, CPU): runs no step; proves every command exists and parses its flags instead
# (fastmtl subcommands under FASTMTL_PARSE_ONLY=1, pytest --collect-only, pip and setup.py answer),
# in a few seconds. Options: --out DIR, --budget SECONDS (default 470), --only LIST (install and env
# always run), --skip LIST, --list. GPU_CHECK_PYTHON names the interpreter (default python3).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${GPU_CHECK_PYTHON:-python3}"
OUT_DIR="${OUT:-$REPO/gpu_check_out}"
BUDGET=470
REPORT_RESERVE_S=15
DRY=0
ONLY=""
SKIP=""
STEPS=(install env doctor train_step kernel_table bench_ops pytest_core pytest_compile gate)
# seconds per step on an H200 (estimates, not measurements: cold Triton and Inductor caches; see
# docs/performance.md); a step is started only when its entry fits in what is left of the budget
declare -A TIMEOUT=([install]=60 [env]=30 [doctor]=60 [train_step]=240 [kernel_table]=150 [bench_ops]=300
                    [pytest_core]=180 [pytest_compile]=240 [gate]=120)
COMPILE_TESTS="inductor or compiled_fused_model"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR="${2:?--out needs a directory}"; shift ;;
    --budget) BUDGET="${2:?--budget needs seconds}"; shift ;;
    --only) ONLY="${2:?--only needs a comma-separated list of steps}"; shift ;;
    --skip) SKIP="${2:?--skip needs a comma-separated list of steps}"; shift ;;
    --list) printf '%s\n' "${STEPS[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2; }
for s in ${ONLY//,/ } ${SKIP//,/ }; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || { echo "gpu_check.sh: unknown step '$s'; steps: ${STEPS[*]}" >&2; exit 2; }
done
command -v timeout >/dev/null || { echo "gpu_check.sh: the 'timeout' command (coreutils) is missing" >&2; exit 2; }
command -v "$PY" >/dev/null || { echo "gpu_check.sh: python interpreter '$PY' not found (GPU_CHECK_PYTHON)" >&2; exit 2; }

mkdir -p "$OUT_DIR" || { echo "gpu_check.sh: cannot create --out $OUT_DIR" >&2; exit 2; }
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/fastmtl_gpu_check.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
: >"$STAGE/steps.tsv"
START=$(date +%s)
export PYTHONUNBUFFERED=1 FASTMTL_KERNELS=auto TRITON_INTERPRET=0 PYTHONDONTWRITEBYTECODE=1
unset FASTMTL_SELFCHECK
cd "$STAGE"  # python runs outside the tree: ./fastmtl must not shadow the installed package

elapsed() { echo $(( $(date +%s) - START )); }
limited() { timeout -k 10 "$STEP_TIMEOUT" "$@"; }
fastmtl() {  # a fastmtl subcommand under the step's timeout; --dry-run: its flags parse, nothing runs
  if [ "$DRY" = 1 ]; then FASTMTL_PARSE_ONLY=1 "$PY" -m fastmtl "$@"; else limited "$PY" -m fastmtl "$@"; fi
}
pytest_cuda() {  # pytest_cuda NAME ARGS...: the CUDA test module, JUnit XML to the stage
  local name="$1"; shift
  local extra=()
  [ "$DRY" = 1 ] && extra=(--collect-only)
  TRITON_INTERPRET=0 limited "$PY" -m pytest "$REPO/tests/test_kernels_cuda.py" -c "$REPO/pytest.ini" \
    --rootdir "$REPO" -p no:cacheprovider -q -rfE --junitxml "$STAGE/$name.xml" "${extra[@]}" "$@"
}

# --------------------------------------------------------------------------- the steps
step_install() {
  if [ "$DRY" = 1 ]; then
    "$PY" -m pip --version && "$PY" -m pip install --help >/dev/null || return
    "$PY" -c "import setuptools" 2>/dev/null || echo "no setuptools here: a real run would use the PYTHONPATH shim"
    "$PY" -c "import fastmtl.kernels, fastmtl.doctor, fastmtl.perf.model_bench, fastmtl.perf.kernel_table; print('fastmtl from', fastmtl.__file__)"
    return
  fi
  if ! limited "$PY" -m pip install --no-deps --no-build-isolation --no-index --no-cache-dir -e "$REPO" ||
     ! "$PY" -c "import fastmtl.kernels"; then
    echo "pip install failed: importing fastmtl through a PYTHONPATH shim of the tree instead"
    mkdir -p "$STAGE/shim/fastmtl"
    ln -sf "$REPO"/fastmtl/* "$STAGE/shim/fastmtl/"
    export PYTHONPATH="$STAGE/shim${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c "import fastmtl, fastmtl.kernels; print('fastmtl from', fastmtl.__file__)"
}

step_env() {
  { date -u +"date %Y-%m-%dT%H:%M:%SZ"; uname -srm
    (cd "$REPO" && git rev-parse HEAD 2>/dev/null) || echo "commit unknown (no .git)"
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
    else
      echo "nvidia-smi: not found"
    fi
    limited "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda); print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
    limited "$PY" -c "import triton; print('triton', triton.__version__)"
  } | tee "$STAGE/env.txt"
}

step_doctor() { fastmtl doctor --json >"$STAGE/doctor.json"; }
step_pytest_core() { pytest_cuda pytest_core -k "not ($COMPILE_TESTS)"; }
step_pytest_compile() { pytest_cuda pytest_compile -k "$COMPILE_TESTS"; }
step_train_step() {  # the train step of both models, every impl and layout, in one process
  fastmtl bench --models default,joint@resnet18 --phases train \
    --impls eager,compile,fused,fused_compile,compile_graphs,fused_compile_graphs --layouts channels_last,nchw \
    --size full --steps 10 --json --rows-jsonl "$STAGE/train_step.jsonl" >"$STAGE/train_step.json"
}
step_kernel_table() { fastmtl bench --models default --kernel-table --impls eager,compile --layouts channels_last --size full --json >"$STAGE/kernel_table.json"; }
step_bench_ops() {  # every op of the case table (fastmtl bench's default) and pass at size full, all four impls; the self-check
  # off: time the kernels themselves
  FASTMTL_SELFCHECK=0 fastmtl bench --size full --modes forward,backward,full \
    --impls eager,compile,fused,fused_compile --json >"$STAGE/bench_ops.json"
}
step_gate() { fastmtl gate --json --jobs "$(nproc)" >"$STAGE/gate.json"; }

# --------------------------------------------------------------------------- running and recording
record() {  # record NAME STATUS RC SECONDS TIMEOUT NOTE
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STAGE/steps.tsv"
  report
}
report() {
  "$PY" "$REPO/benchmarks/gpu_check_report.py" "$STAGE" "$OUT_DIR" --dry-run "$DRY" --budget "$BUDGET" \
    --elapsed "$(elapsed)" "$@" >>"$LOG" 2>&1
}

run_step() {
  local name="$1" left rc t0 seconds status note=""
  # --only never drops install and env: a later call may find a fresh machine
  if [ -n "$ONLY" ] && [[ ",$ONLY,install,env," != *",$name,"* ]]; then return; fi
  if [[ ",$SKIP," == *",$name,"* ]]; then return; fi
  left=$(( BUDGET - REPORT_RESERVE_S - $(elapsed) ))
  STEP_TIMEOUT=${TIMEOUT[$name]}
  if [ "$DRY" = 0 ] && [ "$left" -lt "$STEP_TIMEOUT" ]; then
    echo "=== $name: skipped, expected ${STEP_TIMEOUT}s, ${left}s of the budget left" >>"$LOG"
    record "$name" budget - 0 "$STEP_TIMEOUT" "not run: expected ${STEP_TIMEOUT}s, $(( left > 0 ? left : 0 ))s of the ${BUDGET}s budget left"
    return
  fi
  echo "=== $name (timeout ${STEP_TIMEOUT}s, at $(elapsed)s)" >>"$LOG"
  t0=$(date +%s)
  "step_$name" >"$STAGE/$name.out" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - t0 ))
  cat "$STAGE/$name.out" >>"$LOG"
  case "$rc" in
    0) status=ok ;;
    124|137) status=timeout; note="killed after ${STEP_TIMEOUT}s" ;;
    *) status=failed; note="$(grep -v '^\s*$' "$STAGE/$name.out" | tail -n 1 | cut -c1-160 | tr '\t|' '  ')"
       note="${note:-exit $rc, no output (see its JSON)}" ;;
  esac
  if [ "$DRY" = 1 ] && [ "$status" = ok ]; then
    note="$(grep -v '^\s*$' "$STAGE/$name.out" | tail -n 1 | cut -c1-120 | tr '\t|' '  ')"
    note="dry-run: ${note:-its flags parse}"
  elif [ "$DRY" = 1 ]; then
    note="dry-run: $note"
  fi
  echo "=== $name: $status (exit $rc, ${seconds}s)" >>"$LOG"
  record "$name" "$status" "$rc" "$seconds" "$STEP_TIMEOUT" "$note"
}

echo "fastmtl GPU check: $([ "$DRY" = 1 ] && echo dry-run || echo run), budget ${BUDGET}s, out $OUT_DIR" | tee -a "$LOG"
for name in "${STEPS[@]}"; do
  run_step "$name"
done
report --tables
cp "$STAGE"/pytest_*.xml "$STAGE"/train_step.jsonl "$OUT_DIR"/ 2>/dev/null
echo "total $(elapsed)s" | tee -a "$LOG"
cat "$OUT_DIR/summary.md"
awk -F'\t' '$2 != "ok" { bad = 1 } END { exit bad }' "$STAGE/steps.tsv"

#!/usr/bin/env bash
# One call on a CUDA machine that has the repository: install, run the tests on the GPU, measure MFU
# (model FLOPs utilisation: the share of the GPU's own measured matmul rate that a training step puts
# to use) and generation speed (tokens/s at batch 1 and 64), run every stage at the small preset's sizes
# far enough to see the first ones learn, and write all of it to one JSON file ($OUT/gpu_check.json, OUT
# defaults to a temporary folder). bench/gpu_check.py says how each figure is measured.
#
# A GPU may be lent for minutes, so the check brings back every figure it can: a failing test or
# phase is written into the JSON (its "problems" list) and the next one still runs, gpu_check.py
# rewrites the JSON before every phase, and each part has a time limit (a test run stopped there
# still reports the tests it finished). The exit status is 0 only when everything passed.
#
# Time plan, 8 minutes (480 s) on one GPU; each part runs under `timeout`:
#   install                  60 s  PyTorch and the test packages already there: minillm alone, nothing
#                                  downloaded (a missing package is fetched; a bare machine downloads
#                                  PyTorch first, outside the 8 minutes: 300 s more)
#   tests/test_device.py    150 s  --device cuda: every test that takes a device, in full (the micro
#                                  journey among them took 101 s on 2 CPU cores; a tiny model gains
#                                  little on a GPU)
#   the rest of the suite    60 s  all but the slow tests, in 8 processes (pytest-xdist); skipped
#                                  without xdist (in one process it takes 5-9 minutes on 2 cores)
#   bench/gpu_check.py      210 s  MFU, generation speed, then the shortened small pipeline, last
# The JSON's "not_run" names the tests left out.
#
#   bash bench/gpu_check.sh             # on the GPU machine
#   bash bench/gpu_check.sh --dry-run   # the same steps on this CPU at micro size (all but the rest of
#                                       # the suite), in the current Python, which it leaves as it is
set -uo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  ""|--dry-run) ;;
  *) echo "gpu_check.sh: unknown option ${1}; it takes --dry-run or nothing (--help says more)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if [[ "${1:-}" == "--dry-run" ]]; then device=cpu preset=micro; else device=cuda preset=small; fi
PY=python3
# What the tests import at top level: pyproject's dependencies, pytest and hypothesis (the test
# extra's transformers and jupytext are optional: the tests that use them skip without them).
needed=(torch numpy sentencepiece tqdm matplotlib pytest hypothesis)
has_needed() { local IFS=,; $PY -c "import ${needed[*]}" 2>/dev/null; }
minillm_is_here() {  # `import minillm` already gives this checkout's code (an editable install)
  $PY -c "import minillm, pathlib, sys; sys.exit(pathlib.Path(minillm.__file__).resolve().parents[1] != pathlib.Path.cwd().resolve())" 2>/dev/null
}
from_this_folder() { export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"; }

echo "== install =="
if [[ "$device" == cpu ]]; then  # the dry run: this Python must hold the packages; minillm runs from here
  has_needed || { echo "the dry run needs a Python that imports: ${needed[*]}"; exit 1; }
  from_this_folder
elif ! $PY -c "import torch" 2>/dev/null; then
  # No PyTorch yet: a fresh venv with the registry's default build (CUDA on Linux), outside $OUT,
  # whose files come back with the results (a CUDA PyTorch is several GB).
  venv="$(mktemp -d)/venv"
  $PY -m venv "$venv" && . "$venv/bin/activate" && PY=python
  { timeout 300 $PY -m pip install -q torch && timeout 60 $PY -m pip install -q -e ".[test]"; } || exit 1
elif ! has_needed; then
  timeout 60 $PY -m pip install -q -e ".[test]" || exit 1  # the missing packages, from the registry
elif minillm_is_here; then
  echo "minillm already imports from this folder: nothing to install"
# A Python that already holds PyTorch and the rest (a CUDA image) is used as it is, not given a
# second multi-GB build. Such images often reach no package registry: minillm alone is installed.
elif timeout 60 $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1; then
  echo "minillm installed, without a registry, beside the packages already there"
else
  echo "minillm could not be installed without a registry (see $OUT/install.log): it runs from this folder"
  from_this_folder
fi
$PY -c "import torch; print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"

rm -f "$OUT"/tests_*.xml  # a report left by an earlier check must not stand in for one that was stopped
reports=("$OUT/tests_device.xml")
not_run=()
device_tests=($PY -m pytest -q tests/test_device.py --device "$device" --junitxml "${reports[0]}")
echo "== tests that take a device, on $device: ${device_tests[*]} =="
# At its limit a test run gets Ctrl-C (SIGINT), not SIGKILL: pytest then still writes the report of
# the tests it finished, and --stopped tells gpu_check.py that the others did not run.
stopped=()
run_tests() {  # run_tests SECONDS REPORT COMMAND...
  local limit=$1 report=$2; shift 2
  timeout -s INT -k 20 "$limit" "$@"
  [[ $? == 124 ]] && stopped+=(--stopped "$report")
}
run_tests 150 "${reports[0]}" "${device_tests[@]}"
if [[ "$device" == cuda ]]; then
  echo "== the rest of the suite =="
  if $PY -c "import xdist" 2>/dev/null; then
    # 8 processes of 2 threads each share the machine's CPU cores: the suite is CPU work
    reports+=("$OUT/tests_rest.xml")
    OMP_NUM_THREADS=2 run_tests 60 "${reports[1]}" $PY -m pytest -q -n 8 -m "not slow" \
      --ignore tests/test_device.py --junitxml "${reports[1]}"
    not_run+=(--not-run "the slow tests (-m slow): the bench scripts run at micro size, CPU work")
  else
    not_run+=(--not-run "all but tests/test_device.py: without pytest-xdist the suite takes 5-9 minutes")
    echo "skipped: ${not_run[1]}"
  fi
else
  not_run+=(--not-run "all but tests/test_device.py: the dry run checks the steps; python -m pytest runs the suite")
fi

echo "== MFU, generation speed, every stage at the $preset preset's sizes =="
timeout 210 $PY bench/gpu_check.py --device "$device" --preset "$preset" --tests "${reports[@]}" \
  --out "$OUT/gpu_check.json" "${not_run[@]}" "${stopped[@]}"

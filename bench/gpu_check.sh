#!/usr/bin/env bash
# One call on a CUDA machine that has the repository: install, run the tests on the GPU, run every
# stage at the small preset's sizes far enough to see it learn, measure MFU and generation speed, and
# write all of it to one JSON file ($OUT/gpu_check.json, OUT defaults to a temporary folder). About
# 5-8 minutes on one GPU.
#
# A GPU may be lent for minutes, so the check brings back every figure it can: a failing test or
# phase is written into the JSON (its "problems" list) and the next one still runs, and each test run
# has a time limit. The exit status is 0 only when everything passed.
#
#   bash bench/gpu_check.sh             # on the GPU machine
#   bash bench/gpu_check.sh --dry-run   # the same steps on this CPU at micro size, in the current Python
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
if [[ "${1:-}" == "--dry-run" ]]; then device=cpu preset=micro; else device=cuda preset=small; fi
PY=python3

echo "== install =="
if $PY -c "import torch" 2>/dev/null; then
  # A Python that already holds PyTorch (a CUDA image, or the dry run's venv) is used as it is, not
  # given a second multi-GB build. Such images often reach no package registry: when the other
  # packages are there too, minillm alone is installed, with nothing to download.
  if $PY -c "import numpy, sentencepiece, tqdm, matplotlib, pytest" 2>/dev/null; then
    if $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1; then
      echo "minillm installed, without a registry, beside the packages already there"
    else
      echo "minillm could not be installed without a registry (see $OUT/install.log): it runs from this folder"
      export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
  else
    $PY -m pip install -q -e ".[test]" || exit 1  # the missing packages, from the registry
  fi
else  # no PyTorch yet: a fresh venv with the registry's default build (CUDA on Linux)
  $PY -m venv "$OUT/venv" && . "$OUT/venv/bin/activate" && PY=python
  { $PY -m pip install -q --upgrade pip && $PY -m pip install -q torch && $PY -m pip install -q -e ".[test]"; } || exit 1
fi
$PY -c "import torch; print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"

reports=("$OUT/tests_device.xml")
rm -f "$OUT"/tests_*.xml  # a report left by an earlier check must not stand in for one that was stopped
echo "== tests that take a device, on $device =="
timeout 240 $PY -m pytest -q tests/test_device.py --device "$device" --junitxml "${reports[0]}"
if [[ "$device" == cuda ]]; then
  echo "== the whole suite =="
  reports+=("$OUT/tests_all.xml")
  # With pytest-xdist (CUDA images often have it), 8 processes of 2 threads each share the machine's
  # CPU cores: the suite is CPU work, and it passes split across processes (measured with -n 2).
  parallel=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
  OMP_NUM_THREADS=2 timeout 330 $PY -m pytest -q $parallel --junitxml "${reports[1]}"
fi

echo "== every stage at the $preset preset's sizes, MFU, generation speed =="
$PY bench/gpu_check.py --device "$device" --preset "$preset" --tests "${reports[@]}" --out "$OUT/gpu_check.json"

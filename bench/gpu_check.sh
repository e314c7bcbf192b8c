#!/usr/bin/env bash
# One call on a CUDA machine that has the repository and nothing else: install, run the tests on the
# GPU, run every stage at the small preset's sizes far enough to see it learn, measure MFU and
# generation speed, and write all of it to one JSON file ($OUT/gpu_check.json, OUT defaults to a
# temporary folder). About 5-8 minutes on one GPU.
#
#   bash bench/gpu_check.sh             # on the GPU machine
#   bash bench/gpu_check.sh --dry-run   # the same steps on this CPU at micro size, into the current Python
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if [[ "${1:-}" == "--dry-run" ]]; then
  device=cpu preset=micro
  python -m pip install -q -e ".[test]"   # into the Python that runs us (tests call the dry run from CI's venv)
else
  device=cuda preset=small
  python3 -m venv "$OUT/venv"
  . "$OUT/venv/bin/activate"
  python -m pip install -q --upgrade pip
  python -m pip install -q torch          # the registry's default build, with CUDA
  python -m pip install -q -e ".[test]"
fi
python -c "import torch; print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available())"

echo "== tests that take a device, on $device =="
python -m pytest -q tests/test_device.py --device "$device"
if [[ "$device" == cuda ]]; then
  echo "== the whole suite =="
  python -m pytest -q -x
fi

echo "== every stage at the $preset preset's sizes, MFU, generation speed =="
python bench/gpu_check.py --device "$device" --preset "$preset" --out "$OUT/gpu_check.json"
echo "gpu check written: $OUT/gpu_check.json"

"""The benchmark scripts that a person runs rarely must still run: the GPU check's dry run on the CPU,
the journey benchmark's interleaved mode and the profile, on the micro preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["pipeline"]["preset"] == "micro" and set(figures["pipeline"]["learns"]) >= {"mlm", "grpo"}
    assert figures["mfu"]["mfu"] > 0 and figures["mfu"]["achieved_tflops"] > 0
    assert set(figures["generation_tokens_per_s"]) == {"1", "64"}
    assert all(v > 0 for v in figures["generation_tokens_per_s"].values())


@pytest.mark.slow
def test_interleaved_journeys_of_the_same_code_give_the_same_figures(tmp_path):
    """`pipeline_speed.py --interleave` drives two pipelines a step at a time: against this very commit
    every step runs in both, in turns, and the two reports agree on every learning figure."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "pipeline_speed.py"), "--preset", "micro",
                           "--ref", "HEAD", "--interleave", "--keep", str(tmp_path / "ours")],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "step by step in turns" in out and "stages the reference does not have" not in out
    assert "those stages" in out.split("wall time")[1]  # the reference's own journey, summed
    runs = [Path(line.split("->")[1].strip()) for line in out.splitlines() if "running ->" in line]
    assert len(runs) == 20  # 10 steps, each in both journeys, one step at a time:
    for first, second in zip(runs[::2], runs[1::2], strict=True):  # the same step, in one journey then the other
        assert first.name == second.name and first.parent != second.parent
    figures = out.split("learning figure")[1].strip().splitlines()[1:]
    assert len(figures) == 8 and all(line.split()[-1] == line.split()[-2] for line in figures), figures


@pytest.mark.slow
def test_the_profile_trains_each_step_it_profiles_and_stops_after_the_last(tmp_path):
    """A step profiled again is trained anew (a finished run would only be read back, in no time, and
    its row would say nothing), and the steps after the last profiled one do not run at all."""
    def profile(*steps: str) -> str:
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "pipeline_profile.py"), "--preset", "micro",
                               "--threads", "1", "--out", str(tmp_path), "--steps", *steps],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    profile("tokenizer", "mlm", "clm", "sft", "reward_model")
    again = profile("sft")
    assert "[sft] running" in again and "reward_model" not in again
    row = json.loads((tmp_path / "profile.json").read_text())["sft"]
    assert row["forward"] > 0 and row["backward"] > 0 and row["optimizer"] > 0, row

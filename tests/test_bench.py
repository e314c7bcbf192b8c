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
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402  (a script of bench/, not a package)


@pytest.mark.slow
def test_gpu_check_dry_run_passes_on_the_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["problems"] == []
    device_tests = figures["tests"]["tests_device"]
    assert device_tests["passed"] >= 4 and device_tests["failed"] == 0, device_tests
    assert figures["pipeline"]["preset"] == "micro" and set(figures["pipeline"]["learns"]) >= {"mlm", "grpo"}
    assert figures["mfu"]["mfu"] > 0 and figures["mfu"]["achieved_tflops"] > 0
    assert set(figures["generation_tokens_per_s"]) == {"1", "64"}
    assert all(v > 0 for v in figures["generation_tokens_per_s"].values())


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_ok_too" time="0.1"/>
<testcase classname="tests.test_a" name="test_cuda_only" time="0"><skipped message="no mps"/></testcase>
<testcase classname="tests.test_b" name="test_bad" time="0.2"><failure message="assert 1 == 2"/></testcase>
</testsuite></testsuites>"""


def test_the_gpu_check_reports_failures_and_goes_on(tmp_path):
    """A lent GPU may be a machine for minutes: a failing test or phase is one line of the JSON's
    problems, and the phases after it still run."""
    (tmp_path / "tests_all.xml").write_text(JUNIT)
    figures = {"tests": {"tests_all": gpu_check.junit_outcome(tmp_path / "tests_all.xml"),
                         "tests_device": gpu_check.junit_outcome(tmp_path / "stopped.xml")}}
    assert figures["tests"]["tests_all"] == {"passed": 2, "failed": 1, "skipped": 1,
                                             "failures": ["tests.test_b::test_bad"]}
    assert "was stopped" in figures["tests"]["tests_device"]["error"]
    gpu_check.run_phase(figures, "mfu", lambda: 1 / 0)
    gpu_check.run_phase(figures, "generation_tokens_per_s", lambda: {"1": 50.0})
    figures["pipeline"] = {"learns": {"mlm": True, "ppo": False}}
    assert figures["mfu"] == {"error": "ZeroDivisionError: division by zero"}
    assert figures["generation_tokens_per_s"] == {"1": 50.0}
    found = gpu_check.problems(figures)
    assert len(found) == 4 and any("test_bad" in line for line in found) and any("ppo" in line for line in found)
    assert gpu_check.problems(figures, expect_learning=False) == [line for line in found if "ppo" not in line]
    assert gpu_check.problems({"tests": {"tests_all": {"passed": 3, "failed": 0, "skipped": 0, "failures": []}},
                               "pipeline": {"learns": {"mlm": True}}}) == []


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
    # the bench's own "wall time:" line (git prints the reference's commit subject before it, which may
    # hold the same words), then the reference's own journey, summed
    assert "those stages" in out.split("\nwall time: ")[1]
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

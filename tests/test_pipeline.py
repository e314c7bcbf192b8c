"""The whole journey on the micro preset: every stage runs, report.json has every number, and a
second run skips the finished steps instead of training again; lesson 09 reads the finished run;
then lesson 07's reward-hacking run."""

import dataclasses
import json
import math
import os
import random
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minillm.config import preset
from minillm.datasets import generate_instruction_suite
from minillm.pipeline import STEP_NAMES, quote, run_pipeline, table_row
from minillm.stage3_rlhf.ppo import reward_hacking
from minillm.stage3_rlhf.reward_model import train_reward_model

REQUIRED = {
    "tokenizer": ("seconds", "vocab_size", "tokens_per_byte"),
    "mlm": ("seconds", "val_masked_accuracy", "unigram_masked_accuracy"),
    "clm": ("seconds", "val_perplexity", "unigram_perplexity"),
    "reward_model": ("seconds", "pairwise_accuracy", "annotator_agreement"),
    "ppo": ("seconds", "win_rate_vs_sft", "gold_sft", "gold_after", "kl"),
    "dpo": ("seconds", "win_rate_vs_sft", "gold_after"),
    "grpo": ("seconds", "win_rate_vs_sft", "win_rate_stderr", "kl", "pass_at_1_sft", "pass_at_1_after"),
    "grpo_verifiable": ("seconds", "win_rate_vs_sft", "win_rate_stderr", "kl", "pass_at_1_sft", "pass_at_1_after"),
}
SFT_SPLITS = ("seen", "heldout_phrasings", "heldout_families", "world_facts")
ROOT = Path(__file__).resolve().parents[1]


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def journey(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted micro pipeline (in the folder lesson 09 --preset micro --out ROOT looks in)."""
    root = tmp_path_factory.mktemp("journey")
    torch.set_num_threads(1)  # as in every test (conftest), and as the Ctrl-C test's subprocesses run
    return root, run_pipeline(preset("micro"), root / "micro")


def test_micro_pipeline_reports_every_stage_and_skips_finished_steps(journey, tmp_path, capsys, monkeypatch):
    root, report = journey
    out = root / "micro"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert report["preset"] == "micro" and report["device"] == "cpu" and finite(report["seconds"])
    stages = report["stages"]
    assert set(stages) == {*STEP_NAMES, "best_of_n"}
    for name in ("grpo", "grpo_verifiable"):  # pass@k before and after, from passk_samples = 4 answers per prompt
        for key in ("pass_at_k_sft", "pass_at_k_after"):
            assert set(stages[name][key]) == {"1", "2", "4"} and all(0 <= v <= 1 for v in stages[name][key].values())
    assert set(stages["best_of_n"]["win_rate_vs_sft"]) == {"4", "8"}
    rows = stages["rl_table"]["rows"]
    assert list(rows) == ["SFT samples", "SFT greedy", "best of 4 (reward model)", "best of 8 (reward model)",
                          "PPO", "DPO", "GRPO (reward model)", "GRPO (verifiable)"]
    assert rows["SFT samples"]["win_rate_vs_sft"] == 0.5 and rows["SFT samples"]["kl"] == 0.0  # the baseline itself
    assert all(0 <= r[k] <= 1 for r in rows.values() for k in ("win_rate_vs_sft", "pass_at_1", "exact_match"))
    for stage, keys in REQUIRED.items():
        for key in keys:
            assert finite(stages[stage][key]), (stage, key, stages[stage].get(key))
    for key in ("exact_match", "base_exact_match", "scratch_exact_match"):
        assert set(stages["sft"][key]) >= set(SFT_SPLITS)
        assert all(0.0 <= stages["sft"][key][s] <= 1.0 for s in SFT_SPLITS)
    for rate in (stages["reward_model"]["pairwise_accuracy"], stages["ppo"]["win_rate_vs_sft"],
                 stages["dpo"]["win_rate_vs_sft"], stages["mlm"]["val_masked_accuracy"]):
        assert 0.0 <= rate <= 1.0
    for name in ("ppo", "dpo"):  # how sure the win rate is, and where it comes from
        assert finite(stages[name]["win_rate_stderr"]) and 0.0 <= stages[name]["win_rate_stderr"] <= 0.5
        assert 0.5 <= stages[name]["win_rate_ceiling"] <= 1.0  # a perfect policy ties at worst
        assert all(0.0 <= stages[name][key] <= 1.0 for key in ("wrong_sft", "wrong_after", "style_flaws_after"))
        assert stages[name]["win_rate_by_family"] and all(
            0.0 <= rate <= 1.0 for rate in stages[name]["win_rate_by_family"].values())
    top5 = stages["mlm"]["fill_mask_top5"]
    assert len(top5) == 5 and all(isinstance(piece, str) for piece in top5)
    markdown = (out / "report.md").read_text()
    assert "## 1. Pretraining" in markdown and "## 3. RLHF" in markdown and "## 4. GRPO" in markdown
    assert "| GRPO (verifiable) |" in markdown and (out / "10_rl_table" / "pass_at_k.png").is_file()
    assert "Answers without the right answer in them" in markdown
    assert "| family | PPO | DPO |" in markdown and "±" in markdown
    # the PPO examples: the question, both answers and the right answer (issue 25: prompt and PPO were empty)
    examples = json.loads((out / "06_ppo" / "ppo_metrics.json").read_text())["examples"]
    assert examples and all(ex["prompt"] and ex["reference"] and {"sft", "after", "gold_sft", "gold_after"} <= set(ex)
                            for ex in examples)
    table = markdown.split("| prompt | SFT | after PPO | reference |\n| --- | --- | --- | --- |\n")[1]
    first_row = table.splitlines()[0]
    assert first_row == table_row([examples[0]["prompt"], examples[0]["sft"], examples[0]["after"],
                                   examples[0]["reference"]])
    samples = markdown.split("Samples:\n")[1].split("![GPT next-token loss]")[0]
    assert all(line.startswith(">") for line in samples.splitlines() if line.strip())  # no line escapes its quote
    assert "](" in markdown and "![loss]" not in markdown and "![PPO health](06_ppo/ppo_health.png)" in markdown

    capsys.readouterr()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("ckpt.pt")}
    again = run_pipeline(preset("micro"), out)
    printed = capsys.readouterr().out
    assert printed.count("already done") == len(STEP_NAMES)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("ckpt.pt")} == mtimes  # nothing retrained
    assert again["stages"] == report["stages"]

    # Lesson 09 drives the same steps from Python: on the finished run it trains nothing and shows
    # each stage's answers and the key numbers.
    monkeypatch.setattr(sys, "argv", ["09_end_to_end.py", "--preset", "micro", "--out", str(root)])
    runpy.run_path(str(ROOT / "lessons" / "09_end_to_end.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.count("already done") == len(STEP_NAMES)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("ckpt.pt")} == mtimes
    assert "after SFT" in printed and "win rate vs SFT by the gold judge" in printed

    # Reward hacking (lesson 07): a head-only reward model on the same rankings, then PPO without a leash.
    cfg = preset("micro")
    head_only = train_reward_model(dataclasses.replace(cfg.reward, likelihood_term=False), out / "04_sft",
                                   out / "05_reward_model" / "prefs.jsonl", tmp_path / "head_only")
    assert finite(head_only["pairwise_accuracy"])
    hacked = reward_hacking(cfg.ppo, out / "04_sft", tmp_path / "head_only", generate_instruction_suite(seed=0),
                            tmp_path / "no_kl")
    assert all(finite(v) for v in hacked.values()), hacked
    assert all((tmp_path / "no_kl" / name).is_file() for name in ("reward_hacking.png", "reward_hacking_kl.png"))


def without_times(report: dict) -> dict:
    """report.json without its wall-clock seconds (which differ between any two runs), the comparison
    table's "train seconds" column included, and without how many steps ran side by side."""
    def untimed(stage: dict) -> dict:
        stage = {k: v for k, v in stage.items() if k not in ("seconds", "train_seconds")}
        if "rows" in stage:
            stage["rows"] = {name: untimed(row) for name, row in stage["rows"].items()}
        return stage

    return {**report, "seconds": None, "wall_seconds": None, "jobs": None,
            "stages": {name: untimed(stage) for name, stage in report["stages"].items()}}


def test_quote_keeps_every_line_of_a_sample_inside_the_quote():
    assert quote("one\ntwo") == "> one\n> two" and quote("") == "> "
    assert table_row(["a|b", "c\nd"]) == "| a/b | c d |"


def test_ctrl_c_at_a_random_moment_then_the_same_command_ends_with_the_same_report(journey, tmp_path):
    """SIGINT while some step of `minillm pipeline` runs, the same command again: report.json's numbers
    equal the uninterrupted run's (finished steps are kept, an interrupted one resumes from its checkpoint)."""
    _, reference = journey
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    step, delay = rng.choice(STEP_NAMES[1:]), rng.uniform(0.0, 3.0)
    out = tmp_path / "interrupted"
    command = [sys.executable, "-m", "minillm.cli", "pipeline", "--preset", "micro", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folder = out / f"{STEP_NAMES.index(step) + 1:02d}_{step}"
    while not folder.exists() and first.poll() is None:
        time.sleep(0.02)
    time.sleep(delay)
    first.send_signal(signal.SIGINT)
    err = first.communicate(timeout=300)[1]
    where = f"(seed {seed}: SIGINT {delay:.2f} s into {step})"
    assert first.returncode in (130, 0), f"{where}\n{err[-3000:]}"  # 0: it finished before the signal came
    if first.returncode == 130:
        assert "Continue with: minillm pipeline" in err.splitlines()[-1], where
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, f"{where}\n{again.stderr[-3000:]}"
    assert without_times(json.loads((out / "report.json").read_text())) == without_times(reference), where


def test_steps_side_by_side_report_the_same_numbers(journey, tmp_path):
    """--jobs 2: independent steps (and SFT's from-scratch baseline) run in parallel processes of one
    thread each; every step is seeded, so report.json's numbers equal the one-at-a-time run's."""
    _, reference = journey
    report = run_pipeline(preset("micro"), tmp_path / "side_by_side", jobs=2)
    assert report["jobs"] == 2 and without_times(report) == without_times(reference)

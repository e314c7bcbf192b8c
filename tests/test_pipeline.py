"""The whole journey on the micro preset: every stage runs, report.json has every number, and a
second run skips the finished steps instead of training again; lesson 09 reads the finished run;
then lesson 07's reward-hacking run."""

import contextlib
import dataclasses
import errno
import gc
import json
import math
import multiprocessing
import os
import random
import re
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from crash_resume import assert_same_checkpoint

from minillm import pipeline, reuse, workers
from minillm.cli import main
from minillm.config import apply_overrides, preset
from minillm.datasets import generate_instruction_suite
from minillm.datasets.corpus import CORPUS
from minillm.datasets.instructions import INSTRUCTIONS
from minillm.datasets.run_data import saved_data
from minillm.errors import ConfigError, DataError
from minillm.pipeline import STEP_NAMES, Journey, run_pipeline, run_step
from minillm.provenance import code_record, describe, saved_record
from minillm.report import REPORT_KEYS, RL_POLICIES, build_report, exact_match_noise, quote, render_markdown, table_row
from minillm.stage2_sft.evaluate import SPLIT_KEYS, read_answers
from minillm.stage3_rlhf.ppo import reward_hacking
from minillm.stage3_rlhf.reward_model import train_reward_model
from minillm.stage3_rlhf.scoreboard import BEST_OF
from minillm.tokenizer import train_tokenizer
from minillm.train.checkpoint import CKPT_NAME
from minillm.utils import read_json, write_json
from minillm.workers import worker_pool

REQUIRED = {
    "tokenizer": ("seconds", "vocab_size", "tokens_per_byte"),
    "mlm": ("seconds", "val_masked_accuracy", "unigram_masked_accuracy"),
    "clm": ("seconds", "val_perplexity", "unigram_perplexity"),
    "reward_model": ("seconds", "pairwise_accuracy", "gold_agreement", "annotator_agreement"),
    "ppo": ("seconds", "win_rate_vs_sft", "gold_sft", "gold_after", "kl"),
    "dpo": ("seconds", "win_rate_vs_sft", "gold_after", "kl"),
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
    return root, run_pipeline(preset("micro"), root / "micro")


def test_micro_pipeline_reports_every_stage_and_skips_finished_steps(journey, tmp_path, capsys, monkeypatch):
    root, report = journey
    out = root / "micro"
    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk == report
    assert report["preset"] == "micro" and report["device"] == "cpu" and finite(report["seconds"])
    stages = report["stages"]
    assert set(stages) == {*STEP_NAMES, "best_of_n"}
    for name in ("grpo", "grpo_verifiable"):  # pass@k before and after, from passk_samples = 4 answers per prompt
        for key in ("pass_at_k_sft", "pass_at_k_after"):
            assert set(stages[name][key]) == {"1", "2", "4"} and all(0 <= v <= 1 for v in stages[name][key].values())
    assert set(stages["best_of_n"]["win_rate_vs_sft"]) == {"4", "8"}
    curves, table = stages["rl_table"]["pass_at_k"], stages["rl_table"]
    assert set(table["pass_at_k_stderr"]) == {"SFT", *RL_POLICIES} and set(table["pass_at_k_gain"]) == set(RL_POLICIES)
    for name, gain in table["pass_at_k_gain"].items():  # the mean of per-prompt gains is the curves' difference
        assert [g["gain"] for g in gain.values()] == pytest.approx([curves[name][k] - curves["SFT"][k] for k in gain])
    rows = stages["rl_table"]["rows"]
    assert list(rows) == ["SFT samples", "SFT greedy", "best of 4 (reward model)", "best of 8 (reward model)",
                          "PPO", "DPO", "GRPO (reward model)", "GRPO (verifiable)"]
    assert rows["SFT samples"]["win_rate_vs_sft"] == 0.5 and rows["SFT samples"]["kl"] == 0.0  # the baseline itself
    assert all(stages[step]["kl"] == rows[name]["kl"] for name, step in RL_POLICIES.items())  # one KL, held out
    assert all(0 <= r[k] <= 1 for r in rows.values() for k in ("win_rate_vs_sft", "pass_at_1", "exact_match"))
    for stage, keys in REQUIRED.items():
        for key in keys:
            assert finite(stages[stage][key]), (stage, key, stages[stage].get(key))
    for key in ("exact_match", "base_exact_match", "scratch_exact_match"):
        assert set(stages["sft"][key]) >= set(SFT_SPLITS)
        assert all(0.0 <= stages["sft"][key][s] <= 1.0 for s in SFT_SPLITS)
    assert set(stages["sft"]["questions"]) == set(stages["sft"]["exact_match"])  # what each split stands on
    assert all(isinstance(n, int) and n > 0 for n in stages["sft"]["questions"].values())
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
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## 1. Pretraining" in markdown and "## 3. RLHF" in markdown and "## 4. GRPO" in markdown
    assert "| GRPO (verifiable) |" in markdown and (out / "10_rl_table" / "pass_at_k.png").is_file()
    assert "Answers without the right answer in them" in markdown
    assert "| family | PPO | DPO |" in markdown and "±" in markdown
    assert exact_match_noise(stages["sft"])[0] in markdown
    last_answer = read_answers(out / "04_sft")[-1]  # the side-by-side table shows the last answer of each split
    assert table_row([SPLIT_KEYS[last_answer["split"]], last_answer["prompt"], last_answer["base"], last_answer["sft"],
                      last_answer["reference"]]) in markdown
    # the PPO examples: the question, both answers and the right answer (issue 25: prompt and PPO were empty)
    examples = json.loads((out / "06_ppo" / "ppo_metrics.json").read_text(encoding="utf-8"))["examples"]
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

    # Lesson 09 drives the same steps from Python: on the finished run it trains nothing, shows
    # each stage's answers and the key numbers, and writes the same report as the pipeline.
    (out / "report.json").unlink()
    monkeypatch.setattr(sys, "argv", ["09_end_to_end.py", "--preset", "micro", "--out", str(root)])
    runpy.run_path(str(ROOT / "lessons" / "09_end_to_end.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert printed.count("already done") == len(STEP_NAMES)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("ckpt.pt")} == mtimes
    assert "after SFT" in printed and "win rate vs SFT by the gold judge" in printed
    assert without_times(json.loads((out / "report.json").read_text(encoding="utf-8"))) == without_times(report)

    # Reward hacking (lesson 07): a head-only reward model on the same rankings, then PPO without a leash.
    cfg = preset("micro")
    head_only = train_reward_model(dataclasses.replace(cfg.reward, likelihood_term=False), out / "04_sft",
                                   out / "05_reward_model" / "prefs.jsonl", tmp_path / "head_only")
    assert finite(head_only["pairwise_accuracy"])
    # its seconds of scoring after the training bar ends are said (14 s at tiny, silent before)
    assert "reward: scoring every answer of the " in capsys.readouterr().out
    hacked = reward_hacking(cfg.ppo, out / "04_sft", tmp_path / "head_only", generate_instruction_suite(seed=0),
                            tmp_path / "no_kl")
    assert all(finite(v) for v in hacked.values()), hacked
    assert all((tmp_path / "no_kl" / name).is_file() for name in ("reward_hacking.png", "reward_hacking_kl.png"))


def without_times(report: dict) -> dict:
    """report.json without its wall-clock seconds (which differ between any two runs), the comparison
    table's "train seconds" column included, without how many steps ran side by side, and without
    which steps were copied from another run."""
    def untimed(stage: dict) -> dict:
        stage = {k: v for k, v in stage.items() if k not in ("seconds", "train_seconds", "copied_from")}
        if "rows" in stage:
            stage["rows"] = {name: untimed(row) for name, row in stage["rows"].items()}
        return stage

    return {**report, "seconds": None, "wall_seconds": None, "jobs": None,
            "stages": {name: untimed(stage) for name, stage in report["stages"].items()}}


def assert_same_checkpoints(run: Path, reference: Path, where: str = "") -> None:
    """Every checkpoint in `run` holds the tensors of its twin in `reference` bit for bit (weights, optimizer
    moments, generator states), where report.json has rounded summaries: blind to the optimizer state, and
    to weights moved by a rounding where the figures are counts (the MLM's masked accuracy). Only the
    wall-clock seconds may differ. `where` heads a failure's message."""
    found = sorted(path.relative_to(reference) for path in reference.rglob(CKPT_NAME))
    assert found == sorted(path.relative_to(run) for path in run.rglob(CKPT_NAME)), where
    for path in found:
        assert_same_checkpoint(run / path, reference / path, f"{where} {path}")


def made_up_results() -> dict[str, dict]:
    """Every step's result as build_report and render_markdown read them, each number 0.5 unless a
    test sets it: a report without training anything."""
    splits = dict.fromkeys(SFT_SPLITS, 0.5)
    results = {name: {"seconds": 1.0, "wall_seconds": 3.0, **dict.fromkeys(keys, 0.5)}
               for name, keys in REPORT_KEYS.items()}
    results["mlm"].update(fill_mask_top5=[(" night", 0.5)], val_masked_positions=10)
    results["clm"]["val_tokens"] = 100
    results["sft"].update(exact_match=splits, base_exact_match=splits, scratch_exact_match=splits,
                          single_family_exact_match=splits, questions=dict.fromkeys(SFT_SPLITS, 10))
    for name in ("ppo", "dpo"):
        results[name]["win_rate_by_family"] = {"count": 0.5}
    row = {"win_rate_vs_sft": 0.5, "win_rate_stderr": 0.0, "pass_at_1": 0.5, "exact_match": 0.5,
           "style_flaws": 0.0, "kl": 0.0, "train_seconds": 1.0}
    names = ["SFT samples", "SFT greedy", *(f"best of {n} (reward model)" for n in BEST_OF), *RL_POLICIES]
    curve = {"1": 0.5, "2": 0.75}
    results["rl_table"] = {"seconds": 1.0, "wall_seconds": 2.0, "rows": {name: dict(row) for name in names},
                           "n_prompts": 200, "best_of_n": {}, "pass_at_k": dict.fromkeys(["SFT", *RL_POLICIES], curve)}
    return results


def steps_that_train_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step returns its made-up result (made_up_results) and trains nothing: for what run_step
    decides (which steps run, and what it says of each), without the seconds of training them."""
    results = made_up_results()
    for name in STEP_NAMES:
        monkeypatch.setitem(pipeline.STEPS, name, lambda j, name=name: results[name])


def made_up_report(tmp_path: Path, results: dict[str, dict], *overrides: str) -> tuple[dict, str]:
    """report.json's content and report.md made of `results` with the micro preset's settings and `overrides`."""
    cfg = apply_overrides(preset("micro"), list(overrides))
    report = build_report(cfg, "cpu", results)
    return report, render_markdown(report, Journey(cfg, tmp_path, results=results))


def test_a_stage_reports_its_wall_time_and_its_training_time_apart(tmp_path):
    report, _ = made_up_report(tmp_path, made_up_results())
    assert report["stages"]["clm"]["seconds"] == 3.0 and report["stages"]["clm"]["train_seconds"] == 1.0
    assert report["seconds"] == 3.0 * len(REPORT_KEYS) + 2.0  # the journey: every stage's wall time


def test_the_report_describes_the_tokenizer_and_masking_the_settings_chose(tmp_path):
    results = made_up_results()
    _, markdown = made_up_report(tmp_path, results)
    assert "Our byte-level BPE, trained on the corpus, has 0.5 ids" in markdown
    assert "15% of the tokens are chosen as blanks (80% of them shown as [MASK], 10% as a random token" in markdown
    _, markdown = made_up_report(tmp_path, results, "tokenizer.kind=sentencepiece", "mlm.mask_prob=0.3",
                                 "mlm.mask_token_prob=0.5")
    assert "SentencePiece's BPE, trained on the corpus" in markdown
    assert "30% of the tokens are chosen as blanks (50% of them shown as [MASK], 10% as a random token" in markdown
    # the validation blanks are BERT's whatever the training used (mlm.EVAL_MASKING): the report says so
    assert "validation blanks (chosen at BERT's 15%, 80% of them [MASK], whatever the training used" in markdown
    assert "its steps took 29 s in all" in markdown  # nine steps of 3 s and the table's 2 s, added up
    _, markdown = made_up_report(tmp_path, results, "tokenizer.kind=sentencepiece", "tokenizer.spm_model_type=unigram")
    assert "SentencePiece's unigram model, trained on the corpus" in markdown and "BPE" not in markdown


def test_the_report_shows_the_tokenizer_cutting_a_sentence_of_the_corpus_it_was_trained_on(tmp_path):
    from minillm.pipeline import example_sentence
    from minillm.report import FLASH_FLOOD_SENTENCE
    english = ["A flash flood watch is in effect.", "The Misk runs by Gundby."]
    assert example_sentence(english[:1], english[1:]) == FLASH_FLOOD_SENTENCE  # the shipped corpus: as before
    korean = ["한빛마을에 비.", "\n솔내는 맑음.\n내일은 비."]  # a corpus of your own, no flash flood in it
    assert example_sentence(korean[:1], korean[1:]) == "솔내는 맑음."
    results = made_up_results()
    results["tokenizer"].update(example_sentence="솔내는 맑음.", example_pieces=["솔내는", " 맑음", "."])
    _, markdown = made_up_report(tmp_path, results)
    assert "\"솔내는 맑음.\" becomes" in markdown and FLASH_FLOOD_SENTENCE not in markdown


def test_a_run_without_a_fill_mask_demo_links_no_chart_of_it(tmp_path):
    results = made_up_results()  # no validation sentence fitted the window: mlm.py drew no fill_mask.png
    results["mlm"].update(fill_mask_prompt=None, fill_mask_top5=[])
    _, markdown = made_up_report(tmp_path, results)
    assert "fill_mask.png" not in markdown and "![BERT masked-LM loss](02_mlm/loss.png)" in markdown
    _, markdown = made_up_report(tmp_path, made_up_results())
    assert "![BERT fill-mask ranking](02_mlm/fill_mask.png) ![BERT masked-LM loss](02_mlm/loss.png)" in markdown


def test_the_report_words_style_flaws_family_tables_and_each_grpo_run_as_measured(tmp_path):
    _, markdown = made_up_report(tmp_path, made_up_results())
    # has_style_flaw counts a rude answer that is wrong too, not only a right answer wrapped in something
    assert "Answers with a style flaw (rudeness, or the right answer wrapped in filler): 0.500 of the SFT" in markdown
    assert "whose right answer comes wrapped" not in markdown
    # a family's share of the held-out prompts: 11 to 31 of the tiny run's 200, 1 or 2 of the micro run's 16
    assert "a few dozen" not in markdown and "per task family (each on its family's share of the" in markdown
    assert "GRPO samples 4 answers per prompt" in markdown  # micro: both GRPO runs sample 4
    _, markdown = made_up_report(tmp_path, made_up_results(), "grpo_verifiable.group_size=2")
    assert "GRPO samples 4 (reward model) and 2 (verifiable) answers per prompt" in markdown
    assert "Rewarded by the reward model it wins **0.500 ± 0.500** against the SFT model; rewarded by a program " \
        "that checks the answer (RL with verifiable rewards) **0.500 ± 0.500**." in markdown
    _, markdown = made_up_report(tmp_path, made_up_results(), "grpo.reward=gold")  # what each run was rewarded by
    assert "Rewarded by the gold judge itself" in markdown and "Against the reward model" not in markdown
    # the tables keep the step's label, and say what rewarded it
    assert "GRPO (reward model) is the `grpo` step; `grpo.reward=gold` rewarded it by the gold judge itself" in markdown
    assert "is the `grpo" not in made_up_report(tmp_path, made_up_results())[1]  # nothing to say by default


def test_the_pass_at_k_paragraph_claims_nothing_the_gains_may_contradict(tmp_path):
    _, markdown = made_up_report(tmp_path, made_up_results())
    # the runs disagree: a pass@1 gain may be within two standard errors of 0 (tiny: GRPO with the reward
    # model, +0.029 ± 0.018), and the SFT model may end ahead (the earlier run, every policy at k = 64)
    assert "RL raises pass@1" not in markdown and "RL has taught nothing" not in markdown
    assert "RL may raise pass@1 towards what the SFT model already reaches with more tries, and may lower " \
        "pass@k at large k" in markdown


def test_the_reward_models_ceiling_is_agreement_with_gold_not_with_itself(tmp_path):
    results = made_up_results()
    results["reward_model"].update(annotator_agreement=0.9, gold_agreement=0.99)
    report, markdown = made_up_report(tmp_path, results)
    assert report["stages"]["reward_model"]["gold_agreement"] == 0.99
    assert "(ceiling 0.990: the rankings' agreement with the gold judge)" in markdown
    assert "ceiling 0.900" not in markdown


def test_a_ceiling_of_1_is_not_said_to_be_below_1(tmp_path):
    # the micro run's SFT model gets no answer perfect: its ceiling is 1, and "would win 1.000 ..., not 1"
    # contradicted itself (a helper's checking of report.md against the results)
    results = made_up_results()
    results["ppo"]["win_rate_ceiling"] = 1.0
    _, markdown = made_up_report(tmp_path, results)
    assert "A perfect policy would win 1.000 against the same SFT answers: none of them is perfect" in markdown
    assert "not 1:" not in markdown
    results["ppo"]["win_rate_ceiling"] = 0.8375  # the tiny run's: below 1, and why
    _, markdown = made_up_report(tmp_path, results)
    assert "A perfect policy would win 0.838 against the same SFT answers, not 1: where the SFT model's" in markdown


def test_instructions_of_your_own_without_every_test_split_still_get_a_report(tmp_path):
    results = made_up_results()  # --data whose test questions are all of one split
    results["sft"].update(exact_match={"seen": 0.75}, base_exact_match={"seen": 0.0}, questions={"seen": 4})
    del results["sft"]["scratch_exact_match"], results["sft"]["single_family_exact_match"]
    _, markdown = made_up_report(tmp_path, results)
    assert "| SFT | exact match, held-out phrasings - | base model - |" in markdown
    assert "| SFT | 0.750 |" in markdown


def test_the_report_says_which_prompts_pass_at_k_is_measured_on(tmp_path):
    _, markdown = made_up_report(tmp_path, made_up_results())  # micro: pass@k on 8 prompts, 4 samples each
    assert "on the same 200 held-out prompts" in markdown  # the table's
    assert "from 4 samples per prompt (the unbiased estimator) on the first 8 of those prompts" in markdown


def test_the_report_gives_each_policys_pass_at_k_gain_with_its_standard_error(tmp_path):
    results = made_up_results()
    _, markdown = made_up_report(tmp_path, results)  # a table made before the errors were measured
    assert "- PPO: pass@1 0.500 -> 0.500, pass@2 0.750 -> 0.750; the SFT model is level or ahead already at k = 1." \
        in markdown
    results["rl_table"]["pass_at_k_gain"] = {name: {"1": {"gain": 0.125, "stderr": 0.05},
                                                    "2": {"gain": -0.02, "stderr": 0.03}} for name in RL_POLICIES}
    report, markdown = made_up_report(tmp_path, results)
    assert report["stages"]["rl_table"]["pass_at_k_gain"]["DPO"]["1"]["gain"] == 0.125
    assert "- PPO: pass@1 0.500 -> 0.500 (+0.125 ± 0.050), pass@2 0.750 -> 0.750 (-0.020 ± 0.030);" in markdown


@pytest.mark.parametrize("none", [None, float("nan")])  # not measured; NaN: what a run made before holds
def test_a_standard_error_of_one_prompt_is_no_nan_in_the_report(tmp_path, none):
    """--set ppo.eval_prompts=1 (and dpo's, grpo's): one prompt has no spread, so no standard error
    (mean_stderr), which the report printed as "0.500 ± nan" in every win rate and pass@k gain."""
    results = made_up_results()
    for name in RL_POLICIES.values():
        results[name]["win_rate_stderr"] = none
    for row in results["rl_table"]["rows"].values():
        row["win_rate_stderr"] = none
    results["rl_table"]["pass_at_k_gain"] = {name: dict.fromkeys(["1", "2"], {"gain": 0.0, "stderr": none})
                                             for name in RL_POLICIES}
    _, markdown = made_up_report(tmp_path, results)
    assert "nan" not in markdown and "± None" not in markdown
    assert "| PPO | win rate vs SFT 0.500 ± n/a (1 prompt) | 0.5 |" in markdown
    assert "| PPO | 0.500 ± n/a (1 prompt) | 0.500 |" in markdown
    assert "- PPO: pass@1 0.500 -> 0.500 (+0.000 ± n/a (1 prompt))" in markdown


def test_a_policys_kl_in_the_report_is_its_held_out_kl_from_the_table(tmp_path):
    results = made_up_results()
    for name, step in RL_POLICIES.items():
        results["rl_table"]["rows"][name]["kl"] = 0.56  # on the held-out prompts
        if step != "dpo":
            results[step]["kl"] = 0.19  # the training log's last batch
    report, markdown = made_up_report(tmp_path, results)
    for step in RL_POLICIES.values():
        assert report["stages"][step]["kl"] == 0.56
        assert report["stages"][step].get("kl_last_step") == (None if step == "dpo" else 0.19)
    assert "KL to the SFT model 0.560 on the held-out prompts" in markdown


def test_the_report_says_how_far_chance_moves_each_exact_match():
    sft = {"exact_match": {"seen": 0.75, "world_facts": 0.5, "heldout_families": 0.0, "heldout_phrasings": 1.0},
           "questions": {"seen": 12, "world_facts": 4, "heldout_families": 60, "heldout_phrasings": 3}}
    # sqrt(0.75 * 0.25 / 12) = 0.125 and sqrt(0.5 * 0.5 / 4) = 0.25, by hand; 0 and 1 have no ± to give
    assert exact_match_noise(sft) == ["Questions per split, and one standard error of SFT's exact match on them: "
                                      "seen 12 (± 0.125), world_facts 4 (± 0.250), heldout_families 60 (none right), "
                                      "heldout_phrasings 3 (all right)."]
    assert exact_match_noise({"exact_match": {"seen": 0.75}}) == []  # a run made before the count: no line


def test_quote_keeps_every_line_of_a_sample_inside_the_quote():
    assert quote("one\ntwo") == "> one\n> two" and quote("") == "> "
    assert table_row(["a|b", "c\nd"]) == "| a/b | c d |"
    for line_break in ("\r", "\r\n", "\x0b", "\x0c", "\x1e", "\x85", "\u2028"):  # a tiny model's answer may hold any
        assert table_row([f"x{line_break}y"]) == "| x y |", repr(line_break)


def test_ctrl_c_at_a_random_moment_then_the_same_command_ends_with_the_same_report(journey, tmp_path):
    """SIGINT while some step of `minillm pipeline` runs, the same command again: report.json's numbers and
    every checkpoint equal the uninterrupted run's (finished steps are kept, an interrupted one resumes from
    its checkpoint, or starts again where it saved none).
    The command that gets the signal is a process of its own; the one that goes on runs in this one."""
    root, reference = journey
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    step, delay = rng.choice(STEP_NAMES[1:]), rng.uniform(0.0, 3.0)
    out = tmp_path / "interrupted"
    argv = ["pipeline", "--preset", "micro", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "minillm.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
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
    assert main(argv) == 0, where  # the same command again, run in this process: what it resumes is the check
    assert without_times(read_json(out / "report.json")) == without_times(reference), where
    assert_same_checkpoints(out, root / "micro", where)


def test_an_experiment_trains_only_the_steps_its_change_reaches_and_reports_what_a_fresh_run_would(
        journey, tmp_path, capsys, monkeypatch):
    """--reuse copies the steps made from the same inputs, trains the rest, and leaves its source as it
    was; the report equals a run from scratch. Then a change in the same folder redoes SFT and every
    step after it, and keeps the three before (which steps run is run_step's bookkeeping: the steps
    redone there train nothing, `steps_that_train_nothing`)."""
    root, _ = journey
    source = root / "micro"
    before = {p: p.stat().st_mtime_ns for p in source.rglob("*")}
    no_kl = apply_overrides(preset("micro"), ["ppo.kl_coef=0"])
    capsys.readouterr()
    reused = run_pipeline(no_kl, tmp_path / "no_kl", reuse_from=source)
    printed = capsys.readouterr().out
    trained = ("ppo", "rl_table")
    for name in STEP_NAMES:
        assert (f"[{name}] copied from" in printed) == (name not in trained), name
        assert (f"[{name}] running" in printed) == (name in trained), name
    assert f"[ppo] not copied: {source / '06_ppo'} made with other settings (ppo.kl_coef: " in printed
    assert f"[rl_table] not copied: {source / '10_rl_table'} made from an earlier run of ppo\n" in printed
    assert {p: p.stat().st_mtime_ns for p in source.rglob("*")} == before  # the source is only read
    copied = [name for name in STEP_NAMES if name not in trained]
    assert [name for name, stage in reused["stages"].items() if "copied_from" in stage] == copied
    assert f"Copied from {source}, where they were made from the same settings (their seconds are that run's): " \
        f"{', '.join(copied)}." in (tmp_path / "no_kl" / "report.md").read_text(encoding="utf-8")
    assert without_times(reused) == without_times(run_pipeline(no_kl, tmp_path / "fresh"))

    steps_that_train_nothing(monkeypatch)
    run_pipeline(apply_overrides(no_kl, ["sft.train.lr=0.005"]), tmp_path / "no_kl")
    printed = capsys.readouterr().out
    assert f"[sft] made with other settings (sft.train.lr: {no_kl.sft.train.lr} -> 0.005): running it again" in printed
    assert "[reward_model] made from an earlier run of sft: running it again" in printed
    assert "[rl_table] made from an earlier run of ppo, dpo, grpo, grpo_verifiable: running it again" in printed
    assert [n for n in STEP_NAMES if f"[{n}] already done" in printed] == ["tokenizer", "mlm", "clm"]


def test_a_grpo_step_rewarded_otherwise_runs_and_is_made_from_what_its_reward_reads(journey, tmp_path, capsys,
                                                                                   monkeypatch):
    """grpo.reward=gold and grpo_verifiable.reward=model (the swaps report.md names): each GRPO step is
    given the reward model only when that model rewards it, so neither stops with "a reward model was
    given, but ... reads none", and each is made from what it reads: a new reward model redoes the
    GRPO run it rewards, and leaves the one the gold judge rewards (the steps redone train nothing:
    which ones run is what is checked)."""
    root, _ = journey
    swapped = apply_overrides(preset("micro"), ["grpo.reward=gold", "grpo_verifiable.reward=model"])
    out = tmp_path / "swapped"
    run_pipeline(swapped, out, reuse_from=root / "micro")
    ids = {name: json.loads((out / pipeline.step_folder(name) / "inputs.json").read_text(encoding="utf-8"))
           for name in ("sft", "reward_model", "grpo", "grpo_verifiable")}
    assert ids["grpo"]["made_from"] == {"sft": ids["sft"]["id"]}
    assert ids["grpo_verifiable"]["made_from"] == {"reward_model": ids["reward_model"]["id"]}
    capsys.readouterr()
    steps_that_train_nothing(monkeypatch)
    run_pipeline(apply_overrides(swapped, ["reward.train.lr=0.001"]), out)
    printed = capsys.readouterr().out
    assert [n for n in STEP_NAMES if f"[{n}] already done" in printed] == ["tokenizer", "mlm", "clm", "sft", "grpo"]
    assert "[grpo_verifiable] made from an earlier run of reward_model: running it again" in printed


def test_each_grpo_step_tells_its_run_the_section_its_settings_are_in(tmp_path, monkeypatch):
    """A NaN in the pipeline's second GRPO run named `--set grpo.train.lr=...`, a setting of the first run:
    each step names its own section (health.Watched), which the run cannot tell from its settings."""
    given = {}
    monkeypatch.setattr(pipeline, "train_grpo", lambda *args, section, **kwargs: given.setdefault(section, {}))
    journey = SimpleNamespace(cfg=preset("micro"), records=[], folder=lambda name: tmp_path / name,
                              instructions_read=None)
    for name in pipeline.GRPO_STEPS:
        pipeline.STEPS[name](journey)
    assert list(given) == ["grpo", "grpo_verifiable"]


def test_a_step_is_kept_only_when_its_settings_data_and_earlier_steps_are_the_same(tmp_path, monkeypatch, capsys):
    """run_step's bookkeeping alone, with steps that train nothing: which steps a change redoes."""
    ran = []

    def fake_step(name):
        def step(j):
            ran.append(name)
            (j.folder(name) / "ckpt.pt").write_text("weights", encoding="utf-8")
            return {"seconds": 0.0}
        return step

    monkeypatch.setattr(pipeline, "STEPS", {name: fake_step(name) for name in STEP_NAMES})
    corpus, instructions = tmp_path / "corpus.txt", tmp_path / "instructions.jsonl"
    corpus.write_text("Some text.\n", encoding="utf-8")
    instructions.write_text("{}\n", encoding="utf-8")

    def run_all(*overrides: str, corpus: Path | None = corpus, instructions: Path | None = instructions) -> list[str]:
        """Every step once, with the micro preset and `overrides` (a None file: generated data); the
        steps that ran."""
        ran.clear()
        journey = Journey(apply_overrides(preset("micro"), list(overrides)), tmp_path / "run",
                          corpus and str(corpus), instructions and str(instructions))
        for name in STEP_NAMES:
            run_step(journey, name)
        return list(ran)

    assert run_all() == STEP_NAMES
    assert run_all() == []
    instructions.write_text('{"changed": true}\n', encoding="utf-8")  # the same file name, other contents
    assert run_all() == STEP_NAMES[STEP_NAMES.index("sft"):]
    assert run_all("grpo_verifiable.kl_coef=0.1") == ["grpo_verifiable", "rl_table"]
    corpus.write_text("Other text.\n", encoding="utf-8")
    assert run_all("grpo_verifiable.kl_coef=0.1") == STEP_NAMES

    # An interrupted step (a checkpoint, no result.json) resumes from the same inputs only: with
    # other settings its checkpoint is deleted, not resumed.
    dpo = tmp_path / "run" / "07_dpo"
    (dpo / "result.json").unlink()
    (dpo / "ckpt.pt").write_text("half-trained", encoding="utf-8")
    (tmp_path / "run" / "07_dpo.copying").mkdir()  # and a copy from --reuse that was interrupted
    capsys.readouterr()
    run_all("grpo_verifiable.kl_coef=0.1", "dpo.beta=0.9")
    assert "[dpo] made with other settings (dpo.beta: " in capsys.readouterr().out
    assert (dpo / "ckpt.pt").read_text(encoding="utf-8") == "weights"
    assert not (tmp_path / "run" / "07_dpo.copying").exists()

    # A folder from before inputs.json was written, or with a damaged one, cannot say what it was
    # made from: it is redone.
    (tmp_path / "run" / "02_mlm" / "inputs.json").unlink()
    (tmp_path / "run" / "06_ppo" / "inputs.json").write_text('{"id": "0", "sett', encoding="utf-8")
    assert run_all("grpo_verifiable.kl_coef=0.1", "dpo.beta=0.9") == ["mlm", "ppo", "rl_table"]
    printed = capsys.readouterr().out
    assert "[mlm] has no readable inputs.json (made by an older minillm?)" in printed
    assert "[ppo] has no readable inputs.json" in printed

    # Generated data instead of a named file, or back, is other data.
    changes = ("grpo_verifiable.kl_coef=0.1", "dpo.beta=0.9")
    assert run_all(*changes, instructions=None) == STEP_NAMES[STEP_NAMES.index("sft"):]
    assert "[sft] made with other settings (instructions.data_seed: null -> 0; instructions.file_sha256: " \
        in capsys.readouterr().out
    assert run_all(*changes, corpus=None, instructions=None) == STEP_NAMES
    assert run_all(*changes, corpus=None, instructions=None) == []

    # The same settings may generate other data in another minillm (58d97cc and f09a98f changed it):
    # what was trained on other generated documents is redone, and so is a step whose inputs.json (an
    # older minillm's) does not say which generated records it read.
    generated = pipeline.corpus_splits
    monkeypatch.setattr(pipeline, "corpus_splits", lambda cfg, path: tuple(docs[1:] for docs in generated(cfg, path)))
    assert run_all(*changes, corpus=None, instructions=None) == STEP_NAMES
    monkeypatch.setattr(pipeline, "corpus_splits", generated)
    assert run_all(*changes, corpus=None, instructions=None) == STEP_NAMES
    inputs = tmp_path / "run" / "07_dpo" / "inputs.json"
    saved = json.loads(inputs.read_text(encoding="utf-8"))
    del saved["settings"]["instructions"]["generated_sha256"]
    inputs.write_text(json.dumps(saved), encoding="utf-8")
    assert run_all(*changes, corpus=None, instructions=None) == ["dpo", "rl_table"]
    assert "[dpo] made with other settings (instructions.generated_sha256: null -> " in capsys.readouterr().out
    assert run_all(*changes, corpus=None) == STEP_NAMES[STEP_NAMES.index("sft"):]

    # With a corpus file, the size of a generated corpus is no setting; the share held out is one.
    assert run_all(*changes) == STEP_NAMES
    assert run_all(*changes, "corpus_mb=0.5") == []
    changes = (*changes, "val_fraction=0.2")
    assert run_all(*changes) == STEP_NAMES

    # An inputs.json that reads as JSON but lacks a field is as unreadable as a damaged one.
    inputs = tmp_path / "run" / "07_dpo" / "inputs.json"
    saved = json.loads(inputs.read_text(encoding="utf-8"))
    del saved["made_from"]
    inputs.write_text(json.dumps(saved), encoding="utf-8")
    assert run_all(*changes) == ["dpo", "rl_table"]

    # --reuse copies finished steps only: an interrupted one (no result.json) runs again.
    (tmp_path / "run" / "07_dpo" / "result.json").unlink()
    ran.clear()
    reusing = Journey(apply_overrides(preset("micro"), list(changes)), tmp_path / "new", str(corpus),
                      str(instructions), reuse_from=tmp_path / "run")
    copied = {name: "copied_from" in run_step(reusing, name) for name in STEP_NAMES}
    assert ran == ["dpo", "rl_table"] and copied["ppo"] and not copied["dpo"]
    assert "copied_from" in run_step(reusing, "ppo")  # a rerun reads it back from result.json


def test_an_inputs_json_with_a_field_of_another_kind_is_unreadable(tmp_path):
    """Edited by hand to "made_from": null or "settings": [], an inputs.json still named every field: the
    step was checked as if both were dicts, and the pipeline stopped with an AttributeError or a TypeError."""
    folder = tmp_path / "03_clm"
    folder.mkdir()
    (folder / "ckpt.pt").write_bytes(b"")  # outputs that a redo would replace
    inputs = {"settings": {}, "made_from": {"tokenizer": "a"}}  # what the step would be made from now
    for key, value in (("made_from", None), ("settings", [])):
        (folder / "inputs.json").write_text(json.dumps({"id": "x", "settings": {}, "made_from": {}, key: value}))
        assert reuse.saved_inputs(folder) is None
        assert "has no readable inputs.json" in reuse.why_redo(folder, inputs)


def test_an_inputs_json_nested_too_deeply_is_unreadable_not_a_traceback(tmp_path):
    """json raises RecursionError, not a ValueError, for brackets nested about a thousand deep: the readers
    that take a damaged inputs.json or config.json for none (the pipeline's, the provenance's) let it through."""
    (tmp_path / "inputs.json").write_text("[" * 100_000, encoding="utf-8")
    assert reuse.saved_inputs(tmp_path) is None
    assert saved_record(tmp_path / "inputs.json") is None


def test_what_a_step_holds_in_reference_cycles_is_freed_before_the_next_step(tmp_path, monkeypatch):
    """A model that a step left in a reference cycle stayed until Python's next full collection, maybe steps
    later: MLM's and CLM's model and optimizer did (matplotlib's log-axis labels are parsed by pyparsing,
    whose caught exceptions keep the frames that called it), and on a GPU the later steps ran short."""
    models = []

    def step(j):
        model = torch.nn.Linear(2, 2)
        models.append(weakref.ref(model))
        try:
            raise ValueError("caught, as pyparsing catches its own")
        except ValueError as err:
            caught = err  # its traceback holds this frame, which holds it and the model: a cycle
        return {"seconds": 0.0, "caught": str(caught)}

    monkeypatch.setitem(pipeline.STEPS, "tokenizer", step)
    gc.disable()  # no automatic collection in the middle: only what run_step frees is freed
    try:
        run_step(Journey(preset("micro"), tmp_path), "tokenizer")
        assert models[0]() is None
    finally:
        gc.enable()


def test_a_copy_from_another_run_cut_short_is_not_taken_for_a_finished_step(tmp_path, monkeypatch):
    """--reuse stopped (Ctrl-C) half-way through copying a step: the next run copies it again, whole,
    instead of finding a result.json beside no checkpoint and calling the step done."""
    def step(j):  # a step that trains nothing: its checkpoint is its output
        (j.folder("tokenizer") / "ckpt.pt").write_text("weights", encoding="utf-8")
        return {"seconds": 0.0}

    monkeypatch.setattr(pipeline, "STEPS", {**pipeline.STEPS, "tokenizer": step})
    run_step(Journey(preset("micro"), tmp_path / "source"), "tokenizer")
    reusing = Journey(preset("micro"), tmp_path / "new", reuse_from=tmp_path / "source")
    copy_tree = reuse.copy_tree

    def cut_short(source, target):  # result.json and inputs.json copied, then Ctrl-C
        Path(target).mkdir(parents=True)
        for name in ("result.json", "inputs.json"):
            shutil.copy2(Path(source) / name, Path(target) / name)
        raise KeyboardInterrupt

    monkeypatch.setattr(reuse, "copy_tree", cut_short)
    with pytest.raises(KeyboardInterrupt):
        run_step(reusing, "tokenizer")
    monkeypatch.setattr(reuse, "copy_tree", copy_tree)
    result = run_step(reusing, "tokenizer")
    assert result["copied_from"] == str(tmp_path / "source" / "01_tokenizer")
    assert (tmp_path / "new" / "01_tokenizer" / "ckpt.pt").read_text(encoding="utf-8") == "weights"


def test_a_copy_the_disk_refuses_names_the_file_it_could_not_write(tmp_path, file_size_limit):
    """--reuse on a full disk ended in one "line" of shutil.copytree's: a list of every file of the step
    that failed, each with its source, its copy and the reason, with no word of what to do."""
    source = tmp_path / "source" / "04_sft"
    (source / "baselines" / "scratch").mkdir(parents=True)
    (source / "result.json").write_text("{}", encoding="utf-8")
    for name in ("ckpt.pt", "baselines/scratch/ckpt.pt", "baselines/scratch/loss.png"):
        (source / name).write_bytes(b"w" * 5000)
    with file_size_limit(4096), pytest.raises(OSError) as info:
        reuse.copy_run(source, tmp_path / "new" / "04_sft")
    assert info.value.errno == errno.EFBIG
    assert info.value.filename == str(tmp_path / "new" / "04_sft.copying" / "baselines" / "scratch" / "ckpt.pt")
    assert not (tmp_path / "new" / "04_sft").exists()  # the step is not taken as copied


def test_a_copy_whose_source_cannot_be_read_names_the_source(tmp_path):
    """The error of a file of the step that cannot be read (here a link to nothing) named the copy, as
    if the copy were missing: "No such file or directory: .../04_sft.copying/ckpt.pt"."""
    source = tmp_path / "source" / "04_sft"
    source.mkdir(parents=True)
    (source / "result.json").write_text("{}", encoding="utf-8")
    (source / "ckpt.pt").symlink_to(tmp_path / "gone.pt")
    with pytest.raises(FileNotFoundError) as info:
        reuse.copy_run(source, tmp_path / "new" / "04_sft")
    assert info.value.filename == str(source / "ckpt.pt")


def test_a_run_stopped_before_its_report_keeps_no_report_of_other_settings(tmp_path, monkeypatch):
    """An experiment in a finished run's folder (--set dpo.beta=0.9), stopped in DPO: config.json holds
    the new settings, so the report of the old ones is gone (`minillm compare` read its figures as the
    new settings'). And a report cut short while report.md is written leaves no report.json."""
    def stopped(j):
        raise KeyboardInterrupt

    steps_that_train_nothing(monkeypatch)
    made_up_dpo = pipeline.STEPS["dpo"]
    run = tmp_path / "run"
    run_pipeline(preset("micro"), run)
    assert (run / "report.json").is_file() and (run / "report.md").is_file()
    monkeypatch.setitem(pipeline.STEPS, "dpo", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(apply_overrides(preset("micro"), ["dpo.beta=0.9"]), run)
    assert read_json(run / "config.json")["dpo"]["beta"] == 0.9
    assert not (run / "report.json").exists() and not (run / "report.md").exists()

    monkeypatch.setitem(pipeline.STEPS, "dpo", made_up_dpo)
    monkeypatch.setattr("minillm.report.render_markdown", lambda *args: stopped(None))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(preset("micro"), run)
    assert not (run / "report.json").exists()


@pytest.mark.parametrize(("jobs", "deleted_in", "stopped_before"), [(1, "clm", "the sft step"),
                                                                     (1, "rl_table", "the report"),
                                                                     (2, "tokenizer", "the mlm step")])
def test_a_run_folder_deleted_while_the_pipeline_runs_stops_it_before_the_next_step(tmp_path, monkeypatch, jobs,
                                                                                    deleted_in, stopped_before):
    """`rm -rf` of the run folder during CLM: the steps' writes made the folders they needed again, and
    the journey went on without the tokenizer and MLM, failing at a file a later step reads (or
    reporting steps no longer there), and left a folder the next run refused as no minillm run's.
    The check is made before each step and before the report, with --jobs 2 too, whose steps run in
    threads here (worker processes would not see the made-up run_step)."""
    results, ran = made_up_results(), []

    def made_up_step(j, name):  # (as run_step, without what it writes beside the step: seconds for 10 steps)
        ran.append(name)
        if name == deleted_in:
            shutil.rmtree(j.out_dir)
        j.folder(name).mkdir(parents=True, exist_ok=True)  # as a step's writes make it, the run's folder too
        return results[name]

    monkeypatch.setattr(pipeline, "run_step", made_up_step)
    monkeypatch.setattr(pipeline, "worker_pool", ThreadPoolExecutor)
    monkeypatch.setattr(pipeline, "interrupts_children", contextlib.nullcontext)
    monkeypatch.setattr(pipeline, "in_one_thread", lambda fn, *args: fn(*args))  # (torch's threads left alone)
    run = tmp_path / "run"
    with pytest.raises(DataError, match=rf"^{re.escape(str(run))} was deleted while the pipeline ran \(its "
                                        rf"config.json is gone\): stopped before {stopped_before}"):
        run_pipeline(preset("micro"), run, jobs=jobs)
    assert ran == list(STEP_NAMES[:STEP_NAMES.index(deleted_in) + 1]) and not (run / "report.json").exists()


def test_force_redoes_every_step_and_resumes_none_from_what_it_left(tmp_path, monkeypatch, capsys):
    """`pipeline --force` on a finished run: each step's folder is removed first, so every step runs again
    (none is "already done") and a checkpoint a step left is not resumed from (run_step's bookkeeping, with
    steps that train nothing, on data of a few lines: none is read)."""
    steps_that_train_nothing(monkeypatch)
    monkeypatch.setattr(pipeline, "corpus_splits", lambda cfg, path: (["Some text."], ["More text."]))
    monkeypatch.setattr(pipeline, "instruction_records", lambda cfg, path, skip_bad_lines: [{"prompt": "Hi"}])
    monkeypatch.setattr(pipeline, "preflight", lambda journey: None)
    run = tmp_path / "run"
    run_pipeline(preset("micro"), run)
    left = run / pipeline.step_folder("dpo") / "ckpt.pt"
    left.write_text("half-trained", encoding="utf-8")
    capsys.readouterr()
    run_pipeline(preset("micro"), run, force=True)
    assert "already done" not in capsys.readouterr().out
    assert not left.exists() and (run / "report.json").is_file()


def test_each_step_records_its_code_which_report_md_names_and_no_reuse_reads(tmp_path, monkeypatch, capsys):
    """Nothing said which code made a pipeline run, so a figure that moved after an upgrade came with no
    explanation. Each step's inputs.json now records it; a step made by other code, or before the record
    existed, is still kept, and the figures of report.json stay those of the steps."""
    steps_that_train_nothing(monkeypatch)
    run = tmp_path / "run"
    run_pipeline(preset("micro"), run)
    assert all(read_json(run / pipeline.step_folder(name) / "inputs.json")["made_by"] == code_record()
               for name in STEP_NAMES)
    now = describe(code_record())
    assert f"\nMade by {now}.\n" in (run / "report.md").read_text(encoding="utf-8")
    stages = read_json(run / "report.json")["stages"]

    old, other = run / "02_mlm" / "inputs.json", run / "07_dpo" / "inputs.json"
    write_json(old, {key: value for key, value in read_json(old).items() if key != "made_by"})
    earlier = {**code_record(), "commit": "0123456789ab", "dirty": False}
    write_json(other, {**read_json(other), "made_by": earlier})
    capsys.readouterr()
    run_pipeline(preset("micro"), run)
    printed = capsys.readouterr().out
    assert all(f"[{name}] already done" in printed for name in STEP_NAMES)
    assert read_json(run / "report.json")["stages"] == stages
    line = (f"Made by {now} for 01_tokenizer, 03_clm, 04_sft, 05_reward_model, 06_ppo, 08_grpo, 09_grpo_verifiable, "
            f"10_rl_table; unknown code (made before minillm recorded it) for 02_mlm; {describe(earlier)} for 07_dpo.")
    assert line in (run / "report.md").read_text(encoding="utf-8")


def test_the_runs_of_a_journey_record_the_data_they_read(journey):
    """`minillm ppo --sft runs/tiny/04_sft` reads the instructions the journey's SFT learnt (stage2_sft/learnt.py):
    each SFT run of the step records them (the generated suite here), beside its settings; so does every stage 3
    run, and each pretraining run its corpus (datasets/run_data.py), with the hash the step's inputs.json has. An
    SFT run records the corpus too where it replays it (sft.pretrain_mix > 0); micro's replay none, so record none."""
    run = journey[0] / "micro"
    sft = run / pipeline.step_folder("sft")
    recorded = [saved_data(folder / "config.json", INSTRUCTIONS)
                for folder in (sft, sft / "baselines" / "scratch", sft / "baselines" / "single_family",
                               *(run / pipeline.step_folder(name)
                                 for name in ("reward_model", "ppo", "dpo", "grpo", "grpo_verifiable")))]
    assert recorded[0] == {"file": None, "data_seed": 0, "sha256": recorded[0]["sha256"]}
    assert re.fullmatch("[0-9a-f]{64}", recorded[0]["sha256"]) and recorded == recorded[:1] * 8
    assert "instructions" not in read_json(sft / "config.json")["run"]  # no setting: a resume passes it by
    corpus = [saved_data(run / pipeline.step_folder(name) / "config.json", CORPUS) for name in ("mlm", "clm")]
    sha256 = read_json(run / pipeline.step_folder("clm") / "inputs.json")["settings"]["corpus"]["generated_sha256"]
    assert corpus == [{"file": None, "corpus_mb": 0.2, "data_seed": 0, "val_fraction": 0.05, "sha256": sha256}] * 2
    sft_runs = (sft, sft / "baselines" / "scratch", sft / "baselines" / "single_family")
    assert not any(CORPUS in read_json(folder / "config.json") for folder in sft_runs)  # micro's SFT replays none


def test_a_journey_on_a_corpus_file_records_that_file(tmp_path):
    """`minillm pipeline --corpus mine.txt`: its pretraining runs record the file they read (`Journey.corpus_read`),
    not the generated corpus (the journey above reads that)."""
    (tmp_path / "mine.txt").write_text("One document.\n\nAnother one.\n\nA third.\n", encoding="utf-8")
    read = Journey(preset("micro"), tmp_path / "run", str(tmp_path / "mine.txt"), None).corpus_read
    assert (read["file"], read["corpus_mb"]) == (str(tmp_path / "mine.txt"), preset("micro").corpus_mb)  # in effect


def test_skip_bad_lines_reaches_the_pipelines_instructions(tmp_path, monkeypatch):
    """`minillm pipeline --data FILE --skip-bad-lines` skips a malformed line, as `minillm sft` does,
    and without the flag the line stops the journey, naming the flag."""
    good = json.dumps({"prompt": "Say hi.", "response": "Hi."})
    data = tmp_path / "instructions.jsonl"
    data.write_text(f"{good}\n{{not json\n{good}\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        assert len(Journey(preset("micro"), tmp_path / "run", None, str(data), skip_bad_lines=True).records) == 2
    with pytest.raises(DataError, match="line 2.*--skip-bad-lines"):
        Journey(preset("micro"), tmp_path / "run", None, str(data)).records  # noqa: B018 (a property that reads)
    passed = {}
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *args, **kwargs: passed.update(kwargs) or {"wall_seconds": 0})
    assert main(["pipeline", "--preset", "micro", "--out", str(tmp_path / "run"), "--data", str(data),
                 "--skip-bad-lines"]) == 0
    assert passed["skip_bad_lines"] is True


def test_steps_side_by_side_report_the_same_numbers(journey, tmp_path):
    """--jobs 2: independent steps (and SFT's from-scratch baseline) run in parallel processes of one
    thread each; every step is seeded, so report.json's numbers and every checkpoint equal the one-at-a-time
    run's (made with one thread too, as the tests run: with more, --jobs 1 rounds otherwise, README)."""
    root, reference = journey
    report = run_pipeline(preset("micro"), tmp_path / "side_by_side", jobs=2)
    assert report["jobs"] == 2 and without_times(report) == without_times(reference)
    assert_same_checkpoints(tmp_path / "side_by_side", root / "micro")


def test_the_comparison_table_counts_every_models_answers_in_a_progress_bar(journey, tmp_path, capsys):
    """At tiny the comparison table samples 2,000 answers and pass@k 32,000, over minutes in which the
    terminal showed only "[rl_table] running": each model's answers now count up in a bar of its own."""
    root, report = journey
    shutil.copytree(root / "micro", tmp_path / "run")  # (the table's plot is written again: into a copy)
    capsys.readouterr()
    pipeline.step_rl_table(Journey(preset("micro"), tmp_path / "run", results=report["stages"]))
    shown = capsys.readouterr().err
    for label in ("SFT samples", "SFT greedy", *[f"best of {n}" for n in BEST_OF], *RL_POLICIES):
        assert re.search(rf"table, {re.escape(label)}: 100%", shown), (label, shown)
    for name in ("SFT", *RL_POLICIES):
        assert re.search(rf"pass@k answers, {re.escape(name)}: 100%.*\b32/32 ", shown), (name, shown)  # 8 x 4


def test_the_pipeline_says_what_it_starts_before_the_seconds_of_its_checks(tmp_path, monkeypatch, capsys):
    """Its checks before the first step (`preflight`) took 3 s at tiny, after the seconds torch takes to
    import, with nothing on the screen: a newcomer's terminal stayed blank for 7 s. A line comes first."""
    def checks(journey):
        raise DataError("stopped at the checks")

    monkeypatch.setattr(pipeline, "preflight", checks)
    with pytest.raises(DataError, match="stopped at the checks"):
        run_pipeline(preset("tiny"), tmp_path / "run")
    assert capsys.readouterr().out == (f"pipeline (tiny preset): {len(STEP_NAMES)} steps into {tmp_path / 'run'}; "
                                       "checking their settings first\n")


PARENT_OF_A_WORKER = """
import multiprocessing, time
from minillm.workers import beside
if __name__ == "__main__":
    with beside(time.sleep, 120):
        while not multiprocessing.active_children():
            time.sleep(0.05)
        print(*[child.pid for child in multiprocessing.active_children()], flush=True)
        time.sleep(120)
"""


def test_sft_stopped_after_a_baseline_saved_and_before_sft_did_continues(journey, tmp_path):
    """With --jobs 2, SFT's baselines train beside SFT: a Ctrl-C may find a baseline's checkpoint saved
    and SFT's not yet. The same command again resumes each run from its own checkpoint (it used to stop
    with "baselines/scratch already holds a training run: pass resume", a flag the pipeline has not),
    and ends with the uninterrupted run's report."""
    root, reference = journey
    out = tmp_path / "stopped"
    shutil.copytree(root / "micro", out)
    for name in ("ckpt.pt", "result.json"):  # SFT itself had not saved; its baselines had finished
        (out / "04_sft" / name).unlink()
    assert without_times(run_pipeline(preset("micro"), out)) == without_times(reference)


def test_a_worker_stops_when_its_parent_is_killed_outright(tmp_path):
    """kill -9 of a pipeline run with --jobs 2 must not leave its workers training (and writing) on."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT_OF_A_WORKER, encoding="utf-8")
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as parent:
        worker_pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert worker_pids and all(alive(pid) for pid in worker_pids)
        parent.kill()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in worker_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in worker_pids if alive(pid)]
    for pid in left:  # leave no process behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left


SIGTERM_TO_A_PARENT_OF_A_WORKER = """
import os, sys, time
from pathlib import Path
from minillm import cli
from minillm.workers import interrupts_children, worker_pool

def task(marker):
    Path(marker).write_text(f"started {os.getpid()}")
    try:
        time.sleep(120)
    finally:
        Path(marker).write_text("stopped")

def command(args):  # as `pipeline --jobs 2` runs its steps (pipeline.run_steps_in_parallel)
    with worker_pool(1) as pool, interrupts_children():
        pool.submit(task, sys.argv[1]).result()

if __name__ == "__main__":
    cli.cmd_tokenizer_encode = command
    sys.exit(cli.main(["tokenizer", "encode", "--tokenizer", "t", "x"]))
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals (Windows ends a process at its SIGTERM)")
def test_sigterm_to_a_pipeline_stops_its_workers_tasks_as_a_ctrl_c_does(tmp_path):
    """`kill PID` of `pipeline --jobs 2` (a scheduler stopping the job) ended the command on the spot, and its
    workers were ended by their orphan watch, their tasks cut where they were. SIGTERM is answered as a
    Ctrl-C now: the command passes a Ctrl-C on to its workers, each task stops with its clean-up run, and
    the command ends with its one line once no worker is left."""
    script, marker = tmp_path / "parent.py", tmp_path / "marker"
    script.write_text(SIGTERM_TO_A_PARENT_OF_A_WORKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, str(script), str(marker)], stderr=subprocess.PIPE, text=True,
                          env=env) as parent:
        deadline = time.monotonic() + 120
        while not (marker.exists() and marker.read_text().startswith("started ")) and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = int(marker.read_text().split()[1])
        parent.send_signal(signal.SIGTERM)
        err = parent.communicate(timeout=120)[1]
    left = alive(worker)
    if left:  # leave no process behind when the test fails
        os.kill(worker, signal.SIGKILL)
    assert (parent.returncode, err) == (143, "minillm: stopped by SIGTERM\n")
    assert marker.read_text() == "stopped"  # its task stopped as at a Ctrl-C, its `finally` run
    assert not left


def test_a_worker_shows_what_its_stdout_cannot_encode_as_escapes(monkeypatch):
    """A worker is a fresh interpreter: it must print as the command does (show_unencodable_output), or a
    step run with --jobs 2 on an ASCII or cp1252 stdout (Windows, piped) fails at a Korean line."""
    monkeypatch.setenv("PYTHONIOENCODING", "ascii")
    with worker_pool(1) as pool:
        assert pool.submit(print, "밤 ±").result(timeout=120) is None


def test_ctrl_c_stops_a_workers_task_and_prints_no_traceback_where_the_worker_has_none(capfd):
    """A terminal's Ctrl-C goes to every process of `pipeline --jobs 2`, and interrupts_children sends one
    more: a worker still starting (importing torch), waiting for a task or interrupted twice printed a page
    of KeyboardInterrupt traceback above the command's one line "minillm: interrupted; ... Continue with",
    and left its pool broken. A Ctrl-C now stops the task the worker runs, or the one it was about to run."""
    before = set(multiprocessing.active_children())
    with worker_pool(1) as pool:
        starting = pool.submit(time.sleep, 60)
        [worker] = [child.pid for child in multiprocessing.active_children() if child not in before]
        os.kill(worker, signal.SIGINT)  # while it starts
        assert isinstance(starting.exception(timeout=120), KeyboardInterrupt)
        os.kill(worker, signal.SIGINT)  # while it waits for a task
        assert isinstance(pool.submit(time.sleep, 60).exception(timeout=120), KeyboardInterrupt)
        assert isinstance(pool.submit(signal.raise_signal, signal.SIGINT).exception(timeout=120), KeyboardInterrupt)
        assert pool.submit(abs, -1).result(timeout=120) == 1  # each Ctrl-C stopped one task: the worker goes on
    assert "Traceback" not in capfd.readouterr().err


def test_a_second_ctrl_c_in_a_task_leaves_the_first_ones_clean_up_to_finish(tmp_path):
    """Two Ctrl-Cs 0.3-0.7 s apart under `pipeline --jobs 2` printed "Exception ignored in: <generator object
    tqdm.__iter__> ... KeyboardInterrupt" above the command's one line in 4 runs of 8: the second landed in the
    clean-up of the first (a progress bar closing). A task now gets one KeyboardInterrupt; a later Ctrl-C is
    only noted, so its clean-up runs to the end, and the task after it stops before it starts."""
    second_during_clean_up = (
        "import signal\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGINT)\n"  # the first Ctrl-C, in the task
        "finally:\n"
        "    signal.raise_signal(signal.SIGINT)\n"  # the second, while the task cleans up
        "    __import__('pathlib').Path(path).write_text('cleaned up')\n")
    marker = tmp_path / "marker"
    with worker_pool(1) as pool:
        task = pool.submit(exec, second_during_clean_up, {"path": str(marker)})
        assert isinstance(task.exception(timeout=120), KeyboardInterrupt)  # the first Ctrl-C's
        assert marker.read_text() == "cleaned up"
        assert isinstance(pool.submit(abs, -1).exception(timeout=120), KeyboardInterrupt)  # the noted second
        assert pool.submit(abs, -1).result(timeout=120) == 1


def test_a_ctrl_c_while_a_pool_waits_for_its_workers_stops_them_outright(monkeypatch):
    """A second Ctrl-C while `pipeline --jobs 2` waited for its workers to stop cut the wait short: they were
    never told to stop, and the command hung as it exited, waiting for them. It now stops them outright
    (after a moment for them to end by themselves, made short here: this worker's task runs on)."""
    worker = ctrl_c_while_it_waits_for_a_busy_worker(monkeypatch)
    left = not gone_within(worker, 2)  # (its task would end in 5 s, and the worker after it)
    if left:  # leave no process behind when the test fails (this one would wait for it as it exits)
        os.kill(worker, signal.SIGKILL)
    assert not left


def test_a_ctrl_c_while_a_pool_waits_gives_its_workers_a_moment_to_end_by_themselves(monkeypatch):
    """A second Ctrl-C 0.5-1 s after the first, while `pipeline --jobs 2` waited for its workers, terminated
    them at once: SFT's worker, still stopping its baselines' pool, never unlinked that pool's semaphores, and
    the resource tracker printed "There appear to be 5 leaked semaphore objects" below the command's one line.
    A worker whose task ends within STOP_GRACE_SECONDS now ends by itself. (The moment is made long here,
    so that a slow exit on a busy machine is still within it: the wait ends when the worker does.)

    The moment first joined each worker from this thread while the pool's own thread joined it too: when that
    one reaped it first and was held up before recording its exit code (on a busy machine), the worker had
    ended but showed no exit code here, and this test failed in two runs of the whole suite. That order is
    forced here (`the_pools_thread_reaps_first`)."""
    monkeypatch.setattr(workers, "STOP_GRACE_SECONDS", 60.0)
    before = set(multiprocessing.active_children())
    pool = worker_pool(1)
    pool.submit(os.getpid).result(timeout=120)
    [worker] = [child for child in multiprocessing.active_children() if child not in before]
    pool.submit(time.sleep, 1)
    monkeypatch.setattr(os, "waitpid", the_pools_thread_reaps_first(os.waitpid))
    ctrl_c_once_it_waits(pool)
    with pytest.raises(KeyboardInterrupt):
        pool.shutdown()
    assert worker.exitcode == 0  # it ended after its task (not -15: terminated in it), and this thread knows it


def test_a_command_started_with_ctrl_c_ignored_keeps_it_ignored_in_its_workers():
    """`minillm pipeline --jobs 2 &` in a script, or under a CI runner, starts with SIGINT ignored: the user
    asked that a Ctrl-C not stop it, and the workers, which inherit the ignore, kept it. Their Ctrl-C
    handler must not take it back: a stray Ctrl-C then stopped each worker's step, and so the command."""
    ctrl_c = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with worker_pool(1) as pool:
            assert pool.submit(signal.raise_signal, signal.SIGINT).exception(timeout=120) is None
    finally:
        signal.signal(signal.SIGINT, ctrl_c)


def test_the_ctrl_c_tests_send_a_signal_that_is_answered_however_pytest_was_started():
    """Under `pytest ... &` from a script, SIGINT was ignored in this process and in what the tests start
    (conftest.py's pytest_configure): the Ctrl-C tests here then failed, or passed without checking."""
    child = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT))"],
                           capture_output=True, text=True, timeout=60)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert child.stdout == f"{signal.default_int_handler}\n"


def as_in_a_workers_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process's Ctrl-C state that of a worker which has just begun a task (`workers._run_task`)."""
    monkeypatch.setattr(workers, "_in_task", True)
    monkeypatch.setattr(workers, "_raised_at", -math.inf)
    monkeypatch.setattr(workers, "_ctrl_c_between_tasks", False)


def test_a_pool_made_by_a_workers_task_is_waited_for_through_a_ctrl_c(monkeypatch):
    """SFT's step, run by a worker of `--jobs 2`, trains its baselines in a pool of its own (`beside`). A Ctrl-C
    while it waited for that pool cut the wait short, and the worker hung as it exited. Stopping the pool's
    worker outright instead left a "leaked semaphore" warning (tqdm's lock): the pool is waited for, since
    its worker got the Ctrl-C too, and the task stops after. (This process plays a worker running a task.)"""
    as_in_a_workers_task(monkeypatch)
    ctrl_c = signal.signal(signal.SIGINT, workers._on_ctrl_c)
    before = set(multiprocessing.active_children())
    try:
        pool = worker_pool(1)
        pool.submit(time.sleep, 1.5)
        [worker] = [child for child in multiprocessing.active_children() if child not in before]
        ctrl_c_once_it_waits(pool)
        with pytest.raises(KeyboardInterrupt):
            pool.shutdown()
    finally:
        signal.signal(signal.SIGINT, ctrl_c)
    assert worker.exitcode == 0  # it ended after its task (not -15: terminated in it)
    try:  # the Ctrl-C passed on a moment later lands in the task's clean-up: it is only noted
        workers._on_ctrl_c(signal.SIGINT, None)
    except KeyboardInterrupt:  # (failed, not let through: pytest would take it for the user's Ctrl-C and stop)
        pytest.fail("a Ctrl-C just after the pool's raised again, inside the task's clean-up")


def test_a_workers_task_takes_one_ctrl_c_and_only_notes_the_next(monkeypatch):
    """A terminal's Ctrl-C and the one `interrupts_children` passes on come a moment apart: the first stops the
    task, the second must not land in its clean-up (a bar closing, a pool of its own stopping); it is noted."""
    as_in_a_workers_task(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        workers._on_ctrl_c(signal.SIGINT, None)
    try:
        workers._on_ctrl_c(signal.SIGINT, None)
    except KeyboardInterrupt:  # (failed, not let through: pytest would take it for the user's Ctrl-C and stop)
        pytest.fail("the second Ctrl-C raised again, inside the first one's clean-up")
    assert workers._ctrl_c_between_tasks


def test_a_ctrl_c_that_python_drops_leaves_the_next_one_to_stop_the_task(monkeypatch):
    """The one KeyboardInterrupt of a task landed in a garbage collector's weakref callback, where Python prints
    "Exception ignored in ..." and drops it: the task ran on, and every later Ctrl-C was only noted. A Ctrl-C
    more than a moment after the one raised now raises again. (A `__del__` plays the callback: Python drops
    an exception raised in either.)"""
    as_in_a_workers_task(monkeypatch)
    monkeypatch.setattr(workers, "CTRL_C_AGAIN_SECONDS", 0.05)
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)

    class CtrlCAsItIsFreed:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGINT)  # (its handler runs before raise_signal returns)

    ctrl_c = signal.signal(signal.SIGINT, workers._on_ctrl_c)
    try:
        CtrlCAsItIsFreed()  # freed at once, and the Ctrl-C lands in its __del__
        assert [lost.exc_type for lost in dropped] == [KeyboardInterrupt]
        time.sleep(0.06)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, ctrl_c)


def test_a_workers_next_task_takes_a_ctrl_c_that_comes_just_after_one_stopped_the_last(monkeypatch):
    """The moment in which a task's later Ctrl-Cs are only noted is its own: a task a worker takes up at once
    after one stopped (one already in the pool's queue) is stopped by the Ctrl-C passed on a moment later."""
    as_in_a_workers_task(monkeypatch)
    monkeypatch.setattr(workers, "_in_task", False)
    monkeypatch.setattr(workers, "_raised_at", time.monotonic())  # a Ctrl-C has just stopped the last task
    with pytest.raises(KeyboardInterrupt):
        workers._run_task(workers._on_ctrl_c, signal.SIGINT, None)  # a task that gets a Ctrl-C at once


def ctrl_c_while_it_waits_for_a_busy_worker(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make a pool of one worker, give it a 5 s task, and send a Ctrl-C once `shutdown` waits for it, with
    the moment the worker is given to end by itself made short (its task runs on): the shutdown raises
    KeyboardInterrupt. Returns the worker's process id."""
    monkeypatch.setattr(workers, "STOP_GRACE_SECONDS", 0.1)
    pool = worker_pool(1)
    worker = pool.submit(os.getpid).result(timeout=120)
    pool.submit(time.sleep, 5)
    ctrl_c_once_it_waits(pool)
    with pytest.raises(KeyboardInterrupt):
        pool.shutdown()
    return worker


def ctrl_c_once_it_waits(pool: workers.WorkerPool) -> None:
    """Send this process a Ctrl-C as soon as `pool.shutdown()` has begun to wait for its workers. (A timer
    raced a busy machine: its signal could come before the wait began, outside what the tests check.)"""
    def send() -> None:
        while not pool._shutdown_thread:  # (ProcessPoolExecutor's own flag, set as its shutdown begins)
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=send, daemon=True).start()


def gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` has ended within `seconds` from now."""
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


Waitpid = Callable[[int, int], tuple[int, int]]


def the_pools_thread_reaps_first(waitpid: Waitpid) -> Waitpid:
    """`os.waitpid` in an order a busy machine may give it: the main thread comes to reap a child a moment
    late, and another thread that has reaped one is held up before it goes on (to record its exit code)."""
    def late_or_held_up(pid: int, options: int) -> tuple[int, int]:
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.1)
            return waitpid(pid, options)
        reaped = waitpid(pid, options)
        if reaped[0]:
            time.sleep(0.5)
        return reaped

    return late_or_held_up


def alive(pid: int) -> bool:
    """The process runs (a zombie, finished but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_the_family_table_puts_each_policys_rates_in_its_own_column_for_every_family(tmp_path):
    results = made_up_results()
    results["ppo"]["win_rate_by_family"] = {"count": 0.25}
    results["dpo"]["win_rate_by_family"] = {"count": 0.75, "colour": 0.5}  # a family only DPO was measured on
    report, markdown = made_up_report(tmp_path, results)
    # "-", the report's word for a figure a run has not got ("nan" reads as a bug), and what it means
    assert "| colour | - | 0.500 |\n| count | 0.250 | 0.750 |" in markdown
    assert "0.1 on 25; -: none of that policy's held-out prompts is of the family):" in markdown
    assert report["stages"]["ppo"]["win_rate_by_family"] == {"count": 0.25}  # report.json: as measured
    assert "-: none" not in made_up_report(tmp_path, made_up_results())[1]  # every family measured: nothing to say


def test_each_grpo_stage_reports_its_own_pass_at_k_curve(tmp_path):
    results = made_up_results()
    curves = results["rl_table"]["pass_at_k"]
    curves.update({"SFT": {"1": 0.1}, "GRPO (reward model)": {"1": 0.2}, "GRPO (verifiable)": {"1": 0.3}})
    report, _ = made_up_report(tmp_path, results)
    assert report["stages"]["grpo"]["pass_at_k_sft"] == {"1": 0.1}
    assert report["stages"]["grpo"]["pass_at_k_after"] == {"1": 0.2}
    assert report["stages"]["grpo_verifiable"]["pass_at_k_after"] == {"1": 0.3}


def test_a_copied_comparison_table_is_named_as_copied(tmp_path):
    results = made_up_results()
    results["rl_table"]["copied_from"] = str(tmp_path / "other" / "10_rl_table")
    report, markdown = made_up_report(tmp_path, results)
    assert report["stages"]["rl_table"]["copied_from"] == str(tmp_path / "other" / "10_rl_table")
    assert f"Copied from {tmp_path / 'other'}, where they were made from the same settings (their seconds are " \
        "that run's): rl_table." in markdown


def test_each_grpo_label_is_checked_against_its_own_reward(tmp_path):
    """Two runs whose rewards are swapped are each relabelled: the reward of "GRPO (verifiable)" is not
    "verifiable" even though another label names that reward."""
    _, markdown = made_up_report(tmp_path, made_up_results(), "grpo.reward=verifiable",
                                 "grpo_verifiable.reward=model")
    assert "GRPO (reward model) is the `grpo` step; `grpo.reward=verifiable` rewarded it by a program that " \
        "checks the answer" in markdown
    assert "GRPO (verifiable) is the `grpo_verifiable` step; `grpo_verifiable.reward=model` rewarded it by the " \
        "reward model." in markdown


def test_a_ppo_run_rewarded_by_the_gold_judge_says_so(tmp_path):
    """ppo.reward=gold (docs/cli.md's oracle experiment): report.md's PPO row and plots are the gold
    judge's work, not the reward model's, and the report says so, as it does for GRPO."""
    _, markdown = made_up_report(tmp_path, made_up_results(), "ppo.reward=gold")
    assert "PPO is the `ppo` step; `ppo.reward=gold` rewarded it by the gold judge itself" in markdown
    assert "is the `ppo` step" not in made_up_report(tmp_path, made_up_results())[1]  # nothing to say by default


# --------------------------------------------------------------------------------------------------
# Pre-flight: what a step refuses when it starts is refused before the first step.

PREFLIGHT_REFUSALS = [  # --set ..., and the words of the refusal each made only at its step's start before
    (("clm.model.block_size=8",), r"sft.max_new_tokens=8 leaves no room for a prompt .*\(8 tokens\)"),
    (("reward.max_new_tokens=61",), r"reward.max_new_tokens=61 leaves no room for a prompt .*\(64 tokens\)"),
    (("ppo.max_new_tokens=61",), r"ppo.max_new_tokens=61 leaves no room"),
    (("dpo.max_new_tokens=61",), r"dpo.max_new_tokens=61 leaves no room"),
    (("grpo.max_new_tokens=61",), r"grpo.max_new_tokens=61 leaves no room"),
    (("grpo_verifiable.max_new_tokens=61",), r"grpo_verifiable.max_new_tokens=61 leaves no room"),
    (("sft.lora.rank=4", "sft.lora.targets=nothing"),
     r"lora targets \['nothing'\] match no Linear layer.*\(e\.g\. --set sft\.lora\.targets=qkv,proj\)"),
    (("sft.lora.rank=4", "sft.lora.also_train=nope"),
     r"lora also_train \['nope'\] names no module of the model; e\.g\. --set sft\.lora\.also_train=tok_emb"),
    (("sft.lora.rank=4", "sft.lora.targets=head", "clm.model.tie_embeddings=false", "sft.train.optimizer=muon"),
     r"optimizer=muon: no trainable weight matrix"),
    (("reward.n_prompts=4",), r"reward.n_prompts=4 holds no ranking out"),
    (("sft.single_family=nonexistent",), r"sft.single_family='nonexistent' is not a family"),
]


def no_step_may_run(monkeypatch) -> None:
    """Every step fails the test: a setting refused before the first step never reaches one."""
    def step(j: Journey) -> dict:
        raise AssertionError("a step ran before the bad setting was refused")
    for name in STEP_NAMES:
        monkeypatch.setitem(pipeline.STEPS, name, step)


@pytest.mark.parametrize(("settings", "words"), PREFLIGHT_REFUSALS)
def test_a_setting_a_later_step_would_refuse_is_refused_before_the_first_step(settings, words, tmp_path,
                                                                               monkeypatch):
    no_step_may_run(monkeypatch)
    with pytest.raises(ConfigError, match=words):
        run_pipeline(apply_overrides(preset("micro"), list(settings)), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # not even its config.json


@pytest.mark.parametrize(("split", "words"), [("train", "no held-out records"),
                                              ("test_seen", "SFT: no training records")])
def test_an_instruction_file_without_a_split_the_steps_read_is_refused_before_the_first_step(split, words, tmp_path,
                                                                                            monkeypatch):
    """Only training records: every step up to PPO trained before; only test records: up to SFT."""
    data = tmp_path / "instructions.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "response": w, "split": split}) + "\n"
                            for w in ("hi", "bye")), encoding="utf-8")
    no_step_may_run(monkeypatch)
    with pytest.raises(DataError, match=words):
        run_pipeline(preset("micro"), tmp_path / "run", instructions=str(data))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["micro", "tiny", "small"])
def test_every_preset_passes_the_preflight_and_it_draws_no_random_number(name, tmp_path):
    """With LoRA on, the preflight adapts a throw-away model: the steps' draws after it stay as they were."""
    state = torch.random.get_rng_state()
    pipeline.preflight(Journey(preset(name), tmp_path))
    pipeline.preflight(Journey(apply_overrides(preset(name), ["sft.lora.rank=8", "sft.lora.targets=qkv,fc"]), tmp_path))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["micro", "tiny", "small"])
def test_every_presets_vocabulary_is_one_its_corpus_supports(name, tmp_path):
    """The small preset asked for 8192 ids, and every run warned that its corpus supports 2908 (then every
    word is one token) and trained that many: a setting that said what the run did not do."""
    cfg = preset(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "vocab_size=... is more than the corpus supports"
        tok = train_tokenizer(Journey(cfg, tmp_path).documents[0], cfg.tokenizer.vocab_size, progress=False)
    assert tok.vocab_size == cfg.tokenizer.vocab_size


def test_a_family_that_exists_passes_the_preflight(tmp_path):
    pipeline.preflight(Journey(apply_overrides(preset("micro"), ["sft.single_family=translate"]), tmp_path))


def test_the_report_defines_each_term_where_a_newcomer_first_meets_it(tmp_path):
    """report.md is a learner's first page: perplexity, exact match, the test splits, the gold judge, the
    win rate, KL, the comparison table's rows, pass@k and the plots' curve names went undefined, and the
    summary table said neither which way is better nor what a win rate's 0.5 is (a helper's reading)."""
    _, markdown = made_up_report(tmp_path, made_up_results())
    for definition in (
        "Higher is better for every key number but tokens/byte and perplexity, where lower is.",
        "Perplexity is e to the mean next-token loss",
        "the unigram model guesses each token by its frequency alone",
        "the answer is the reference and nothing more, once both are lower-cased",
        "heldout_families: tasks SFT never saw (what the tiny preset answers of them, and why: docs/findings.md",
        "SFT from scratch: the same SFT on an untrained GPT", "SFT on one family: the same SFT on one task family",
        "that function without the noise is the gold judge",
        "ties counting half", "on the held-out prompts (in nats: how far PPO moved its answers",
        "a win rate on n prompts has a standard error of up to 0.5/√n",
        "zero_signal_share is the share of groups in which every answer got the same reward",
        "clipfrac the share of tokens whose ratio",
        "SFT greedy is its most likely answer", "best of n samples n answers and keeps the one the reward model",
        "pass@k is the chance that at least one of k sampled answers is right",
    ):
        assert definition in markdown, definition
    # each term is defined before the section that first uses it ends: the gold judge before PPO's win rate
    assert markdown.index("is the gold judge") < markdown.index("PPO: win rate")
    results = made_up_results()  # instructions of your own: only the splits and rows the run has are explained
    results["sft"].update(exact_match={"seen": 0.75}, base_exact_match={"seen": 0.0}, questions={"seen": 4})
    del results["sft"]["scratch_exact_match"], results["sft"]["single_family_exact_match"]
    _, markdown = made_up_report(tmp_path, results)
    assert "seen: new questions of trained tasks" in markdown
    assert "heldout_families:" not in markdown and "SFT from scratch:" not in markdown


def test_each_figure_of_report_md_is_the_one_its_sentence_names(tmp_path):
    """Every figure made_up_results gives is 0.5, so report.md could print a stage's "before" as its
    "after", the unigram baseline as the model's accuracy, or PPO's win rate in DPO's row, and every
    other test would still pass: a learner would believe the swapped number. Here each figure is a
    different number, written by hand where report.md must show it (mutation audit, s29)."""
    results = made_up_results()
    results["mlm"].update(val_masked_accuracy=0.41, unigram_masked_accuracy=0.07)
    results["clm"].update(val_perplexity=12.5, unigram_perplexity=140.0)
    for key, base in (("base_exact_match", 0.0), ("scratch_exact_match", 0.1), ("single_family_exact_match", 0.2),
                      ("exact_match", 0.3)):  # each model's row, and in it each split's column, its own number
        results["sft"][key] = {split: base + 0.01 * i for i, split in enumerate(SFT_SPLITS, 1)}
    results["reward_model"].update(pairwise_accuracy=0.66, gold_agreement=0.81, annotator_agreement=0.72)
    results["ppo"].update(win_rate_vs_sft=0.61, win_rate_stderr=0.031, win_rate_ceiling=0.84, gold_sft=1.25,
                          gold_after=2.5, style_flaws_sft=0.3, style_flaws_after=0.1, wrong_sft=0.45, wrong_after=0.35)
    results["dpo"].update(win_rate_vs_sft=0.57, win_rate_stderr=0.033, win_rate_ceiling=0.86, gold_sft=1.26,
                          gold_after=2.0, style_flaws_sft=0.31, style_flaws_after=0.2, wrong_sft=0.46, wrong_after=0.4)
    results["grpo"].update(win_rate_vs_sft=0.55, win_rate_stderr=0.034)
    results["grpo_verifiable"].update(win_rate_vs_sft=0.62, win_rate_stderr=0.036, pass_at_1_sft=0.2,
                                      pass_at_1_after=0.3)
    results["rl_table"]["pass_at_k"] = {**dict.fromkeys(["SFT", *RL_POLICIES], {"1": 0.5, "2": 0.75}),
                                        "SFT": {"1": 0.2, "2": 0.3}, "PPO": {"1": 0.4, "2": 0.5}}
    report, markdown = made_up_report(tmp_path, results)
    assert report["stages"]["mlm"]["fill_mask_top5"] == ["night"]  # the piece " night", its space stripped
    for row in (
        "| MLM (BERT) | masked accuracy 0.410 | unigram 0.070 |", "| CLM (GPT) | perplexity 12.500 | unigram 140.000 |",
        "| SFT | exact match, held-out phrasings 0.320 | base model 0.020 |",
        "| reward model | pairwise accuracy 0.660 | chance 0.5 (ceiling 0.810: the rankings' agreement",
        "| PPO | win rate vs SFT 0.610 ± 0.031 |", "| DPO | win rate vs SFT 0.570 ± 0.033 |",
        "| GRPO (reward model) | win rate vs SFT 0.550 ± 0.034 |",
        "| GRPO (verifiable) | win rate vs SFT 0.620 ± 0.036, pass@1 0.200 -> 0.300 |",
        # the SFT table: columns in SFT_SPLITS' order, one row per model
        "| base (CLM, no SFT) | 0.010 | 0.020 | 0.030 | 0.040 |",
        "| SFT from scratch | 0.110 | 0.120 | 0.130 | 0.140 |",
        "| SFT on one family | 0.210 | 0.220 | 0.230 | 0.240 |", "| SFT | 0.310 | 0.320 | 0.330 | 0.340 |",
    ):
        assert row in markdown, row
    for sentence in (
        "**0.410**, against 0.070 for always guessing the most frequent token",
        "**12.500**, against 140.000 for a unigram model",
        "orders a held-out pair as they do **0.660** of the time", "with the gold judge: 0.810 (two noisy "
        "annotations of the same answers agree 0.720", "PPO: win rate against the SFT model by the gold judge "
        "**0.610 ± 0.031**", "Mean gold score 1.250 -> 2.500", "0.300 of the SFT model's, 0.100 after PPO",
        "Answers without the right answer in them: 0.450 -> 0.350", "A perfect policy would win 0.840 against",
        "DPO: win rate against the SFT model **0.570 ± 0.033**; mean gold score 1.260 -> 2.000; answers with a "
        "style flaw 0.310 -> 0.200; wrong answers 0.460 -> 0.400.",
        "it wins **0.550 ± 0.034** against the SFT model; rewarded by a program that checks the answer (RL with "
        "verifiable rewards) **0.620 ± 0.036**", "- PPO: pass@1 0.200 -> 0.400, pass@2 0.300 -> 0.500;",
    ):
        assert sentence in markdown, sentence


def test_tokens_per_byte_counts_the_bytes_of_text_that_is_not_ascii(tmp_path):
    """report.md's first figure is tokens per byte. A tokenizer of the 256 bytes and no merge needs
    exactly one token per byte, whatever the script: dividing by characters instead of UTF-8 bytes
    would print about 2.5 for Korean text (3 bytes a syllable), a slip English text never shows."""
    cfg = apply_overrides(preset("micro"), ["tokenizer.vocab_size=262"])  # the 256 bytes and 6 special tokens
    journey = Journey(cfg, tmp_path)
    # (train, validation) documents, set in place of the corpus the cached property would read
    journey.__dict__["documents"] = (["한빛마을에 비가 온다."], ["솔내는 맑음. 내일은 비."])
    result = pipeline.step_tokenizer(journey)
    assert result["vocab_size"] == 262 and result["tokens_per_byte"] == 1.0


def test_a_step_resumed_after_ctrl_c_keeps_its_run_id_and_its_own_training_seconds(tmp_path, monkeypatch):
    """The id in inputs.json names the run that later steps are made from, and its record the code that
    started it: a step stopped mid-training and resumed is the same run, so both stay. And a step's own
    "seconds" (SFT's leaves its baselines out) stays beside the wall time run_step measures: report.json
    shows them as "train_seconds" and "seconds", and one written over the other would say the same twice."""
    def step(j):  # a step that trains nothing: stopped after its first checkpoint, finished on the rerun
        checkpoint = j.folder("tokenizer") / "ckpt.pt"
        if not checkpoint.is_file():
            checkpoint.write_text("half-trained", encoding="utf-8")
            raise KeyboardInterrupt
        return {"seconds": 0.25}

    monkeypatch.setattr(pipeline, "STEPS", {**pipeline.STEPS, "tokenizer": step})
    journey = Journey(preset("micro"), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_step(journey, "tokenizer")
    started = read_json(journey.folder("tokenizer") / "inputs.json")
    result = run_step(journey, "tokenizer")
    assert read_json(journey.folder("tokenizer") / "inputs.json") == started
    assert result["seconds"] == 0.25 and result["wall_seconds"] >= 0.0


def test_the_questions_each_split_stands_on_are_its_answered_questions(journey):
    """report.md's "Questions per split" and the ± of each exact match are computed from these counts:
    each must be the number of test questions of its split, counted here from the answers SFT wrote."""
    root, report = journey
    counts: dict[str, int] = {}
    for row in read_answers(root / "micro" / "04_sft"):
        split = {"test_seen": "seen", "test_heldout_phrasing": "heldout_phrasings",
                 "test_heldout_family": "heldout_families", "test_world_fact": "world_facts"}[row["split"]]
        counts[split] = counts.get(split, 0) + 1
    assert report["stages"]["sft"]["questions"] == counts


def test_a_ppo_run_made_before_the_ceiling_was_measured_states_no_ceiling(tmp_path):
    """A step kept from an older journey has no win_rate_ceiling: report.md said "A perfect policy would
    win nan against the same SFT answers, not 1", a "nan" where the report means "not measured"."""
    results = made_up_results()
    del results["ppo"]["win_rate_ceiling"]
    _, markdown = made_up_report(tmp_path, results)
    assert "A perfect policy" not in markdown and "nan" not in markdown
    assert "which the policy has to know).\n\nDPO: win rate" in markdown  # one blank line between, as before


def test_a_workers_progress_bars_hold_no_semaphore_that_a_stop_outright_would_leave_behind():
    """tqdm's default lock makes a multiprocessing semaphore at a process's first bar, unlinked as the process
    ends. A worker stopped outright by a second Ctrl-C never unlinked it, and `pipeline --jobs 2` printed
    "resource_tracker: There appear to be 1 leaked semaphore objects" below its one line. A worker's bars,
    its own alone, take a thread lock."""
    with worker_pool(1) as pool:
        lock = pool.submit(eval, "type(__import__('tqdm').tqdm.get_lock()).__module__").result(timeout=120)
    assert lock in ("threading", "_thread")


def test_a_ctrl_c_while_a_pool_waits_stops_its_own_workers_and_no_other_process(monkeypatch):
    """A second Ctrl-C while a pool waited for its workers terminated every child of this process: a script
    that ran a process of its own beside `worker_pool` saw it killed too."""
    other = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(30,))
    other.start()
    try:
        worker = ctrl_c_while_it_waits_for_a_busy_worker(monkeypatch)
        time.sleep(0.5)
        assert other.is_alive()
    finally:
        other.kill()
        other.join()
    assert gone_within(worker, 2)


def test_the_reports_total_time_is_its_tables_seconds_and_the_comparison_steps(tmp_path):
    """report.md's "N s in all" added the comparison table's step (10_rl_table), which has no row in the
    table of seconds: the column came to less than the total, and nothing said why."""
    report, markdown = made_up_report(tmp_path, made_up_results())
    table = markdown.split("| stage | key number | baseline | seconds |\n| --- | --- | --- | --- |\n")[1]
    column = sum(float(line.rsplit("|", 2)[1]) for line in table.split("\n\n")[0].splitlines())
    assert column == 27 and report["seconds"] == 29.0  # nine steps of 3 s in the table, and the comparison's 2 s
    assert ("its steps took 29 s in all: the stages in the table below, and 2 s for section 4's comparison of "
            "every model (`10_rl_table`).") in markdown


def test_the_reports_sft_examples_name_each_split_as_the_exact_match_table_does(tmp_path):
    """The examples were named by the data's splits ("test_world_fact") under a table that says "world_facts"."""
    from minillm.datasets.jsonl import write_jsonl
    sft_folder = Journey(preset("micro"), tmp_path).folder("sft")
    sft_folder.mkdir()
    write_jsonl(sft_folder / "answers.jsonl", [
        {"split": split, "prompt": f"Q {split}?", "base": "no", "sft": "yes", "reference": "Yes."}
        for split in ("test_world_fact", "test_heldout_phrasing", "test_seen", "test_heldout_family")])
    _, markdown = made_up_report(tmp_path, made_up_results())
    assert "| model | seen | heldout_phrasings | heldout_families | world_facts |" in markdown
    examples = [line.split(" | ")[0] for line in markdown.splitlines() if line.startswith("| ") and "Q test_" in line]
    assert examples == ["| seen", "| heldout_phrasings", "| heldout_families", "| world_facts"]

"""The lessons open as notebooks, and the run-finding helper they share picks the right runs.

Each lesson is a jupytext "percent" script: `# %% [markdown]` cells of prose as comment lines, and
`# %%` code cells. jupytext turns it into a notebook; that notebook must be valid and hold exactly
the script's code, so that stepping through the cells runs the same lesson as `python lessons/NN.py`.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import itertools
import json
import math
import os
import re
import runpy
import shutil
import statistics
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch

import minillm
from minillm import config, lessons
from minillm.datasets.instructions import PADDING_CLOSERS, PADDING_OPENERS, read_jsonl
from minillm.errors import ConfigError, DataError, RunLockedError
from minillm.lessons import Run, earlier_run, own_run
from minillm.model import GPT
from minillm.run_lock import LOCK_NAME, RUN_MARK_NAME
from minillm.stage1_pretrain.data import pack_documents
from minillm.stage3_rlhf import reward_model
from minillm.stage3_rlhf.annotator import gold_score
from minillm.tokenizer import train_tokenizer
from minillm.tokenizer.bpe import PRESPLIT_PATTERN, compile_pattern, split_text
from minillm.train import make_optimizer, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))


def script_code(text: str) -> list[str]:
    """The script's code lines, found without jupytext: cell markers and markdown cells left out,
    blank lines dropped (jupytext trims them at the edges of a cell)."""
    code, in_markdown = [], False
    for line in text.splitlines():
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
        elif not in_markdown and line.strip():
            code.append(line)
    return code


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_each_lesson_opens_as_a_notebook_with_the_scripts_code(path):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    text = path.read_text(encoding="utf-8")
    notebook = jupytext.reads(text, fmt="py:percent")
    nbformat.validate(notebook)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and notebook.cells[0].source.startswith("# Lesson"), path.name
    assert kinds.count("code") >= 3 and kinds.count("markdown") >= 3, kinds  # steps, not one block
    joined = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert [line for line in joined.splitlines() if line.strip()] == script_code(text)
    assert "__file__" not in joined  # a notebook has no __file__: lessons find the repository another way


def test_lessons_are_numbered_one_to_n():
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert numbers == list(range(1, len(numbers) + 1))


def prose(path: Path) -> str:
    """A lesson's comment lines (its markdown cells and its code's comments), the rest blanked."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line if line.lstrip().startswith("#") else "" for line in lines)


def test_the_names_a_lessons_text_points_at_exist():
    """Every `module.name` (ppo.response_logits), `GPT.method` and setting (CFG.ppo.kl_coef, --set
    sft.lora.rank=8) a lesson's text names is there under that name: a Try this that edits a function
    or sets a setting that was renamed would send the reader looking for nothing."""
    modules: dict[str, list[str]] = {}  # a module's file name -> its dotted names (sft: minillm.stage2_sft.sft)
    for file in (ROOT / "minillm").rglob("[!_]*.py"):
        modules.setdefault(file.stem, []).append(".".join(file.relative_to(ROOT).with_suffix("").parts))
    settings = config.preset("tiny")
    missing = []
    for path in LESSONS:
        text = prose(path)
        for found in re.finditer(r"(?<![\w./-])(?:CFG\.)?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)", text):
            first, *rest = found.group(1).split(".")
            if rest in (["json"], ["md"], ["png"]) or (first not in modules and first != "GPT"
                                                       and not hasattr(settings, first)):
                continue  # a run's file (report.md), a variable of the code; annotator.py is checked
            if rest == ["py"]:
                rest = ["__name__"]  # any module has it: the file is there
            in_module = any(hasattr(importlib.import_module(name), rest[0]) for name in modules.get(first, []))
            obj = GPT if first == "GPT" else settings
            for part in ([] if first == "GPT" else [first]) + rest:
                obj = getattr(obj, part, None)
            if not in_module and obj is None:
                missing.append(f"{path.name}:{text.count(chr(10), 0, found.start()) + 1}: {found.group(0)}")
    assert not missing, missing


def test_the_calls_a_lessons_text_asks_for_take_those_arguments():
    """A Try this that asks for a call of one of the lesson's own functions, such as lesson 2's
    `step4_what_causality_hides(changed_at=0)`, names arguments the function takes: lesson 4's Try 1
    asks for step 4 at other temperatures, which step 4 could not be given (0.8 was written inside
    the sampling call, and in step 4's heading, which then went on saying 0.8)."""
    bad = []
    for path in LESSONS:
        functions = {node.name: node.args for node in ast.parse(path.read_text(encoding="utf-8")).body
                     if isinstance(node, ast.FunctionDef)}
        for found in re.finditer(r"`((\w+)\(.*?\))`", prose(path)):
            if found.group(2) in functions:
                call, args = ast.parse(found.group(1), mode="eval").body, functions[found.group(2)]
                positional = [a.arg for a in args.posonlyargs + args.args]
                params = positional + [a.arg for a in args.kwonlyargs]
                if len(call.args) > len(positional) or any(k.arg not in params for k in call.keywords):
                    bad.append(f"{path.name}: {found.group(1)}")
    assert not bad, bad


def test_the_settings_a_try_this_asks_for_are_accepted_by_the_preset_it_runs():
    """Every command a lesson's text gives (`--set a=1 --set b=2`, together, at its `--preset`, else
    the tiny preset every lesson uses) and every `CFG.section.name = value` it asks for is a setting
    the config accepts: a Try this refused at its own preset (lesson 10's group_size=16 is, at micro,
    whose minibatch of 4 holds no group of 16) sends the reader back with an error, not a result."""
    refused, checked = [], 0
    for path in LESSONS:
        text = re.sub(r"\n#\s*", " ", prose(path))  # wrapped comment lines joined into one
        asks = [(re.search(r"--preset (\w+)", span), re.findall(r"--set ([\w.]+=[^\s`]+)", span))
                for span in re.findall(r"`([^`]*--set [^`]*)`", text)]
        asks += [(None, [f"{name}={value.rstrip('.').strip(chr(34))}"])  # "0.7." ends a sentence
                 for name, value in re.findall(r"CFG\.([\w.]+) = ([^\s,`]+)", text)]
        checked += len(asks)
        for preset_named, settings in asks:
            try:
                config.apply_overrides(config.preset(preset_named[1] if preset_named else "tiny"), settings)
            except ConfigError as error:
                refused.append(f"{path.name}: {settings}: {error}")
    assert checked > 0 and not refused, refused or "no setting found: the patterns no longer match the lessons' text"


def test_lesson_8s_best_of_n_keeps_a_run_for_each_n():
    """Try this 5 asks for best of 8. Its n was in neither the run's folder nor its settings, so the
    best of 4 saved by an earlier run was reused (own_run takes a run made from the same inputs and
    settings) and printed again as "best of 4": the experiment showed nothing new."""
    text = (ROOT / "lessons" / "08_dpo.py").read_text(encoding="utf-8")
    calls = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)]
    best_of = next(c for c in calls if getattr(c.func, "id", "") == "own_run" and "best_of(" in ast.unparse(c))
    n = next(k.value for c in ast.walk(best_of) if getattr(getattr(c, "func", None), "id", "") == "best_of"
             for k in c.keywords if k.arg == "n")
    assert isinstance(n, ast.Name), ast.unparse(n)  # a name the reader sets, not a number inside the call
    assert n.id in ast.unparse(best_of.args[1]), ast.unparse(best_of.args[1])  # the run's folder follows it
    assert f"`{n.id} = 8`" in prose(ROOT / "lessons" / "08_dpo.py")  # and Try this 5 says to set it


def test_a_lesson_takes_the_kl_leash_from_the_library_not_from_a_copy_of_its_formula():
    """Lessons use the library's own functions rather than a private copy of them (the design). Lesson
    7's rollout table built PPO's per-token rewards itself, -kl_coef * KL plus the score on the last
    token, beside `ppo.per_token_rewards`, which the rollout uses: a change to one would not reach the
    other, and the table would show rewards that PPO never used. No lesson computes with a kl_coef."""
    copies = [f"{path.name}:{node.lineno}: {ast.unparse(node)}" for path in LESSONS
              for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
              if isinstance(node, ast.BinOp) and "kl_coef" in ast.unparse(node)]
    assert not copies, copies


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_a_lesson_loads_what_it_reads_text_with_through_the_checked_loaders(path):
    """A run named on a lesson's command line may have lost its tokenizer.json: `load_model` then gives
    None for the tokenizer, and the lesson stopped with an AttributeError at its first encode. A lesson
    that keeps the tokenizer loads with `load_model_and_tokenizer` (one line naming the missing file),
    and a reward model with `load_reward_model`, which also refuses one trained with another tokenizer
    than the policy's (it would score the policy's ids as other words)."""
    loads = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Assign) and "load_model(" in ast.unparse(node.value)]
    tokenizer_dropped = [node for node in loads if isinstance(node.targets[0], ast.Tuple)
                         and ast.unparse(node.targets[0].elts[1]) == "_" and "RewardModel" not in ast.unparse(node)]
    assert loads == tokenizer_dropped, [ast.unparse(node) for node in loads if node not in tokenizer_dropped]


# --------------------------------------------------------------------------------------------------
# earlier_run / own_run, on fake run folders (a folder is finished when it holds result.json).


def finish(folder: Path, **result) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return folder


@pytest.fixture
def pipeline_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "runs" / "tiny"
    monkeypatch.setattr(lessons, "PIPELINE_DIR", folder)
    monkeypatch.setattr(lessons, "ROOT", tmp_path)
    return folder


def test_earlier_run_prefers_an_earlier_lessons_run_then_the_pipelines(pipeline_dir, tmp_path, capsys):
    pipeline_sft = finish(lessons.pipeline_folder("sft"), source="pipeline")  # runs/tiny/04_sft
    lesson5 = tmp_path / "runs" / "lessons" / "05" / "sft"
    lesson5.mkdir(parents=True)  # lesson 5 stopped before it finished: no result.json
    run = earlier_run("sft", lesson5)
    assert run.path == pipeline_sft and run.result == {"source": "pipeline"}
    assert f"using runs/tiny/{pipeline_sft.name} (the pipeline's run)" in capsys.readouterr().out
    finish(lesson5, source="lesson")
    assert earlier_run("sft", lesson5).result == {"source": "lesson"}
    assert earlier_run("ppo", train_missing=False) is None  # not there, and not to be trained


def test_earlier_run_trains_a_missing_step_with_the_pipelines_own_steps(pipeline_dir, monkeypatch, capsys):
    monkeypatch.setattr(lessons, "preset", lambda name: config.preset("micro"))  # seconds, not minutes
    run = earlier_run("clm")
    assert run.path == lessons.pipeline_folder("clm") and run.result["val_perplexity"] > 1
    assert (pipeline_dir / "config.json").is_file() and lessons.finished(lessons.pipeline_folder("tokenizer"))
    assert not lessons.pipeline_folder("mlm").exists()  # nothing after it reads BERT
    assert earlier_run("mlm").path == lessons.pipeline_folder("mlm")  # unless it is the run asked for
    assert "trained now by the pipeline's steps" in capsys.readouterr().out
    assert earlier_run("clm").source == "the pipeline's run"  # and the next lesson finds it


def test_a_pipeline_run_made_from_other_data_is_shown_with_a_note(pipeline_dir, monkeypatch, capsys):
    """runs/tiny made by an older minillm, which generated other data from the same settings: a lesson
    still shows its runs (replacing them is the pipeline's call), and says their numbers may differ."""
    monkeypatch.setattr(lessons, "preset", lambda name: config.preset("micro"))
    earlier_run("tokenizer")
    capsys.readouterr()
    earlier_run("tokenizer")
    assert "note:" not in capsys.readouterr().out  # made from runs/tiny's own settings and data
    inputs = lessons.pipeline_folder("tokenizer") / "inputs.json"
    saved = json.loads(inputs.read_text(encoding="utf-8"))
    del saved["settings"]["corpus"]["generated_sha256"]  # as an inputs.json of before it was recorded
    inputs.write_text(json.dumps(saved), encoding="utf-8")
    assert earlier_run("tokenizer").path == lessons.pipeline_folder("tokenizer")
    assert "01_tokenizer made with other settings (corpus.generated_sha256" in capsys.readouterr().out


def test_earlier_run_stops_while_a_pipeline_writes_runs_tiny(pipeline_dir):
    pipeline_dir.mkdir(parents=True)
    (pipeline_dir / LOCK_NAME).write_text(f"{os.getppid()}\n", encoding="utf-8")  # a live process that is not this one
    with pytest.raises(RunLockedError, match=r"in use by another minillm process"):
        earlier_run("tokenizer")
    assert sorted(path.name for path in pipeline_dir.iterdir()) == [LOCK_NAME]  # nothing written beside it


def test_earlier_run_finishes_runs_tiny_with_its_own_settings_and_never_replaces_a_step(pipeline_dir, monkeypatch):
    monkeypatch.setattr(lessons, "preset", lambda name: config.preset("micro"))
    made = config.preset("micro")
    made.clm.train.max_steps = 3  # as `minillm pipeline --set clm.train.max_steps=3 --out runs/tiny` writes it
    pipeline_dir.mkdir(parents=True)
    (pipeline_dir / "config.json").write_text(json.dumps(config.to_dict(made)), encoding="utf-8")
    (pipeline_dir / RUN_MARK_NAME).touch()
    clm = earlier_run("clm").path
    settings = json.loads((clm / "inputs.json").read_text(encoding="utf-8"))["settings"]
    assert settings["clm"]["train"]["max_steps"] == 3  # runs/tiny's settings, not the preset's
    # The tokenizer was made from a corpus file this lesson cannot see: the CLM must be redone, and a
    # lesson stops instead of deleting it.
    tokenizer_inputs = lessons.pipeline_folder("tokenizer") / "inputs.json"
    saved = json.loads(tokenizer_inputs.read_text(encoding="utf-8"))
    saved["settings"]["corpus"] = {"file_sha256": "0" * 64, "val_fraction": 0.05}
    tokenizer_inputs.write_text(json.dumps(saved), encoding="utf-8")
    (clm / "result.json").unlink()  # interrupted: a lesson would have to finish it
    with pytest.raises(DataError, match="01_tokenizer made with other settings .*a lesson does not replace"):
        earlier_run("clm")
    assert lessons.pipeline_folder("tokenizer").is_dir() and (clm / "inputs.json").is_file()
    (pipeline_dir / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="config.json cannot be read"):
        earlier_run("clm")


def test_own_run_reuses_trains_what_is_missing_and_retrains_when_fresh(pipeline_dir, tmp_path, capsys):
    sft = Run(finish(lessons.pipeline_folder("sft")), {}, "the pipeline's run")
    finish(lessons.pipeline_folder("ppo"), win_rate_vs_sft=0.6)
    here = tmp_path / "runs" / "lessons" / "07" / "ppo"
    trained = []

    def train(folder: Path) -> dict:
        trained.append(folder)
        return {"win_rate_vs_sft": 0.7, "history": [{"step": 1}]}

    assert own_run("ppo", here, train, settings={}, fresh=False, inputs=[sft]).result == {"win_rate_vs_sft": 0.6}
    assert trained == []  # the pipeline's, made from the same SFT model
    run = own_run("ppo", here, train, settings={}, fresh=True, inputs=[sft])
    assert trained == [here] and run.result["win_rate_vs_sft"] == 0.7 and "history" not in run.result
    again = own_run("ppo", here, train, settings={}, fresh=False, inputs=[sft])
    assert trained == [here] and again.path == here and "this lesson's earlier run" in capsys.readouterr().out
    # Made from another SFT model: neither this lesson's earlier run nor the pipeline's will do.
    other = Run(finish(tmp_path / "runs" / "lessons" / "05" / "sft"), {}, "trained by an earlier lesson")
    assert own_run("ppo", here, train, settings={}, fresh=False, inputs=[other]).path == here and len(trained) == 2
    # A variant the pipeline never trains is never taken from it.
    own_run("ppo", tmp_path / "no_kl", train, settings={}, fresh=False, inputs=[sft], from_pipeline=False)
    assert trained[-1] == tmp_path / "no_kl"


def test_the_pipelines_run_is_not_shown_when_one_input_is_a_lessons_own(pipeline_dir, tmp_path):
    """The pipeline's PPO was made from the pipeline's SFT model: with lesson 5's SFT model as one input
    (and the pipeline's reward model as the other), the lesson trains its own."""
    finish(lessons.pipeline_folder("ppo"), source="pipeline")
    sft = Run(finish(tmp_path / "runs" / "lessons" / "05" / "sft"), {}, "trained by an earlier lesson")
    rm = Run(finish(lessons.pipeline_folder("reward_model")), {}, "the pipeline's run")
    here, trained = tmp_path / "runs" / "lessons" / "07" / "ppo", []
    run = own_run("ppo", here, lambda folder: trained.append(folder) or {"source": "lesson"}, settings={},
                  fresh=False, inputs=[sft, rm])
    assert run.path == here and run.result["source"] == "lesson" and trained == [here]


def test_a_run_made_with_other_settings_is_not_reused(pipeline_dir, tmp_path, capsys):
    """A reader who edits the lesson's CFG sees a run made with the edit, without --fresh; and back
    at the pipeline's settings, the pipeline's run again."""
    preset_reward = config.to_dict(config.preset("tiny").reward)
    noisy = {**preset_reward, "annotator_noise": 1.0}
    sft = Run(finish(lessons.pipeline_folder("sft")), {}, "the pipeline's run")
    rm_folder = finish(lessons.pipeline_folder("reward_model"), source="pipeline")
    (rm_folder / "inputs.json").write_text(json.dumps({"id": "rm-1", "settings": {"reward": preset_reward},
                                                       "made_from": {}}), encoding="utf-8")
    here, trained = tmp_path / "runs" / "lessons" / "06" / "reward", []

    def reward_run(reward_settings: dict) -> Run:
        def train(folder: Path) -> dict:
            trained.append(reward_settings["annotator_noise"])
            return {"source": "lesson"}
        return own_run("reward_model", here, train, fresh=False, inputs=[sft], settings={"reward": reward_settings})

    assert reward_run(preset_reward).path == rm_folder and trained == []
    assert reward_run(noisy).path == here and trained == [1.0]
    assert (f"running it now (no earlier run in runs/lessons/06/reward; runs/tiny/{rm_folder.name} was made with "
            f"other settings (reward.annotator_noise: {preset_reward['annotator_noise']} -> 1.0))") in \
        capsys.readouterr().out
    assert reward_run(noisy).source == "this lesson's earlier run" and trained == [1.0]
    assert reward_run(preset_reward).path == rm_folder and trained == [1.0]  # the edit undone
    assert "note: runs/lessons/06/reward stays (this lesson's earlier run was made with other settings " \
        "(reward.annotator_noise: 1.0 -> " in capsys.readouterr().out  # lesson 7 would still build on it
    # A lesson's run from before runs recorded their settings cannot be told apart: it is made again.
    old = json.loads((here / "result.json").read_text(encoding="utf-8"))
    del old["settings"]
    (here / "result.json").write_text(json.dumps(old), encoding="utf-8")
    assert reward_run(noisy).source == "trained now" and trained == [1.0, 1.0]
    assert "does not record its settings" in capsys.readouterr().out


def test_a_run_made_from_an_earlier_run_of_the_steps_before_it_is_not_reused(pipeline_dir, tmp_path):
    def made(stage: str, run_id: str, **made_from: str) -> Path:
        """A finished pipeline step whose inputs.json names its run and the runs it was made from."""
        folder = finish(lessons.pipeline_folder(stage), stage=stage, run=run_id)
        inputs = {"id": run_id, "settings": {}, "made_from": made_from}
        (folder / "inputs.json").write_text(json.dumps(inputs), encoding="utf-8")
        return folder

    made("sft", "sft-1"), made("reward_model", "rm-1", sft="sft-1"), made("ppo", "ppo-1", reward_model="rm-1")
    here, trained = tmp_path / "runs" / "lessons" / "07" / "ppo", []

    def train(folder: Path) -> dict:
        trained.append(folder)
        return {"win_rate_vs_sft": 0.7}

    def ppo_run() -> Run:
        return own_run("ppo", here, train, settings={}, fresh=False,
                       inputs=[earlier_run("sft"), earlier_run("reward_model")])

    assert ppo_run().result["run"] == "ppo-1" and trained == []  # the pipeline's
    own_run("ppo", here, train, settings={}, fresh=True, inputs=[earlier_run("sft"), earlier_run("reward_model")])
    assert ppo_run().path == here and len(trained) == 1  # this lesson's own, made from sft-1 and rm-1
    # `minillm pipeline --set sft.... --out runs/tiny` trains SFT again, and is stopped before the reward model:
    made("sft", "sft-2")
    assert earlier_run("reward_model", train_missing=False) is None  # made from sft-1: out of date
    assert earlier_run("ppo", train_missing=False) is None  # made from that reward model: out of date too
    made("reward_model", "rm-2", sft="sft-2")  # ... and stopped before PPO
    run = ppo_run()  # neither the pipeline's PPO nor the lesson's own was made from these runs
    assert run.path == here and run.source == "trained now" and len(trained) == 2
    assert ppo_run().source == "this lesson's earlier run" and len(trained) == 2


def test_a_run_folder_given_as_a_relative_path_is_the_same_run_as_given_absolute(pipeline_dir, tmp_path,
                                                                                  monkeypatch, capsys):
    clm = finish(lessons.pipeline_folder("clm"))
    finish(lessons.pipeline_folder("sft"), source="pipeline")
    monkeypatch.chdir(tmp_path)
    relative = Path("runs") / "tiny" / clm.name
    monkeypatch.setattr(sys, "argv", ["05_instruction_tuning.py", str(relative)])
    assert lessons.lesson_args("lesson 5", inputs=["clm_run"]).clm_run == clm
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/..." in quotes, or from a script: no shell expands it
    monkeypatch.setattr(sys, "argv", ["05_instruction_tuning.py", f"~/runs/../runs/tiny/{clm.name}"])
    assert lessons.lesson_args("lesson 5", inputs=["clm_run"]).clm_run == clm
    assert earlier_run("clm", given=relative).path == clm
    assert f"using runs/tiny/{clm.name} (given on the command line)" in capsys.readouterr().out
    here, trained = tmp_path / "runs" / "lessons" / "05" / "sft", []

    def train(folder: Path) -> dict:
        trained.append(folder)
        return {}

    # A Python caller's Run with the relative spelling: the pipeline's SFT run, made from that CLM, is reused,
    typed, absolute = Run(relative, {}, "given"), Run(clm, {}, "given")
    assert own_run("sft", here, train, settings={}, fresh=False, inputs=[typed]).result == {"source": "pipeline"}
    # and a lesson's own run made from one spelling is reused when the other is given.
    own_run("sft", here, train, settings={}, fresh=True, inputs=[typed])
    assert own_run("sft", here, train, settings={}, fresh=False, inputs=[absolute]).path == here and len(trained) == 1


def test_the_stage3_lessons_take_each_run_named_on_their_command_line(pipeline_dir, tmp_path):
    """`python lessons/07_ppo.py my_sft my_rm`: the SFT model and the reward model are each the one named."""
    sft, rm = finish(tmp_path / "my_sft"), finish(tmp_path / "my_rm")
    records, sft_run, rm_run = lessons.stage3_inputs(argparse.Namespace(sft_run=sft, reward_run=rm))
    assert (sft_run.path, rm_run.path) == (sft, rm) and records


def test_in_a_notebook_a_lesson_reads_no_command_line(monkeypatch):
    """A Jupyter kernel's command line is its own (`ipykernel_launcher.py -f kernel-1.json`): read as the
    lesson's, argparse would end the notebook's first cell with "unrecognized arguments". There every
    value is its default."""
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"])
    args = lessons.lesson_args("lesson 7", inputs=["sft_run", "reward_run"])
    assert (args.sft_run, args.reward_run, args.fresh) == (None, None, False)


def test_a_mistake_on_a_lessons_command_line_is_one_line(monkeypatch, capsys):
    """argparse's usage line came before the error, where a `minillm` command and a MinillmError in the
    lesson (one_line_errors) say it in one line; lesson 9's own parser is the same parser."""
    monkeypatch.setattr(sys, "argv", ["06_reward_model.py", "--frsh"])
    with pytest.raises(SystemExit) as stop:
        lessons.lesson_args("lesson 6", inputs=["sft_run"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("06_reward_model.py: error: unrecognized arguments: --frsh "
                                       "(see 06_reward_model.py --help)\n")
    monkeypatch.setattr(sys, "argv", ["06_reward_model.py", "--help"])  # and its help says what the lesson is
    with pytest.raises(SystemExit):
        lessons.lesson_args("lesson 6", inputs=["sft_run"])
    assert "lesson 6" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["06_reward_model.py", ""])  # a blank run folder is not the current one
    with pytest.raises(SystemExit) as stop:
        lessons.lesson_args("lesson 6", inputs=["sft_run"])
    assert stop.value.code == 2 and "'' is a blank path" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["09_end_to_end.py", "--frsh"])  # (it stops there: before any step)
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "lessons" / "09_end_to_end.py"))
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("09_end_to_end.py: error: unrecognized arguments: --frsh "
                                       "(see 09_end_to_end.py --help)\n")


def test_lesson_9_refuses_an_out_that_is_a_file_or_a_folder_of_the_readers_own_files(tmp_path, monkeypatch):
    """Lesson 9 wrote its journey into --out without the checks `minillm pipeline --out` makes: a file there
    was mkdir's traceback, a folder of the reader's own files had its config.json written over, and --fresh
    deleted that folder whole. Each is one DataError now, before anything is written or deleted."""
    thesis = tmp_path / "mine" / "micro" / "thesis.txt"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("my thesis\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("notes\n", encoding="utf-8")
    for out, fresh, words in ((tmp_path / "mine", ["--fresh"], "already holds files no minillm run wrote (thesis.txt)"),
                              (tmp_path / "mine", [], "already holds files no minillm run wrote (thesis.txt)"),
                              (tmp_path / "notes.txt", [], "notes.txt, which is a file, not a folder")):
        monkeypatch.setattr(sys, "argv", ["09_end_to_end.py", "--preset", "micro", "--out", str(out), *fresh])
        with pytest.raises(DataError, match=re.escape(words)):
            runpy.run_path(str(ROOT / "lessons" / "09_end_to_end.py"))
    assert sorted(p.name for p in (tmp_path / "mine" / "micro").iterdir()) == ["thesis.txt"]


def test_an_input_without_a_run_id_is_known_by_its_content(pipeline_dir, tmp_path):
    """Lesson 8's DPO from your rankings file (`--prefs-file`), or a lesson given a stage command's
    folder (`minillm sft --out my_sft`): neither has a run id. Rankings added to the file, or an SFT
    trained again into the folder, kept the lesson's earlier run, made from the old ones."""
    prefs, sft = tmp_path / "prefs.jsonl", tmp_path / "my_sft"
    prefs.write_text('{"ranking": [0, 1]}\n', encoding="utf-8")
    sft.mkdir()
    (sft / "ckpt.pt").write_bytes(b"weights")
    here, trained = tmp_path / "runs" / "lessons" / "08" / "dpo", []

    def dpo_from_now() -> Run:
        return own_run("dpo", here, lambda folder: trained.append(folder) or {}, settings={}, fresh=False,
                       inputs=[Run(sft, {}, "given"), Run(prefs, {}, "given")], from_pipeline=False)

    dpo_from_now()
    dpo_from_now()
    assert len(trained) == 1  # the same inputs: the earlier run
    with prefs.open("a", encoding="utf-8") as f:
        f.write('{"ranking": [1, 0]}\n')
    dpo_from_now()
    (sft / "ckpt.pt").write_bytes(b"other weights")
    dpo_from_now()
    assert len(trained) == 3


def test_inputs_in_folders_of_one_name_are_each_what_a_run_is_made_from(pipeline_dir, tmp_path):
    """`python lessons/07_ppo.py a/out rm/out`, then `... b/out rm/out`: a lesson's run recorded its inputs
    by folder name, the reward model's "out" took the place of the SFT model's, and the PPO trained from SFT
    model a was shown again as the one made from b."""
    def stage_folder(folder: Path) -> Run:  # a stage command's --out: known by its checkpoint's content
        folder.mkdir(parents=True)
        (folder / "ckpt.pt").write_bytes(str(folder).encode())
        return Run(folder, {}, "given on the command line")

    sft_a, sft_b, rm = (stage_folder(tmp_path / name / "out") for name in ("a", "b", "rm"))
    here, trained = tmp_path / "runs" / "lessons" / "07" / "ppo", []
    for sft in (sft_a, sft_b, sft_b):
        own_run("ppo", here, lambda folder, sft=sft: trained.append(sft) or {}, settings={}, fresh=False,
                inputs=[sft, rm])
    assert trained == [sft_a, sft_b]  # b's own PPO, then reused


def test_a_lesson_run_recording_its_inputs_by_folder_name_is_made_again_saying_why(pipeline_dir, tmp_path, capsys):
    """A run an older minillm saved with {folder name: run} cannot tell a/out from b/out: it is trained again,
    and the reason is its record's form, not "made from other runs" (it may have been made from these)."""
    sft = Run(finish(tmp_path / "my_sft", id="sft-1"), {"id": "sft-1"}, "given on the command line")
    here, trained = tmp_path / "runs" / "lessons" / "07" / "ppo", []
    finish(here, made_from={"my_sft": lessons.identity(sft)}, settings={}, id="0")
    own_run("ppo", here, lambda folder: trained.append(folder) or {}, settings={}, fresh=False, inputs=[sft])
    assert trained == [here]
    assert "(this lesson's earlier run does not record its inputs as this minillm does (an older one made it))" \
        in capsys.readouterr().out


def test_the_repository_is_found_from_the_lesson_scripts_folder_or_a_data_error(tmp_path, monkeypatch):
    # `cd /tmp && python /path/to/repo/lessons/03_bert_masked_lm.py`, minillm installed elsewhere:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # a project of the reader's own with a data/corpus.txt is not the repository
    (tmp_path / "data" / "corpus.txt").write_text("my own corpus", encoding="utf-8")
    monkeypatch.setattr(minillm, "__file__", str(tmp_path / "site-packages" / "minillm" / "__init__.py"))
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(tmp_path / "main.py"), raising=False)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "lessons" / "03_bert_masked_lm.py")])
    assert lessons.find_root() == ROOT
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "elsewhere.py")])  # no repository anywhere
    with pytest.raises(DataError, match="no minillm repository .*data/corpus.txt"):
        lessons.find_root()
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]  # nothing written (no runs/lessons/03)


def test_a_lesson_run_outside_the_repository_says_so_in_one_line(tmp_path):
    """minillm installed from a wheel, a lesson copied out of the repository: the DataError came as the lesson
    imported minillm.lessons, before `lesson_args` (or lesson 9, which never calls it) had set up
    one-line errors, and ended in a traceback."""
    lesson = tmp_path / "lesson.py"
    lesson.write_text("import minillm\n"
                      "minillm.__file__ = '/site-packages/minillm/__init__.py'  # not an editable install\n"
                      "import minillm.lessons\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(lesson)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("lesson.py: error: no minillm repository"), done.stderr
    assert len(done.stderr.splitlines()) == 1



# --------------------------------------------------------------------------------------------------
# What a lesson computes on its own, checked against an independent computation: a slip in a lesson's
# arithmetic is what its reader believes. Steps that need trained runs are run alone, on small inputs.


def is_constant(node: ast.stmt) -> bool:
    """`NAME = value` where value calls no function but builtins and methods (sorted, s.split()): no run is
    read or made, no command line parsed."""
    return (isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
            and all(not isinstance(call.func, ast.Name) or hasattr(builtins, call.func.id)
                    for call in ast.walk(node.value) if isinstance(call, ast.Call)))


def lesson_functions(stem: str, **names) -> dict:
    """A lesson's imports, constants (`is_constant`: SENTENCES, VOCAB) and functions, without running its
    steps. `names` stands in for the module-level values its functions read (CFG, OUT, ARGS) or for what
    they call (a training run, by its result): a function looks its globals up when it is called."""
    tree = ast.parse((ROOT / "lessons" / f"{stem}.py").read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef)
                 or is_constant(node)]
    namespace = dict(names)  # the constants may be made from them (lesson 5's from CFG)
    exec(compile(tree, stem, "exec"), namespace)
    namespace.update(names)  # in place of what the lesson imports under those names
    return namespace


def section(out: str, number: int) -> str:
    """What a lesson printed under its heading `== number. ...`, up to the next one."""
    return re.split(r"\n== \d+\.", "\n" + out)[number]


TINY_TEXT = "Where does Para live? Para lives in Vell. I do not know."


def tiny_tokenizer():
    return train_tokenizer([TINY_TEXT] * 20, 280, progress=False)


def save_run(folder: Path, tokenizer, model: torch.nn.Module, kind: str) -> Path:
    """A run folder holding `model` (untrained, a few thousand weights) and its tokenizer."""
    save_checkpoint(folder / "ckpt.pt", {"model_kind": kind, "model_config": config.to_dict(model.config),
                                         "model": model.state_dict()})
    tokenizer.save(folder / "tokenizer.json")
    return folder


def tiny_model_config(tokenizer) -> config.ModelConfig:
    return config.ModelConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=96)


def run_lesson_1(tmp_path: Path, monkeypatch) -> dict:
    """Lesson 1 run whole on the shipped corpus, its tokenizers saved under tmp_path: its globals."""
    (tmp_path / "data").mkdir()
    shutil.copy(lessons.DATA / "corpus.txt", tmp_path / "data")  # the lesson shows it relative to ROOT
    monkeypatch.setattr(lessons, "ROOT", tmp_path)  # its tokenizers are saved under tmp_path
    monkeypatch.setattr(lessons, "DATA", tmp_path / "data")
    monkeypatch.setattr(sys, "argv", ["01_tokenizer.py"])
    return runpy.run_path(str(ROOT / "lessons" / "01_tokenizer.py"))



def test_lesson_2_names_the_word_it_changed_and_the_gpt_before_it_does_not_move(tmp_path, monkeypatch, capsys):
    """Step 4's verdict names the position it changed, so Try 3's `changed_at=0` prints a true sentence
    (it used to say "before position 4" whatever word was changed); and its table shows the claim."""
    monkeypatch.setattr(lessons, "ROOT", tmp_path)  # the lesson's attention map goes under tmp_path
    monkeypatch.setattr(sys, "argv", ["02_attention_and_masks.py"])
    lesson = runpy.run_path(str(ROOT / "lessons" / "02_attention_and_masks.py"))
    assert "GPT: exactly 0 before position 4." in capsys.readouterr().out  # the word Try 3 names: word 4
    for changed_at in (0, 4):
        capsys.readouterr()
        lesson["step4_what_causality_hides"](changed_at=changed_at)
        out = capsys.readouterr().out
        gpt_moved = [float(row.split()[2]) for row in out.splitlines() if re.match(r"\s+\d+ ", row)]
        assert len(gpt_moved) == 7 and gpt_moved[:changed_at] == [0.0] * changed_at
        assert all(moved > 0 for moved in gpt_moved[changed_at:])
        assert f"GPT: exactly 0 before position {changed_at}." in out


def test_lesson_1_names_the_tokenizer_that_learned_korean_and_says_neither_only_when_neither_did(
        tmp_path, monkeypatch, capsys):
    """Step 4 said "neither learned Korean" whatever the corpus: after Try 2 (Korean in step 3's corpus)
    that sat beside our tokenizer's 0.104 tokens per byte. On the English corpus it still says "neither";
    with Try 2 only ours spells the Korean line in fewer tokens than bytes, and it is named alone."""
    lesson = run_lesson_1(tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "The corpus is English, so neither learned Korean" in out and "learned Korean pieces" not in out
    docs, held_out = lesson["docs"], lesson["held_out"]
    ours = lesson["train_tokenizer"](docs + [lesson["KOREAN"]] * 50, lesson["VOCAB_SIZE"], kind="bpe")  # Try 2
    lesson["step4_side_by_side"](docs, held_out, ours)  # sentencepiece is trained on step 4's docs: no Korean
    out = capsys.readouterr().out
    assert "\n  ours learned Korean pieces from its corpus" in out and "neither" not in out, out


def test_lesson_6_counts_the_pairs_its_reward_model_orders_as_gold_does(tmp_path, monkeypatch, capsys):
    """Step 4's "orders N of these 10 pairs as gold does" and its "It prefers X to Y" lines, checked
    against the scores it prints above them: a reward model that scores the five styles 0, 1, -1, 2, 2
    (on an untrained SFT model given on the command line) orders some pairs as gold does, not all; the
    pair it scores alike (2, 2) is no disagreement. Its head reads 1 on every token, so each "from
    likelihood" share is the score less 1."""
    class SetScores(reward_model.RewardModel):
        def forward(self, ids, attention_mask, loss_mask):
            return torch.tensor([0.0, 1.0, -1.0, 2.0, 2.0])  # ideal, terse, padded, impolite, wrong

        def token_scores(self, ids, attention_mask):
            return torch.ones(ids.shape)  # the head says 1 everywhere: the likelihood term is the score - 1

    monkeypatch.setattr(reward_model, "RewardModel", SetScores)  # the lesson imports it from there
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    sft = save_run(tmp_path / "sft", tok, GPT(tiny_model_config(tok)), "gpt")
    rm = save_run(tmp_path / "runs" / "lessons" / "06" / "reward", tok, SetScores(tiny_model_config(tok)), "reward")
    monkeypatch.setattr(lessons, "ROOT", tmp_path)  # the lesson takes rm as its own earlier run
    finish(rm, made_from=[lessons.identity(Run(sft, {}, ""))], id="0",
           settings={"reward": config.to_dict(config.preset("tiny").reward)},
           **dict.fromkeys(["pairwise_accuracy", "train_accuracy", "gold_agreement", "annotator_agreement"], 0.5))
    monkeypatch.setattr(sys, "argv", ["06_reward_model.py", str(sft)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the lesson sets its own
    runpy.run_path(str(ROOT / "lessons" / "06_reward_model.py"))  # it sets two threads: conftest sets one again
    out = capsys.readouterr().out.split("== 4.")[1]
    table = re.findall(r"^  (\w+) +reward model ([-+][\d.]+) \(from likelihood ([-+][\d.]+)\) +gold +([-\d.]+) ",
                       out, re.MULTILINE)
    reward = {style: float(r) for style, r, _, g in table}
    gold = {style: float(g) for style, r, _, g in table}
    assert [float(likelihood) for _, _, likelihood, _ in table] == [r - 1 for r in reward.values()]
    assert len(table) == 5 and len(set(gold.values())) == 5, table
    crossed = {(a, b) if gold[a] > gold[b] else (b, a) for a, b in itertools.combinations(gold, 2)
               if (gold[a] - gold[b]) * (reward[a] - reward[b]) < 0}  # (gold's better, gold's worse)
    assert 0 < len(crossed) < 10, table  # both kinds of pair are there to be counted
    assert f"The reward model orders {10 - len(crossed)} of these 10 pairs as gold does." in out
    said = re.findall(r"It prefers (\w+) to (\w+); gold prefers (\w+)\.", out)
    assert sorted((better, worse) for worse, better, gold_better in said if gold_better == better) == sorted(crossed)
    assert len(said) == len(crossed)


def merged(chunk: list[bytes], pair: tuple[bytes, bytes]) -> list[bytes]:
    """`chunk` with every occurrence of `pair`, left to right, joined into one token."""
    out, i = [], 0
    while i < len(chunk):
        if tuple(chunk[i:i + 2]) == pair:
            out, i = [*out, chunk[i] + chunk[i + 1]], i + 2
        else:
            out, i = [*out, chunk[i]], i + 1
    return out


def test_lesson_1s_merge_table_and_tokens_per_byte_are_what_its_merges_and_counts_give(
        tmp_path, monkeypatch, capsys):
    """Step 2's table, replayed by a plain loop over lists of bytes: each row's pair is a most frequent
    adjacent pair at that moment, its new token is the two pieces joined, the count is the tokens left.
    Step 3's first merges are its first 15 pairs joined and its longest pieces come longest first; step 4's
    figures are tokens over UTF-8 bytes (a Korean line no tokenizer learned is exactly 1 per byte)."""
    lesson = run_lesson_1(tmp_path, monkeypatch)
    out = capsys.readouterr().out
    merges = section(out, 2)
    chunks = [[bytes([b]) for b in chunk.encode()] for chunk in split_text(lesson["TINY_TEXT"],
                                                                           compile_pattern(PRESPLIT_PATTERN))]
    assert f"before any merge the text is {sum(map(len, chunks))} tokens" in merges
    rows = re.findall(r"^ +(\d+)  ('.*?') \+ ('.*?') +-> ('.*?') +(\d+)$", merges, re.MULTILINE)
    assert [int(row[0]) for row in rows] == list(range(1, 13)), merges
    for _, a, b, new, count in rows:
        pair = (ast.literal_eval(a).encode(), ast.literal_eval(b).encode())
        counts = Counter(p for chunk in chunks for p in zip(chunk, chunk[1:], strict=False))
        assert counts[pair] == max(counts.values()), (pair, counts.most_common(3))
        assert ast.literal_eval(new).encode() == pair[0] + pair[1]
        chunks = [merged(chunk, pair) for chunk in chunks]
        assert sum(map(len, chunks)) == int(count)
    assert "the fast trainer learns the same 12 merges: True" in merges
    first = ast.literal_eval(re.search(r"first merges: (\[.*\])", out).group(1))
    longest = [len(p.encode()) for p in ast.literal_eval(re.search(r"longest pieces: (\[.*\])", out).group(1))]
    ours = lesson["ours"]
    assert first == [(ours.id_to_bytes(a) + ours.id_to_bytes(b)).decode() for a, b in ours.merges[:15]]
    assert longest == sorted(longest, reverse=True)
    assert longest[0] == max(len(ours.id_to_bytes(i)) for i in range(256, 256 + len(ours.merges)))
    side_by_side, held_out = section(out, 4), lesson["held_out"]
    per_byte = sum(len(ours.encode(d)) for d in held_out) / sum(len(d.encode("utf-8")) for d in held_out)
    assert f"held-out documents: ours {per_byte:.3f}," in side_by_side
    english = len(ours.encode(lesson["ENGLISH"])) / len(lesson["ENGLISH"].encode("utf-8"))
    assert re.search(rf"English: .*\n +ours +{english:.3f} tokens/byte", side_by_side)
    assert re.search(r"Korean: .*\n +ours +1\.000 tokens/byte .*\n +sentencepiece +1\.000 tokens/byte", side_by_side)


def grids(out: str) -> list[list[list[bool]]]:
    """The 1 / . tables a lesson printed, each as rows of booleans."""
    found: list[list[list[bool]]] = []
    previous_was_row = False
    for line in out.splitlines():
        row = re.fullmatch(r" *\S+((?: +[1.])+)", line)
        if row and not previous_was_row:
            found.append([])
        if row:
            found[-1].append([cell == "1" for cell in row.group(1).split()])
        previous_was_row = bool(row)
    return found


def test_lesson_2s_masks_and_attention_by_hand_are_what_they_say(capsys, monkeypatch):
    """Step 1's three grids, cell by cell, against the rule each states (a key is seen when it is a word,
    when it is not in the future, when both); step 2's attention by hand against the module (both forms)
    and against a float64 loop over every query of one head; step 4's BERT moving at every position;
    step 5 generating once with the cache and once without. A learner copies these rules from here."""
    lesson = lesson_functions("02_attention_and_masks")
    ids, attention_mask, rows = lesson["left_padded_batch"]()
    mask = lesson["step1_masks"](ids, attention_mask, rows)
    words = rows[1]
    real, T = [w != lesson["PAD"] for w in words], len(words)
    expected = [[[real[k] for k in range(T)] for _ in range(T)], [[k <= q for k in range(T)] for q in range(T)],
                [[real[k] and k <= q for k in range(T)] for q in range(T)]]
    assert grids(capsys.readouterr().out) == expected
    module, x = lesson["step2_attention_by_hand"](mask)
    out = capsys.readouterr().out
    differences = [float(d) for d in re.findall(r"max \|by hand - module \((?:manual|SDPA)\)\| += (\S+)", out)]
    assert len(differences) == 2 and all(d < 1e-5 for d in differences), out  # NaN fails too
    with torch.no_grad():
        weights = lesson["weights_by_hand"](module, x, mask)[0][1, 0].double()  # row 1, head 0: (T, T)
        q, k, _ = module.qkv(x[1]).double().split(16, dim=-1)  # (T, 16) each; head 0 is the first 8 channels
    for t in range(T):
        seen = [s for s in range(T) if mask[1, 0, t, s]]
        scores = {s: sum(q[t, d] * k[s, d] for d in range(8)) / 8 ** 0.5 for s in seen}
        total = sum(math.exp(v) for v in scores.values())
        loop = [math.exp(scores[s]) / total if s in scores else 0.0 for s in range(T)]
        assert weights[t].tolist() == pytest.approx(loop, abs=1e-6), t
    lesson["step4_what_causality_hides"]()
    table = [row.split() for row in capsys.readouterr().out.splitlines() if re.match(r"\s+\d+ ", row)]
    assert len(table) == 7 and all(float(bert) > 0 for *_, bert in table)  # "never by exactly 0"
    use_cache = []
    generate = GPT.generate
    monkeypatch.setattr(GPT, "generate", lambda self, prompt, n, **kw: use_cache.append(kw["use_cache"]) or
                        generate(self, prompt, 2, **kw))  # 2 new tokens, not 150: fast
    lesson["step5_kv_cache"]()
    assert use_cache == [True, False]


def test_lesson_3s_masking_table_and_step_by_hand_say_what_happened(tmp_path, capsys):
    """Step 1 calls a blank "kept" exactly when the model sees the original token, "<mask>" when it sees
    <mask>; step 2's ln V is the natural log, its gradient norm the root of the summed squared gradients
    (torch's own norm of the model it trained), and one step on the same batch lowers that batch's loss.
    Step 3 reads the periodic checks from the validation rows of the log."""
    tokenizer, made = tiny_tokenizer(), []
    lesson = lesson_functions("03_bert_masked_lm", CFG=config.preset("micro"),
                              make_optimizer=lambda model, cfg: made.append(model) or make_optimizer(model, cfg))
    lesson["step1_mask_one_sentence"](tokenizer)
    rows = re.findall(r"^ +('.*?') -> +('.*?')   .*?  (<mask>|kept|random token)$", capsys.readouterr().out, re.M)
    assert {what for *_, what in rows} == {"<mask>", "kept", "random token"}, rows  # the seed shows every case
    for original, seen, what in rows:
        assert what == ("<mask>" if seen == "'<mask>'" else "kept" if seen == original else "random token")
    lesson["step2_one_step_by_hand"](tokenizer, pack_documents(tokenizer, [TINY_TEXT] * 40))
    out = capsys.readouterr().out
    norm = torch.nn.utils.get_total_norm([p.grad for p in made[0].parameters() if p.grad is not None])
    assert f"gradient norm: {norm:.4f}" in out
    assert f"uniform guess: ln V = {math.log(tokenizer.vocab_size):.4f}" in out
    before, after = (float(x) for x in re.findall(r"(?:before the step|AdamW step \(lr [\d.e-]+\)): ([\d.]+)", out))
    assert after < before, out
    history = [{"split": "train", "step": 50, "loss": 3.0},
               {"split": "val", "step": 50, "val_subset_masked_accuracy": 0.25, "val_subset_masked_positions": 300}]
    mlm = types.SimpleNamespace(result={"val_masked_accuracy": 0.5, "val_masked_positions": 1150,
                                        "unigram_prediction": ".", "unigram_masked_accuracy": 0.08,
                                        "unigram_masked_loss": 5.74},
                                history=history, path=tmp_path)
    lesson.update(OUT=tmp_path, ARGS=argparse.Namespace(fresh=False), tokenizer_run=None, own_run=lambda *a, **kw: mlm)
    lesson["step3_train"]()
    assert "periodic check at step 50: masked-token accuracy 25.0% on a subset (300 blanks)" in capsys.readouterr().out


def test_lesson_3_shows_an_mlm_run_made_before_the_unigram_loss_was_recorded(tmp_path, capsys):
    """Step 3 reuses an earlier run, the lesson's or runs/tiny's: one made before minillm recorded
    unigram_masked_loss (and drew it dashed on loss.png) ended the lesson with a KeyError."""
    older = {"val_masked_accuracy": 0.5, "val_masked_positions": 1150, "unigram_prediction": ".",
             "unigram_masked_accuracy": 0.08}
    mlm = types.SimpleNamespace(result=older, history=[], path=tmp_path)
    lesson = lesson_functions("03_bert_masked_lm", CFG=config.preset("micro"))
    lesson.update(OUT=tmp_path, ARGS=argparse.Namespace(fresh=False), tokenizer_run=None, own_run=lambda *a, **kw: mlm)
    lesson["step3_train"]()
    assert f"loss curve: {tmp_path / 'loss.png'} (made before minillm drew the unigram loss" in capsys.readouterr().out


def test_lesson_4s_shift_ratio_and_temperature_are_the_ones_it_names(tmp_path, capsys):
    """Step 1's rows: position t sees the tokens up to t and must predict token t + 1; step 3's "N x higher"
    is the unigram perplexity over the model's; step 4 samples at the temperature it is given (Try 1)."""
    tokenizer = tiny_tokenizer()
    lesson = lesson_functions("04_gpt_pretraining", CFG=config.preset("tiny"))
    lesson["step1_shifted_targets"](tokenizer, TINY_TEXT)
    rows = re.findall(r"position +(\d+): sees \.\.\.('.*?') +must predict ('.*?')$", capsys.readouterr().out, re.M)
    pieces = [tokenizer.id_to_piece(i) for i in pack_documents(tokenizer, [TINY_TEXT])[:13].tolist()]
    assert len(rows) == 12
    for t, context, target in rows:
        assert ast.literal_eval(context) == "".join(pieces[:int(t) + 1])[-40:]
        assert ast.literal_eval(target) == pieces[int(t) + 1]
    clm = types.SimpleNamespace(result={"val_perplexity": 2.0, "val_tokens": 100, "unigram_perplexity": 300.0},
                                path=tmp_path)
    lesson.update(OUT=tmp_path, ARGS=argparse.Namespace(fresh=False), tokenizer_run=None, own_run=lambda *a, **kw: clm)
    lesson["step3_train"]()
    assert "unigram model 300.0 (150x higher)" in capsys.readouterr().out
    temperatures = []
    lesson.update(load_model_and_tokenizer=lambda *a: (None, None),
                  show_samples=lambda model, tok, temperature=0.8: temperatures.append(temperature))
    lesson["step4_trained_samples"](tmp_path, temperature=0)
    assert temperatures == [0]


def test_lesson_5_counts_the_loss_tokens_it_marks_and_shows_each_splits_own_answer(tmp_path, capsys):
    """Step 1's "N of them are targets of the loss" is the number of tokens its table marks with *, fewer
    than all (the prompt is read, not graded); step 4 shows under each split's name that split's prompt."""
    tokenizer = tiny_tokenizer()
    lesson = lesson_functions("05_instruction_tuning", CFG=config.preset("tiny"))
    lesson["step1_template"](tokenizer, {"prompt": "Where does Para live?", "response": "Para lives in Vell."})
    out = capsys.readouterr().out
    marked = len(re.findall(r"^ +\d+ +\* ", out, re.M))
    assert 0 < marked < len(re.findall(r"^ +\d+ ", out, re.M)) and f"; {marked} of them (marked *)" in out
    splits = ("test_world_fact", "test_seen", "test_heldout_family", "test_heldout_phrasing")
    answers = [{"split": s, "prompt": f"asked in {s}", "reference": "r", "sft": "a"} for s in splits]
    lesson["read_answers"] = lambda folder: answers
    lesson["step4_side_by_side"](tmp_path)
    shown = re.findall(r"\[(\w+)\] 'asked in (\w+)'", capsys.readouterr().out)
    assert len(shown) == 4 and all(split == asked for split, asked in shown)


def test_lesson_6s_pair_losses_by_hand_are_softplus_of_the_margins_and_the_score_is_its_parts(capsys):
    """Step 2 by hand: the pairs of a ranking with a tie, each with loss log(1 + e^-(r_better - r_worse)),
    their mean equal to `ranking_loss`'s; `explain_score`'s terms add up to the gold score of an answer
    wrapped in filler (a graded part, whose weight is not 1): the lesson says the score is their sum."""
    lesson = lesson_functions("06_reward_model")
    lesson["step2_loss_by_hand"]([2, [0, 3], 1])  # answer 2 best, 0 and 3 tied, 1 worst
    out = capsys.readouterr().out
    rewards = [0.5, -0.3, 1.2, 0.0]  # the lesson's made-up scores
    pairs = re.findall(r"answer (\d) > answer (\d): .* = ([\d.]+)$", out, re.M)
    assert sorted((int(b), int(w)) for b, w, _ in pairs) == [(0, 1), (2, 0), (2, 1), (2, 3), (3, 1)]
    losses = [math.log1p(math.exp(-(rewards[int(b)] - rewards[int(w)]))) for b, w, _ in pairs]
    assert [float(loss) for *_, loss in pairs] == pytest.approx(losses, abs=1e-4)
    mean = sum(losses) / len(losses)
    assert f"mean by hand {mean:.4f}; ranking_loss {mean:.4f} (pairs ordered right: 100%)" in out
    record = {"prompt": "Where does Para live?", "reference": "Para lives in Vell.", "family": "world_fact"}
    answer = f"{PADDING_OPENERS[0]} Para lives in Vell. {PADDING_CLOSERS[0]}"
    terms = lesson["explain_score"](record, answer)
    assert "x -0.5" in terms, terms  # the filler: a share times its weight
    assert sum(float(t) for t in re.findall(r"([-+][\d.]+)(?:,|$)", terms)) == pytest.approx(
        gold_score(record, answer), abs=0.02)


def tiny_runs(tmp_path: Path) -> tuple[Path, Path]:
    """An untrained GPT run (an SFT model given on the command line) and a rankings file for it."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    sft = save_run(tmp_path / "sft", tokenizer, GPT(tiny_model_config(tokenizer)), "gpt")
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "Where does Para live?", "ranking": [1, [0, 2]],
                                 "answers": ["I do not know.", "Para lives in Vell.", "Vell."]}) + "\n",
                     encoding="utf-8")
    return sft, prefs

def test_lesson_7s_rollout_table_shows_the_answers_tokens_and_the_textbook_gae(tmp_path, capsys):
    """Step 1's table on a made-up rollout: its tokens are the answer's (not the prompt's), each reward is
    -beta * (log pi - log ref) with the score added on the last real token, and the advantage before
    whitening is GAE by its textbook recursion, A_t = r_t + gamma V_t+1 - V_t + gamma lambda A_t+1; the
    token named as flipping sign when whitened is the first that does."""
    tokenizer, cfg = tiny_tokenizer(), config.preset("tiny").ppo
    prompt, answer = tokenizer.encode("Where does Para live?"), tokenizer.encode(" Para lives in Vell.")
    n, N = len(answer), len(answer) + 2  # two pads after the answer
    logprobs = -torch.linspace(0.5, 2.0, N)[None]  # (1, N)
    ref_logprobs, values, score = logprobs - torch.linspace(-0.3, 0.4, N)[None], torch.linspace(1.0, -0.5, N)[None], 1.5
    rewards = [-cfg.kl_coef * (logprobs[0, t] - ref_logprobs[0, t]).item() + (score if t == n - 1 else 0.0)
               for t in range(n)]
    raw, following = [0.0] * n, 0.0
    for t in reversed(range(n)):
        next_value = values[0, t + 1].item() if t + 1 < n else 0.0
        following = rewards[t] + cfg.gamma * next_value - values[0, t].item() + cfg.gamma * cfg.lam * following
        raw[t] = following
    whitened = torch.tensor([*raw, 0.0, 0.0])[None]
    whitened[0, 2] = -raw[2]  # the first token whose sign the whitening flips
    ro = types.SimpleNamespace(answers=["Para lives in Vell."], ids=torch.tensor([prompt + answer + [0, 0]]),
                               mask=(torch.arange(N) < n)[None].float(), logprobs=logprobs, ref_logprobs=ref_logprobs,
                               kl=logprobs - ref_logprobs, values=values, advantages=whitened,
                               score=torch.tensor([score]), rm_score=torch.tensor([score]),
                               has_eos=torch.tensor([True]))
    lesson = lesson_functions("07_ppo", CFG=config.preset("tiny"), rollout=lambda *a: ro,
                              load_reward_model=lambda *a: None,
                              load_model_and_tokenizer=lambda *a: (torch.nn.Linear(2, 2), tokenizer))
    lesson["step1_dissect"](tmp_path, tmp_path, [{"prompt": "Where does Para live?"}])
    out = capsys.readouterr().out
    rows = re.findall(r"^  ('.*?') +" + " +".join([r"(-?[\d.]+)"] * 7) + "$", out, re.M)
    assert [ast.literal_eval(row[0]) for row in rows] == [tokenizer.id_to_piece(i) for i in answer]
    assert [float(row[4]) for row in rows] == pytest.approx(rewards, abs=1e-3)
    assert [float(row[6]) for row in rows] == pytest.approx(raw, abs=1e-3)
    assert f"here {tokenizer.id_to_piece(answer[2])!r} goes {raw[2]:+.3f} -> {-raw[2]:+.3f}" in out



def test_lesson_8s_dpo_loss_by_hand_and_best_of_n_bound_are_the_formulas_it_names(tmp_path, capsys):
    """Step 1: with policy = reference the loss is log 2; a step of +1 nat to the better answer and -1
    to the worse gives margin beta * 2 and loss log(1 + e^(-2 beta)), by hand and by `dpo_loss`. Step 3's
    best-of-n bound is log n - (n - 1) / n (for n = 4: 0.64 nats)."""
    sft, prefs = tiny_runs(tmp_path)
    cfg = config.preset("tiny")
    lesson = lesson_functions("08_dpo", CFG=cfg, ppo=None)
    lesson["step1_one_pair"](sft, prefs)
    out = capsys.readouterr().out
    beta = cfg.dpo.beta
    assert "better: 'Para lives in Vell.'" in out and f"loss = log 2 = {math.log(2):.4f}" in out
    loss = math.log1p(math.exp(-2 * beta))
    assert f"= {2 * beta:.2f},\n  loss = log(1 + e^-{2 * beta:.2f}) = {loss:.4f}; dpo_loss says {loss:.4f}" in out
    row = {"win_rate_vs_sft": 0.6, "win_rate_stderr": 0.03, "gold_sft": 1.0, "gold_after": 2.0, "seconds": 1.0,
           "win_rate_ceiling": 0.8}
    lesson["step3_table"](row, {**row, "n": 4})
    assert f"stays within {math.log(4) - 3 / 4:.2f} nats" in capsys.readouterr().out


def test_a_lesson_prints_a_win_rate_judged_on_one_prompt_as_the_command_line_does(capsys):
    """One prompt has no standard error: a run judged on one holds None (null in its JSON) there. Lessons 7
    to 10 formatted it with :.2f, a TypeError at the lesson's end; each prints a win rate through the
    library's `win_rate_text`, as `minillm ppo` and the report do: no lesson formats a standard error itself."""
    own_format = [f"{path.name}:{node.lineno}" for path in LESSONS
                  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                  if isinstance(node, ast.FormattedValue) and node.format_spec is not None
                  and "win_rate_stderr" in ast.unparse(node.value)]
    assert not own_format, own_format
    row = {"win_rate_vs_sft": 1.0, "win_rate_stderr": None, "gold_sft": 1.0, "gold_after": 2.0, "seconds": 1.0,
           "win_rate_ceiling": 1.0}
    lesson_functions("08_dpo", CFG=config.preset("tiny"), ppo=None)["step3_table"](row, {**row, "n": 4})
    assert re.search(r"^  DPO +1\.000 ± n/a \(1 prompt\) +1\.00 ", capsys.readouterr().out, re.M)


def test_lesson_9_shows_the_request_whose_later_answers_differ_most_and_counts_the_changes(capsys):
    """"The row whose answers after SFT and RL differ most: distinct answers first, then gold spread", and
    "the greedy answer after SFT changed after PPO on N": checked on made-up answers where the base model's
    answer, or putting the gold spread first, would pick another request."""
    requests = [{"split": "test_world_fact", "prompt": f"q{i}", "reference": "Para lives in Vell."} for i in range(3)]
    right = "Para lives in Vell."
    answers = {"clm": ["a1", "y", "z"], "sft": ["a1", "Vell.", "I do not know."],
               "ppo": ["a2", "Vell.", right], "dpo": ["a3", "Vell.", right]}
    lesson = lesson_functions("09_end_to_end", journey=types.SimpleNamespace(records=requests),
                              STAGES={"clm": "base", "sft": "after SFT", "ppo": "after PPO", "dpo": "after DPO"},
                              RL_POLICIES={"PPO": "ppo", "DPO": "dpo"}, answers_after_each_stage=lambda r: answers,
                              KINDS={"test_world_fact": "a world fact"})
    # q0: three answers after SFT, all wrong; q2: two (with the base model's, three), one of them right
    assert lesson["most_different"]([0, 1, 2], requests, answers) == 0
    lesson["show_requests"]()
    out = capsys.readouterr().out
    assert "the greedy answer after SFT changed after PPO on 2, DPO on 2" in out and "\n  'q0'" in out


def test_lesson_10_pushes_up_the_answers_its_group_rewards_above_its_mean(capsys):
    """Step 1 dissects the first group whose rewards differ, and each answer's three advantages are the
    textbook ones, computed here by loops: GRPO (r - mean) / std, Dr. GRPO r - mean, RLOO r minus the mean
    of the other answers; an answer is pushed up exactly when its GRPO advantage is above 0."""
    records = read_jsonl(lessons.DATA / "instructions.jsonl")
    prompts = [{"prompt": "unanimous", "reference": "r"}, {"prompt": "split", "reference": "r"}]
    rewards = {"unanimous": [1.0] * 4, "split": [1.0, 0.0, 0.5, 0.0]}

    def rollout(policy, reference, reward_fn, tokenizer, group, cfg, generator):
        answers = [f"answer {i}" for i in range(4)]
        return types.SimpleNamespace(rewards=torch.tensor([rewards[group[0]["prompt"]]]),
                                     responses=types.SimpleNamespace(answers=answers))

    lesson = lesson_functions("10_grpo_and_verifiable_rewards", CFG=config.preset("tiny"), rollout=rollout,
                              load_model_and_tokenizer=lambda *a: (None, None), make_reward_fn=lambda *a: None,
                              heldout_records=lambda *a: prompts)
    lesson["step1_one_group"](None, records)
    out = capsys.readouterr().out
    assert "prompt: 'split'" in out
    rows = re.findall(r"^  'answer (\d)' +([\d.]+) +(\S+) +(\S+) +(\S+) +(up|down|\(not at all\))$", out, re.M)
    r = rewards["split"]
    mean, std = sum(r) / 4, statistics.stdev(r)
    assert len(rows) == 4
    for i, reward, grpo, dr_grpo, rloo, push in rows:
        i = int(i)
        others = (sum(r) - r[i]) / 3
        assert float(reward) == r[i]
        assert [float(grpo), float(dr_grpo), float(rloo)] == pytest.approx(
            [(r[i] - mean) / std, r[i] - mean, r[i] - others], abs=0.006)
        assert push == ("up" if r[i] > mean else "down")


def test_lesson_11s_kv_bytes_and_generation_speed_are_per_token():
    """The KV cache holds 2 (keys and values) x layers x kv heads x head_dim x 4 bytes per token; the
    speed is tokens generated (prompts x new tokens) over the faster of two tries."""
    lesson = lesson_functions("11_modern_blocks")
    model = GPT(config.ModelConfig(vocab_size=64, block_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32))
    assert lesson["kv_bytes_per_token"](model) == 2 * 2 * 2 * (32 // 4) * 4
    clock = iter([0.0, 2.0, 10.0, 11.0])  # two tries: 2 s, then 1 s
    lesson["time"] = types.SimpleNamespace(perf_counter=lambda: next(clock))
    fake = types.SimpleNamespace(config=types.SimpleNamespace(vocab_size=64), generate=lambda *a, **kw: None)
    assert lesson["generation_speed"](fake) == 8 * 64 / 1.0


# --------------------------------------------------------------------------------------------------
# README.ko.md is the Korean front door: the same commands and the same lessons as README.md.


def commands(text: str) -> list[str]:
    """The lines of the ```bash blocks: the commands to type."""
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
            for line in block.splitlines() if line.strip()]


def lesson_list(text: str) -> list[str]:
    return re.findall(r"lessons/(\d\d_\w+)\.py", text)


def test_the_korean_readme_has_the_same_commands_and_lessons():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    korean = (ROOT / "README.ko.md").read_text(encoding="utf-8")
    assert "README.ko.md" in english.split("\n## ")[0]  # linked from the top
    assert commands(korean) == commands(english) and commands(english)
    assert lesson_list(korean) == lesson_list(english)
    assert len(set(lesson_list(english))) >= len(LESSONS)
    assert {p.stem for p in LESSONS} <= set(lesson_list(english))  # every lesson on disk is listed


def test_the_readme_is_two_screens_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 120
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(line for line in commands(readme) if "pytest" in line)
    assert test_command.split("&& ")[-1] in ci and 'pip install -q -e ".[test]"' in ci


@pytest.mark.parametrize("script, argv, message", [
    ("lessons/05_instruction_tuning.py", ["/nonexistent"], "05_instruction_tuning.py: error: /nonexistent holds no "
                                                           "finished run"),
    ("bench/tokenizer.py", ["--corpus", "/nonexistent.txt"], "tokenizer.py: error: corpus file /nonexistent.txt does "
                                                              "not exist"),
])
def test_a_scripts_input_mistake_is_one_line_not_a_traceback(script, argv, message, tmp_path):
    # Run from a copy of the script beside the repository's data/, so that what it makes before it reads
    # its arguments (lesson 5: runs/lessons/04 and 05) goes under tmp_path, not into the repository.
    (tmp_path / "data").symlink_to(ROOT / "data")
    (tmp_path / script).parent.mkdir()
    shutil.copy(ROOT / script, tmp_path / script)
    done = subprocess.run([sys.executable, str(tmp_path / script), *argv], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().startswith(message), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_lesson_shows_what_its_stdout_cannot_encode_as_escapes():
    """Lessons print Korean text and "±": `python lessons/01_tokenizer.py > log.txt` on Windows writes in the
    code page (cp1252, no Hangul), and lesson 1 stopped at its first Korean line with UnicodeEncodeError."""
    done = subprocess.run([sys.executable, "-c", "import minillm.lessons; print('밤 ±')"], capture_output=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert (done.returncode, done.stdout) == (0, b"\\ubc24 \xb1" + os.linesep.encode()), done.stderr


def test_resolved_gives_one_spelling_of_a_folder_however_it_is_named(tmp_path, monkeypatch):
    """`..`, a link and `~` all name the same run folder: resolved must see through each (`.absolute()`
    keeps `..` and the link, so two spellings of one folder would be two inputs)."""
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "runs")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(run)
    real = run.resolve()
    spellings = [run, "../tiny", ".", tmp_path / "link" / "tiny", tmp_path / "runs" / ".." / "runs" / "tiny",
                 "~/link/tiny"]
    assert [lessons.resolved(path) for path in spellings] == [real] * len(spellings)


def test_a_lessons_numbered_sections_are_the_steps_its_introduction_lists():
    """The introduction's "What you will see: 1. ... 4." is the map a reader follows, and the Try this
    points at "step N": lesson 11 listed `minillm compare` as 3 and LoRA as 4 while its headings numbered
    LoRA 3 and gave compare none, so "step 3's LoRA settings" sent the reader to the wrong section."""
    wrong = []
    for path in LESSONS:
        text = path.read_text(encoding="utf-8")
        introduction = text.split("\n# %%\n", 1)[0]
        listed = [int(n) for n in re.findall(r"^# (\d+)\. ", introduction, re.M)]
        headed = [int(n) for n in re.findall(r"^# ## (\d+)\. ", text, re.M)]
        if headed and headed != listed:  # lesson 9 lists kinds of request, and its sections are stages
            wrong.append(f"{path.name}: introduction {listed}, headings {headed}")
    assert not wrong, wrong


def test_lesson_8s_dpo_log_shows_the_dpo_loss_and_the_nll_term_it_says_it_shows(tmp_path, capsys):
    """"The log shows both parts": it showed the sum and the NLL per token, so at step 1, where the policy is
    the reference, the reader saw 0.87 where step 1 of the lesson had just said the DPO loss is log 2."""
    cfg = config.preset("tiny")
    nll = 0.18
    row = {"step": 1, "loss": math.log(2) + cfg.dpo.nll_coef * nll, "accuracy": 0.5, "margin": 0.0, "chosen_nll": nll}
    run = types.SimpleNamespace(history=[row], result={"pair_accuracy": 0.7}, path=tmp_path)
    lesson = lesson_functions("08_dpo", CFG=cfg, ARGS=types.SimpleNamespace(fresh=False), OUT=tmp_path, sft=None,
                              prefs_source=None, own_run=lambda *a, **kw: run)
    lesson["step2_train"]()
    out = capsys.readouterr().out
    assert f"loss {row['loss']:.4f} = DPO {math.log(2):.4f} + NLL part {cfg.dpo.nll_coef * nll:.4f}" in out


@pytest.mark.parametrize("path", LESSONS, ids=lambda path: path.stem)
def test_a_lessons_help_says_what_it_takes_and_runs_nothing(path, tmp_path, monkeypatch, capsys):
    """`python lessons/NN_....py --help` is how a reader checks a header's command line: lessons 1 and 2
    read no command line, so their --help ran the whole lesson (and a stray `--fresh` was ignored)."""
    monkeypatch.setattr(lessons, "ROOT", tmp_path)  # what a lesson makes before it reads its arguments
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(path))
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {path.name} [-h]")


def test_a_lesson_offers_fresh_exactly_when_it_reads_it():
    """`--fresh` trains a lesson's own runs again instead of reusing them. Lesson 11 trains everything anew
    each time, so its --help offered a flag that did nothing; a lesson that reuses runs must read it."""
    wrong = []
    for path in LESSONS:
        text = path.read_text(encoding="utf-8")
        if "lesson_args(" in text and ("reuses_runs=False" not in text) != ("ARGS.fresh" in text):
            wrong.append(path.name)
    assert not wrong, wrong


@pytest.mark.parametrize(("asked", "default", "threads"), [
    (None, 2, 2), ("1", 2, 1), ("4", 2, 4), ("0", 2, 2), ("two", 2, 2), ("", 2, 2), (None, 1, 1), ("0", 1, 1)])
def test_a_lesson_computes_on_the_threads_omp_num_threads_asks_for(monkeypatch, asked, default, threads):
    """Lessons set two threads (one in lessons 2 and 11) and so overrode a user's OMP_NUM_THREADS=1: on a
    busy 2-core machine a PPO step of lesson 7 took 170 s that way against 10-17 s on one thread. The
    variable wins where it names a count; otherwise the lesson's own (two, or one in lessons 2 and 11)."""
    set_to: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    if asked is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", asked)
    assert lessons.use_threads(default) == threads and set_to == [threads]


def test_no_lesson_sets_its_threads_past_use_threads() -> None:
    """A lesson that calls torch.set_num_threads itself would override OMP_NUM_THREADS again."""
    direct = [path.name for path in LESSONS if "torch.set_num_threads(" in path.read_text(encoding="utf-8")]
    assert not direct, direct

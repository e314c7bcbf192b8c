"""What the lessons in lessons/ share: where the repository is, their command line, and the runs
they build on.

`minillm pipeline --preset tiny --out runs/tiny` trains every stage once, into runs/tiny/01_tokenizer,
02_mlm, 03_clm, ... A lesson that needs a trained model (lesson 06 an SFT model, lesson 07 an SFT
model and a reward model) should not spend minutes training it again. Two functions find runs:

- `earlier_run(stage)`: a run the lesson *builds on*. Taken from the lesson that trained it (with
  --fresh, after an edit of its CFG, or when the pipeline had not run), else from the pipeline's
  folder; if neither has it, the pipeline's own steps train it now, into runs/tiny (with the
  settings runs/tiny was made with), where the pipeline and the next lessons will find it. A step
  there that other inputs made is never replaced.
- `own_run(stage, here, train, settings=...)`: the run the lesson *shows*. An earlier run of this
  lesson, made from the same inputs with the same settings, else the pipeline's if made so too; with
  --fresh, or when neither will do (say the reader edited the lesson's CFG), `train(here)` now.

Both print which run they use, so a reader always knows where the numbers come from. Run a lesson
twice, and no run these two found or trained the first time is trained again: the second time
prints `[sft] using runs/lessons/05/sft (this lesson's earlier run); --fresh trains it again` (or
names the pipeline's run again). After an edit of the lesson's CFG, or when a run it builds on was
trained again, the earlier run no longer matches: the lesson says why, and trains (or takes the
pipeline's run, if that one matches). This module sits on top, beside pipeline.py: it uses the
pipeline's steps and folders (and reuse.py's check of what a run was made from), nothing uses it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

import minillm
from minillm.config import PipelineConfig, changed_settings, first_changes, from_dict, preset, to_dict
from minillm.console import OneLineParser, path_arg
from minillm.datasets.instructions import read_jsonl
from minillm.errors import DataError, one_line_errors
from minillm.pipeline import CONFIG_NAME, STEP_NAMES, Journey, jsonable, needs, run_step, step_folder
from minillm.reuse import (
    RESULT_NAME,
    file_sha256,
    holds_outputs,
    made_from_earlier_runs,
    made_otherwise,
    run_id,
    saved_inputs,
)
from minillm.run_lock import run_folder_lock
from minillm.train.checkpoint import CKPT_NAME
from minillm.train.loop import METRICS_NAME, read_metrics
from minillm.utils import read_json, show_unencodable_output, write_json

# Every lesson imports this module first, which sets it up as a `minillm` command is: a mistake in the
# input is one line, a reader that left (`| head`) ends it quietly, a closed stderr (`2>&-`) does not
# end it at its first progress bar; and its Korean text and "±" print on any stdout.
one_line_errors()
show_unencodable_output()


def find_root() -> Path:
    """The repository (the folder that holds data/corpus.txt and lessons/), searched for from the
    current folder, from the running script's (`python /path/to/repo/lessons/03_....py` from
    anywhere), and from minillm's own (an editable install), each with its parents. A notebook
    opened from lessons/ (where `__file__` is not defined) finds it from the current folder. None
    found is a DataError, raised when a lesson imports this module: before it creates anything."""
    scripts = [sys.argv[0] if sys.argv else "", getattr(sys.modules.get("__main__"), "__file__", None)]
    starts = [Path.cwd(), *(Path(script).parent for script in scripts if script), Path(minillm.__file__).parent]
    for start in starts:
        start = start.resolve()
        for folder in (start, *start.parents):
            if (folder / "data" / "corpus.txt").is_file() and (folder / "lessons").is_dir():
                return folder
    raise DataError("no minillm repository (a folder holding data/corpus.txt and lessons/) in or above "
                    f"{', '.join(dict.fromkeys(str(s.resolve()) for s in starts))}: run the lesson from "
                    "inside a checkout of the repository")


ROOT = find_root()
DATA = ROOT / "data"
PIPELINE_DIR = ROOT / "runs" / "tiny"  # where `minillm pipeline --preset tiny --out runs/tiny` writes


def lesson_dir(number: int) -> Path:
    """runs/lessons/NN: where lesson NN writes what it trains and plots."""
    folder = ROOT / "runs" / "lessons" / f"{number:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def use_threads(default: int) -> int:
    """Set how many threads torch computes with in a lesson, and return it: `default`, the count the lesson's
    times and figures were measured with, unless OMP_NUM_THREADS says otherwise. That variable is the
    user's: on a machine busy with other work, one thread per process is many times faster than two
    (docs/findings.md, "Threads and steps side by side on 2 cores"), and a lesson must not undo it."""
    asked = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(asked) if asked.isdigit() and int(asked) > 0 else default
    torch.set_num_threads(threads)
    return threads


def in_notebook() -> bool:
    """True inside Jupyter or an editor's interactive window, whose kernel has its own command line."""
    return "ipykernel" in sys.modules


def resolved(path: str | Path) -> Path:
    """A path as given (relative to the current folder, or with ~), made absolute and free of `..` and
    links: two spellings of one run folder are then one input, and `own_run` can tell the pipeline's."""
    return Path(path).expanduser().resolve()


def run_folder_arg(text: str) -> Path:
    """The argparse type of a run folder named on a lesson's command line: a blank one is refused as a
    `minillm` command's is (`console.path_arg`: Path("") would be the current folder), then `resolved`."""
    return resolved(path_arg(text))


def lesson_parser(description: str) -> argparse.ArgumentParser:
    """The parser of a lesson's command line: a mistake in it is one line naming the lesson, as a `minillm`
    command's (`minillm.console.OneLineParser`), not argparse's usage and error."""
    return OneLineParser(description=description)


def lesson_args(description: str, inputs: Sequence[str] = (), reuses_runs: bool = True) -> argparse.Namespace:
    """The lesson's command line: `--fresh` (for a lesson that `reuses_runs`: one that trains everything
    anew each time has nothing for it to do), and optional run folders named `inputs` (e.g. "sft_run").

    In a notebook the kernel's own arguments are not the lesson's: there every value is its default.
    A mistake in the input (a MinillmError) ends the lesson with one line, not a traceback (one_line_errors).
    """
    parser = lesson_parser(description)
    for name in inputs:
        parser.add_argument(name, nargs="?", type=run_folder_arg, default=None,
                            help=f"the {name.replace('_', ' ')} to use instead of the one the lesson finds")
    if reuses_runs:
        parser.add_argument("--fresh", action="store_true",
                            help="train this lesson's own stage again, in runs/lessons/NN, instead of reusing a run")
    return parser.parse_args([] if in_notebook() else sys.argv[1:])


@dataclass
class Run:
    """A finished run: its folder, the numbers its training returned, and where it came from."""

    path: Path
    result: dict
    source: str

    @property
    def history(self) -> list[dict]:
        """The rows of its metrics.jsonl, one per logged step (result.json leaves them out)."""
        return read_metrics(self.path / METRICS_NAME)


def finished(folder: Path) -> bool:
    """A step that finished wrote result.json (the pipeline's steps and `own_run` alike)."""
    return (folder / RESULT_NAME).is_file()


def read_run(folder: Path, source: str) -> Run:
    """The finished run in `folder` (its result.json), with where it came from (`source`), as _say prints it."""
    return Run(folder, read_json(folder / RESULT_NAME), source)


def shown(path: Path) -> str:
    """A path relative to the repository when it lies inside it: runs/tiny/04_sft."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def pipeline_folder(stage: str) -> Path:
    """runs/tiny/NN_stage: the pipeline's run of `stage` (e.g. runs/tiny/04_sft)."""
    return PIPELINE_DIR / step_folder(stage)


def _say(stage: str, run: Run, hint: str = "") -> Run:
    print(f"[{stage}] using {shown(run.path)} ({run.source}){hint}")
    return run


def _warn_if_other_settings() -> None:
    """Say so when runs/tiny was made with other settings than the tiny preset (e.g. with --set)."""
    saved = PIPELINE_DIR / CONFIG_NAME
    if not saved.is_file():
        return
    changed = changed_settings(read_json(saved), to_dict(preset("tiny")))
    if changed:
        print(f"note: {shown(PIPELINE_DIR)} was made with settings other than the tiny preset's "
              f"({first_changes(changed)}): its numbers will differ from "
              "the lesson's text")


def _warn_if_made_otherwise(stage: str) -> None:
    """Say so when runs/tiny's run of `stage` was not made with runs/tiny's own settings and data: by
    an older minillm, say, which generated other data from the same settings. A lesson still shows it
    (replacing the pipeline's runs is the pipeline's call), but its numbers may not be the text's."""
    saved = saved_inputs(pipeline_folder(stage))  # a run without one is taken at its word
    reason = saved and made_otherwise(saved, pipeline_journey().inputs(stage))
    if reason:
        print(f"note: {shown(pipeline_folder(stage))} {reason}: its numbers may differ from the lesson's text; "
              f"`minillm pipeline --out {shown(PIPELINE_DIR)}` redoes what is out of date")


def earlier_run(stage: str, lesson_folder: Path | None = None, given: Path | None = None, *,
                train_missing: bool = True) -> Run | None:
    """The finished run of pipeline step `stage` that a lesson builds on.

    In order: `given` (a folder named on the command line), `lesson_folder` (where an earlier lesson
    trained it), the pipeline's runs/tiny/NN_stage if it is up to date (`up_to_date`). If none has
    it, the pipeline's steps train it now into runs/tiny, with every earlier step it needs that is
    missing or out of date (each skipped if done); with `train_missing=False` the answer is then None.
    """
    if given is not None:
        given = resolved(given)
        if not (given / CKPT_NAME).is_file() and not finished(given):
            raise DataError(f"{shown(given)} holds no finished run (no {CKPT_NAME}): pass the folder of a {stage} run")
        result = read_json(given / RESULT_NAME) if finished(given) else {}
        return _say(stage, Run(given, result, "given on the command line"))
    if lesson_folder is not None and finished(lesson_folder):
        return _say(stage, read_run(lesson_folder, "trained by an earlier lesson"))
    folder = pipeline_folder(stage)
    if up_to_date(stage):
        _warn_if_other_settings()
        _warn_if_made_otherwise(stage)
        return _say(stage, read_run(folder, "the pipeline's run"))
    if not train_missing:
        return None
    print(f"[{stage}] no finished, up-to-date run in {shown(PIPELINE_DIR)}: the pipeline's steps train it now, "
          "there (a later `minillm pipeline` into it with the same settings skips what is done)")
    with run_folder_lock(PIPELINE_DIR):  # as `minillm pipeline` does: one writer at a time
        journey = pipeline_journey()
        if not (PIPELINE_DIR / CONFIG_NAME).is_file():
            journey.write_config()
        for name in STEP_NAMES[: STEP_NAMES.index(stage) + 1]:
            if name != "mlm" or stage == "mlm":  # no later step reads the BERT model
                _refuse_to_replace(journey, name)
                run_step(journey, name)
    return _say(stage, read_run(folder, "trained now by the pipeline's steps"))


def pipeline_journey() -> Journey:
    """The journey runs/tiny belongs to: the settings it was made with (its config.json, which a
    `minillm pipeline --set ...` writes), or the tiny preset when it has none yet. Finishing a run
    with the preset's settings would redo, and so delete, every step the user trained with others."""
    saved = PIPELINE_DIR / CONFIG_NAME
    if not saved.is_file():
        return Journey(preset("tiny"), PIPELINE_DIR)
    try:
        cfg = from_dict(PipelineConfig, read_json(saved))
    except ValueError as err:  # not JSON (a DataError), or settings this minillm does not know (a ConfigError)
        raise DataError(f"{shown(saved)} cannot be read ({err}); run `minillm pipeline --preset tiny --out "
                        f"{shown(PIPELINE_DIR)}`, which writes it anew and redoes what is out of date") from None
    return Journey(cfg, PIPELINE_DIR)


def up_to_date(stage: str) -> bool:
    """runs/tiny's run of `stage` finished, and was made from the runs of the earlier steps now beside
    it. One of those trained again since (by `minillm pipeline --set ...` in runs/tiny, say, stopped
    before it reached this step) leaves it out of date. Its settings may be the user's own: that
    only changes its numbers, and _warn_if_other_settings says so."""
    return finished(pipeline_folder(stage)) and made_from_the_runs_beside_it(stage)


def made_from_the_runs_beside_it(stage: str, journey: Journey | None = None) -> bool:
    """runs/tiny's run of `stage` was made from the runs of the steps it needs (`needs`) now beside it,
    and so was each of those, back to the tokenizer: PPO made from a reward model that was made from
    an SFT model since trained again is out of date too. A run without inputs.json is taken at its word."""
    journey = journey or pipeline_journey()  # its settings: a GRPO step's needs follow its reward (`needs`)
    saved = saved_inputs(pipeline_folder(stage))
    if saved is not None and made_from_earlier_runs(saved, journey.made_from(stage)) is not None:
        return False
    return all(made_from_the_runs_beside_it(need, journey) for need in needs(journey.cfg, stage))


def _refuse_to_replace(journey: Journey, name: str) -> None:
    """Stop, naming the fix, before a lesson deletes a step of runs/tiny that other inputs made (its
    own corpus file, say, or an older minillm): replacing a user's runs is the pipeline's call. A step
    made from an earlier run of the steps before it is out of date whatever the settings: it is redone."""
    folder = journey.folder(name)
    if not holds_outputs(folder):  # nothing there to replace
        return
    reason = made_otherwise(saved_inputs(folder), journey.inputs(name))
    if reason:
        raise DataError(f"{shown(folder)} {reason}, and a lesson does not replace the pipeline's runs: run "
                        f"`minillm pipeline` into {shown(PIPELINE_DIR)} with the settings and data you want "
                        "(it redoes what is out of date), or name the runs to use on the lesson's command line")


def own_run(stage: str, here: Path, train: Callable[[Path], dict], *, fresh: bool, settings: dict[str, dict],
            inputs: Sequence[Run] = (), from_pipeline: bool = True) -> Run:
    """The run of `stage` this lesson shows, trained by `train(here)` only when it must be.

    `settings` are the parts of the lesson's CFG the run is made with, named as in a pipeline step's
    inputs.json (e.g. {"reward": to_dict(CFG.reward)}). Without `fresh`: an earlier run of this
    lesson in `here`, made from the same `inputs` with the same settings; else the pipeline's run of
    `stage`, when its inputs and its settings are the lesson's too (a model trained from another SFT
    model, or with the CFG a reader just edited, would not match) and `from_pipeline` (False for what
    the pipeline never makes, such as lesson 7's head-only reward model). Otherwise, and always with
    `fresh`, `here` is emptied and `train(here)` runs; what it returns is saved in here/result.json,
    with the inputs and settings it was made from.
    """
    made_from = [identity(run) for run in inputs]  # (not keyed by folder name: a/out and b/out are two inputs)
    if fresh:
        why_train = "--fresh"
    else:
        why_not_earlier = _why_not_reuse_earlier(here, made_from, settings)
        if why_not_earlier is None:
            return _say(stage, read_run(here, "this lesson's earlier run"), "; --fresh trains it again")
        why_train = why_not_earlier
        if from_pipeline and all(resolved(run.path).parent == resolved(PIPELINE_DIR) for run in inputs):
            why_not_pipeline = _why_not_reuse_pipelines(stage, settings)
            if why_not_pipeline is None:
                _warn_if_other_settings()
                if finished(here):  # an experiment's run, say, after its edit was undone
                    print(f"note: {shown(here)} stays ({why_not_earlier}); a later lesson that builds on "
                          f"{stage} takes it before the pipeline's: delete it to have them take the pipeline's")
                return _say(stage, read_run(pipeline_folder(stage), "the pipeline's run"), "; --fresh trains one here")
            why_train = f"{why_not_earlier}; {why_not_pipeline}"
    print(f"[{stage}] running it now ({why_train}), into {shown(here)}")
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    result = {key: value for key, value in train(here).items() if key != "history"}
    result["made_from"], result["settings"], result["id"] = made_from, settings, uuid.uuid4().hex
    write_json(here / RESULT_NAME, jsonable(result))
    return Run(here, result, "trained now")


def identity(run: Run) -> str:
    """Which training run `run` is: its folder, and the id it got when it started (in a pipeline
    step's inputs.json, or in the result.json of a lesson's own run). A run trained again into the
    same folder is then another input, and what was made from the old one is out of date.

    What has no such id, a file (your rankings, given to lesson 8) or the folder of a stage command
    (`minillm sft --out my_sft`), is known by its content: the sha256 of the file or of the run's
    ckpt.pt. Rankings added to the file, or an SFT trained again into the folder, are then new inputs."""
    made = run_id(run.path) or run.result.get("id")
    if made is None:
        content = run.path if run.path.is_file() else run.path / CKPT_NAME
        made = f"sha256 {file_sha256(content)[:16]}" if content.is_file() else None
    return f"{resolved(run.path)} (run {made})"


def _why_not_reuse_earlier(here: Path, made_from: list[str], settings: dict[str, dict]) -> str | None:
    """Why the lesson's earlier run in `here` does not show what the lesson asks for now, or None."""
    if not finished(here):
        return f"no earlier run in {shown(here)}"
    earlier = read_json(here / RESULT_NAME)
    if not isinstance(earlier.get("made_from"), list):  # by folder name, or not at all: it cannot be told apart
        return "this lesson's earlier run does not record its inputs as this minillm does (an older one made it)"
    if earlier.get("made_from") != made_from:
        return "this lesson's earlier run was made from other runs"
    if "settings" not in earlier:
        return "this lesson's earlier run does not record its settings (an older minillm made it)"
    otherwise = made_otherwise(earlier, {"settings": settings})
    return f"this lesson's earlier run was {otherwise}" if otherwise else None


def _why_not_reuse_pipelines(stage: str, settings: dict[str, dict]) -> str | None:
    """Why runs/tiny's run of `stage` does not show what the lesson asks for, or None. A run whose
    inputs.json is missing is taken at its word, as `up_to_date` takes it."""
    folder = pipeline_folder(stage)
    if not up_to_date(stage):
        return f"no finished, up-to-date run in {shown(folder)}"
    saved = saved_inputs(folder)
    otherwise = None if saved is None else made_otherwise(saved, {"settings": settings})
    return f"{shown(folder)} was {otherwise}" if otherwise else None


def stage3_inputs(args: argparse.Namespace) -> tuple[list[dict], Run, Run]:
    """What the stage-3 lessons (07, 08, 10) start from: the instruction records, the SFT run (lesson
    05's or the pipeline's) and the reward-model run (lesson 06's or the pipeline's)."""
    records = read_jsonl(DATA / "instructions.jsonl")
    sft = earlier_run("sft", lesson_dir(5) / "sft", given=args.sft_run)
    rm = earlier_run("reward_model", lesson_dir(6) / "reward", given=args.reward_run)
    return records, sft, rm

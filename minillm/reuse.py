"""Which of a step's outputs can be kept: a step is redone when its inputs changed, and copied from
another run when that run was made from the same inputs.

A step records two files in its folder (pipeline.py's `run_step` writes them): `inputs.json` when it
starts, `result.json` when it finished. A step's outputs follow from its settings and from the runs
of the steps it reads (pipeline.NEEDS, and through theirs every step before). inputs.json records
both: the settings it reads (its section of the config, and which data: pipeline.READS) and which
run of each earlier step it was made from, by the id each of those runs wrote into its own
inputs.json (and which code started it, provenance.py, which report.md names and no reuse reads).

An experiment reruns only what it changes. Run the pipeline again with `--set ppo.kl_coef=0.05` and
the steps before PPO are kept; PPO sees its settings changed (`why_redo`), runs again, and so does
the comparison table, which was made from the old PPO run. `reuse_from` does the same into a new
folder: the steps of another run that were made from the same inputs are copied (`copy_run`), and
only the rest train, so both runs stay side by side.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from minillm.config import at_defaults, changed_settings, first_changes
from minillm.utils import parse_json, read_json, write_json, writing

RESULT_NAME = "result.json"  # a step's figures, written when it finished: a rerun skips a step that has one
INPUTS_NAME = "inputs.json"  # what a step was made from, written when it started


# What an inputs.json written before the generated data's sha256 was recorded says about it: nothing,
# which no generated data matches, so a step an older minillm trained on generated data is redone.
UNRECORDED = {"corpus": {"generated_sha256": None}, "instructions": {"generated_sha256": None}}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes: which file of the user's a step read."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def saved_inputs(folder: Path) -> dict | None:
    """The inputs.json a step's run wrote when it started; None when there is none or it is unreadable
    (edited by hand, say): such a run cannot tell what it was made from. Its id is text, as `run_step` wrote
    it: `compare` collects ids in a set, where a list edited in would be a TypeError."""
    try:
        saved = parse_json((folder / INPUTS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    readable = (isinstance(saved, dict) and isinstance(saved.get("id"), str)
                and all(isinstance(saved.get(key), dict) for key in ("settings", "made_from")))
    return saved if readable else None


def run_id(folder: Path) -> str | None:
    """The id a step's run wrote into its inputs.json when it started (None: no run there)."""
    saved = saved_inputs(folder)
    return None if saved is None else saved["id"]


def why_redo(folder: Path, inputs: dict) -> str | None:
    """Why the outputs in `folder` do not follow from `inputs` (Journey.inputs), or None when they do
    (or when there are none)."""
    if not holds_outputs(folder):
        return None
    saved = saved_inputs(folder)
    return made_otherwise(saved, inputs) or made_from_earlier_runs(saved, inputs["made_from"])


def holds_outputs(folder: Path) -> bool:
    """True when a step's folder exists and is not empty: something that a redo would replace."""
    return folder.is_dir() and any(folder.iterdir())


def made_otherwise(saved: dict | None, inputs: dict) -> str | None:
    """Why a run that saved `saved` (its inputs.json) was not made with the settings and data of
    `inputs`, or None when it was."""
    if saved is None:
        return f"has no readable {INPUTS_NAME} (made by an older minillm?), so what it was made from is unknown"
    changed = changed_settings(at_defaults(saved["settings"], UNRECORDED), inputs["settings"])
    return f"made with other settings ({first_changes(changed)})" if changed else None


def made_from_earlier_runs(saved: dict, made_from: dict[str, str | None]) -> str | None:
    """Which of the steps it reads have run again since a run that saved `saved` was made (their
    runs now: `made_from`, Journey.made_from), or None."""
    rerun = [need for need, run in made_from.items() if saved["made_from"].get(need) != run]
    return f"made from an earlier run of {', '.join(rerun)}" if rerun else None


# --------------------------------------------------------------------------------------------------
# Reuse (`reuse_from`): a step of another run made from the same inputs is copied, not trained.


def copy_run(source: Path, folder: Path) -> dict:
    """Copy a finished step's folder, all or nothing: into a temporary name first, then renamed, so
    that an interrupted copy never looks like a run. Its result says where it was copied from."""
    partial = copying(folder)
    shutil.rmtree(partial, ignore_errors=True)
    copy_tree(source, partial)
    result = {**read_json(partial / RESULT_NAME), "copied_from": str(source)}
    write_json(partial / RESULT_NAME, result)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return result


def copy_tree(source: Path, copy: Path) -> None:
    """Copy the folder `source`, and what it holds, to `copy`. A file that cannot be written (a full
    disk) stops it with its own OSError, naming the copy: shutil.copytree would try every other file
    too, and then raise one error listing each failure, source and copy, on a single line. A file
    that cannot be read is opened before `writing`, so that its error names it, not the copy."""
    copy.mkdir(parents=True)
    for path in sorted(source.rglob("*")):  # (sorted: a folder before what it holds)
        target = copy / path.relative_to(source)
        if path.is_dir():
            target.mkdir()
        else:
            with path.open("rb") as original, writing(target), target.open("wb") as copied:
                shutil.copyfileobj(original, copied)
            shutil.copystat(path, target)  # its times too, as copytree did: the newest checkpoint is found by them


def copying(folder: Path) -> Path:
    """Where copy_run puts a copy until it is complete: NAME.copying beside the step's folder."""
    return folder.with_name(folder.name + ".copying")

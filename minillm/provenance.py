"""Which code made a run: the record a run folder keeps beside its settings.

After an upgrade a figure may move with the code, not with the settings; without a record of the
code that made each run, `compare` could only say that the settings are the same. So every training
run's config.json, and every pipeline step's inputs.json, holds one under the key "made_by" (the
function `made_by` makes it):

    {"minillm": "0.1.0", "commit": "ca60458...", "dirty": false, "torch": "2.6.0", "python": "3.12.3",
     "device": "cpu"}

`commit` is the git commit of the checkout minillm was imported from, and `dirty` whether its
minillm/ folder had uncommitted changes then; both are None where there is no such checkout (minillm
installed from a wheel, git missing). The record lives beside the checkpoints and metrics, never in
them, so two runs from one seed still write identical ones; and it is no setting: a resume, the
pipeline's reuse and `compare`'s table of settings pass it by, and `compare` names different code
in one line of its own (`describe`). A run made before the record existed has none: unknown code.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch
from tqdm import tqdm

import minillm
from minillm.utils import parse_json

MADE_BY = "made_by"  # the record's key in config.json and inputs.json
PACKAGE_DIR = Path(minillm.__file__).resolve().parent  # .../minillm; its parent is the checkout, if any


def _git(*args: str) -> str | None:
    """The output of `git args` in the checkout minillm was imported from, None where that fails. Only
    read: without --no-optional-locks, `git status` takes the checkout's index.lock to rewrite its index,
    and a `git commit` of yours at that moment fails."""
    try:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(PACKAGE_DIR.parent), *args],
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, refused, too slow
        return None
    return done.stdout


@functools.cache  # the code a process runs is the code it imported: asked once
def code_record() -> dict[str, object]:
    """minillm's version, the git commit of its checkout (and whether minillm/ differs from it), torch's and
    Python's versions. Only a checkout of its own counts: a wheel installed in a virtual environment that
    sits inside some other git repository is not that repository's code."""
    commit = _git("rev-parse", "HEAD") if (PACKAGE_DIR.parent / ".git").exists() else None
    status = _git("status", "--porcelain", "--", str(PACKAGE_DIR)) if commit else None
    return {"minillm": minillm.__version__, "commit": commit.strip() if commit else None,
            "dirty": None if status is None else bool(status.strip()),
            "torch": torch.__version__, "python": platform.python_version()}


def made_by(device: torch.device | str | None = None) -> dict[str, object]:
    """The record of this code (`code_record`), and the device a run trains on, named as torch names it
    ("cpu", "cuda:0") with a GPU's model after it."""
    record = dict(code_record())
    if device is not None:
        device = torch.device(device)
        record["device"] = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return record


def describe(record: object) -> str:
    """A record as one phrase: "minillm 0.1.0 (commit ca60458abc), torch 2.6.0, Python 3.12.3" (the device
    is not the code), then the code of the run it was resumed from, if other; "unknown code" for a run made
    before minillm recorded it."""
    if not isinstance(record, dict):
        return "unknown code (made before minillm recorded it)"
    text = code_text(record)
    if "resumed_from" in record:
        text += f" (resumed from a run made by {describe(record['resumed_from'])})"
    return text


def code_text(record: dict) -> str:
    """The code of a record, without the code of a run it was resumed from."""
    commit = record.get("commit")
    where = (f"commit {str(commit)[:10]}{' with uncommitted changes' if record.get('dirty') else ''}" if commit
             else "no git commit known")  # a wheel, no git program, or git refused the checkout
    return f"minillm {record.get('minillm')} ({where}), torch {record.get('torch')}, Python {record.get('python')}"


def saved_record(path: Path, key: str = MADE_BY) -> object:
    """The record under `key` in the JSON file at `path` (a config.json or inputs.json): which code made the
    run, or another record beside its settings (an SFT run's "instructions"); None when it holds none."""
    try:
        return parse_json(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):  # no file, not JSON, not an object
        return None


def run_record(config_path: Path, device: torch.device | str | None, resumed: bool) -> dict[str, object]:
    """The record a run's config.json (at `config_path`) gets: this code's on `device` (`made_by`). A
    resumed run made by other code is noted in one line, and the earlier record kept under
    "resumed_from": the run is now both's."""
    record = made_by(device)
    if not resumed:
        return record
    earlier = saved_record(config_path)
    if isinstance(earlier, dict) and code_text(earlier) == code_text(record):  # the same code trained last
        return {**earlier, **record}  # (the code it was resumed from before, if any, stays)
    tqdm.write(f"note: resuming {config_path.parent}, made by {describe(earlier)}, with {describe(record)}: "
               "the steps from here on are this code's")
    return {**record, "resumed_from": earlier}


def code_summary(records: dict[str, object]) -> str:
    """The code that made each of a pipeline run's steps (step folder -> record): one phrase when it is
    one and the same, else each with the steps it made: "X for 01_tokenizer, 02_mlm; unknown code (...) for 03_clm"."""
    made: dict[str, list[str]] = {}
    for step, record in records.items():
        made.setdefault(describe(record), []).append(step)
    if len(made) == 1:
        return next(iter(made))
    return "; ".join(f"{code} for {', '.join(steps)}" for code, steps in made.items())

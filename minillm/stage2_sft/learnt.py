"""Which instructions an SFT run learnt, and the stages after it that read instructions too.

An SFT model answers the kind of request it was fine-tuned on. The stages after it should ask it those:
the reward model ranks its answers to them, PPO, DPO and GRPO train on them, and every policy is judged
on their held-out questions. A stage that knew only its own `--data` would, for a learner who fine-tuned
on a file of their own and then left `--data` out, ask about the generated world, with nothing to say so.
So an SFT run records what it read in its config.json, beside its settings (datasets' `instructions_record`:
the file or the generated suite, and the sha256 of the records), and a stage given that SFT run

- without `--data`, reads the file the SFT run learnt, with one line saying so (and stops, naming the
  file, if it is gone): the default is what SFT learnt, and for a run made from the generated suite that
  is the generated suite, as before;
- reading other instructions than those (another file, the file edited since, the suite of another
  `data_seed`), goes on with one warning naming what SFT learnt and how to read it (run_data's `how_to_read`);
- given an SFT run made before the record existed, says nothing: what it learnt is unknown. One given its
  records in Python (a lesson's) records how many and their sha256: the same records read from a file or
  generated are the same, and others are warned of as above, with the advice to pass them in a file.

The stage's own run then records the instructions it read, as SFT's does (datasets/run_data.py says what
the records are for: no setting, but a resume on other data is refused and `compare` names them).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from minillm.config import PipelineConfig
from minillm.datasets.instructions import INSTRUCTIONS, instruction_records, instructions_record, instructions_text
from minillm.datasets.run_data import how_to_read, saved_data
from minillm.errors import DataError
from minillm.train.checkpoint import CONFIG_NAME
from minillm.train.distributed import is_main_process


def instructions_after_sft(
    cfg: PipelineConfig, sft_dir: str | os.PathLike, path: str | os.PathLike | None, skip_bad_lines: bool = False
) -> tuple[list[dict], dict]:
    """The instruction records of a stage that starts from the SFT run in `sft_dir` (reward, ppo, dpo, grpo):
    those of the file at `path` (`--data`), else those of the file the SFT run learnt, else the generated
    suite; and their record (`instructions_record`), which the stage's run keeps. One line says when it reads
    the SFT run's file; a warning, when the records are not those it learnt."""
    learnt = saved_data(Path(sft_dir) / CONFIG_NAME, INSTRUCTIONS)
    if path is None and learnt is not None and learnt.get("file"):
        path = learnt["file"]
        if not Path(path).is_file():
            raise DataError(
                f"{sft_dir} learnt {instructions_text(learnt)}, which is not there now: pass --data with "
                "that file (moved?), or with the instructions this run should read"
            )
        if is_main_process():  # (under torchrun, once)
            print(f"note: reading {instructions_text(learnt)}, which {sft_dir} learnt (--data reads others)")
    records = instruction_records(cfg, path, skip_bad_lines)
    record = instructions_record(records, path, cfg.data_seed)
    if learnt is not None:
        other = other_instructions(sft_dir, learnt, record)
        if other:
            warnings.warn(other, stacklevel=2)
    return records, record


def other_instructions(sft_dir: str | os.PathLike, learnt: dict, now: dict) -> str | None:
    """A warning for a run that reads other records (`now`) than the SFT run in `sft_dir` learnt (`learnt`),
    naming both and how to read those it learnt; None when they are the same records (from any path)."""
    if now["sha256"] == learnt["sha256"]:
        return None
    not_learnt = "so its prompts are not all those SFT learnt"
    if instructions_text(now) != instructions_text(learnt):  # another file, the suite instead of a file, another seed
        how = how_to_read(INSTRUCTIONS, learnt, now) or (  # (none: records given to SFT in Python)
            "pass --data with a JSONL file of them (minillm.datasets.write_jsonl writes one)")
        return (
            f"{sft_dir} learnt {instructions_text(learnt)}, but this run reads {instructions_text(now)}, "
            f"{not_learnt}; {how} to read those"
        )
    if now["file"]:
        return (
            f"{now['file']} has changed since {sft_dir} learnt it (sha256 {learnt['sha256'][:10]}, now "
            f"{now['sha256'][:10]}), {not_learnt}; restore the file, or train SFT again on it"
        )
    return (
        f"{sft_dir} learnt {instructions_text(learnt)} as another version of minillm generated it, {not_learnt}; "
        "train SFT again with this version"
    )

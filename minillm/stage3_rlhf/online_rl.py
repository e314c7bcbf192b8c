"""What PPO and GRPO share around their algorithms: an online-RL run's records, folder and checks.

Both train on answers sampled from the policy they train (online RL), so both need: the training
prompts and held-out records, checked before anything is written (`rl_records`); a run folder that
resumes exactly (`open_run`, `save_run`); a stop when a reward is not a number (`check_rewards`);
and the figures the pipeline reports (`summarize_run`). ppo.py and grpo.py hold the algorithms.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from minillm.config import TrainConfig, to_dict
from minillm.datasets.jsonl import record_split
from minillm.datasets.run_data import known_records
from minillm.errors import CheckpointError, DataError, TrainingError
from minillm.model import GPT
from minillm.provenance import MADE_BY, run_record
from minillm.stage3_rlhf.preferences import comparison_summary, heldout_records
from minillm.tokenizer import Tokenizer
from minillm.train import load_checkpoint, save_checkpoint
from minillm.train.checkpoint import CKPT_NAME, TOKENIZER_NAME, short_reason
from minillm.train.health import Watched
from minillm.train.loop import CONFIG_NAME, METRICS_NAME, read_metrics, write_metrics
from minillm.train.resume import check_resume
from minillm.utils import write_json


def warn_float32_eager(train: TrainConfig, method: str) -> None:
    """`--dtype` and `--compile` reach every stage's TrainConfig, but the online-RL loops run in float32
    and eagerly: say so, rather than let a learner think the run used them."""
    if train.dtype != "float32" or train.compile:
        warnings.warn(f"{method} trains in float32 without torch.compile; train.dtype={train.dtype} and "
                      f"train.compile={train.compile} apply to the other stages only", stacklevel=2)


def rl_records(records: list[dict], eval_prompts: int, method: str) -> tuple[list[dict], list[dict]]:
    """The "train" records, whose prompts the rollouts draw, and the held-out records the policies are
    compared on at the end: both checked before a run writes anything. Unchecked, records without a
    training prompt would crash the first rollout, and records without a held-out one would stop the
    run only after all of its training.
    """
    prompts = [r for r in records if record_split(r) == "train"]
    if not prompts:
        raise DataError(f"{method}: no training records (split == 'train') to draw prompts from; pass the "
                        "instruction records with their training split")
    return prompts, heldout_records(records, eval_prompts)


def open_run(out_dir: Path, method: str, resume: bool, tokenizer: Tokenizer, run_config: dict,
             generator: torch.Generator, device: torch.device | None = None, read: dict[str, dict | None] | None = None,
             **resumable: Any) -> tuple[int, list[dict], dict]:
    """Start an online-RL run in `out_dir`, or resume it exactly: (first step, metrics so far, saved state).

    Each of `resumable` (policy, critic, optimizer, by their checkpoint key) gets its saved state,
    and the generator its position, so a resumed run draws the same prompts and tokens as one that
    never stopped. An optimizer keeps the learning rates this run was made with (a resume with
    another `lr` or `critic_lr` uses the new one, as the log says), not the saved run's; any other
    setting, the tokenizer and the data of `read`, must be the run's (`check_resume`). config.json gets
    `run_config`, the records of `read` (the instructions: datasets/run_data.py), and which code made the run
    on which `device` (provenance.py).
    """
    ckpt_path, metrics_path = out_dir / CKPT_NAME, out_dir / METRICS_NAME
    state: dict = load_checkpoint(ckpt_path) if ckpt_path.is_file() else {}
    saved_method = state.get("method", method)  # (checkpoints written before the method was saved: taken at their word)
    if state and ("generator" not in state or saved_method != method):  # the training loop's, or the other RL method's
        what = f"a {saved_method} run" if "generator" in state else "another stage's training run"
        raise CheckpointError(f"{out_dir} holds {what}, not a {method} run: choose another folder")
    if state and not resume:
        raise CheckpointError(f"{out_dir} already holds a {method} run: pass resume (--resume) or choose another "
                              "folder")
    if state:
        moved_note = check_resume(out_dir, run_config, tokenizer, saved_under=None, read=read)  # (the whole file)
        for key, obj in resumable.items():
            made_with = [group["lr"] for group in getattr(obj, "param_groups", [])]  # this run's settings
            try:
                obj.load_state_dict(state[key])
            except (KeyError, RuntimeError, ValueError) as err:  # e.g. another model size or optimizer
                raise CheckpointError(f"{ckpt_path}: its saved {key} does not fit this run ({short_reason(err)}); "
                                      "resume with the settings it was trained with, or train into a new "
                                      "folder") from None
            for group, lr in zip(getattr(obj, "param_groups", []), made_with, strict=True):
                group["initial_lr"] = lr  # the saved state holds the old run's lrs: follow_schedule scales these
        generator.set_state(state["generator"])
        if moved_note:  # said only now that the checkpoint fits: a note of resuming before a refusal would mislead
            tqdm.write(moved_note)
        tqdm.write(f"{method.lower()}: resuming from step {state['step']} ({ckpt_path})")
    first_step = state.get("step", 0) + 1
    history = read_metrics(metrics_path, up_to_step=first_step - 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, history)
    tokenizer.save(out_dir / TOKENIZER_NAME)
    record = run_record(out_dir / CONFIG_NAME, device, resumed=bool(state))
    write_json(out_dir / CONFIG_NAME, {**run_config, **known_records(read), MADE_BY: record})
    return first_step, history, state


def save_run(out_dir: Path, method: str, step: int, policy: GPT, generator: torch.Generator, **state: Any) -> None:
    """Checkpoint an online-RL run (atomically, train/checkpoint.py): which method made it, the policy,
    loadable as any GPT run, the generator, and `state` (modules and optimizers by their state dicts,
    numbers as they are)."""
    save_checkpoint(out_dir / CKPT_NAME, {
        "method": method, "step": step, "model_kind": "gpt", "model_config": to_dict(policy.config),
        "model": policy.state_dict(), "generator": generator.get_state(),
        **{key: value.state_dict() if hasattr(value, "state_dict") else value for key, value in state.items()},
    })


def check_rewards(scores: Tensor, answers: list[str], step: int, run: Watched) -> None:
    """Stop with a TrainingError naming the run (`run`, health.Watched), the step and an answer if a
    reward (B,) is NaN or infinite."""
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        raise TrainingError(
            f"{run.name}: training stopped at step {step}: the reward was non-finite ({scores[bad[0]].item()}) for "
            f"{len(bad)} of {len(answers)} answers, e.g. {answers[bad[0]]!r}. {run.kept()}. Check the reward model "
            "run: retrain it, with a lower learning rate (--set reward.train.lr=...)"
        )


def summarize_run(history: list[dict], comparison: dict, seconds: float) -> dict[str, Any]:
    """The numbers of the pipeline report: the comparison with SFT, and the last step's KL (and RM score)."""
    last = history[-1] if history else {}
    summary = {**comparison_summary(comparison), "kl": last.get("kl"), "seconds": seconds,
               "history": history}
    if "rm_score" in last:  # PPO's; GRPO logs its reward, whichever it reads, as reward_mean
        summary["rm_score"] = last["rm_score"]
    return summary

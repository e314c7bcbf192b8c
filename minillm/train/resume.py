"""Exact resume: what a checkpoint of the training loop holds, and when a run may continue.

A run stopped by a crash, Ctrl-C or a time limit goes on with `--resume` from its last checkpoint, and
should end exactly where an uninterrupted run would have. Two things make that so:

1. **The whole training state is saved**, not just the weights (`save_training_state`): the
   optimizer's moment estimates (without them Adam restarts from zero), the step (the learning-rate
   schedule's whole state, optim.py), the float16 loss scale (precision.py), every random generator
   of every rank (dropout, rng.py) and the loop's data generator (which rows come next).
   `restore_training_state` puts each one back; on CPU the resumed run is then bit-for-bit the
   uninterrupted one.
2. **Only the same experiment is continued** (`check_resume`, before anything loads): the same
   tokenizer and the same settings as the run's tokenizer.json and config.json, all but how the steps
   are taken (the `train` section: more steps, another lr). A resume with another model size or data
   would mix two experiments in one set of weights and one config.json. A changed schedule is allowed,
   and the note says what it does to the learning rate (`schedule_note`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from minillm.config import TrainConfig, at_defaults, diff_configs, to_dict
from minillm.datasets.run_data import check_same_data
from minillm.errors import CheckpointError, ConfigError
from minillm.tokenizer import Tokenizer, load_tokenizer
from minillm.train.checkpoint import (
    CKPT_NAME,
    CONFIG_NAME,
    TOKENIZER_NAME,
    check_model_config,
    load_checkpoint,
    load_weights,
    model_config_dict,
    save_checkpoint,
)
from minillm.train.distributed import DistContext, barrier, gather_objects
from minillm.train.optim import AnyOptimizer, lr_at
from minillm.train.rng import capture_rng_state, restore_rng_state
from minillm.utils import parse_json, seed_everything

# what a training-loop checkpoint holds beyond the model (an online-RL checkpoint holds none of these)
TRAINING_STATE = ("step", "train_config", "optimizer", "scaler", "rng", "data_generator")


def save_training_state(path: Path, model: nn.Module, optimizer: AnyOptimizer,
                        scaler: torch.amp.GradScaler, data_generator: torch.Generator, cfg: TrainConfig,
                        ctx: DistContext, step: int, model_kind: str, elapsed_s: float, stage: str) -> None:
    """Everything needed to continue from `step` as if never stopped (written by rank 0), and which
    stage's run it is (`stage`: "clm", "sft", ...)."""
    rng_per_rank = gather_objects(capture_rng_state(), ctx)  # every rank has its own dropout stream
    if ctx.is_main:
        save_checkpoint(path, {
            "step": step,
            "stage": stage,
            "model_kind": model_kind,
            "model_config": model_config_dict(model),
            "train_config": to_dict(cfg),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),  # Adam's moment estimates and step counts (and Muon's momentum)
            "scaler": scaler.state_dict(),  # the float16 loss scale ({} when disabled)
            "rng": rng_per_rank,
            "data_generator": data_generator.get_state(),
            "elapsed_s": elapsed_s,
        })
    barrier(ctx)  # no rank goes on (or returns) before the checkpoint is on disk


def check_same_stage(ckpt: dict, stage: str, path: Path) -> None:
    """A checkpoint of another stage's run is refused: SFT resumed from a CLM run's checkpoint (both
    GPTs, so the model fits) would go on from its optimizer state and step as if they were its own.
    Checkpoints written before the stage was saved are taken at their word."""
    saved = ckpt.get("stage", stage)
    if saved != stage:
        raise CheckpointError(f"{path} is a {saved!r} run's checkpoint, not a {stage!r} run's: train into another "
                              "folder")


def restore_training_state(path: Path, model: nn.Module, optimizer: AnyOptimizer,
                           scaler: torch.amp.GradScaler, data_generator: torch.Generator,
                           cfg: TrainConfig, ctx: DistContext, model_kind: str, stage: str) -> tuple[int, float]:
    """Load `path` into the model, optimizer, scaler and generators; return (step, elapsed_s)."""
    ckpt = load_checkpoint(path)
    missing = [key for key in TRAINING_STATE if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path} was not written by the training loop (it has no {', '.join(missing)}): "
                              "another stage's checkpoint (PPO or GRPO?); train into another folder")
    check_same_stage(ckpt, stage, path)
    check_model_config(ckpt, model, model_kind, path)
    load_weights(model, ckpt["model"], path)
    saved = at_defaults(ckpt["train_config"], to_dict(TrainConfig()))  # a setting added since: at its default
    saved_optimizer = saved["optimizer"]  # (runs saved before Muon used AdamW, the default)
    if saved_optimizer != cfg.optimizer:
        raise CheckpointError(f"{path} was trained with optimizer={saved_optimizer}, whose saved state cannot "
                              f"continue as {cfg.optimizer}: resume it with optimizer={saved_optimizer}, or train "
                              "into a new folder")
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError:  # torch: "loaded state dict contains a parameter group that doesn't match ..."
        raise CheckpointError(f"{path} was trained with another set of trained parameters (LoRA or frozen "
                              "layers changed?): resume with the run's settings, or train into a new folder") from None
    if ckpt["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    data_generator.set_state(ckpt["data_generator"])
    step = ckpt["step"]
    if len(ckpt["rng"]) == ctx.world_size:
        restore_rng_state(ckpt["rng"][ctx.rank])
    else:  # another number of processes: no exact resume possible, but fresh, distinct streams
        seed_everything(cfg.seed + ctx.rank + step)
    changed = diff_configs(saved, to_dict(cfg))
    if changed and ctx.is_main:
        tqdm.write(f"note: resuming {path} with changed training settings: {'; '.join(changed)}"
                   f"{schedule_note(saved, cfg, step)}")
    return step, ckpt.get("elapsed_s", 0.0)


SCHEDULE_SETTINGS = ("lr", "warmup_steps", "max_steps", "min_lr_ratio")  # what lr_at reads


def schedule_note(saved: dict, cfg: TrainConfig, step: int) -> str:
    """What a resume with another schedule (more steps, say) does to the learning rate, or "" if the
    schedule is the saved one. The steps after `step` follow the schedule of `cfg`, so the rate jumps
    where the run stopped (the cosine of more steps is higher there). Steps 1 to `step` had the rates
    that `cfg` gives them only if the run stopped before the two schedules diverge (still warming up,
    say): otherwise a fresh run of `cfg` is another run, which the note says."""
    before = dataclasses.replace(cfg, **{key: saved[key] for key in SCHEDULE_SETTINGS if key in saved})
    if all(getattr(before, key) == getattr(cfg, key) for key in SCHEDULE_SETTINGS):
        return ""
    same = all(lr_at(i, before) == lr_at(i, cfg) for i in range(step))
    return (f". The learning rate follows the new schedule: step {step} trained at {lr_at(step - 1, before):.3g}, "
            f"step {step + 1} trains at {lr_at(step, cfg):.3g}; "
            + (f"the new schedule gives steps 1 to {step} the rates they had" if same
               else f"the new schedule would have given steps 1 to {step} other rates (a fresh run of these "
                    "settings is another run)"))


# What a resume may change: how the steps are taken (the `train` section, and PPO's critic_lr beside it), noted
# when it changes. The run's inputs, by path (the CLM run SFT starts from, the SFT run, reward model and
# rankings of stage 3), may be spelled otherwise (another working folder, a moved run): a changed path is noted,
# and what must not change in them is checked by what they hold (the tokenizer here, the model's shape when loaded).
# Every other setting decides what the run learns: a resume with another one would mix two experiments.
TRAINING_SETTINGS = ("train", "critic_lr")
INPUT_PATHS = ("init_dir", "sft_dir", "rm_dir", "prefs")


def without_keys(config: dict, keys: tuple[str, ...]) -> dict:
    """`config` without the entries named `keys`, at every depth."""
    return {key: without_keys(value, keys) if isinstance(value, dict) else value
            for key, value in config.items() if key not in keys}


def check_resume(out_dir: Path, run_config: dict | None, tokenizer: Tokenizer | None,
                 saved_under: str | None = "run", read: dict[str, dict | None] | None = None) -> str:
    """Before resuming the checkpoint in `out_dir` (if there is one): the same tokenizer and the same
    settings, all but TRAINING_SETTINGS and INPUT_PATHS, as the run was made with (its tokenizer.json
    and config.json), and the same data as its records of `read` (key -> this run's record, datasets/run_data.py),
    or ConfigError. A resume must continue the *same* experiment: weights trained on
    one tokenizer's ids would go on with another's, and config.json would record one setting for both
    parts. A setting that minillm gained after the run was made, or lost since, is no change.
    `saved_under`: config.json's key of the run's settings (the training loop's "run"), or None
    when they are the whole file (an online-RL run's).

    Returns a note naming the inputs given by another path now ("" if none), for the caller to print
    once it knows the checkpoint is its stage's: before that, a note of resuming would mislead."""
    if not (out_dir / CKPT_NAME).is_file():
        return ""  # nothing to resume: the run starts fresh
    if tokenizer is not None:
        if not (out_dir / TOKENIZER_NAME).is_file():  # a tokenizer trained anew would map text to other ids
            raise ConfigError(
                f"cannot resume {out_dir}: its {TOKENIZER_NAME} is missing, so the ids its weights were trained on "
                "are unknown; restore the file, or start a new run in another folder"
            )
        if load_tokenizer(out_dir / TOKENIZER_NAME).to_dict() != tokenizer.to_dict():
            raise ConfigError(
                f"cannot resume {out_dir}: it was trained with another tokenizer than the one given now; resume "
                f"with its own ({out_dir / TOKENIZER_NAME}, or the run it was made from), or start a new run in "
                "another folder"
            )
    if run_config is None:
        return ""
    try:
        saved = parse_json((out_dir / CONFIG_NAME).read_text(encoding="utf-8"))
        saved = saved[saved_under] if saved_under else saved
        differences = [line for line in diff_configs(without_keys(saved, TRAINING_SETTINGS + INPUT_PATHS),
                                                     without_keys(run_config, TRAINING_SETTINGS + INPUT_PATHS))
                       if "<missing>" not in line]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(
            f"cannot resume {out_dir}: its {CONFIG_NAME} is missing or corrupt, so the saved settings are unknown; "
            "restore it, or start a new run in another folder"
        ) from None
    if differences:
        raise ConfigError(
            f"cannot resume {out_dir}: its settings differ (saved -> now): {'; '.join(differences)}. "
            "Use the saved settings, or start a new run in another folder"
        )
    check_same_data(out_dir / CONFIG_NAME, read or {})
    moved = [f"{key}: {saved.get(key)} -> {run_config.get(key)}" for key in INPUT_PATHS
             if saved.get(key) != run_config.get(key)]
    return f"note: resuming {out_dir} from other inputs (saved -> now): {'; '.join(moved)}" if moved else ""


def check_run_folder(
    out_dir: Path, resume: bool, stage: str, run_config: dict | None, tokenizer: Tokenizer | None,
    read: dict[str, dict | None] | None = None,
) -> str:
    """Before training into `out_dir`: a run already there is continued only with `resume`, and only as
    the same experiment (`check_resume`, whose note it returns); without `resume` it is refused, so that
    nothing overwrites it. Another stage's run is refused first, as another stage's: telling the user
    to pass resume, or naming its tokenizer or settings as what differs
    (`pretrain clm --out runs/sft --resume`), would mislead."""
    ckpt_path = out_dir / CKPT_NAME
    if ckpt_path.exists() and not ckpt_path.is_file():  # a folder there: resume would start anew over the run's logs
        raise CheckpointError(f"{ckpt_path} is not a file (a folder?), so {out_dir} cannot be a run to continue or "
                              f"to write: move it away, or choose another output folder")
    if ckpt_path.is_file():
        check_same_stage(load_checkpoint(ckpt_path), stage, ckpt_path)
        if not resume:
            raise CheckpointError(
                f"{out_dir} already holds a training run ({CKPT_NAME}): pass resume (--resume) to continue "
                "it, or choose another output folder"
            )
    if not resume:
        return ""
    return check_resume(out_dir, run_config, tokenizer, read=read)  # the same experiment, before anything loads

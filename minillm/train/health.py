"""Training health: stop at the first NaN or inf, and say where it came from.

One NaN in the loss turns every gradient into NaN, then every weight, and from there the run
only burns time writing garbage checkpoints. So the loop, and PPO's and GRPO's own updates,
check at every step that the loss and the gradient norm are finite numbers, and stop with a
TrainingError naming the run, the step and the culprit (the loss, or the first parameter whose
gradient is not finite; in PPO, which of its two networks). Since nothing is saved after the bad step,
a checkpoint on disk is a good one, and the message says whether there is one yet. It names the
settings to try as the run's caller sets them: a command line `--set clm.train.lr=...` and `--dtype float32`,
a library caller's own TrainConfig `lr=...` and `dtype="float32"` (`Watched.setting`); full precision only
to a run not already in it. In float16 a gradient that
overflows is no error (precision.py: the step is skipped); the gradient check starts only once the
loss scale has fallen below 1, some 17 skipped steps in a row, when no overflow explains it any more.

To find the *operation* that produced a NaN, run with `detect_anomaly=True`
(`torch.autograd.set_detect_anomaly`): backward then fails at the first NaN and its traceback
points to the forward line that created it. It slows training down, so it is off by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from minillm.errors import TrainingError
from minillm.train.checkpoint import load_checkpoint

# The runtime settings a NaN's message advises, as a command line sets them (a flag, for every stage at once:
# cli.with_runtime) and as a library caller sets its own TrainConfig: full precision, and autograd's anomaly mode.
RUNTIME_ADVICE = {"dtype": ("--dtype float32", 'dtype="float32"'),
                  "detect_anomaly": ("--detect-anomaly", "detect_anomaly=True")}


@dataclass(frozen=True)
class Watched:
    """A training run (or one network of it) as the message that stops it at a NaN names it.

    name: the run, as its progress bar shows it ("clm", "sft from scratch", "grpo (verifiable)"): with
        `pipeline --jobs 2`, or SFT's baselines, several train at once, and the message must say which.
    settings: where its TrainConfig is, as --set takes it ("clm.train", "grpo_verifiable.train"); "" for a
        run of no section (a library caller's own TrainConfig), whose settings are named bare ("lr=...").
    ckpt: its checkpoint file, which the message says is kept, or not saved yet.
    part: the network, in a run that trains two (PPO: "policy", "critic"); "" in a run of one.
    lr: the setting of this network's learning rate when it is not `settings`.lr (PPO's critic: ppo.critic_lr;
        SFT's from-scratch baseline with its own rate: sft.scratch_lr).
    dtype: the precision it trains in; full precision is advised only to a run that is not in it already
        (PPO and GRPO always train in float32).
    """

    name: str
    settings: str
    ckpt: Path
    part: str = ""
    lr: str = ""
    dtype: str = "float32"

    def stopped(self, step: int, what: str) -> TrainingError:
        """The error that stops the run at `step`, where `what` went non-finite ("the loss is nan")."""
        of = f"the {self.part}'s " if self.part else "the "
        lr = f"--set {self.lr}=..." if self.lr else self.setting("lr")
        precision = "" if self.dtype == "float32" else f"{self.setting('dtype')}, "
        return TrainingError(f"{self.name}: training stopped at step {step}: {of}{what}. {self.kept()}. Try a "
                             f"lower learning rate ({lr}), gradient clipping ({self.setting('grad_clip')}), "
                             f"{precision}or {self.setting('detect_anomaly')} to find the operation that produced it")

    def setting(self, name: str) -> str:
        """How to change the TrainConfig setting `name` of this run: "--set clm.train.lr=...", or in a run
        of no section "lr=..." (there is no command line to name it for). The runtime settings it advises
        have a value to advise (`RUNTIME_ADVICE`), and on the command line a flag of their own."""
        if name in RUNTIME_ADVICE:
            flag, field = RUNTIME_ADVICE[name]
            return flag if self.settings else field
        return f"--set {self.settings}.{name}=..." if self.settings else f"{name}=..."

    def kept(self) -> str:
        """What the stopped run keeps: its checkpoint, all saved before the bad step, or none at all."""
        if not self.ckpt.is_file():
            return "No checkpoint had been saved yet"
        return f"Its last checkpoint, {self.ckpt} of step {load_checkpoint(self.ckpt).get('step')}, is kept"


def check_loss(loss: float, step: int, run: Watched) -> None:
    """Stop if the loss of `step` is NaN or infinite."""
    if not math.isfinite(loss):
        raise run.stopped(step, f"loss is {loss}")


def first_bad_gradient(model: nn.Module) -> str:
    """The name of the first parameter whose gradient holds a NaN or inf ('?' if none does)."""
    for name, param in model.named_parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            return name
    return "?"


def clip_gradients(model: nn.Module, grad_clip: float, step: int, run: Watched, check: bool = True) -> torch.Tensor:
    """What comes between backward and the optimizer step: measure the norm of `model`'s whole gradient,
    stop if it is not finite (`check_grad_norm`; `check=False` lets float16's expected overflows
    through, loop.py), clip the gradient to norm `grad_clip` (0: no clipping); return the norm.

    `torch.nn.utils.clip_grad_norm_` is the same two calls without the check. Clipping does not save a step
    whose norm is NaN: it scales every gradient by grad_clip / NaN, so the optimizer writes NaN into
    every weight, and a run that checked only its loss would save them before its next loss showed it.
    """
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if check:
        check_grad_norm(norm.item(), model, step, run)
    if grad_clip > 0:  # scale every gradient by min(1, grad_clip / norm)
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
    return norm


def check_grad_norm(grad_norm: float, model: nn.Module, step: int, run: Watched) -> None:
    """Stop if the gradient norm of `step` is NaN or infinite, naming the parameter responsible."""
    if not math.isfinite(grad_norm):
        raise run.stopped(step, f"gradient norm is {grad_norm}, the gradient of parameter "
                                f"{first_bad_gradient(model)!r} is not finite")

"""Training health: stop at the first NaN or inf, and say where it came from.

One NaN in the loss turns every gradient into NaN, then every weight, and from there the run
only burns time writing garbage checkpoints. So the loop, and PPO's and GRPO's own updates,
check at every step that the loss and the gradient norm are finite numbers, and stop with a
TrainingError naming the run, the step and the culprit (the loss, or the first parameter whose
gradient is not finite). Since nothing is saved
after the bad step, the last checkpoint on disk is the last good one. In float16 a gradient that
overflows is no error (precision.py: the step is skipped); the gradient check starts only once the
loss scale has fallen below 1, some 17 skipped steps in a row, when no overflow explains it any more.

To find the *operation* that produced a NaN, run with `detect_anomaly=True`
(`torch.autograd.set_detect_anomaly`): backward then fails at the first NaN and its traceback
points to the forward line that created it. It slows training down, so it is off by default.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minillm.errors import TrainingError

_ADVICE = ("The last checkpoint saved before it is kept. Try a lower lr, gradient clipping (grad_clip), "
           "dtype float32, or detect_anomaly to find the operation that produced it")


def check_loss(loss: float, step: int, stage: str) -> None:
    """Stop if the loss of `step` is NaN or infinite. `stage` names the run ("clm", "ppo", ...): with
    `pipeline --jobs 2`, or SFT's baselines, several train at once, and the message must say which."""
    if not math.isfinite(loss):
        raise TrainingError(f"{stage}: training stopped at step {step}: the loss is {loss}. {_ADVICE}")


def first_bad_gradient(model: nn.Module) -> str:
    """The name of the first parameter whose gradient holds a NaN or inf ('?' if none does)."""
    for name, param in model.named_parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            return name
    return "?"


def clip_gradients(model: nn.Module, grad_clip: float, step: int, stage: str, check: bool = True) -> torch.Tensor:
    """What comes between backward and the optimizer step: measure the norm of `model`'s whole gradient,
    stop if it is not finite (`check_grad_norm`; `check=False` lets float16's expected overflows
    through, loop.py), clip the gradient to norm `grad_clip` (0: no clipping); return the norm.

    `torch.nn.utils.clip_grad_norm_` is the same two calls without the check. Clipping does not save a step
    whose norm is NaN: it scales every gradient by grad_clip / NaN, so the optimizer writes NaN into
    every weight, and a run that checked only its loss would save them before its next loss showed it.
    """
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if check:
        check_grad_norm(norm.item(), model, step, stage)
    if grad_clip > 0:  # scale every gradient by min(1, grad_clip / norm)
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
    return norm


def check_grad_norm(grad_norm: float, model: nn.Module, step: int, stage: str) -> None:
    """Stop if the gradient norm of `step` is NaN or infinite, naming the parameter responsible."""
    if not math.isfinite(grad_norm):
        raise TrainingError(
            f"{stage}: training stopped at step {step}: the gradient norm is {grad_norm}, the gradient of "
            f"parameter {first_bad_gradient(model)!r} is not finite. {_ADVICE}"
        )

"""Training health: stop at the first NaN or inf, and say where it came from.

One NaN in the loss turns every gradient into NaN, then every weight, and from there the run
only burns time writing garbage checkpoints. So the loop checks, at every step, that the loss
and the gradient norm are finite numbers, and stops with a TrainingError naming the step and the
culprit (the loss, or the first parameter whose gradient is not finite). Since nothing is saved
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


def check_loss(loss: float, step: int) -> None:
    """Stop if the loss of `step` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingError(f"training stopped at step {step}: the loss is {loss}. {_ADVICE}")


def first_bad_gradient(model: nn.Module) -> str:
    """The name of the first parameter whose gradient holds a NaN or inf ('?' if none does)."""
    for name, param in model.named_parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            return name
    return "?"


def check_grad_norm(grad_norm: float, model: nn.Module, step: int) -> None:
    """Stop if the gradient norm of `step` is NaN or infinite, naming the parameter responsible."""
    if not math.isfinite(grad_norm):
        raise TrainingError(
            f"training stopped at step {step}: the gradient norm is {grad_norm}, the gradient of "
            f"parameter {first_bad_gradient(model)!r} is not finite. {_ADVICE}"
        )

"""Mixed precision: run the big matrix products in 16-bit floats, keep the weights in 32-bit.

`torch.autocast` runs each operation in the precision that suits it: matrix multiplications in
bfloat16 or float16 (half the memory traffic, and much faster on GPUs with tensor cores), the
cross-entropy loss in float32 (on CUDA also softmax, log_softmax and layer norm; torch's CPU
autocast leaves those in the 16-bit type, and on both it leaves logsigmoid there). So the
log-probabilities the reward model reads (`stage3_rlhf.sequences.gather_logprobs`) and its
ranking loss cast to float32 themselves. The parameters and the optimizer state stay in float32,
so small updates are not rounded away.

- **bfloat16** keeps float32's exponent range (it just has fewer mantissa bits), so gradients
  neither overflow nor underflow: autocast alone is enough.
- **float16** has a narrow range: small gradients underflow to 0. A *grad scaler* multiplies the
  loss by a large factor before backward (so gradients stay representable), divides the
  gradients by it before the optimizer step, and skips any step whose gradients overflowed to
  inf, lowering the factor (a factor below 1 means the gradients are NaN whatever the scale,
  and training stops: loop.py). It is created for every run but enabled only for float16, where a
  disabled scaler passes everything through unchanged: the loop has a single code path.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from minillm.errors import ConfigError


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch type that `dtype` (TrainConfig.dtype) names. A new one gets its branch here and its
    name in config.DTYPES; the training loop's make_grad_scaler reads it before the first step, and
    the pipeline's preflight before the first stage."""
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "float16":
        return torch.float16
    raise ConfigError(f"dtype={dtype}: torch_dtype (minillm/train/precision.py) knows no type of that name; add "
                      "its branch there, beside float16's")


def autocast(device: torch.device, dtype: str) -> AbstractContextManager:
    """The context in which forward passes run: autocast to `dtype`, or nothing for float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch_dtype(dtype))


def make_grad_scaler(device: torch.device, dtype: str) -> torch.amp.GradScaler:
    """A gradient scaler, active only for float16."""
    return torch.amp.GradScaler(device.type, enabled=torch_dtype(dtype) == torch.float16)

"""A pretend GPU on a CPU-only torch: is every tensor the code makes on the device of the tensors it meets?

No GPU has been lent to this project, and a CPU-only torch cannot hold a tensor that says it is on "cuda"
(indexing one fails: the build has no CUDA device guard). So the pretend GPU is torch's "meta" device.
Inside `pretend_gpu()`, `.to(PRETEND_GPU)`, `torch.tensor(..., device=PRETEND_GPU)` and every factory
given that device make an `OnPretendGpu` tensor: its device says meta, and it holds real CPU values, so
the code computes as usual. Every operation on one is checked as CUDA checks it, and what CUDA would
refuse raises DeviceMismatch:

- a CPU tensor (other than a 0-d scalar) meeting a GPU one, except in a copy between the two and as the
  indices of a GPU tensor (torch moves CPU indices to the GPU for you);
- a CPU torch.Generator drawing a GPU tensor (`torch.rand(..., generator=g, device="cuda")` fails).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

PRETEND_GPU = torch.device("meta")
ATEN = torch.ops.aten
COPIES = {ATEN._to_copy.default, ATEN.copy_.default}
INDEXING = {ATEN.index.Tensor, ATEN.index_put.default, ATEN.index_put_.default, ATEN._index_put_impl_.default}


class DeviceMismatch(RuntimeError):
    """An operation that CUDA would refuse: tensors of two devices, or a generator of the other one."""


class OnPretendGpu(torch.Tensor):
    """A tensor on the pretend GPU: its device is PRETEND_GPU, `values` holds its numbers on the CPU."""

    values: torch.Tensor

    @staticmethod
    def __new__(cls, values: torch.Tensor) -> OnPretendGpu:
        tensor = torch.Tensor._make_wrapper_subclass(cls, values.shape, strides=values.stride(),
                                                     dtype=values.dtype, device=PRETEND_GPU)
        tensor.values = values
        return tensor

    @classmethod
    def __torch_dispatch__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return run_checked(func, args, kwargs or {})


def is_pretend_gpu(device: Any) -> bool:
    return device is not None and torch.device(device) == PRETEND_GPU


def run_checked(func: Callable, args: tuple, kwargs: dict) -> Any:
    """Refuse what CUDA would refuse, else run `func` on the CPU values; its results are on the pretend GPU
    when it read a tensor there (and was not asked for another device) or was asked for that device."""
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    reads_gpu = any(isinstance(t, OnPretendGpu) for t in tensors)
    on_cpu = [tuple(t.shape) for t in tensors if not isinstance(t, OnPretendGpu) and t.dim() > 0]
    indexes_a_gpu_tensor = func in INDEXING and isinstance(args[0], OnPretendGpu)
    if reads_gpu and on_cpu and func not in COPIES and not indexes_a_gpu_tensor:
        raise DeviceMismatch(f"{func}: GPU tensors meet CPU tensors of shapes {on_cpu}")
    device = kwargs.get("device")
    to_gpu = is_pretend_gpu(device) or (reads_gpu and device is None)
    generator = kwargs.get("generator")
    if to_gpu and generator is not None and generator.device != PRETEND_GPU:
        raise DeviceMismatch(f"{func}: a {generator.device.type} generator draws a GPU tensor")
    args, kwargs = tree_map(lambda t: t.values if isinstance(t, OnPretendGpu) else t, (args, kwargs))
    if is_pretend_gpu(device):
        kwargs["device"] = torch.device("cpu")
    out = func(*args, **kwargs)
    return tree_map(lambda t: OnPretendGpu(t) if to_gpu and isinstance(t, torch.Tensor) else t, out)


class MakesTensors(TorchDispatchMode):
    """Factories (torch.arange(..., device=...), torch.ones, ...), which read no tensor: checked too."""

    def __torch_dispatch__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return run_checked(func, args, kwargs or {})


class MovesTensors(TorchFunctionMode):
    """What torch would turn into data-less meta tensors before any check: `.to(PRETEND_GPU)` and
    torch.tensor(..., device=PRETEND_GPU) keep their values instead; `.tolist()` reads them."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.to and not isinstance(args[0], OnPretendGpu):
            device, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if is_pretend_gpu(device):
                values = args[0].detach().to(dtype or args[0].dtype).clone()
                return OnPretendGpu(values).requires_grad_(args[0].requires_grad)
        if func in (torch.tensor, torch.as_tensor) and is_pretend_gpu(kwargs.get("device")):
            return OnPretendGpu(func(*args, **{**kwargs, "device": "cpu"}))
        if func is torch.Tensor.tolist and isinstance(args[0], OnPretendGpu):
            return args[0].values.tolist()
        return func(*args, **kwargs)


@contextmanager
def pretend_gpu() -> Iterator[None]:
    """Inside the `with`, PRETEND_GPU acts as a GPU whose device rules are checked (the module's docstring)."""
    with MakesTensors(), MovesTensors():
        yield

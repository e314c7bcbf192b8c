"""Data parallelism with PyTorch's own engine: torchrun + DistributedDataParallel (DDP).

`torchrun --nproc_per_node=N script.py` starts N copies of the script and tells each who it is
through environment variables: RANK (0..N-1 over all machines), LOCAL_RANK (the GPU index on this
machine) and WORLD_SIZE (N). Every copy holds a full replica of the model. At each step:

1. every rank draws the *same* global batch (all share the data generator's seed) and keeps
   only its own slice of rows, its shard: together the shards are exactly the batch that a
   single process would have used;
2. each rank runs forward and backward on its shard;
3. DDP averages the gradients over the ranks during backward (an all-reduce: NCCL between GPUs,
   gloo between CPU processes), so every replica takes the same optimizer step and the replicas
   stay identical without ever sending weights around.

Only rank 0 writes files (checkpoints, metrics, plots); the others wait at a barrier when they
must not run ahead of a file being written. Once a stage's training is done, its function returns None
on the other ranks (`if not is_main_process(): return None`, right after the training): the final
evaluation, the result files and the results, returned and printed, are rank 0's alone (the others
would only repeat them and write the same files beside rank 0). The function returns, it does not
end the process: a script that trains two stages in a row goes on to the second on every rank, and
the other ranks wait there for rank 0, at the second training's first exchange (DDP's copy of the
weights), until it is done evaluating the first. Run outside torchrun, everything here degrades to a
single process with no communication at all.

The process group is joined once per process and left when the process exits: a command that trains
several runs in a row (`sft` and its baselines) trains them all in one group. Leaving it after each
run and joining anew would not work: the new group meets in torchrun's store under the old group's
keys, and the ranks hang, or fail to connect, depending on which one comes first.
"""

from __future__ import annotations

import atexit
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minillm.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Who this process is among the ranks (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """How many processes torchrun started (its WORLD_SIZE); 1 for a process it did not start."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up (if any) and return the context and this rank's device.

    On CUDA each rank takes the GPU of its LOCAL_RANK and talks NCCL; on CPU the ranks use gloo.
    The first call joins the group, and leaves it at the process's exit; later calls use it again.
    """
    world_size = launched_world_size()
    if world_size <= 1:
        return DistContext(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"device={device.type!r}: distributed training runs on cuda (NCCL) or cpu (gloo); "
                          "pass --device cuda or --device cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return DistContext(rank, world_size, local_rank), device


def refuse_several_processes(what: str) -> None:
    """`what` does not train through the shared loop, so it has no ranks: under torchrun every process
    would run all of it and write the same files. Refuse, before anything loads or is written."""
    world_size = launched_world_size()
    if world_size > 1:
        raise ConfigError(f"{what} runs in one process, but torchrun started {world_size}: each would run all "
                          "of it into the same folder; run it without torchrun (torchrun runs pretrain, sft, "
                          "reward and dpo)")


def is_main_process() -> bool:
    """True on rank 0, and in a process that torchrun did not start (read before the group is joined).
    A RANK without a WORLD_SIZE above 1 (left in the environment by a scheduler, say) is one process
    alone, as init_distributed reads it: it trains and writes as rank 0, so it evaluates and writes the
    results too, instead of returning without them."""
    return launched_world_size() <= 1 or os.environ.get("RANK", "0") == "0"


def rank_zero_first(device: torch.device) -> None:
    """Under torchrun, hold every rank here until all get here: rank 0 comes once it has written a file
    (reward's rankings, LoRA's merged checkpoint) that the others then read. Nothing to wait for on a
    single process."""
    barrier(init_distributed(device)[0])


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """Wrap in DDP when several ranks train (gradients are averaged during backward)."""
    if not ctx.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard_rows(batch: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, torch.Tensor]:
    """This rank's rows of the global batch, dealt like cards: rows rank, rank + world_size, ...
    Each tensor (B, ...) -> (B / world_size, ...).

    Dealt, not cut into contiguous slices, so that rows a batch keeps together at its end (SFT's
    replay windows) are shared by every rank instead of all landing on the last one.
    """
    if not ctx.enabled:
        return batch
    return {key: value[ctx.rank::ctx.world_size].contiguous() for key, value in batch.items()}


def mean_over_ranks(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Average each value over the ranks (e.g. the loss of each shard -> the global batch's loss)."""
    if not ctx.enabled or not values:
        return values
    stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=device)  # (K,) one per metric
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return dict(zip(values, (stacked / ctx.world_size).tolist(), strict=True))


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list on a single process)."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (nothing to wait for on a single process)."""
    if ctx.enabled:
        dist.barrier()


def accumulation_context(model: nn.Module, last_micro_batch: bool) -> AbstractContextManager:
    """Skip DDP's gradient all-reduce on every micro-batch but the last of a step.

    Gradients of the micro-batches add up locally; averaging them over the ranks once, after the
    last backward, gives the same result as after every backward for a fraction of the traffic.
    """
    if isinstance(model, DistributedDataParallel) and not last_micro_batch:
        return model.no_sync()
    return nullcontext()

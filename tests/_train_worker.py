"""A tiny, complete training run for the loop's tests: run as a script (a subprocess to kill, or one
rank under torchrun) or import its pieces.

The task: sequences that count with a stride, (start + stride * i) % VOCAB for i = 0..T, stride in
1..3. Predicting the next token needs the two previous ones, so a 1-layer GPT learns it quickly and
a loss that does not fall means training is broken.

    python tests/_train_worker.py --out DIR [--resume] [--steps 12] [--batch-size 8] ...
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minillm.config import ModelConfig, TrainConfig
from minillm.model.gpt import GPT
from minillm.train import train
from minillm.train.distributed import DistContext
from minillm.train.health import Watched
from minillm.train.loop import CountTerms, GetBatch, LossFn, train_step
from minillm.utils import seed_everything

VOCAB, SEQ_LEN = 16, 12


def tiny_gpt(dropout: float = 0.0, seed: int = 0) -> GPT:
    """A 1-layer GPT without biases. (The key bias would get a gradient that is 0 in exact arithmetic,
    softmax ignoring a constant shift, and Adam would blow its rounding noise up to full-size steps:
    two runs that differ only in rounding, like 1 vs 2 processes, would then drift apart.)"""
    seed_everything(seed)
    return GPT(ModelConfig(vocab_size=VOCAB, block_size=SEQ_LEN, n_layer=1, n_head=2, n_embd=16,
                           dropout=dropout, bias=False))


def counting_batch(batch_size: int) -> GetBatch:
    """get_batch for the counting task: ids (B, T) and their next tokens (B, T)."""

    def get_batch(split: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        start = torch.randint(0, VOCAB, (batch_size, 1), generator=generator)
        stride = torch.randint(1, 4, (batch_size, 1), generator=generator)
        seq = (start + stride * torch.arange(SEQ_LEN + 1)) % VOCAB  # (B, T + 1)
        return {"ids": seq[:, :-1], "targets": seq[:, 1:]}

    return get_batch


def with_unequal_masks(get_batch: GetBatch) -> GetBatch:
    """The same batches, where row r's loss counts only its last 1 + r % SEQ_LEN targets: rows then
    hold unequal numbers of loss terms, as SFT's do."""

    def masked(split: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = get_batch(split, generator)
        rows = torch.arange(len(batch["ids"])).unsqueeze(1)  # (B, 1)
        batch["mask"] = torch.arange(SEQ_LEN) >= SEQ_LEN - 1 - rows % SEQ_LEN  # (B, T)
        return batch

    return masked


def masked_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over the targets the mask counts."""
    logits = model(batch["ids"])  # (B, T, V)
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten(), reduction="none")
    return (per_token * batch["mask"].flatten()).sum() / batch["mask"].sum(), {}


def next_token_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    logits = model(batch["ids"])  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())
    accuracy = (logits.argmax(-1) == batch["targets"]).float().mean().item()
    return loss, {"accuracy": accuracy}


def assert_accumulation_changes_nothing(make_model: Callable[[], nn.Module], batch: dict[str, torch.Tensor],
                                        loss_fn: LossFn, count_terms: CountTerms | None,
                                        grad_accum_steps: int = 4) -> None:
    """One optimizer step on `batch`, taken whole and then dealt into `grad_accum_steps` micro-batches,
    must be the same step: the same loss, gradient norm and weights after. SGD at lr 1 without
    clipping makes the update the gradient itself; `make_model` builds the same weights each time."""

    def one_step(accumulation: int) -> tuple[dict[str, float], list[torch.Tensor]]:
        model = make_model()
        cfg = TrainConfig(batch_size=len(next(iter(batch.values()))), grad_accum_steps=accumulation, grad_clip=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        metrics = train_step(model, model, batch, loss_fn, optimizer, torch.amp.GradScaler(enabled=False), cfg,
                             DistContext(), torch.device("cpu"), step=1, run=Watched("train", "train", Path("ckpt.pt")),
                             count_terms=count_terms)
        return metrics, list(model.parameters())

    (whole, after_whole), (accumulated, after_accumulated) = one_step(1), one_step(grad_accum_steps)
    for key in ("loss", "grad_norm"):  # (math, not pytest: this file also runs as a worker script)
        assert math.isclose(accumulated[key], whole[key], rel_tol=1e-5), (key, accumulated[key], whole[key])
    for a, b in zip(after_whole, after_accumulated, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def run_worker(out: str, resume: bool = False, steps: int = 12, batch_size: int = 8, grad_accum: int = 1,
               save_every: int = 4, dropout: float = 0.1, dtype: str = "float32", masked: bool = False) -> dict:
    """Train the tiny GPT on the counting task into `out` (what the command line runs); `masked`:
    with unequal loss masks, micro-batches weighted by their counts."""
    torch.set_num_threads(1)
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, grad_accum_steps=grad_accum, lr=1e-2,
                      warmup_steps=3, eval_every=5, eval_batches=2, log_every=1, save_every=save_every,
                      dtype=dtype)
    if masked:
        return train(tiny_gpt(dropout), cfg, out, get_batch=with_unequal_masks(counting_batch(cfg.batch_size)),
                     loss_fn=masked_loss, count_terms=lambda batch: int(batch["mask"].sum()), resume=resume,
                     desc="worker")
    return train(tiny_gpt(dropout), cfg, out, get_batch=counting_batch(cfg.batch_size),
                 loss_fn=next_token_loss, resume=resume, desc="worker")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--masked", action="store_true")
    # several runs one after another in one process, into OUT/1, OUT/2, ... (as `sft` trains its baselines)
    parser.add_argument("--runs", type=int, default=1)
    args = vars(parser.parse_args())
    runs, out = args.pop("runs"), args.pop("out")
    for run in range(1, runs + 1):
        run_worker(out if runs == 1 else f"{out}/{run}", **args)


if __name__ == "__main__":
    main()

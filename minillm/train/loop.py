"""The training loop that every stage shares, written out so that it can be read whole.

One optimizer step is:

    learning rate <- warmup then cosine (optim.py), for this step
    batch = get_batch("train", generator)          # cfg.batch_size rows, drawn by OUR generator
    for each micro-batch (batch dealt into cfg.grad_accum_steps parts):
        loss = loss_fn(model, micro_batch)         # forward, then the loss (the stage decides which)
        (loss * weight).backward()                 # gradients add up; weight = 1/grad_accum_steps,
                                                   # or the micro-batch's share of the loss terms
    clip the gradient norm to cfg.grad_clip        # one bad batch cannot throw the weights away
    optimizer.step()                               # AdamW (or Muon for the blocks' matrices), optim.py

around which the loop logs (tqdm bar, metrics.jsonl), evaluates every `eval_every` steps,
checks that nothing became NaN (health.py), and saves a checkpoint every `save_every` steps.

**Why a stage passes `get_batch` and `loss_fn` instead of a DataLoader and a model.** The loop
knows nothing about masks, labels or rewards: stage 1 (MLM, CLM), stage 2 (SFT) and the reward
model only differ in how a batch is drawn and how the loss is computed, and everything else
(accumulation, precision, clipping, checkpoints, resume, several GPUs) is written once, here.

**Why the loop owns the data generator.** `get_batch(split, generator)` must draw its rows with
that generator only. The loop seeds it and saves its state in each checkpoint, so a resumed run
sees exactly the batches that an uninterrupted run would have seen; together with the RNG
states (rng.py) this makes a resume bit-for-bit exact on CPU. What a checkpoint holds, and when a
run may be resumed at all (the *same* experiment), is resume.py's.

Files written to `out_dir` (by rank 0 only when several processes train):
config.json (run and train config, which code made the run: provenance.py, and what data it read where
the stage records it: `read`), metrics.jsonl (one JSON object per logged step, then per evaluation),
loss.png, ckpt.pt, and tokenizer.json when a tokenizer is given.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from minillm.config import TrainConfig, check_section, to_dict
from minillm.datasets.run_data import known_records
from minillm.errors import ConfigError, DataError
from minillm.provenance import MADE_BY, run_record
from minillm.tokenizer import Tokenizer
from minillm.train.checkpoint import CKPT_NAME, CONFIG_NAME, TOKENIZER_NAME, model_config_dict
from minillm.train.distributed import (
    DistContext,
    accumulation_context,
    barrier,
    init_distributed,
    mean_over_ranks,
    shard_rows,
    wrap_model,
)
from minillm.train.health import Watched, check_loss, clip_gradients
from minillm.train.optim import AnyOptimizer, lr_at, make_optimizer, set_lr
from minillm.train.plots import plot_metrics
from minillm.train.precision import autocast, make_grad_scaler
from minillm.train.resume import check_run_folder, restore_training_state, save_training_state
from minillm.utils import (
    atomic_write_bytes,
    json_text,
    parse_json,
    resolve_device,
    seed_everything,
    write_json,
    writing,
)

GetBatch = Callable[[str, torch.Generator], dict[str, torch.Tensor]]
LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
CountTerms = Callable[[dict[str, torch.Tensor]], int]
Evaluate = Callable[[nn.Module], dict[str, float]]

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "loss.png"
# metrics.jsonl's "split" of a stage's end-of-run evaluation (stage 1's: up to a few hundred fixed validation
# windows, where the log's "val" rows score a few batches), appended after the loop's rows
FINAL_SPLIT = "final"
EVAL_SEED_OFFSET = 10_007  # validation batches come from their own generator, seeded cfg.seed + this


# --------------------------------------------------------------------------------------------------
# Batches: check what get_batch returned, cut it into this rank's micro-batches.


def check_batch(batch: dict[str, torch.Tensor], batch_size: int, split: str) -> None:
    """get_batch must return a dict of tensors with batch_size rows each."""
    if not isinstance(batch, dict):
        raise DataError(f"get_batch({split!r}) returned a {type(batch).__name__}: it must return a dict of "
                        "tensors, e.g. {'input_ids': ids}, which loss_fn receives")
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != batch_size:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(
                f"get_batch({split!r}) returned {key!r} with shape {shape}: expected a tensor of "
                f"batch_size={batch_size} rows"
            )


def check_batch_split(cfg: TrainConfig, ctx: DistContext) -> None:
    """The global batch must deal evenly into world_size shards of grad_accum_steps micro-batches each."""
    if cfg.batch_size % (cfg.grad_accum_steps * ctx.world_size):
        raise ConfigError(
            f"TrainConfig.batch_size={cfg.batch_size} must be divisible by grad_accum_steps x processes "
            f"= {cfg.grad_accum_steps} x {ctx.world_size}; set batch_size to a multiple of "
            f"{cfg.grad_accum_steps * ctx.world_size}"
        )


def micro_batches(batch: dict[str, torch.Tensor], cfg: TrainConfig, ctx: DistContext,
                  device: torch.device) -> list[dict[str, torch.Tensor]]:
    """This rank's shard of the global batch, dealt into grad_accum_steps micro-batches, on `device`.

    Micro-batch i holds rows i, i + grad_accum_steps, ...: as in `shard_rows`, rows kept together
    at the batch's end (SFT's replay windows) are spread over every micro-batch. Cut into contiguous
    slices, they would all fall in the last one, whose mean counts only 1/grad_accum_steps.
    """
    shard = shard_rows(batch, ctx)  # (batch_size / world_size, ...) per tensor
    k = cfg.grad_accum_steps
    return [{key: value[i::k].contiguous().to(device, non_blocking=True) for key, value in shard.items()}
            for i in range(k)]


def micro_batch_weights(parts: list[dict[str, torch.Tensor]], count_terms: CountTerms | None,
                        ctx: DistContext, device: torch.device) -> list[float]:
    """How much each micro-batch's mean loss counts, so that the summed gradient is the batch's.

    Without `count_terms`, 1/grad_accum_steps each: exact when every micro-batch's mean is over
    equally many terms (CLM's full windows). A masked loss is not: SFT's rows hold from 2 answer
    tokens to a whole replayed window of text. Weighting their means equally would over-weight the
    tokens of sparse micro-batches, so the gradient would change with grad_accum_steps (a bug
    common in training libraries until 2024; docs/findings.md). With `count_terms(part)` (how many terms
    the loss function averages over), micro-batch i counts n_i / N, its share of the terms of the
    whole global batch; times world_size, because DDP then averages the ranks' gradients.
    """
    if count_terms is None:
        return [1.0 / len(parts)] * len(parts)
    counts = [float(count_terms(part)) for part in parts]
    total = mean_over_ranks({"terms": sum(counts)}, ctx, device)["terms"] * ctx.world_size
    if total == 0:  # no term anywhere: the loss is 0 and so is every weight's effect
        return [1.0 / len(parts)] * len(parts)
    return [n * ctx.world_size / total for n in counts]


# --------------------------------------------------------------------------------------------------
# One optimizer step and one evaluation.


def checked_loss(out: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """loss_fn must return (a scalar loss tensor, a dict of extra metrics); say so, not torch."""
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor) and out[0].dim() == 0
            and isinstance(out[1], dict)):
        got = (f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
               else f"a {type(out).__name__}" if not isinstance(out, tuple)
               else f"({', '.join(type(o).__name__ for o in out)})")
        raise ConfigError(f"loss_fn returned {got}: it must return (loss, metrics), a scalar tensor and a dict "
                          "of floats to log (e.g. `return loss, {}`)")
    return out


def train_step(net: nn.Module, model: nn.Module, batch: dict[str, torch.Tensor], loss_fn: LossFn,
               optimizer: AnyOptimizer, scaler: torch.amp.GradScaler, cfg: TrainConfig,
               ctx: DistContext, device: torch.device, step: int, run: Watched,
               count_terms: CountTerms | None = None) -> dict[str, float]:
    """Forward, backward, clip and update on one global batch; return the step's metrics.

    `net` is what runs forward (the model, possibly wrapped by DDP and/or torch.compile);
    `model` is the bare module whose parameters the optimizer updates; `run` is how a NaN's message
    names the run (health.py).
    """
    optimizer.zero_grad(set_to_none=True)
    parts = micro_batches(batch, cfg, ctx, device)
    weights = micro_batch_weights(parts, count_terms, ctx, device)
    sums: dict[str, float] = {}
    for i, (part, weight) in enumerate(zip(parts, weights, strict=True)):
        with accumulation_context(net, last_micro_batch=i == len(parts) - 1):
            with autocast(device, cfg.dtype):
                loss, extra = checked_loss(loss_fn(net, part))  # forward + loss: the mean over this micro-batch
            # Weighted so that the summed gradient is the one of the whole batch's mean. The scaler
            # multiplies the loss for float16 (and is a no-op otherwise).
            scaler.scale(loss * weight).backward()
        for key, value in {"loss": loss.item(), **extra}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * weight
    metrics = mean_over_ranks(sums, ctx, device)  # every rank sees the global batch's numbers
    check_loss(metrics["loss"], step, run)

    scaler.unscale_(optimizer)  # back to the true gradients before measuring them (float16 only)
    # With float16 an overflow is expected now and then: the scaler skips that step and halves its
    # scale (from 2**16) until the gradients fit. A scale below 1 lifts nothing any more, so
    # gradients still not finite then are a NaN or inf of the model or the loss: stop, as in float32.
    overflow_expected = scaler.is_enabled() and scaler.get_scale() >= 1.0
    # the norm of all gradients as one long vector; then each gradient is scaled by min(1, grad_clip / norm)
    norm = clip_gradients(model, cfg.grad_clip, step, run, check=not overflow_expected)
    scaler.step(optimizer)  # optimizer.step() (skipped by the float16 scaler if gradients overflowed)
    scaler.update()
    return {**metrics, "grad_norm": norm.item()}


@torch.no_grad()
def validation_loss(net: nn.Module, get_batch: GetBatch, loss_fn: LossFn, cfg: TrainConfig,
                    ctx: DistContext, device: torch.device, count_terms: CountTerms | None = None) -> float:
    """Mean loss over cfg.eval_batches validation batches, the same batches at every evaluation;
    each batch's loss is its micro-batches' losses, weighted as in training."""
    generator = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
    total = 0.0
    for _ in range(cfg.eval_batches):
        batch = get_batch("val", generator)
        check_batch(batch, cfg.batch_size, "val")
        parts = micro_batches(batch, cfg, ctx, device)
        for part, weight in zip(parts, micro_batch_weights(parts, count_terms, ctx, device), strict=True):
            with autocast(device, cfg.dtype):
                loss, _ = loss_fn(net, part)
            total += loss.item() * weight
    return mean_over_ranks({"val_loss": total / cfg.eval_batches}, ctx, device)["val_loss"]


def run_evaluation(net: nn.Module, model: nn.Module, get_batch: GetBatch, loss_fn: LossFn,
                   evaluate: Evaluate | None, cfg: TrainConfig, ctx: DistContext,
                   device: torch.device, count_terms: CountTerms | None = None,
                   dropout: bool = True) -> dict[str, float]:
    """The validation loss, plus the stage's own metrics from `evaluate(model)` (run on rank 0); then
    back to training, with dropout on or off as `dropout` says."""
    model.eval()  # dropout off
    metrics = {"val_loss": validation_loss(net, get_batch, loss_fn, cfg, ctx, device, count_terms)}
    if evaluate is not None and ctx.is_main:
        with torch.no_grad():
            metrics.update(evaluate(model))
    barrier(ctx)
    model.train(dropout)
    return metrics


# --------------------------------------------------------------------------------------------------
# metrics.jsonl: one JSON object per line, appended as training goes.


def read_metrics(path: Path, up_to_step: float = math.inf) -> list[dict]:
    """The rows of `path` up to `up_to_step`, every row by default (a row cut off by a crash
    mid-write is dropped; a whole line that is not a row, which no crash writes, is a DataError)."""
    rows = []
    if path.is_file():
        # (minillm writes ASCII: a byte that is not UTF-8 was edited in, and its line reads as no row)
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), start=1):
            try:
                row = parse_json(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or not isinstance(row.get("step", 0), (int, float)):
                raise DataError(f"{path}, line {number}: {line[:40]!r} is not a row of metrics (a JSON object "
                                "with a numeric \"step\"); minillm wrote this file, so it was edited since: "
                                "delete or fix that line")
            if row.get("step", math.inf) <= up_to_step:
                rows.append(row)
    return rows


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Replace the file's content with `rows`, atomically."""
    atomic_write_bytes(path, "".join(json_text(row) + "\n" for row in rows).encode("utf-8"))


def append_metrics(path: Path, row: dict) -> None:
    """Add one row at the end of the file: a crash mid-write cuts at most that line, which read_metrics drops."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(json_text(row) + "\n")


def summarize(history: list[dict]) -> dict[str, Any]:
    """The latest value of every metric (train and validation) in the history."""
    final: dict[str, Any] = {}
    for row in history:
        final.update({key: value for key, value in row.items() if key != "split"})
    return final


# --------------------------------------------------------------------------------------------------
# The loop.


def train(model: nn.Module, cfg: TrainConfig, out_dir: str | Path, *, get_batch: GetBatch, loss_fn: LossFn,
          evaluate: Evaluate | None = None, run_config: dict | None = None, tokenizer: Tokenizer | None = None,
          resume: bool = False, desc: str = "train", model_kind: str = "gpt", title: str = "",
          log_y: bool = False, reference: tuple[str, float] | None = None, count_terms: CountTerms | None = None,
          dropout: bool = True, read: dict[str, dict | None] | None = None, settings: str = "",
          lr_setting: str = "") -> dict[str, Any]:
    """Train `model` for cfg.max_steps optimizer steps; return {"history": rows, "final": latest values}.

    get_batch(split, generator) -> dict of tensors with cfg.batch_size rows ("train" or "val"),
        drawn with the given generator only.
    loss_fn(model, batch) -> (scalar loss, dict of extra floats to log); it must call model(...)
        (forward) so that DDP sees the pass. Each extra is averaged as the loss is (micro-batches by
        their weights, then ranks), so it must be a mean, such as an accuracy, never a count.
    evaluate(model) -> dict of floats, called every cfg.eval_every steps next to the validation loss.
    count_terms(batch) -> how many terms loss_fn averages over in `batch`, for a loss whose batches
        hold unequal counts (a masked loss): micro-batches are then weighted by it (micro_batch_weights).
    resume: continue from out_dir/ckpt.pt if it exists (exactly where it stopped).
    desc: the run's stage ("clm", "sft", ...), as the progress bar shows it; every checkpoint records
        it, so that no other stage's checkpoint is ever resumed as this one.
    settings, lr_setting: where `cfg` is, as --set takes it ("clm.train"), for a NaN's message (health.Watched),
        and where cfg.lr is when it is not there (SFT's from-scratch baseline: "sft.scratch_lr"). Each stage
        passes its own: a progress bar's `desc` ("sft from scratch") need not name a section. A library
        caller's run, of no section, leaves them "": the message names each setting bare ("lr=...").
    dropout: False trains with dropout off (eval mode, which changes nothing else here): DPO's policy must
        read its log-probs as the frozen reference does, or an unmoved policy would not start at ln 2.
    title, log_y: the loss plot's title (what is plotted, e.g. "GPT next-token loss"; default `desc`)
        and whether its y axis is logarithmic (for a loss that flattens out); `reference` (label, value),
        a baseline it draws as a dashed line.
    read: records of the data the run read, by their key in config.json ("corpus", "instructions":
        datasets/run_data.py). Beside the settings, as `made_by` is: no setting, so `compare`'s table of
        settings passes them by; a resume on other data than a run's records is refused.
    """
    check_section(cfg, TrainConfig, "train")
    out_dir = Path(out_dir)
    ckpt_path, metrics_path = out_dir / CKPT_NAME, out_dir / METRICS_NAME
    moved_note = check_run_folder(out_dir, resume, desc, run_config, tokenizer, read)  # "" or inputs now elsewhere
    ctx, device = init_distributed(resolve_device(cfg.device))
    check_batch_split(cfg, ctx)
    model.to(device).train(dropout)
    optimizer = make_optimizer(model, cfg)
    scaler = make_grad_scaler(device, cfg.dtype)
    data_generator = torch.Generator()  # get_batch draws the training rows with this one only

    start_step, elapsed_before = 0, 0.0
    if ckpt_path.is_file():
        start_step, elapsed_before = restore_training_state(
            ckpt_path, model, optimizer, scaler, data_generator, cfg, ctx, model_kind, desc)
        if ctx.is_main:
            if moved_note:  # printed only now that restore_training_state has found the checkpoint is this stage's
                tqdm.write(moved_note)
            tqdm.write(f"{desc}: resuming from step {start_step} ({ckpt_path})")
    else:
        seed_everything(cfg.seed + ctx.rank)  # distinct dropout per rank; the same data for all
        data_generator.manual_seed(cfg.seed)
    history = read_metrics(metrics_path, up_to_step=start_step)  # a resume drops rows after the checkpoint
    if ctx.is_main:
        write_metrics(metrics_path, history)
        record = run_record(out_dir / CONFIG_NAME, device, resumed=start_step > 0)
        write_json(out_dir / CONFIG_NAME, {"run": run_config, "train": to_dict(cfg), "model_kind": model_kind,
                                           "model": model_config_dict(model), "world_size": ctx.world_size,
                                           **known_records(read), MADE_BY: record})
        if tokenizer is not None:
            tokenizer.save(out_dir / TOKENIZER_NAME)

    # What runs forward: the model, compiled to fused kernels if asked, wrapped in DDP on several ranks.
    net = wrap_model(torch.compile(model) if cfg.compile else model, ctx, device)
    watched = Watched(desc, settings, ckpt_path, lr=lr_setting, dtype=cfg.dtype)
    started = time.perf_counter()
    bar = tqdm(range(start_step + 1, cfg.max_steps + 1), initial=start_step, total=cfg.max_steps, desc=desc,
               disable=not ctx.is_main, dynamic_ncols=True)
    try:
        with torch.autograd.set_detect_anomaly(cfg.detect_anomaly):
            for step in bar:
                step_started = time.perf_counter()
                lr = lr_at(step - 1, cfg)  # steps count from 1 here, from 0 in the schedule
                set_lr(optimizer, lr)
                batch = get_batch("train", data_generator)
                check_batch(batch, cfg.batch_size, "train")
                metrics = train_step(net, model, batch, loss_fn, optimizer, scaler, cfg, ctx, device, step,
                                     watched, count_terms)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}")
                elapsed = elapsed_before + time.perf_counter() - started

                rows = []
                if step == 1 or step % cfg.log_every == 0 or step == cfg.max_steps:
                    rows.append({"step": step, "split": "train", **metrics, "lr": lr, "elapsed_s": elapsed,
                                 "samples_per_s": cfg.batch_size / (time.perf_counter() - step_started)})
                if step % cfg.eval_every == 0 or step == cfg.max_steps:
                    evaluation = run_evaluation(net, model, get_batch, loss_fn, evaluate, cfg, ctx, device,
                                                count_terms, dropout)
                    rows.append({"step": step, "split": "val", **evaluation})
                    if ctx.is_main:
                        shown = ", ".join(f"{key} {value:.4g}" for key, value in evaluation.items())
                        bar.write(f"{desc} step {step}: {shown}")
                history += rows
                if ctx.is_main:
                    for row in rows:
                        append_metrics(metrics_path, row)
                if step % cfg.save_every == 0 or step == cfg.max_steps:
                    if ctx.is_main:
                        plot_metrics(history, out_dir / PLOT_NAME, ("loss", "val_loss"), title=title or desc,
                                     ylabel="loss, val_loss (nats)", log_y=log_y, reference=reference)
                    save_training_state(ckpt_path, model, optimizer, scaler, data_generator, cfg, ctx,
                                        step, model_kind, elapsed, desc)
    finally:
        bar.close()
    return {"history": history, "final": summarize(history)}

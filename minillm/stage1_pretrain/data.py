"""Turning documents into training batches: one token stream, cut into windows. Shared by MLM and CLM.

Pretraining needs no labels, only text, so the data pipeline is short:

1. **Pack.** Every document is encoded and framed as `<bos> document <eos>`, and all of them are
   concatenated into one long 1-D tensor of token ids. Packing wastes nothing on padding: every
   position of every batch is real text. The separators tell the model where one document ends and
   an unrelated one begins (a GPT learns to predict `<eos>`, which is how it later knows to stop;
   a BERT simply never has them masked).
2. **Cut.** A training batch is `batch_size` windows of fixed length starting at random offsets,
   drawn with the generator the training loop owns (so a resumed run draws the same windows).
   Evaluation instead walks the stream in consecutive windows, so every number it reports is
   computed on a fixed set of tokens that a baseline can be measured on too.
3. **Count.** The unigram counts of the training stream give the baselines that tell us whether a
   model learnt anything beyond "which tokens are frequent".

Both stages also report alike: `as_subset_check` gives the training log's periodic checks names of
their own, apart from the final evaluation's, and `write_results` writes that final evaluation. Their
demos (BERT's blank, GPT's sample prompts) quote our world's weather bulletins only where
`talks_of_flash_floods`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import torch

from minillm.config import CLMConfig, MLMConfig, check_section, to_dict
from minillm.datasets.corpus import CORPUS
from minillm.datasets.run_data import data_record
from minillm.errors import DataError
from minillm.tokenizer import Tokenizer
from minillm.train.loop import FINAL_SPLIT, METRICS_NAME, read_metrics, write_metrics
from minillm.train.resume import check_run_folder
from minillm.utils import check_not_one_str, write_json

StageConfig = TypeVar("StageConfig", MLMConfig, CLMConfig)


def pack_documents(tokenizer: Tokenizer, docs: Sequence[str]) -> torch.Tensor:
    """Encode each document as `<bos> ids <eos>` and concatenate them into one 1-D stream of token ids."""
    stream: list[int] = []
    for doc in docs:
        stream.append(tokenizer.bos_id)
        stream.extend(tokenizer.encode(doc))
        stream.append(tokenizer.eos_id)
    return torch.tensor(stream, dtype=torch.long)


def open_pretraining_run(
    stage: str, cfg: StageConfig, tokenizer: Tokenizer, train_docs: Sequence[str], val_docs: Sequence[str],
    out_dir: str | Path, *, resume: bool, corpus: dict | None, extra_tokens: int,
) -> tuple[StageConfig, Path, dict, dict[str, torch.Tensor]]:
    """What MLM and CLM do before they build a model, in order; `stage` is "mlm" or "clm".

    Check the arguments; take the vocabulary size from the tokenizer; refuse a run folder that
    cannot be written (a run already there without resume, another stage's run, or a resume with
    another tokenizer, settings or corpus: refused now, before the corpus is packed, and checked again
    as training starts); pack both splits into token streams; and refuse streams too short for one
    batch. `extra_tokens` is how many tokens a window holds beyond the model's block: 1 for CLM (the
    last position's target), 0 for MLM. `corpus` says which text the documents are (datasets'
    `corpus_record`) for config.json; None records them as given in Python (run_data's `data_record`).

    Returns the config with its vocabulary size, `out_dir` as a Path, the data record config.json
    keeps, and the packed streams {"train": (N,), "val": (M,)}.
    """
    check_section(cfg, MLMConfig if stage == "mlm" else CLMConfig, f"train_{stage}")
    check_not_one_str(f"train_{stage}", train_docs=train_docs, val_docs=val_docs)
    out_dir = Path(out_dir)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size))
    read = {CORPUS: data_record(CORPUS, corpus, (train_docs, val_docs))}  # as config.json records it
    check_run_folder(out_dir, resume, stage, to_dict(cfg), tokenizer, read)
    T, B = cfg.model.block_size, cfg.train.batch_size
    window = T + extra_tokens
    tokens = f"{T}+{extra_tokens}" if extra_tokens else f"{T}"  # as a reader counts them: "128+1 tokens"
    streams = {"train": pack_documents(tokenizer, train_docs), "val": pack_documents(tokenizer, val_docs)}
    check_enough_tokens(streams["train"], B * window, "train", f"one batch ({B} windows of {tokens} tokens)", stage)
    check_enough_tokens(streams["val"], window, "validation", f"one window of {tokens} tokens", stage)
    return cfg, out_dir, read, streams


def talks_of_flash_floods(*doc_lists: Sequence[str]) -> bool:
    """Whether the corpus is (like) the generated one, whose bulletins the demos quote ("A flash flood
    watch will be in effect all [MASK]."). A corpus of your own gets demos made of its own text instead:
    a sentence from our world means nothing to a model that never read of it."""
    return any("flash flood" in doc for docs in doc_lists for doc in docs)


def check_enough_tokens(stream: torch.Tensor, needed: int, split: str, why: str, section: str = "") -> None:
    """Raise DataError if `stream` holds fewer than `needed` tokens, saying both numbers and a fix. A stage
    passes its `section` ("mlm" or "clm"), and the fix names its settings as --set takes them; without one
    (`random_windows`, `consecutive_windows`, which know only a window's length) the fix is a longer
    stream or a shorter window."""
    if len(stream) < needed:
        fix = (f"use a bigger corpus (--corpus, or --set corpus_mb=...), or lower --set {section}.model.block_size "
               f"or {section}.train.batch_size" if section else "use a longer stream, or a shorter window")
        raise DataError(f"the {split} split has {len(stream)} tokens but {why} needs {needed}; {fix}")


def random_windows(stream: torch.Tensor, length: int, batch_size: int,
                   generator: torch.Generator) -> torch.Tensor:
    """`batch_size` windows of `length` consecutive tokens at random offsets: (B, L), L = length."""
    check_enough_tokens(stream, length, "sampled", f"one window of {length} tokens")
    starts = torch.randint(len(stream) - length + 1, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(length)  # (L,)
    return stream[starts[:, None] + offsets[None, :]]  # (B, L)


def consecutive_windows(stream: torch.Tensor, length: int, stride: int, max_windows: int) -> torch.Tensor:
    """Windows of L = `length` tokens starting every `stride` tokens from the start: (W, L), W windows.

    With stride = length the windows tile the stream; with stride = length - 1 (next-token
    prediction) each window's first token is the previous window's last, so every token after the
    first is a target exactly once, up to the last whole window: a tail too short for one more
    window, and everything past `max_windows` windows, is not scored.
    """
    check_enough_tokens(stream, length, "evaluated", f"one window of {length} tokens")
    n = min(max_windows, (len(stream) - length) // stride + 1)
    starts = torch.arange(n) * stride  # (W,)
    return stream[starts[:, None] + torch.arange(length)[None, :]]  # (W, L)


SUBSET_WINDOWS = 64  # the periodic check during training scores this many validation windows
SUBSET_NOTE = (f"the final evaluation, on up to a few hundred fixed validation windows; the training log's "
               f"val_subset_* numbers are periodic checks on {SUBSET_WINDOWS} of them, and differ a little")


def as_subset_check(metrics: dict[str, float]) -> dict[str, float]:
    """Rename an evaluation on `SUBSET_WINDOWS` windows for the training log: val_x -> val_subset_x,
    and any other key x -> subset_x (unigram_masked_accuracy -> subset_unigram_masked_accuracy).

    The log checks a subset every `eval_every` steps (cheap); the run ends with the full evaluation
    (up to a few hundred windows) under the plain names. The two differ a little, and different
    names keep a reader from comparing one with the other as if they were the same number.
    """
    return {(key.replace("val_", "val_subset_", 1) if key.startswith("val_") else f"subset_{key}"): value
            for key, value in metrics.items()}


def unigram_counts(stream: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token id occurs in `stream`: (V,) float64."""
    return torch.bincount(stream, minlength=vocab_size).double()


def write_results(out_dir: Path, metrics: dict, streams: dict[str, torch.Tensor], steps: int,
                  train_result: dict) -> dict:
    """Complete a stage-1 run's final metrics, write them to results.json and as the last
    ("final") row of metrics.jsonl, and return them.

    The row takes the place of a final row that metrics.jsonl already holds: a run that is resumed
    after it finished (a rerun of a pipeline killed before it recorded the step, or `--resume` of a
    finished run) trains no step and evaluates again, and would otherwise log a second one."""
    metrics.update({
        "train_tokens": len(streams["train"]),
        "steps": steps,
        "final_train_loss": train_result["final"].get("loss"),
    })
    write_json(out_dir / "results.json", metrics)
    logged = [row for row in read_metrics(out_dir / METRICS_NAME) if row.get("split") != FINAL_SPLIT]
    write_metrics(out_dir / METRICS_NAME, [*logged, {"step": steps, "split": FINAL_SPLIT, **metrics}])
    return metrics

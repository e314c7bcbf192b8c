"""Masked language modelling: pretraining a BERT encoder by filling in blanks.

The whole stage in four pieces, each a function below:

- `get_batch`: random windows of the packed token stream, masked with BERT's recipe
  (`masking.py`). The labels hold the hidden tokens at ~15% of positions and -100 elsewhere.
- `mlm_loss`: cross-entropy between the encoder's logits and the labels, averaged over the chosen
  positions only. It is written out here rather than hidden in the model, because *which
  positions count* is the whole idea of MLM.
- `evaluate_mlm`: how often the top prediction at a masked position is the original token, on the
  validation split, next to a baseline that ignores the context and always answers the most
  frequent token. A model far above that baseline uses the words around the blank.
- `fill_mask`: the classic demo. "A flash flood watch will be in effect all [MASK]." should rank
  time spans first (night, day, weekend...), because that is what the corpus puts there. On a
  corpus of your own, `demo_sentence` blanks the last word of one of its validation sentences.

The training itself is the shared loop of `minillm/train`: forward -> `mlm_loss` -> backward ->
clip -> step, with logging, evaluation and checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from minillm.config import MLMConfig, to_dict
from minillm.errors import ModelInputError
from minillm.model import Bert
from minillm.stage1_pretrain.data import (
    SUBSET_WINDOWS,
    as_subset_check,
    consecutive_windows,
    open_pretraining_run,
    random_windows,
    talks_of_flash_floods,
    unigram_counts,
    write_results,
)
from minillm.stage1_pretrain.masking import IGNORE_INDEX, MaskedBatch, mask_tokens
from minillm.tokenizer import Tokenizer
from minillm.train import train
from minillm.train.distributed import is_main_process
from minillm.train.plots import save_figure, text_fonts
from minillm.utils import is_whole_number, seed_everything

MASK_LITERAL = "[MASK]"  # what a user types where the blank is
FLASH_FLOOD = "A flash flood watch will be in effect all [MASK]."
EVAL_SEED = 1234  # masks the validation windows the same way at every evaluation
MAX_EVAL_WINDOWS = 256  # the final evaluation scores the first 256 windows of the validation stream
# Validation blanks are chosen and corrupted with BERT's rates whatever rates the run trains with, so
# that runs which change them (mlm.mask_prob=0.4, say) are scored on the same blanks.
EVAL_MASKING = {"mask_prob": 0.15, "mask_token_prob": 0.8, "random_token_prob": 0.1}


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the chosen positions (labels != -100); the others give no signal.

    logits (B, T, V), labels (B, T); or only the M chosen positions' logits (M, V) and labels (M,).
    Written as a sum divided by a count so that a batch with no chosen position gives 0, not NaN.
    """
    chosen = labels != IGNORE_INDEX  # (B, T), or (M,) all True
    nll = F.cross_entropy(logits[chosen], labels[chosen], reduction="sum")  # logits[chosen]: (M, V)
    return nll / chosen.sum().clamp(min=1)


def batch_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loop's loss_fn: `mlm_loss` of a batch of masked windows, and its masked accuracy."""
    chosen = batch["labels"] != IGNORE_INDEX  # (B, T): the ~15% of positions that are predicted
    logits = model(batch["input_ids"], logits_at=chosen)  # (M, V): the head runs there only
    labels = batch["labels"][chosen]  # (M,) in the same order
    loss = mlm_loss(logits, labels)
    correct, total = masked_accuracy(logits, labels)
    return loss, {"masked_acc": correct / max(total, 1)}


def count_blanks(batch: dict[str, torch.Tensor]) -> int:
    """How many positions `batch_loss` averages over. The number of blanks differs from window to
    window, so with gradient accumulation the loop weights each micro-batch's mean by its share of
    them (`count_terms`): equal weights would give a blank of a sparse micro-batch more say."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


def masked_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, total) top-1 predictions at the chosen positions."""
    chosen = labels != IGNORE_INDEX
    return int((logits.argmax(-1)[chosen] == labels[chosen]).sum()), int(chosen.sum())


def mask_for_mlm(ids: torch.Tensor, cfg: MLMConfig, tokenizer: Tokenizer, generator: torch.Generator) -> MaskedBatch:
    """`mask_tokens` with the rates of `cfg` and the special ids of `tokenizer`."""
    return mask_tokens(
        ids, mask_id=tokenizer.mask_id, special_ids=tokenizer.special_tokens.values(),
        vocab_size=tokenizer.vocab_size, generator=generator, mask_prob=cfg.mask_prob,
        mask_token_prob=cfg.mask_token_prob, random_token_prob=cfg.random_token_prob,
    )


@torch.no_grad()
def evaluate_mlm(model: nn.Module, cfg: MLMConfig, tokenizer: Tokenizer, val_stream: torch.Tensor,
                 most_frequent_id: int, max_windows: int = MAX_EVAL_WINDOWS) -> dict[str, float]:
    """Masked-token accuracy on fixed validation windows, and the unigram baseline on the same blanks.

    The blanks are made by BERT's recipe (`EVAL_MASKING`), whatever rates the run trained with, so
    that runs with other rates face the same blanks: of the chosen positions, 80% show `<mask>`, 10%
    a random token and 10% their own token, and all of them are scored, as BERT's masked-LM accuracy
    is. The 10% that show their answer are the easiest, the random ones the hardest; `fill_mask`
    asks only the `<mask>` kind.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    T = cfg.model.block_size
    windows = consecutive_windows(val_stream, T, T, max_windows)  # (W, T): W windows
    blanks_cfg = dataclasses.replace(cfg, **EVAL_MASKING)
    masked = mask_for_mlm(windows, blanks_cfg, tokenizer, torch.Generator().manual_seed(EVAL_SEED))
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, len(windows), cfg.train.batch_size):
        rows = slice(start, start + cfg.train.batch_size)
        logits = model(masked.input_ids[rows].to(device))  # (b, T, V)
        labels = masked.labels[rows].to(device)  # (b, T): IGNORE_INDEX except at the blanks
        c, n = masked_accuracy(logits, labels)
        correct, total = correct + c, total + n
        loss_sum += float(mlm_loss(logits, labels)) * n
    model.train(was_training)
    unigram_correct = int((masked.labels[masked.chosen] == most_frequent_id).sum())
    return {
        "val_masked_loss": loss_sum / max(total, 1),
        "val_masked_accuracy": correct / max(total, 1),
        "unigram_masked_accuracy": unigram_correct / max(total, 1),
        "val_masked_positions": total,
    }


def unigram_masked_loss(counts: torch.Tensor) -> float:
    """The masked-LM loss, in nats, of a model blind to the context that answers every blank with the token
    frequencies `counts` (V,) of the training split: the entropy of those frequencies. A blank is any
    non-special position (the special tokens' counts are 0 here), so its original token follows them, and
    their cross-entropy with themselves is their entropy. The loss curve falls to about here first, while
    the model learns which tokens are common, and below it only once it reads the blank's neighbours."""
    probs = counts[counts > 0] / counts.sum()
    return float(-(probs * probs.log()).sum())


def _encode_with_mask(tokenizer: Tokenizer, text: str) -> tuple[list[int], int]:
    """Token ids of `text` with its one "[MASK]" replaced by the mask id, and that position."""
    if text.count(MASK_LITERAL) != 1:
        raise ModelInputError(
            f"fill-mask needs exactly one {MASK_LITERAL} in the text, found {text.count(MASK_LITERAL)}: "
            f"{text!r}; write e.g. {FLASH_FLOOD!r}"
        )
    left, right = text.split(MASK_LITERAL)
    # The space before a word belongs to that word's token (" night"), so a space before the
    # blank goes into the blank: the candidates are then the tokens the model saw in running text.
    left_ids = tokenizer.encode(left.rstrip(" ")) if left.strip() else []
    ids = [tokenizer.bos_id, *left_ids, tokenizer.mask_id, *tokenizer.encode(right), tokenizer.eos_id]
    return ids, 1 + len(left_ids)


@torch.no_grad()
def fill_mask(model: nn.Module, tokenizer: Tokenizer, text: str, top_k: int = 10) -> list[tuple[str, float]]:
    """The `top_k` most likely tokens for the "[MASK]" in `text`, as (piece, probability), best first."""
    if getattr(model, "kind", "bert") != "bert":  # a GPT sees only the words before the blank
        raise ModelInputError(f"fill_mask needs a BERT (it reads both sides of the blank), got a {model.kind!r} "
                              "model; load a masked-LM run")
    if not is_whole_number(top_k) or top_k < 1:
        raise ModelInputError(f"fill_mask: top_k={top_k!r} must be an integer >= 1")
    ids, position = _encode_with_mask(tokenizer, text)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device))[0, position]  # (V,)
    model.train(was_training)
    probs = torch.softmax(logits.float(), dim=-1)  # (V,)
    top = torch.topk(probs, min(top_k, len(probs)))
    return [(tokenizer.id_to_piece(int(i)), float(p)) for p, i in zip(top.values, top.indices, strict=True)]


def blank_last_word(sentence: str) -> str | None:
    """'It rained all night.' -> 'It rained all [MASK].'

    None for fewer than 3 words, for a last word without letters or digits ('...'), and for a
    sentence that already holds "[MASK]" (it would have two blanks, which fill-mask refuses).
    """
    words = sentence.split()
    if len(words) < 3 or MASK_LITERAL in sentence:
        return None
    word, punctuation = re.fullmatch(r"(.*?)([^\w]*)", words[-1]).groups()  # "night." -> "night", "."
    return " ".join(words[:-1]) + f" {MASK_LITERAL}{punctuation}" if word else None


def demo_sentence(tokenizer: Tokenizer, train_docs: Sequence[str], val_docs: Sequence[str], block_size: int,
                  max_tries: int = 500) -> str | None:
    """The sentence whose blank a finished run fills in, or None when none fits the context window.

    The flash-flood sentence when the corpus talks about flash floods (the generated one does) and
    it fits in `block_size` tokens; otherwise the first validation sentence that fits, with its last
    word blanked: an English sentence means nothing to a model trained on Korean, and a tokenizer
    trained on another script cuts it into more pieces than a small window holds.
    """
    candidates = [FLASH_FLOOD] if talks_of_flash_floods(val_docs, train_docs) else []
    sentences = (part.strip() for doc in val_docs for part in re.split(r"(?<=[.!?。])\s+|\n+", doc))
    candidates += [blank_last_word(sentence) for sentence in itertools.islice(sentences, max_tries)]
    for text in candidates:
        if text is not None and len(_encode_with_mask(tokenizer, text)[0]) <= block_size:
            return text
    return None


def plot_fill_mask(ranking: Sequence[tuple[str, float]], path: str | Path, title: str = FLASH_FLOOD) -> None:
    """A horizontal bar chart of a fill-mask ranking, best candidate on top."""
    pieces = [repr(piece) for piece, _ in ranking][::-1]
    probs = [p for _, p in ranking][::-1]
    with text_fonts([title, *pieces]):  # a Korean corpus gives Korean pieces: a font that draws them
        fig = Figure(figsize=(6, 0.35 * len(ranking) + 1.2))
        ax = fig.subplots()
        ax.barh(pieces, probs, color="tab:blue")
        ax.set_xlabel("probability")
        ax.set_title(title, fontsize=9, wrap=True)  # a long sentence wraps, its [MASK] in sight
        save_figure(fig, path, dpi=120)


def train_mlm(cfg: MLMConfig, tokenizer: Tokenizer, train_docs: Sequence[str], val_docs: Sequence[str],
              out_dir: str | Path, *, resume: bool = False, corpus: dict | None = None) -> dict | None:
    """Pretrain a BERT encoder with masked language modelling; write the run to `out_dir`.

    The model's vocabulary size is taken from the tokenizer. Returns the final metrics (also
    written to `out_dir/results.json` and as the last row of metrics.jsonl): validation masked
    accuracy and its unigram baseline (and the unigram loss, `unigram_masked_loss`, which loss.png draws
    as a dashed line), the fill-mask demo's prompt and top 5 (see `demo_sentence`;
    none when no sentence fits the window), and the step count; None on torchrun's ranks other than 0.
    `corpus` says which text the documents are (datasets' `corpus_record`), for config.json: a resume on other
    text is refused. None records them as documents given in Python (run_data's `data_record`).
    """
    cfg, out_dir, read, streams = open_pretraining_run(
        "mlm", cfg, tokenizer, train_docs, val_docs, out_dir, resume=resume, corpus=corpus, extra_tokens=0)
    T, B = cfg.model.block_size, cfg.train.batch_size
    counts = unigram_counts(streams["train"], tokenizer.vocab_size)
    counts[list(tokenizer.special_tokens.values())] = 0  # a masked position is never special
    most_frequent_id = int(counts.argmax())
    unigram_loss = unigram_masked_loss(counts)

    def get_batch(split: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        ids = random_windows(streams[split], T, B, generator)  # (B, T)
        masked = mask_for_mlm(ids, cfg, tokenizer, generator)
        return {"input_ids": masked.input_ids, "labels": masked.labels}

    def evaluate(model: nn.Module) -> dict[str, float]:
        return as_subset_check(evaluate_mlm(model, cfg, tokenizer, streams["val"], most_frequent_id,
                                            max_windows=SUBSET_WINDOWS))

    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = Bert(cfg.model)
    result = train(model, cfg.train, out_dir, get_batch=get_batch, loss_fn=batch_loss, count_terms=count_blanks,
                   evaluate=evaluate, run_config=to_dict(cfg), tokenizer=tokenizer, resume=resume, desc="mlm",
                   settings="mlm.train", model_kind="bert", title="BERT masked-LM loss", log_y=True, read=read,
                   reference=(f"unigram loss {unigram_loss:.2f} (token frequencies alone)", unigram_loss))
    if not is_main_process():  # under torchrun, rank 0 alone evaluates and writes the results
        return None

    metrics = evaluate_mlm(model, cfg, tokenizer, streams["val"], most_frequent_id)
    sentence = demo_sentence(tokenizer, train_docs, val_docs, T)
    ranking = fill_mask(model, tokenizer, sentence) if sentence else []
    if sentence:
        plot_fill_mask(ranking, out_dir / "fill_mask.png", title=sentence)
    else:
        print(f"note: no validation sentence fits the {T}-token window: no fill-mask demo for this run")
    metrics.update({
        "fill_mask_prompt": sentence,
        "fill_mask_top5": [[piece, round(p, 4)] for piece, p in ranking[:5]],
        "unigram_prediction": tokenizer.id_to_piece(most_frequent_id),
        "unigram_masked_loss": unigram_loss,
    })
    return write_results(out_dir, metrics, streams, cfg.train.max_steps, result)

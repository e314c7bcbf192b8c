"""Causal language modelling: pretraining a GPT by predicting the next token.

Every position of a sequence is a training example: given tokens 0..t, predict token t+1. One
window of T+1 tokens therefore gives T predictions at once, and the causal mask inside the model
makes sure position t never peeks at t+1. The "shift" is the whole trick, and it is written out in
`clm_loss`: the inputs are `ids[:, :-1]`, the targets are `ids[:, 1:]`.

Packed training data (`data.py`) means no padding: documents are joined as
`<bos> doc <eos> <bos> doc <eos> ...` and cut into windows anywhere, so the model also learns to end
a document with `<eos>` and to start a fresh one after it.

How good is the model? Perplexity, exp(mean negative log-likelihood per token), is "how many tokens
the model is hesitating between" on average. We compare it with a unigram model (token frequencies
from the training split, add-one smoothed) on exactly the same validation tokens: the unigram model
knows which tokens are common but nothing about context, so the gap is what the transformer
learnt from context. And we sample text, because numbers alone never say whether it reads well.

The GPT trained here is the starting point of stage 2 (instruction tuning) and stage 3 (RLHF):
the facts of the small world that it memorises now are the ones it can answer questions about later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minillm.config import CLMConfig, to_dict
from minillm.errors import ModelInputError
from minillm.model import GPT
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
from minillm.tokenizer import Tokenizer
from minillm.train import train
from minillm.train.distributed import is_main_process
from minillm.utils import seed_everything

SAMPLE_PROMPTS = ("", "A flash flood watch", "The", "In the town of")  # for the generated corpus; "": <bos> alone
OPENING_CHARS = 20  # a corpus of your own: its samples start from at most this much of a document (sample_prompts)
MAX_EVAL_WINDOWS = 512  # the final evaluation scores the first 512 windows (of T+1 tokens) of the validation stream


def clm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over a batch of windows ids (B, T+1)."""
    inputs, targets = ids[:, :-1], ids[:, 1:]  # (B, T) each: position t predicts token t+1
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # (B*T, V) against (B*T,)


@torch.no_grad()
def perplexity(model: nn.Module, stream: torch.Tensor, block_size: int, batch_size: int,
               max_windows: int = MAX_EVAL_WINDOWS) -> dict[str, float]:
    """exp(mean NLL) over the first `max_windows` consecutive windows of `stream` (see
    `consecutive_windows`); also returns how many tokens were scored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    windows = consecutive_windows(stream, block_size + 1, block_size, max_windows)  # (W, T+1): W windows
    nll_sum = 0.0
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(device)  # (b, T+1)
        nll_sum += float(clm_loss(model, ids)) * ids[:, 1:].numel()  # the batch's mean back to a sum over b*T
    model.train(was_training)
    n_tokens = windows[:, 1:].numel()
    return {"val_loss": nll_sum / n_tokens, "val_perplexity": math.exp(nll_sum / n_tokens),
            "val_tokens": n_tokens}


def unigram_perplexity(train_stream: torch.Tensor, val_stream: torch.Tensor, vocab_size: int,
                       block_size: int, max_windows: int = MAX_EVAL_WINDOWS) -> float:
    """Perplexity of an add-one unigram model fitted on `train_stream`, on the tokens `perplexity` scores."""
    counts = unigram_counts(train_stream, vocab_size) + 1.0  # add-one: no token has probability 0
    log_p = torch.log(counts / counts.sum())  # (V,)
    targets = consecutive_windows(val_stream, block_size + 1, block_size, max_windows)[:, 1:]  # (W, T)
    return math.exp(float(-log_p[targets].mean()))


def generate_text(model: GPT, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 60, temperature: float = 0.8,
                  top_k: int | None = 40, seed: int = 0, top_p: float | None = None) -> str:
    """Continue `prompt` (a document start, after `<bos>`) and return prompt + continuation.

    Sampling stops at `<eos>`, the end of a document, or where the context window is full. The same
    seed draws the same random numbers on any device (they are drawn on the CPU), so it gives the
    same text, unless another device's float rounding of the logits changes a token. A prompt that
    leaves no room in the window is refused (ModelInputError).
    """
    device = next(model.parameters()).device
    ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(prompt)]], device=device)  # (1, T0)
    block_size = model.config.block_size
    room = block_size - ids.shape[1]  # positions the window has left after the prompt
    if room < 1:
        raise ModelInputError(f"the prompt is {ids.shape[1]} tokens with <bos>, and the model's context holds "
                              f"{block_size}: no room is left to continue it; shorten the prompt to at most "
                              f"{block_size - 2} tokens")
    max_new_tokens = min(max_new_tokens, room)
    out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         eos_id=tokenizer.eos_id, generator=torch.Generator().manual_seed(seed))
    new_ids = out.new_ids[0][out.response_mask[0]].tolist()
    return prompt + tokenizer.decode(new_ids, skip_special=True)


def sample_prompts(train_docs: Sequence[str], val_docs: Sequence[str]) -> tuple[str, ...]:
    """What a finished run's samples start from: `SAMPLE_PROMPTS` for the generated corpus (see
    `talks_of_flash_floods`); for a corpus of your own, no prompt and the first three words of its
    first validation documents (as many prompts in all), so that the samples continue your text,
    not a weather bulletin of our world. At most OPENING_CHARS of them: Chinese or Japanese, written
    without spaces, has no words to count, and three "words" would be the whole document."""
    if talks_of_flash_floods(train_docs, val_docs):
        return SAMPLE_PROMPTS
    openings = dict.fromkeys(" ".join(doc.split()[:3])[:OPENING_CHARS].rstrip() for doc in val_docs)  # each once
    return ("", *list(openings)[:len(SAMPLE_PROMPTS) - 1])


def sample_texts(model: GPT, tokenizer: Tokenizer, block_size: int,
                 prompts: Sequence[str] = SAMPLE_PROMPTS) -> list[str]:
    """A sample for each of `prompts` that leaves room in the window to continue it.

    A tokenizer trained on another script (Korean, say) spells English prompts byte by byte, in
    more tokens than a small window holds: such a prompt gets no sample, and a note says so.
    """
    samples = []
    for seed, prompt in enumerate(prompts):  # the seed follows the prompt, skipped ones included
        if 1 + len(tokenizer.encode(prompt)) < block_size:  # <bos>, the prompt, and one new token at least
            samples.append(generate_text(model, tokenizer, prompt, seed=seed))
        else:
            print(f"note: the prompt {prompt!r} leaves no room in the {block_size}-token window: no sample for it")
    return samples


def train_clm(cfg: CLMConfig, tokenizer: Tokenizer, train_docs: Sequence[str], val_docs: Sequence[str],
              out_dir: str | Path, *, resume: bool = False, corpus: dict | None = None) -> dict | None:
    """Pretrain a GPT by next-token prediction on packed documents; write the run to `out_dir`.

    The model's vocabulary size is taken from the tokenizer. Returns the final metrics (also in
    `out_dir/results.json` and as the last row of metrics.jsonl): validation perplexity, the
    unigram baseline's, and samples; None on torchrun's ranks other than 0 (minillm.train.distributed).
    `corpus` says which text the documents are (datasets' `corpus_record`), for config.json: a resume on other
    text is refused. None records them as documents given in Python (run_data's `data_record`).
    """
    cfg, out_dir, read, streams = open_pretraining_run(
        "clm", cfg, tokenizer, train_docs, val_docs, out_dir, resume=resume, corpus=corpus, extra_tokens=1)
    T, B = cfg.model.block_size, cfg.train.batch_size

    def get_batch(split: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"ids": random_windows(streams[split], T + 1, B, generator)}  # (B, T+1)

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return clm_loss(model, batch["ids"]), {}

    def evaluate(model: nn.Module) -> dict[str, float]:
        return as_subset_check(perplexity(model, streams["val"], T, B, max_windows=SUBSET_WINDOWS))

    seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
    model = GPT(cfg.model)
    result = train(model, cfg.train, out_dir, get_batch=get_batch, loss_fn=loss_fn, evaluate=evaluate,
                   run_config=to_dict(cfg), tokenizer=tokenizer, resume=resume, desc="clm", settings="clm.train",
                   model_kind="gpt", title="GPT next-token loss", log_y=True, read=read)
    if not is_main_process():  # under torchrun, rank 0 alone evaluates and writes the results
        return None

    metrics = perplexity(model, streams["val"], T, B)
    metrics["unigram_perplexity"] = unigram_perplexity(streams["train"], streams["val"],
                                                       tokenizer.vocab_size, T)
    metrics["samples"] = sample_texts(model, tokenizer, T, sample_prompts(train_docs, val_docs))
    return write_results(out_dir, metrics, streams, cfg.train.max_steps, result)

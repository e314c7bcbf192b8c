"""Prompt + answer sequences as tensors, and the log-probabilities a GPT gives their tokens.

Every part of stage 3 handles the same object: a prompt followed by an answer, many of them at
once, of different lengths. This module is the one place where they become tensors and where a
model's opinion of them is read:

- Batches are built by stage 2's helpers: prompts are padded on the LEFT before generation
  (`stage2_sft.evaluate.left_pad`), so every row's next token is written in the same column;
  whole conversations are padded on the right (`stage2_sft.sft.collate`).
- `last_real_index` finds each row's last real token from the mask alone. It never searches for
  `<eos>`: the pad id may equal the eos id, and an answer that filled the whole length has none.
- `token_logprobs` is log p(token_t | tokens_<t) for every position: the quantity PPO turns into
  ratios and KL penalties, and DPO sums over an answer (`answer_logprob`). Both build on
  `next_token_logits` + `gather_logprobs`.

The padding never leaks into a result: masked positions are excluded by the caller's mask, and the
model's own attention mask keeps real tokens from looking at pads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.errors import ModelInputError


def last_real_index(attention_mask: Tensor) -> Tensor:
    """(B, T) bool -> (B,) the column of each row's last True, whatever padding surrounds it."""
    if not bool(attention_mask.any(dim=1).all()):
        raise ModelInputError("last_real_index: a row of the attention mask has no real token")
    T = attention_mask.shape[1]
    # The first True of the reversed row is the last True of the row.
    return T - 1 - attention_mask.flip(1).int().argmax(dim=1)  # (B,)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is True (all of them, or along `dim`)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def next_token_logits(model: nn.Module, ids: Tensor, attention_mask: Tensor, temperature: float = 1.0) -> Tensor:
    """The distribution over each next token: `(B, T-1, V)` logits, position t predicting ids[:, t+1].

    Dividing by `temperature` gives the distribution the tokens were *sampled* from when they were
    generated at that temperature; PPO must score them under that same distribution.
    """
    logits = model(ids, attention_mask=attention_mask)  # (B, T, V)
    return logits[:, :-1, :] / temperature  # (B, T-1, V)


def gather_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per position: (B, N, V), (B, N) -> (B, N)."""
    return torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)


def token_logprobs(model: nn.Module, ids: Tensor, attention_mask: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for every t: `(B, T-1)`. Mask the positions you need."""
    return gather_logprobs(next_token_logits(model, ids, attention_mask, temperature), ids[:, 1:])


def answer_logprob(model: nn.Module, ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> Tensor:
    """log p(answer | prompt) of each row: the sum of its answer tokens' log-probs, (B, T) -> (B,).

    `loss_mask` is True on the answer's tokens (and its `<eos>`), as the chat template marks them.
    """
    return (token_logprobs(model, ids, attention_mask) * loss_mask[:, 1:]).sum(dim=1)

"""BERT's masking recipe, written out: which tokens the model must guess, and what it sees instead.

A masked language model learns by filling in blanks. We hide some tokens of a sequence and train
the encoder to predict them from both sides of the context. BERT's recipe (Devlin et al., 2018):

1. Choose `mask_prob` (15%) of the positions at random, but never a special token (`<bos>`,
   `<eos>`, `<pad>`, ...): those carry no meaning to guess, and padding is not text at all.
2. Of the chosen positions, replace 80% by `<mask>`, 10% by a random ordinary token, and keep 10%
   unchanged. Why not always `<mask>`? Because `<mask>` never appears when the model is used
   later; if it only ever had to predict under `<mask>`, it could learn that unmasked tokens need no
   understanding. The random and kept tokens force it to build a good representation of *every*
   position, since any of them might be one it is asked about.
3. The labels hold the original token at the chosen positions and -100 everywhere else. -100 is
   the `ignore_index` of `torch.nn.functional.cross_entropy`: the loss (in `mlm.py`) is the average
   over the chosen positions only. The other 85% of positions give no signal, which is why MLM
   learns more slowly per token than next-token prediction, where every position has a target.

All randomness comes from the `torch.Generator` passed in, so a run is repeatable and its data
order can be resumed exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # cross_entropy skips targets equal to this


@dataclass
class MaskedBatch:
    """The model's input after masking, and what it must predict."""

    input_ids: torch.Tensor  # (B, T) the corrupted sequence the encoder sees
    labels: torch.Tensor  # (B, T) the original token where chosen, IGNORE_INDEX elsewhere
    chosen: torch.Tensor  # (B, T) bool: the positions the loss is computed on


def maskable_positions(ids: torch.Tensor, special_ids: Iterable[int]) -> torch.Tensor:
    """True where a token may be chosen: every position that holds an ordinary (non-special) token."""
    special = torch.tensor(sorted(set(special_ids)), dtype=ids.dtype, device=ids.device)
    return ~torch.isin(ids, special)  # (B, T) bool


def ordinary_token_ids(vocab_size: int, special_ids: Iterable[int]) -> torch.Tensor:
    """All ids that are not special: the pool the 'random token' replacements are drawn from."""
    special = set(special_ids)
    return torch.tensor([i for i in range(vocab_size) if i not in special], dtype=torch.long)


def mask_tokens(
    ids: torch.Tensor,
    *,
    mask_id: int,
    special_ids: Iterable[int],
    vocab_size: int,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
) -> MaskedBatch:
    """Apply BERT's recipe to a batch of token ids `ids` (B, T); `ids` itself is left untouched.

    Each ordinary position is chosen independently with probability `mask_prob`; each chosen one
    then becomes `<mask>` with probability `mask_token_prob`, a random ordinary token with
    probability `random_token_prob`, and stays as it is otherwise.
    """
    special_ids = list(special_ids)
    # Everything is drawn on the CPU, where the generator lives; the result moves to ids' device.
    original = ids.cpu()  # (B, T)
    chosen = torch.rand(original.shape, generator=generator) < mask_prob  # (B, T) bool
    chosen &= maskable_positions(original, special_ids)

    # One more uniform number per position decides what a chosen token turns into:
    # [0, p_mask) -> <mask>, [p_mask, p_mask + p_random) -> random token, the rest -> unchanged.
    action = torch.rand(original.shape, generator=generator)  # (B, T)
    to_mask = chosen & (action < mask_token_prob)  # (B, T) bool
    to_random = chosen & (action >= mask_token_prob) & (action < mask_token_prob + random_token_prob)  # (B, T) bool

    pool = ordinary_token_ids(vocab_size, special_ids)  # (V - number of special tokens,)
    # (B, T): one draw for every position, in one call, kept only where to_random
    random_ids = pool[torch.randint(len(pool), original.shape, generator=generator)]

    input_ids = original.clone()
    input_ids[to_mask] = mask_id
    input_ids[to_random] = random_ids[to_random]
    labels = torch.where(chosen, original, torch.full_like(original, IGNORE_INDEX))  # (B, T)
    return MaskedBatch(input_ids.to(ids.device), labels.to(ids.device), chosen.to(ids.device))

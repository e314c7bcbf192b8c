"""BERT's 15% / 80-10-10 masking: proportions checked statistically, specials never touched."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.stage1_pretrain.masking import IGNORE_INDEX, mask_tokens, ordinary_token_ids

VOCAB = 300
SPECIAL = (0, 1, 2, 3, 4, 5)  # pad, bos, eos, mask, user, assistant: the layout does not matter here
PAD, BOS, EOS, MASK = 0, 1, 2, 3


def _batch(rows: int = 64, length: int = 512, seed: int = 0) -> torch.Tensor:
    """Ordinary tokens framed by <bos> ... <eos>, then a run of <pad> of random length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), VOCAB, (rows, length), generator=g)
    ids[:, 0] = BOS
    for r in range(rows):
        end = int(torch.randint(length // 2, length, (1,), generator=g))
        ids[r, end] = EOS
        ids[r, end + 1:] = PAD
    return ids


def _mask(ids: torch.Tensor, seed: int = 1, **kw):
    return mask_tokens(ids, mask_id=MASK, special_ids=SPECIAL, vocab_size=VOCAB,
                       generator=torch.Generator().manual_seed(seed), **kw)


def _within(count: int, n: int, p: float, n_std: float = 5.0) -> bool:
    """Is `count` successes out of `n` trials consistent with probability p (binomial, 5 std)?"""
    return abs(count - n * p) <= n_std * math.sqrt(n * p * (1 - p))


def test_proportions_follow_bert_recipe():
    ids = _batch()
    out = _mask(ids)
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    n_ordinary, n_chosen = int(ordinary.sum()), int(out.chosen.sum())
    assert n_ordinary > 20_000
    assert _within(n_chosen, n_ordinary, 0.15)

    chosen_in, chosen_orig = out.input_ids[out.chosen], ids[out.chosen]
    n_masked = int((chosen_in == MASK).sum())
    n_kept = int((chosen_in == chosen_orig).sum())
    n_random = n_chosen - n_masked - n_kept
    # A random replacement equals the original token by chance with probability 1 / pool size.
    p_same = 1 / (VOCAB - len(SPECIAL))
    assert _within(n_masked, n_chosen, 0.8)
    assert _within(n_kept, n_chosen, 0.1 + 0.1 * p_same)
    assert _within(n_random, n_chosen, 0.1 * (1 - p_same))


def test_other_probabilities_are_respected():
    ids = _batch(seed=3)
    out = _mask(ids, mask_prob=0.4, mask_token_prob=0.5, random_token_prob=0.5)
    ordinary = ~torch.isin(ids, torch.tensor(SPECIAL))
    n_chosen = int(out.chosen.sum())
    assert _within(n_chosen, int(ordinary.sum()), 0.4)
    assert _within(int((out.input_ids[out.chosen] == MASK).sum()), n_chosen, 0.5)
    # No token is kept beyond the chance that a random draw hits the original.
    assert int((out.input_ids[out.chosen] == ids[out.chosen]).sum()) < 0.02 * n_chosen


def test_special_and_padding_tokens_are_never_chosen_or_changed():
    ids = _batch(seed=5)
    out = _mask(ids, mask_prob=0.9)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not out.chosen[special].any()
    assert torch.equal(out.input_ids[special], ids[special])
    assert (out.labels[special] == IGNORE_INDEX).all()


def test_specials_at_the_end_of_the_vocabulary_as_in_our_bpe():
    """Our BPE puts its specials after the 256 bytes and the merges; the tests above put them first.
    Renumbering every id so that the specials come last must give the same masking, renumbered: the
    same positions chosen, the same share masked, kept and replaced, and no special ever drawn."""
    def renumber(t: torch.Tensor) -> torch.Tensor:  # ids 6..299 -> 0..293, specials 0..5 -> 294..299
        return (t - len(SPECIAL)) % VOCAB

    ids = _batch(seed=13)
    out = _mask(ids, mask_prob=0.5)
    specials_last = [int(renumber(torch.tensor(i))) for i in SPECIAL]
    moved = mask_tokens(renumber(ids), mask_id=int(renumber(torch.tensor(MASK))), special_ids=specials_last,
                        vocab_size=VOCAB, generator=torch.Generator().manual_seed(1), mask_prob=0.5)
    assert torch.equal(moved.chosen, out.chosen)
    assert torch.equal(moved.input_ids, renumber(out.input_ids))
    assert torch.equal(moved.labels[out.chosen], renumber(out.labels[out.chosen]))
    assert not torch.isin(moved.input_ids[moved.chosen & (moved.input_ids != specials_last[MASK])],
                          torch.tensor(specials_last)).any()


def test_labels_hold_originals_only_at_chosen_positions():
    ids = _batch(seed=7)
    out = _mask(ids)
    assert torch.equal(out.labels[out.chosen], ids[out.chosen])
    assert (out.labels[~out.chosen] == IGNORE_INDEX).all()
    assert torch.equal(out.input_ids[~out.chosen], ids[~out.chosen])


def test_random_replacements_are_ordinary_tokens_spread_over_the_vocabulary():
    ids = _batch(seed=9)
    out = _mask(ids, mask_prob=1.0, mask_token_prob=0.0, random_token_prob=1.0)
    replaced = out.input_ids[out.chosen]
    assert not torch.isin(replaced, torch.tensor(SPECIAL)).any()
    assert replaced.min() >= len(SPECIAL) and replaced.max() < VOCAB
    # ~80 draws per ordinary id: every one of them comes up, and nothing else
    assert replaced.unique().tolist() == list(range(len(SPECIAL), VOCAB))
    assert ordinary_token_ids(10, [0, 1, 5]).tolist() == [2, 3, 4, 6, 7, 8, 9]
    assert ordinary_token_ids(6, [4, 5]).tolist() == [0, 1, 2, 3]  # id 0 is ordinary in BPE


def test_same_seed_same_mask_and_input_untouched():
    ids = _batch(seed=11)
    before = ids.clone()
    a, b, c = _mask(ids, seed=4), _mask(ids, seed=4), _mask(ids, seed=5)
    assert torch.equal(ids, before)
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.chosen, c.chosen)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 4), length=st.integers(1, 40), p=st.floats(0.01, 1.0), seed=st.integers(0, 999))
def test_invariants_hold_for_any_shape_and_rate(rows, length, p, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (rows, length), generator=g)
    out = _mask(ids, seed=seed, mask_prob=p)
    assert out.input_ids.shape == out.labels.shape == ids.shape
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not out.chosen[special].any()
    changed = out.input_ids != ids
    assert not changed[~out.chosen].any()

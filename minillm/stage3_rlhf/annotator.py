"""The simulated annotator: a written-down account of what people prefer in an answer.

Real RLHF pays people to rank answers. Here a scoring function plays them, so that anyone can run
stage 3 and, above all, so that we can *measure* whether RL made answers better. Its score of an
answer to a record (whose `reference` is the ideal answer) adds, from the heaviest weight down:

    correct    +2.0  the right answer is in there (`contains_answer`): correct comes first
    exact      +1.0  ... and it is nothing but the answer (`is_correct`, exact after normalisation)
    full_form  +0.5  written as the reference writes it ("The Mell." rather than the terse "Mell")
    near_miss  +0.5  x word overlap (F1) with the reference: a near miss beats nonsense
    rude       -0.75 it contains a rude phrase ("Ugh, fine.", "Stop wasting my time.", ...)
    verbose    -0.5  x the share of words beyond what the reference needs (capped at 1)

so the training styles of the instruction suite come out in the order people would put them:
ideal (4.0) > terse (3.5) > padded, impolite (about 1.3 to 1.8) > wrong (below 0.5).

People disagree, with each other and with themselves, so the annotator adds Gaussian noise of
standard deviation `noise` to each score before ranking. The same function WITHOUT noise is the
**gold** judge: it evaluates the final policies. The policy never sees it; it only sees the reward
model, which learnt from the noisy rankings. When the policy finds answers the reward model likes
but the gold judge does not, that is reward hacking, and it shows up as a gap between the two.

Two numbers say how much the rankings can teach:
- `self_agreement`: two noisy annotations of the same answers order a pair the same way this often
  (InstructGPT's labellers agreed with each other about 73% of the time);
- `gold_agreement`: the noisy rankings order a pair as the gold judge does this often: the best
  pairwise accuracy any reward model can reach on held-out noisy rankings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minillm.datasets.instructions import RUDE_CLOSERS, RUDE_OPENERS, contains_answer, is_correct, normalize_answer
from minillm.stage2_sft.evaluate import token_f1

WEIGHTS = {"correct": 2.0, "exact": 1.0, "full_form": 0.5, "near_miss": 0.5, "rude": -0.75, "verbose": -0.5}
RUDE_PHRASES = RUDE_OPENERS + RUDE_CLOSERS + ("duh", "stupid", "shut up")


def score_parts(record: dict, answer: str) -> dict[str, float]:
    """The ingredients of the score, each in [0, 1] (see the module docstring)."""
    reference = record["reference"]
    n_answer, n_reference = len(normalize_answer(answer).split()), len(normalize_answer(reference).split())
    return {
        "correct": float(contains_answer(answer, reference)),
        "exact": float(is_correct(answer, reference)),
        "full_form": float(" ".join(answer.lower().split()) == " ".join(reference.lower().split())),
        "near_miss": token_f1(answer, reference),
        "rude": float(any(contains_answer(answer, phrase) for phrase in RUDE_PHRASES)),
        "verbose": min(1.0, max(0, n_answer - n_reference) / (n_reference + 2)),
    }


def ranking_to_pairs(ranking: Sequence[int]) -> list[tuple[int, int]]:
    """All K-choose-2 (better, worse) index pairs of a best-first ranking."""
    return [(ranking[i], ranking[j]) for i in range(len(ranking)) for j in range(i + 1, len(ranking))]


def gold_score(record: dict, answer: str) -> float:
    """What people prefer, without noise: the judge of the final policies."""
    return sum(WEIGHTS[k] * v for k, v in score_parts(record, answer).items())


def rank_answers(scores: Sequence[float]) -> list[int]:
    """Indices of the answers from the highest score to the lowest (ties: the earlier answer first)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


class SimulatedAnnotator:
    """Ranks K answers by gold score plus Gaussian noise of std `noise`, from its own seeded generator."""

    def __init__(self, noise: float, seed: int = 0) -> None:
        self.noise = noise
        self.generator = torch.Generator().manual_seed(seed)

    def noisy_scores(self, record: dict, answers: Sequence[str]) -> list[float]:
        jitter = torch.randn(len(answers), generator=self.generator, dtype=torch.float64) * self.noise
        return [gold_score(record, a) + float(e) for a, e in zip(answers, jitter, strict=True)]

    def rank(self, record: dict, answers: Sequence[str]) -> list[int]:
        """A best-first ranking (0-based indices) of `answers`."""
        return rank_answers(self.noisy_scores(record, answers))


def pair_agreement(ranking_a: Sequence[int], ranking_b: Sequence[int]) -> float:
    """The share of the K-choose-2 pairs that two rankings of the same answers order the same way."""
    place = {answer: i for i, answer in enumerate(ranking_b)}
    pairs = ranking_to_pairs(ranking_a)
    return sum(place[better] < place[worse] for better, worse in pairs) / len(pairs)


def self_agreement(records: Sequence[dict], answer_sets: Sequence[Sequence[str]], noise: float,
                   seed: int = 0) -> float:
    """How often two independent noisy annotations agree on a pair, over the given answer sets."""
    first, second = SimulatedAnnotator(noise, seed), SimulatedAnnotator(noise, seed + 1)
    agreements = [pair_agreement(first.rank(r, a), second.rank(r, a)) for r, a in zip(records, answer_sets,
                                                                                         strict=True)]
    return sum(agreements) / len(agreements)


def gold_agreement(records: Sequence[dict], answer_sets: Sequence[Sequence[str]],
                   rankings: Sequence[Sequence[int]]) -> float:
    """How often the given rankings order a pair as the gold judge does (gold ties count half)."""
    hits, total = 0.0, 0
    for record, answers, ranking in zip(records, answer_sets, rankings, strict=True):
        gold = [gold_score(record, a) for a in answers]
        for better, worse in ranking_to_pairs(ranking):
            hits += 1.0 if gold[better] > gold[worse] else 0.5 if gold[better] == gold[worse] else 0.0
            total += 1
    return hits / max(total, 1)


def win_rate(gold_a: Sequence[float], gold_b: Sequence[float]) -> float:
    """The share of prompts where answer a scores above answer b by gold; ties count half."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(gold_a, gold_b, strict=True)]
    return sum(wins) / len(wins)


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

so the training styles of the instruction suite come out in the order people would put them
(gold scores of data/instructions.jsonl's training responses): ideal (4.0) > terse (3.5) > padded
(1.55 to 2.25, mean 1.8) > impolite (0.9 to 1.7, mean 1.2) > wrong (below 0.5).

People disagree, with each other and with themselves, so the annotator adds Gaussian noise of
standard deviation `noise` to each score before ranking. People also say "these two are about
equally good" (Llama 2's annotators could answer "negligibly better / unsure"): an answer whose
noisy score lies within `tie_margin` of the next better one shares its place in the ranking (so
ties chain: 1.0, 0.8, 0.6 with a margin of 0.3 are one place), written as a list:
`[2, [0, 3], 1]` says answer 2 is best, 0 and 3 tie, 1 is worst. A tie is no comparison, so it
trains nothing and is not counted when a reward model's accuracy is measured; what is left are the
pairs a person would actually call. The scoring function WITHOUT noise is the
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

import math
import statistics
from collections.abc import Sequence
from itertools import pairwise

import torch

from minillm.datasets.answers import contains_answer, folded, is_correct, normalize_answer
from minillm.datasets.instructions import RUDE_CLOSERS, RUDE_OPENERS
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
        "full_form": float(_as_written(answer) == _as_written(reference)),
        "near_miss": token_f1(answer, reference),
        "rude": float(any(contains_answer(answer, phrase) for phrase in RUDE_PHRASES)),
        "verbose": min(1.0, max(0, n_answer - n_reference) / (n_reference + 2)),
    }


def _as_written(text: str) -> str:
    """Folded (as in `normalize_answer`), spaces collapsed: punctuation and articles kept, so that
    "The Mell." is written as the reference writes it and "Mell" is not; decomposed Hangul is the same text."""
    return " ".join(folded(text).split())


Ranking = Sequence[int | Sequence[int]]  # best first; a list inside is a group of tied answers


def ranking_places(ranking: Ranking) -> list[list[int]]:
    """The answers at each place of a ranking, best place first: [2, [0, 3], 1] -> [[2], [0, 3], [1]]."""
    return [list(place) if isinstance(place, (list, tuple)) else [place] for place in ranking]


def best_and_worst(ranking: Ranking) -> tuple[int, int] | None:
    """The best and the worst answer of a ranking (the first of a tied place); None when all tie."""
    places = ranking_places(ranking)
    return (places[0][0], places[-1][0]) if len(places) > 1 else None


def answer_places(ranking: Ranking) -> dict[int, int]:
    """answer index -> its place (0 = best; tied answers share a place)."""
    return {answer: place for place, group in enumerate(ranking_places(ranking)) for answer in group}


def has_style_flaw(record: dict, answer: str) -> bool:
    """Rudeness (right answer or not), or the right answer wrapped in filler: what RLHF should teach
    the model to drop."""
    parts = score_parts(record, answer)
    return bool(parts["rude"]) or bool(parts["correct"] and not parts["exact"])


def is_wrong(record: dict, answer: str) -> bool:
    """The right answer is nowhere in it: what a policy can only fix by knowing the fact or the task."""
    return not contains_answer(answer, record["reference"])


def ranking_to_pairs(ranking: Ranking) -> list[tuple[int, int]]:
    """Every (better, worse) index pair of a best-first ranking: K-choose-2 of them without ties;
    answers that tie give no pair."""
    places = ranking_places(ranking)
    return [(better, worse) for i, high in enumerate(places) for low in places[i + 1:]
            for better in high for worse in low]


def gold_score(record: dict, answer: str) -> float:
    """What people prefer, without noise: the judge of the final policies."""
    return sum(WEIGHTS[k] * v for k, v in score_parts(record, answer).items())


def rank_answers(scores: Sequence[float], tie_margin: float = 0.0) -> list[int | list[int]]:
    """A best-first ranking of answers by score; an answer within `tie_margin` of the one above it
    joins its place (a list of tied indices). Equal scores without a margin: the earlier answer first."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    places = [[order[0]]]
    for above, i in pairwise(order):
        if scores[above] - scores[i] < tie_margin:
            places[-1].append(i)
        else:
            places.append([i])
    return [group[0] if len(group) == 1 else group for group in places]


class SimulatedAnnotator:
    """Ranks K answers by gold score plus Gaussian noise of std `noise`, from its own seeded generator;
    an answer whose noisy score is within `tie_margin` of the next better one ties with it."""

    def __init__(self, noise: float, seed: int = 0, tie_margin: float = 0.0) -> None:
        self.noise = noise
        self.tie_margin = tie_margin
        self.generator = torch.Generator().manual_seed(seed)

    def noisy_scores(self, record: dict, answers: Sequence[str]) -> list[float]:
        jitter = torch.randn(len(answers), generator=self.generator, dtype=torch.float64) * self.noise
        return [gold_score(record, a) + float(e) for a, e in zip(answers, jitter, strict=True)]

    def rank(self, record: dict, answers: Sequence[str]) -> list[int | list[int]]:
        """A best-first ranking (0-based indices, tied answers grouped in a list) of `answers`."""
        return rank_answers(self.noisy_scores(record, answers), self.tie_margin)


def agreement_counts(ranking_a: Ranking, scores_b: dict[int, float]) -> tuple[float, int]:
    """(hits, pairs) over the pairs that ranking a calls: b orders it the same way (1), ties it
    (1/2: a coin would get half), or the other way (0). `scores_b`: higher is better, per answer."""
    pairs = ranking_to_pairs(ranking_a)
    hits = sum(1.0 if scores_b[better] > scores_b[worse] else 0.5 if scores_b[better] == scores_b[worse] else 0.0
               for better, worse in pairs)
    return hits, len(pairs)


def place_scores(ranking: Ranking) -> dict[int, float]:
    """A ranking as scores, higher is better (minus each answer's place), to compare with `agreement_counts`."""
    return {answer: -float(place) for answer, place in answer_places(ranking).items()}


def self_agreement(records: Sequence[dict], answer_sets: Sequence[Sequence[str]], noise: float,
                   seed: int = 0, tie_margin: float = 0.0) -> float:
    """How often a second noisy annotation agrees with the first on a pair the first one calls,
    pooled over the given answer sets: how consistent the labels are. It is not the ceiling of a
    reward model's pairwise accuracy: a model that learnt the gold judge itself agrees with the held-out
    rankings as often as `gold_agreement`, which is higher (both annotations carry noise, gold none)."""
    first, second = SimulatedAnnotator(noise, seed, tie_margin), SimulatedAnnotator(noise, seed + 1, tie_margin)
    hits, total = 0.0, 0
    for record, answers in zip(records, answer_sets, strict=True):
        h, n = agreement_counts(first.rank(record, answers), place_scores(second.rank(record, answers)))
        hits, total = hits + h, total + n
    return hits / max(total, 1)


def gold_agreement(records: Sequence[dict], answer_sets: Sequence[Sequence[str]],
                   rankings: Sequence[Ranking]) -> float:
    """How often the given rankings order a pair as the gold judge does (gold ties count half)."""
    hits, total = 0.0, 0
    for record, answers, ranking in zip(records, answer_sets, rankings, strict=True):
        h, n = agreement_counts(ranking, dict(enumerate(gold_score(record, a) for a in answers)))
        hits, total = hits + h, total + n
    return hits / max(total, 1)


def win_outcomes(gold_a: Sequence[float], gold_b: Sequence[float]) -> list[float]:
    """Per prompt: 1 if answer a scores above answer b by gold, 0.5 for a tie, 0 if below."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(gold_a, gold_b, strict=True)]


def win_rate(gold_a: Sequence[float], gold_b: Sequence[float]) -> float:
    """The share of prompts where answer a scores above answer b by gold; ties count half."""
    wins = win_outcomes(gold_a, gold_b)
    return sum(wins) / len(wins)


def win_rate_stderr(gold_a: Sequence[float], gold_b: Sequence[float]) -> float | None:
    """The standard error of `win_rate`: how far it could move with other prompts of the same kind.

    The win rate is a mean of n per-prompt outcomes, so its standard error is their sample standard
    deviation over sqrt(n). On the tiny preset's 200 prompts it is 0.02 to 0.03 (ties, worth 0.5 to
    both sides, make it smaller than a coin's 0.035): two runs that differ by less than ~0.05 (two
    standard errors) are not told apart by this measurement.
    """
    return mean_stderr(win_outcomes(gold_a, gold_b))


def mean_stderr(values: Sequence[float]) -> float | None:
    """The standard error of the mean of `values`: their sample standard deviation over sqrt(n). One
    value has no spread to measure: None, a figure not measured (written null, utils.json_text)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def with_stderr(value: float, stderr: float | None, signed: bool = False) -> str:
    """A figure and its standard error as the reports print them: "0.650 ± 0.034" ("+0.650" if `signed`).

    One prompt has no spread to measure, so it has no standard error (mean_stderr): that is written
    "± n/a (1 prompt)", not "± None", which would read as a broken measurement (e.g. --set
    ppo.eval_prompts=1). A run made before minillm wrote null there holds NaN: the same.
    """
    figure = f"{value:+.3f}" if signed else f"{value:.3f}"
    if stderr is None or not math.isfinite(stderr):
        return f"{figure} ± n/a (1 prompt)"
    return f"{figure} ± {stderr:.3f}"


def win_rate_text(result: dict) -> str:
    """A policy's win rate against the SFT model with its standard error, as the report, the command line
    and the lessons print it (`with_stderr`: "0.650 ± 0.034", "± n/a (1 prompt)" where one prompt was
    judged); the rate alone from a run made before the errors were measured."""
    if "win_rate_stderr" not in result:
        return f"{result['win_rate_vs_sft']:.3f}"
    return with_stderr(result["win_rate_vs_sft"], result["win_rate_stderr"])


def win_rate_ceiling(records: Sequence[dict], gold_b: Sequence[float]) -> float:
    """The win rate a perfect policy would reach against answers with gold scores `gold_b`.

    A perfect answer is the reference itself (the highest gold score there is). Where answer b is
    already perfect the best a policy can do is tie (0.5); everywhere else it can win. So if the SFT
    model's samples are perfect on 37% of the prompts (as in the README's tiny run), no policy can
    win more than 1 - 0.37 / 2 = 0.815 of the comparisons: the number to read a win rate against.
    """
    return win_rate([gold_score(r, r["reference"]) for r in records], gold_b)

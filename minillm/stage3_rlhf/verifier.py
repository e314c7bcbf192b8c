"""Verifiable rewards: a program checks the answer, no model and no person involved.

RL with verifiable rewards (RLVR) trains on tasks whose answers can be checked: a maths result, a
unit test, or here, our small world, which knows the right answer to every request (the record's
`reference`). The reward is deliberately plain:

    1.0  the right answer is in it (`contains_answer`, as the gold judge's "correct" reads it)
  + 0.2  ... and it is nothing but the answer (`is_correct`): a small bonus for an exact answer
    0.0  otherwise

Nothing else: no politeness, no length. That is the point of RLVR: the reward cannot be talked
into anything, so there is no reward model to hack.

A checker that asks only "is the right answer in there?" can still be gamed: an answer that names
every river of the world contains the right river. So the checker also asks "does the answer
commit?": an answer that contains, beside the right answer, *another answer of the same kind* (a
reference of another record of the same task family: another river, another number, another item
of the list) hedges, and earns nothing. The small world knows every candidate, because every
record of a family is an example of what that family's answers look like. A family may hold several
kinds of answer (world_fact asks rivers, regions, home towns and jobs), so a candidate that the
question itself names is its subject, not a second guess ("Dorvik lies on the Mell." answers "Which
river runs through Dorvik?" once), unless the question names the right answer too (a list's other
items are rivals) or the right answer holds it ("those red sheep", the plural of "that red sheep", holds
"red sheep", another plural: "those red sheep or the red sheep" hedges). GSM8K-style RLVR solves the
same problem by reading only the final "#### 42" of an answer.

Candidates can nest: "the apples" and "the big apples" are both plurals to give, "The baker
brought a letter." and "... brought a letter and made soup." both past tenses. So the check reads
*where* in the answer each candidate stands, as a span of words, and counts only the outermost
ones: "big apples or apples" names two answers and hedges; "the big apples" names one, whose
"apples" is no second guess. Whether that one answer is right is the gold judge's rule, which the
verifier shares (`contains_answer`: the right answer as whole words), so that the reward GRPO trains
on and the judge that scores it agree. That rule counts "the big apples" right for "the apples";
docs/findings.md ("The verifier's nested candidates") has what a stricter rule did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from minillm.datasets.answers import contains_answer, is_correct, normalize_answer


def word_spans(words: list[str], phrase: str) -> list[tuple[int, int]]:
    """Every (start, end) such that words[start:end] is `phrase` (a normalised answer), word for word."""
    target = phrase.split()
    n = len(target)
    return [(i, i + n) for i in range(len(words) - n + 1) if words[i:i + n] == target]


def word_runs(words: list[str], longest: int) -> set[str]:
    """Every run of 1 to `longest` consecutive words of `words`, as a phrase: each answer `words` can name."""
    return {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, min(i + longest, len(words)) + 1)}


class Verifier:
    """The verifiable reward of an answer to a record: 1 if right and committed, + `exact_bonus` if exact.

    `records` are all the records the verifier may see (train and test): each task family's
    references become the candidates that a hedging answer would list.
    """

    def __init__(self, records: Sequence[dict], exact_bonus: float = 0.2) -> None:
        self.exact_bonus = exact_bonus
        candidates: dict[str, set[str]] = defaultdict(set)
        for record in records:
            candidates[record.get("family", "custom")].add(normalize_answer(record["reference"]))
        self.candidates = {family: {c for c in refs if c} for family, refs in candidates.items()}
        self.longest = {family: max(len(c.split()) for c in refs) for family, refs in self.candidates.items() if refs}

    def hedges(self, record: dict, answer: str) -> bool:
        """Whether the answer names two different answers of the record's family (the right one
        among them): two candidates at outermost spans of words, neither inside the other."""
        text, right = normalize_answer(answer), normalize_answer(record["reference"])
        asked, words = f" {normalize_answer(record.get('prompt', ''))} ", text.split()
        family = record.get("family", "custom")
        # detail: a family has up to ~2000 candidates, an answer a few dozen runs of words as long as the
        # family's longest: the runs, looked up among the candidates, are the few the answer names at all
        named = (word_runs(words, self.longest.get(family, 0)) & self.candidates.get(family, set())) | {right}
        # the question's own subject is no second guess, unless the question lists the right answer too,
        # or the right answer holds it (the plural of "that red sheep": "red sheep" is another plural)
        if f" {right} " not in asked:
            named = {name for name in named if f" {name} " not in asked or f" {name} " in f" {right} "}
        spans = [(start, end, name) for name in named for start, end in word_spans(words, name)]
        outermost = {name for start, end, name in spans
                     if not any(s <= start and end <= e and (s, e) != (start, end) for s, e, _ in spans)}
        return len(outermost) > 1

    def __call__(self, record: dict, answer: str) -> float:
        """The reward of `answer` to `record`: 0.0, 1.0, or 1.0 + exact_bonus (the module's table)."""
        if not contains_answer(answer, record["reference"]) or self.hedges(record, answer):
            return 0.0  # detail: wrong, or right only among other guesses
        return 1.0 + (self.exact_bonus if is_correct(answer, record["reference"]) else 0.0)

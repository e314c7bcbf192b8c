"""Judging an answer: what counts as right, and what the judge forgives.

Every figure that says "right" reads it here: stage 2's exact match (`is_correct`, in
`minillm.stage2_sft.evaluate`), stage 3's gold judge (`minillm.stage3_rlhf.annotator`, whose
"correct" is `contains_answer`), the verifiable reward that GRPO trains on (`minillm.stage3_rlhf.verifier`)
and pass@k. One definition, so that the reward a policy is trained on and the judge that scores it agree.

Both judgements compare two texts after `normalize_answer`, which forgives what does not change the answer:

- case, punctuation and spacing: "the  mell!" is "The Mell.";
- one leading article, so that the terse "Mell" counts as correct (it also forgives one leading
  article for another: "A smith walked home." for "The smith walked home.");
- the spelling of the code points: one text typed as composed or decomposed characters ("é" or "e"
  plus an accent, "한" or three jamo) or in the full-width forms of a Chinese, Japanese or Korean
  input method ("３") is one text (`folded`).

Nothing else: "The Tuun." is not "The Mell.", "13" is not "3", and a blank answer is never right.
`is_correct` asks for the answer and nothing but the answer; `contains_answer` asks whether the
right answer is in there at all, as whole words, so that a padded answer ("Sure! The Mell. I hope
this helps!") counts while "The Mellow river." does not.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize_answer", "folded", "is_correct", "contains_answer"]


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed (apostrophes and hyphens kept), leading article dropped, spaces collapsed.

    'The Mell.' -> 'mell'; '  the red Foxes! ' -> 'red foxes'. Dropping the leading article lets the
    terse 'Mell' count as correct; it is the only leniency, though it also forgives one leading
    article for another ('A smith walked home.' for 'The smith walked home.'). Apostrophes and
    hyphens stay, so that "don't" and "well-known" stay one word: "'Mell'" in single quotes
    normalises to "'mell'".

    One text can be spelled with different code points: "é" is one character (U+00E9) or "e" plus
    a combining accent (U+0301), "한" one syllable or three jamo, and "3" or "ABC" in the full-width
    forms a Chinese, Japanese or Korean input method types, "３" or "ＡＢＣ". The text is `folded`, so
    that each pair compares equal; and combining marks that are left (an accent with no composed
    form, Hindi vowel signs) are part of their word, not punctuation that would cut "naïve" into "nai ve".
    """
    text = folded(text)
    words = re.sub(r"[^\w\s'-]", _space_unless_mark, text).split()
    if words and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words)


def folded(text: str) -> str:
    """`text` in lower case and in NFKC, Unicode's composed form with compatibility forms (full width)
    folded: one spelling for texts that read alike, which every judgement of an answer starts from."""
    return unicodedata.normalize("NFKC", text.lower())


def _space_unless_mark(match: re.Match[str]) -> str:
    """A punctuation character becomes a space; a combining mark (category M*) stays in its word."""
    return match.group() if unicodedata.category(match.group()).startswith("M") else " "


def is_correct(answer: str, reference: str) -> bool:
    """Exact match after normalisation: the score stage 2 reports and stage 3's gold judge builds on.

    A padded answer ("Sure! The Mell. I hope this helps!") is *not* exactly correct; use
    `contains_answer` to ask whether the right answer is in there at all. A reference that normalises
    to nothing ("", "The.") matches no answer, as in `contains_answer`: a blank answer is never right.
    """
    ref = normalize_answer(reference)
    return bool(ref) and normalize_answer(answer) == ref


def contains_answer(answer: str, reference: str) -> bool:
    """Whether the normalised reference appears as whole words inside the normalised answer.

    The reference's leading article is dropped, so another determiner before the rest passes too:
    'these red foxes' contains 'the red foxes'.
    """
    ref = normalize_answer(reference)
    return bool(ref) and f" {ref} " in f" {normalize_answer(answer)} "

"""The instruction suite: task families, phrasings, held-out splits and answer styles, and its files.

Stage 2 teaches the pretrained GPT to answer requests. Its claim is that instruction tuning helps on
*new* instructions and builds on what pretraining learned. To measure that, each example is a
record in one of five splits:

- `train`: what SFT learns from;
- `test_seen`: new examples of trained families, worded with trained phrasings (for `world_fact`:
  a trained fact, in a trained phrasing that training never paired with it);
- `test_heldout_phrasing`: new examples of trained families, worded with a phrasing never trained
  on (the last of each family's nine phrasings; for `world_fact`: a trained fact, worded anew);
- `test_heldout_family`: whole families never trained on: `last_item` (its operation resembles the
  trained `first_item`, and the corpus's stories say "the first item was ... and the last was ...")
  and `pet_fact` (a question about people's pets: the facts are in the corpus, the relation is never
  asked in training, but answering questions about the world is);
- `test_world_fact`: questions about towns and people that appear in *no* training record at all.
  Their facts are stated only in the pretraining corpus: a model fine-tuned from the pretrained GPT
  can answer them if pretraining stored them, while SFT from scratch reads them only in the corpus
  text that SFT replays (`sft.pretrain_mix`; in the tiny preset about a tenth of one pass over it).

Why the test figures can be trusted: no test record is a training record in disguise. No test prompt
is a training prompt (each non-fact family gives every record an input of its own; a trained fact is
tested only in a wording it was not trained with), no test headline is a trained one
(`headline_is_for_tests`), the held-out phrasing and families never reach train, and no training
record names a test_world_fact town or person (`seen_entities`). tests/test_datasets.py checks each
of these on the shipped suite; data/README.md ("New inputs, small input spaces") counts the test
inputs that still differ from a trained one only in a name.

The families (each a small, exactly checkable operation a tiny word-level model can learn; no
letter-level tasks, since BPE tokens hide the letters):

    world_fact   "Which river runs through Dorvik?" -> "The Mell."     (trained, 4 relations)
    headline     a weather bulletin -> "Flash flood watch for Dorvik all night."
    plural       "the red fox" -> "the red foxes"
    past_tense   "Mira walks home." -> "Mira walked home."
    translate    English -> Kelish, word for word
    count        "pears, salt, figs" -> "3"
    first_item   "pears, salt, figs" -> "pears"
    last_item    "pears, salt, figs" -> "figs"                        (held-out family)
    pet_fact     "What pet does Mira keep?" -> "A cat."               (held-out family)

Training responses vary in style on purpose, as real demonstrations do: 60% `ideal` (63% in the end: a
`terse` draw with nothing to strip, or a `wrong` one that still holds the answer, stays ideal), and `terse`
(the bare answer), `padded` (a chatty sign-off, sometimes an opener too), `impolite` (a rude
sign-off, sometimes a rude opener) and a few `wrong`. The `reference` is always the ideal, correct
answer; test records have ideal responses. Stage 3 then has something to improve: its annotator
prefers correct, polite, concise answers. Whether an answer is right is judged in `answers.py`.

The record format (one JSON object per line in a JSONL file):

    {"id": "plural-train-00042", "family": "plural", "phrasing": 2, "split": "train",
     "prompt": "Make this plural: the red fox", "response": "the red foxes",
     "reference": "the red foxes", "style": "ideal"}

A user's own file needs only "prompt" and "response" (neither blank); the other fields get defaults.
"""

from __future__ import annotations

import os
import random
import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from minillm.config import PipelineConfig, check_section
from minillm.datasets.answers import contains_answer
from minillm.datasets.corpus import HAZARDS, bulletin_sentences, capitalize, random_span
from minillm.datasets.jsonl import read_records, record_split, write_jsonl
from minillm.datasets.world import (
    JOBS,
    MARKET_GOODS,
    TOY_LANGUAGE,
    VERB_COMPLEMENTS,
    VERB_PAST,
    Person,
    Town,
    World,
    build_world,
    random_noun_phrase,
    toy_sentence,
    translate_to_toy,
    with_article,
)
from minillm.errors import ConfigError, DataError
from minillm.utils import is_whole_number, json_sha256

__all__ = ["SPLITS", "STYLES", "FAMILIES", "TRAIN_FAMILIES", "HELDOUT_FAMILIES", "HELDOUT_PHRASING",
           "generate_instruction_suite", "seen_entities", "check_instruction_record", "read_jsonl", "write_jsonl"]

SPLITS = ("train", "test_seen", "test_heldout_phrasing", "test_heldout_family", "test_world_fact")
STYLES = ("ideal", "terse", "padded", "impolite", "wrong")
# Of training responses: a majority good, many with a chatty or rude sign-off, a few wrong. The flaws
# come mostly AFTER the answer, so the SFT model's most likely (greedy) answer is the ideal one, while
# its samples often carry a sign-off: what people rank low, and what RLHF can teach it to drop.
STYLE_WEIGHTS = (0.6, 0.05, 0.15, 0.15, 0.05)
TRAIN_FAMILIES = ("world_fact", "headline", "plural", "past_tense", "translate", "count", "first_item")
HELDOUT_FAMILIES = ("last_item", "pet_fact")
FAMILIES = TRAIN_FAMILIES + HELDOUT_FAMILIES
HELDOUT_PHRASING = 8  # every trained family has 8 trained phrasings; the 9th (index 8) is never trained on
FACT_TRAIN_PHRASINGS = 4  # training records per seen fact, each in another trained wording
SEEN_FRACTION = 0.6  # share of towns whose facts (and residents) may appear in training
HEADLINE_TEST_SHARE = 0.2  # share of all possible headlines that only test records may ask for

# --------------------------------------------------------------------------------------------------
# Phrasings: how each family's instruction is worded. {x} is the example's input. Eight varied
# wordings per trained family teach the model that the wording changes and the key word does not;
# the last one (index HELDOUT_PHRASING) is held out. A held-out phrasing keeps the family's key
# word ("plural", "headline", "Kelish") in a new sentence around it.

PHRASINGS: dict[str, tuple[str, ...]] = {
    "headline": ("Write a headline for this bulletin: {x}",
                 "Summarise this weather bulletin in one line: {x}", "{x}\nGive this bulletin a headline.",
                 "What is the headline of this bulletin? {x}", "Give me the headline of this bulletin: {x}",
                 "{x}\nWhat is the headline here?", "Read this bulletin and write its headline: {x}",
                 "Headline for this bulletin, please: {x}",
                 "Sum up this bulletin as a headline: {x}"),
    "plural": ("Rewrite in the plural: {x}", 'What is the plural of "{x}"?', "Make this plural: {x}",
               "{x}\nNow say it in the plural.", "Give the plural form: {x}", "Plural, please: {x}",
               "{x}\nWhat is that in the plural?", 'Write "{x}" in the plural.',
               'Change "{x}" into the plural.'),
    "past_tense": ("Rewrite in the past tense: {x}", "Put this sentence in the past tense: {x}",
                   "Change to the past tense: {x}", "{x}\nSay that in the past tense.",
                   'Write "{x}" in the past tense.', "Past tense, please: {x}",
                   "{x}\nHow does that read in the past tense?", 'What is "{x}" in the past tense?',
                   'How would you write "{x}" in the past tense?'),
    "translate": (f"Translate into {TOY_LANGUAGE}: {{x}}", f'How do you say "{{x}}" in {TOY_LANGUAGE}?',
                  f"Put this sentence into {TOY_LANGUAGE}: {{x}}",
                  f"{{x}}\nTranslate that into {TOY_LANGUAGE}.", f'What is "{{x}}" in {TOY_LANGUAGE}?',
                  f"{TOY_LANGUAGE}, please: {{x}}", f"{{x}}\nHow would a {TOY_LANGUAGE} speaker say that?",
                  f"Say this in {TOY_LANGUAGE}: {{x}}",
                  f"Give me the {TOY_LANGUAGE} for: {{x}}"),
    "count": ("How many items are in this list: {x}?", "Count the items: {x}", "{x}\nHow many items is that?",
              "Count how many things are in this list: {x}", "How many things are listed here: {x}?",
              "What is the number of items in this list: {x}?", "{x}\nCount them.",
              "Give the count of items: {x}",
              "Tell me the number of items in: {x}"),
    "first_item": ("What is the first item in this list: {x}?", "Name the first item: {x}",
                   "{x}\nWhich item comes first?", "Give the first item of this list: {x}",
                   "Which item is first in this list: {x}?", "{x}\nWhat is the first thing listed?",
                   "Tell me the first item: {x}", "What comes first in this list: {x}?",
                   "Which is the first thing in this list: {x}?"),
    # held-out family: first_item phrasings with "last" for "first"
    "last_item": ("What is the last item in this list: {x}?", "Name the last item: {x}",
                  "{x}\nWhich item comes last?", "Give the last item of this list: {x}"),
}
# Fact questions are worded per relation; world_fact asks four relations, pet_fact (held out) one.
FACT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "river": ("Which river runs through {x}?", "What river flows through {x}?", "Name the river of {x}.",
              "{x} lies on which river?", "What is the river of {x}?", "{x} is on which river?",
              "Which river does {x} lie on?", "Tell me the river that runs through {x}.",
              "Tell me which river passes {x}."),
    "region": ("In which region is {x}?", "Which region is {x} in?", "Name the region that {x} belongs to.",
               "{x} is part of which region?", "What region is {x} in?", "Where is {x}? Name the region.",
               "Which region does {x} lie in?", "Tell me which region {x} is in.",
               "Tell me the region of {x}."),
    "home": ("Where does {x} live?", "In which town does {x} live?", "What is {x}'s home town?",
             "Name the town where {x} lives.", "Which town does {x} live in?", "Where is {x}'s home?",
             "Tell me where {x} lives.", "What town is {x} from?",
             "Which town is home to {x}?"),
    "job": ("What is {x}'s job?", "What does {x} do for a living?", "What work does {x} do?",
            "Name {x}'s job.", "What is {x}'s trade?", "Tell me {x}'s job.", "How does {x} earn a living?",
            "What kind of work does {x} do?",
            "Which job does {x} have?"),
    "pet": ("What pet does {x} keep?", "Which animal does {x} keep as a pet?", "Name {x}'s pet.",
            "What kind of pet does {x} have?"),
}
FACT_RELATIONS = {"world_fact": ("river", "region", "home", "job"), "pet_fact": ("pet",)}

# Style filler. Exported so that stage 3's annotator can recognise what it dislikes.
PADDING_OPENERS = ("Sure! Here is the answer you asked for.", "Of course, I would be glad to help with that.",
                   "Great question! Let me think about it for a moment.", "Happy to help!",
                   "What a lovely thing to ask.")
PADDING_CLOSERS = ("I hope this helps!", "Let me know if you need anything else.", "Have a wonderful day!",
                   "Feel free to ask me more questions.")
RUDE_OPENERS = ("Ugh, fine.", "Obviously.", "Is that really so hard?", "Whatever.")
RUDE_CLOSERS = ("Figure it out yourself next time.", "Stop wasting my time.", "Even a child knows that.",
                "Do not ask me again.")


@dataclass(frozen=True)
class Example:
    """One task instance before it is worded: the input, the ideal answer, and a plausible wrong one."""

    x: str
    answer: str
    wrong: str


# --------------------------------------------------------------------------------------------------
# Which entities training may mention. Towns are split 60/40; people follow their home town, so a
# question about a seen person never has an unseen town as its answer.


@dataclass(frozen=True)
class Seen:
    """The world, and the towns and people that training records may mention."""

    world: World
    towns: tuple[Town, ...]
    people: tuple[Person, ...]


def seen_entities(world: World) -> Seen:
    """The towns and people that training records may mention (the rest appear only in the corpus
    and in the test_world_fact / test_heldout_family splits)."""
    n_seen = round(SEEN_FRACTION * len(world.towns))
    towns = random.Random(f"seen-{world.seed}").sample(list(world.towns), n_seen)
    names = {t.name for t in towns}
    return Seen(world, tuple(towns), tuple(p for p in world.people if p.home in names))


# --------------------------------------------------------------------------------------------------
# One maker per family: (rng, seen) -> Example. Every family draws names from the seen entities only.

Maker = Callable[[random.Random, Seen], Example]


def make_headline(rng: random.Random, seen: Seen) -> Example:
    town, hazard = rng.choice(seen.towns), rng.choice(list(HAZARDS))
    span = other_span = random_span(rng)
    while other_span == span:  # the typical mistake: the wrong duration
        other_span = random_span(rng)
    headline = f"{capitalize(hazard)} for {town.name} {{}}."
    return Example(" ".join(bulletin_sentences(rng, town, hazard, span)),
                   headline.format(span), headline.format(other_span))


def make_plural(rng: random.Random, seen: Seen) -> Example:
    phrase = random_noun_phrase(rng, adjective_prob=0.6)
    return Example(phrase.singular, phrase.plural, phrase.regularised_plural)


def make_past_tense(rng: random.Random, seen: Seen) -> Example:
    subject = rng.choice((rng.choice(seen.people).name, f"The {rng.choice(JOBS)}"))
    verbs = rng.sample(list(VERB_COMPLEMENTS), 2 if rng.random() < 0.4 else 1)
    parts = [(v, rng.choice(VERB_COMPLEMENTS[v])) for v in verbs]

    def sentence(past: Sequence[bool]) -> str:
        return subject + " " + " and ".join(
            f"{VERB_PAST[v] if p else v} {c}" for (v, c), p in zip(parts, past, strict=True)) + "."

    present = sentence([False] * len(parts))
    wrong = sentence([True] * (len(parts) - 1) + [False]) if len(parts) > 1 else present
    return Example(present, sentence([True] * len(parts)), wrong)


def make_translate(rng: random.Random, seen: Seen) -> Example:
    english = toy_sentence(rng)
    words = translate_to_toy(seen.world, english).split()
    wrong = list(words)
    others = [w for w in seen.world.lexicon.values() if w not in words]
    wrong[rng.randrange(len(words))] = rng.choice(others)
    return Example(english, " ".join(words), " ".join(wrong))


def _goods_list(rng: random.Random, lo: int, hi: int) -> list[str]:
    return rng.sample(MARKET_GOODS, rng.randint(lo, hi))


def make_count(rng: random.Random, seen: Seen) -> Example:
    items = _goods_list(rng, 2, 7)
    return Example(", ".join(items), str(len(items)), str(len(items) + rng.choice((-1, 1))))


def make_first_item(rng: random.Random, seen: Seen) -> Example:
    items = _goods_list(rng, 3, 6)
    return Example(", ".join(items), items[0], rng.choice(items[1:]))


def make_last_item(rng: random.Random, seen: Seen) -> Example:
    items = _goods_list(rng, 3, 6)
    return Example(", ".join(items), items[-1], rng.choice(items[:-1]))


MAKERS: dict[str, Maker] = {"headline": make_headline, "plural": make_plural, "past_tense": make_past_tense,
                            "translate": make_translate, "count": make_count, "first_item": make_first_item,
                            "last_item": make_last_item}


# --------------------------------------------------------------------------------------------------
# Styles of a training response.


def terse(answer: str) -> str:
    """The bare answer: no leading article, no full stop ('The Mell.' -> 'Mell')."""
    return re.sub(r"^(the|a|an) ", "", answer, flags=re.IGNORECASE).rstrip(".")


def styled_response(rng: random.Random, example: Example) -> tuple[str, str]:
    """(style, response) for a training record, drawn with STYLE_WEIGHTS."""
    style = rng.choices(STYLES, STYLE_WEIGHTS)[0]
    ideal = example.answer
    if style == "terse" and terse(ideal) != ideal:
        return style, terse(ideal)
    if style == "padded":
        opener = f"{rng.choice(PADDING_OPENERS)} " if rng.random() < 0.2 else ""
        return style, f"{opener}{ideal} {rng.choice(PADDING_CLOSERS)}"
    if style == "impolite":
        return style, (f"{rng.choice(RUDE_OPENERS)} {ideal}" if rng.random() < 0.2
                       else f"{ideal} {rng.choice(RUDE_CLOSERS)}")
    if style == "wrong" and not contains_answer(example.wrong, ideal):  # truly wrong, not a longer right one
        return style, example.wrong
    return "ideal", ideal


# --------------------------------------------------------------------------------------------------
# The suite.


def _record(family: str, phrasing: int, split: str, template: str, example: Example,
            rng: random.Random) -> dict:
    """One record: `example` worded with `template`. A training response is drawn in a style (and so
    uses `rng`); a test response is always the ideal answer, which the test figures are judged against."""
    style, response = styled_response(rng, example) if split == "train" else ("ideal", example.answer)
    return {"id": "", "family": family, "phrasing": phrasing, "split": split,
            "prompt": template.format(x=example.x), "response": response, "reference": example.answer,
            "style": style}


def check_families() -> None:
    """Refuse, naming what is missing, a task family added to this module in some places only.

    A family made by a maker (every one but the fact families, FACT_RELATIONS) needs its name in
    TRAIN_FAMILIES or HELDOUT_FAMILIES, its wordings in PHRASINGS (a trained one HELDOUT_PHRASING + 1,
    the last never trained on) and its maker in MAKERS.
    """
    for family in dict.fromkeys([*FAMILIES, *PHRASINGS, *MAKERS]):  # each family named anywhere, once
        if family in FACT_RELATIONS:
            continue
        wordings = "wordings" if family in HELDOUT_FAMILIES else f"{HELDOUT_PHRASING + 1} wordings (the last held out)"
        needs = {"its name in TRAIN_FAMILIES or HELDOUT_FAMILIES": family in FAMILIES,
                 "a maker in MAKERS": family in MAKERS,
                 f"{wordings} in PHRASINGS": len(PHRASINGS.get(family, ())) > (
                     0 if family in HELDOUT_FAMILIES else HELDOUT_PHRASING)}
        missing = [need for need, ok in needs.items() if not ok]
        if missing:
            raise ConfigError(f"task family {family!r} lacks {' and '.join(missing)} "
                              "(minillm/datasets/instructions.py)")


def headline_is_for_tests(headline: str) -> bool:
    """Whether a headline belongs to the test records (a fixed, seeded HEADLINE_TEST_SHARE of them).

    Two bulletins with one headline state the same town, hazard and span in other words: a test
    bulletin whose headline training had would be a trained example reworded. Splitting the headlines
    themselves, rather than refusing a test draw that training already had, keeps the common spans
    ("all night") as common in the tests as in training.
    """
    return random.Random(f"headline-{headline}").random() < HEADLINE_TEST_SHARE


def _new_example(family: str, split: str, rng: random.Random, seen: Seen, inputs: set[str]) -> Example | None:
    """An example of `family` for `split` whose input no record of the family has yet, so that a test
    input is never a training one (and for `headline`, whose headline is on `split`'s side of
    `headline_is_for_tests`); None when 1000 draws found none."""
    for _ in range(1000):
        example = MAKERS[family](rng, seen)
        is_new = example.x not in inputs
        on_its_side = family != "headline" or headline_is_for_tests(example.answer) == (split != "train")
        if is_new and on_its_side:
            return example
    return None


def _task_records(family: str, rng: random.Random, seen: Seen, n_train: int, n_test: int) -> list[dict]:
    """Records of one non-fact family: `n_train` in train and `n_test` in each test split (a held-out
    family: in test_heldout_family only), each with its own input and a phrasing its split allows."""
    phrasings = PHRASINGS[family]
    if family in HELDOUT_FAMILIES:
        plan = [("test_heldout_family", range(len(phrasings)))] * n_test
    else:
        trained = range(HELDOUT_PHRASING)
        plan = ([("train", trained)] * n_train + [("test_seen", trained)] * n_test
                + [("test_heldout_phrasing", [HELDOUT_PHRASING])] * n_test)
    records, inputs = [], set()
    for split, allowed in plan:
        example = _new_example(family, split, rng, seen, inputs)
        if example is None:
            raise ConfigError(f"family {family}: cannot find {len(plan)} distinct inputs; ask for fewer "
                              f"(n_train={n_train}, n_test={n_test})")
        inputs.add(example.x)
        phrasing = rng.choice(list(allowed))
        records.append(_record(family, phrasing, split, phrasings[phrasing], example, rng))
    return records


def fact_answer(world: World, relation: str, subject: str) -> str:
    """The ideal answer to a fact question: 'The Mell.', 'The Ossel Marshes.', 'Dorvik.', 'A baker.'"""
    if relation in ("river", "region"):
        town = world.town(subject)
        return capitalize(town.river if relation == "river" else town.region) + "."
    person = next(p for p in world.people if p.name == subject)
    if relation == "home":
        return person.home + "."
    return capitalize(with_article(person.job if relation == "job" else person.pet)) + "."


def fact_subjects(relation: str, towns: Sequence[Town], people: Sequence[Person]) -> list[str]:
    """The names a relation can be asked about: towns for river and region, people otherwise."""
    return [t.name for t in towns] if relation in ("river", "region") else [p.name for p in people]


def _seen_answers(seen: Seen, relation: str) -> set[str]:
    """The answers that the seen entities give to `relation`'s question. A training question's wrong
    answer is another of them, so a world too small to give two is refused here."""
    world = seen.world
    answers = {fact_answer(world, relation, s) for s in fact_subjects(relation, seen.towns, seen.people)}
    if len(answers) < 2:
        raise ConfigError(
            f"world: the entities SFT may name (seen_entities: {len(seen.towns)} of its {len(world.towns)} towns "
            f"and the {len(seen.people)} people living there) give {len(answers)} answer(s) to the "
            f"{relation} question, and its fact records need at least 2 different ones (another seen answer is "
            "each one's wrong answer); build a world with more towns, people, rivers or regions "
            "(build_world's defaults: 40, 48, 10 and 6)")
    return answers


def _world_fact_records(rng: random.Random, seen: Seen, n_test: int) -> list[dict]:
    """world_fact: each fact about a seen town or person in train (FACT_TRAIN_PHRASINGS trained
    wordings), test_seen (one more trained wording) and test_heldout_phrasing (the held-out one); and
    `n_test` questions about the unseen ones, whose facts only the corpus states, in test_world_fact."""
    world = seen.world
    seen_names = {t.name for t in seen.towns} | {p.name for p in seen.people}
    records, unseen_questions = [], []
    for relation in FACT_RELATIONS["world_fact"]:
        phrasings = FACT_PHRASINGS[relation]
        seen_answers = _seen_answers(seen, relation)
        for subject in fact_subjects(relation, world.towns, world.people):
            answer = fact_answer(world, relation, subject)
            example = Example(subject, answer, rng.choice(sorted(seen_answers - {answer})))
            order = rng.sample(range(HELDOUT_PHRASING), FACT_TRAIN_PHRASINGS + 1)  # trained wordings only
            if subject in seen_names:
                plan = [("train", k) for k in order[:-1]] + [("test_seen", order[-1]),
                                                             ("test_heldout_phrasing", HELDOUT_PHRASING)]
                records += [_record("world_fact", k, split, phrasings[k], example, rng) for split, k in plan]
            else:
                unseen_questions += [_record("world_fact", k, "test_world_fact", phrasings[k], example, rng)
                                     for k in order[:-1]]
    return records + rng.sample(unseen_questions, min(n_test, len(unseen_questions)))


def _pet_fact_records(rng: random.Random, world: World, n_test: int) -> list[dict]:
    """pet_fact, a held-out family: `n_test` of the pet questions about everyone, in every wording."""
    questions = []
    for person in world.people:
        example = Example(person.name, fact_answer(world, "pet", person.name), "")
        questions += [_record("pet_fact", k, "test_heldout_family", template, example, rng)
                      for k, template in enumerate(FACT_PHRASINGS["pet"])]
    return rng.sample(questions, min(n_test, len(questions)))


def _number_ids(records: list[dict]) -> None:
    """Give each record its id, family-split-NNNNN, counting within its family and split from 1."""
    counters: dict[tuple[str, str], int] = {}
    for rec in records:
        key = (rec["family"], rec["split"])
        counters[key] = counters.get(key, 0) + 1
        rec["id"] = f"{rec['family']}-{rec['split']}-{counters[key]:05d}"


def generate_instruction_suite(seed: int = 0, world: World | None = None, n_train: int = 1800,
                               n_test: int = 150) -> list[dict]:
    """All records of the suite, in a shuffled order (so the first N of a split mix the families).

    `n_train` training and `n_test` records per split for each non-fact family. `world_fact` has as
    many as the seen facts allow (FACT_TRAIN_PHRASINGS per fact in train, one each in test_seen and
    test_heldout_phrasing); test_world_fact and `pet_fact` draw `n_test` of their questions. The
    world defaults to `build_world(0)`, the corpus's.

    Why 1800 training records per family: more *different* examples generalise better than the same
    ones seen more often (new wordings 0.69 with 750, 0.82 with 1800: docs/findings.md, "SFT: steps,
    learning rate, replay, variety"). 1800 is about as far as it goes: `plural` has 2178 distinct
    noun phrases in all, and its train and test records must all differ.
    """
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if not (is_whole_number(n) and n >= 1):
            raise ConfigError(f"{name}={n!r}: each family needs at least 1 record per split; ask for 1 or more")
    check_families()
    world = world if world is not None else build_world(0)
    rng = random.Random(seed)
    seen = seen_entities(world)
    records = _world_fact_records(rng, seen, n_test) + _pet_fact_records(rng, world, n_test)
    for family in PHRASINGS:
        records += _task_records(family, rng, seen, n_train, n_test)
    rng.shuffle(records)
    _number_ids(records)
    return records


# --------------------------------------------------------------------------------------------------
# Files.

_REQUIRED = {"prompt": str, "response": str}
_OPTIONAL = {"id": str, "family": str, "phrasing": int, "split": str, "reference": str, "style": str}
JSON_KINDS = {str: "a string", int: "a whole number"}  # a field's type as a JSON file's writer names it
# A record's texts, put in NFC (Unicode's composed form: "é" one character) when read, and why none may be blank.
# Only SFT reads "response" (its training target); every stage judges answers against "reference" (answers.py),
# which is the response where none is given, and a blank one matches no answer: such a record is a mistake anywhere.
_TEXTS = {"prompt": "there is nothing to answer",
          "response": "SFT would train the model to answer it with nothing (<eos> at once), and answers are judged "
                      'against it when no "reference" is given',
          "reference": "no answer could ever match it"}


def check_instruction_record(obj: dict) -> dict:
    """Validate one instruction record and fill in defaults; ValueError says what is wrong.

    Only "prompt" and "response" are required, and no text may be blank (`_TEXTS` says why). Defaults: family
    "custom", phrasing 0, split "train", reference = response, style "ideal" (ids are filled in by `read_jsonl`).
    Texts are put in NFC, as `read_corpus` puts the corpus: a prompt saved with decomposed Hangul (macOS) is the
    same text.
    """
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if key in _REQUIRED and key not in obj:
            raise ValueError(f'missing field "{key}" (a record needs at least "prompt" and "response")')
        if key in obj and (not isinstance(obj[key], kind) or isinstance(obj[key], bool)):
            raise ValueError(f'field "{key}" should be {JSON_KINDS[kind]}, got {type(obj[key]).__name__}')
    blank = next((key for key in _TEXTS if key in obj and not obj[key].strip()), None)
    if blank:
        raise ValueError(f'field "{blank}" is empty: {_TEXTS[blank]}')
    if record_split(obj) not in SPLITS:
        raise ValueError(f'field "split" is {obj["split"]!r}; expected one of {", ".join(SPLITS)}')
    if obj.get("style", "ideal") not in STYLES:
        raise ValueError(f'field "style" is {obj["style"]!r}; expected one of {", ".join(STYLES)}')
    record = {"id": "", "family": "custom", "phrasing": 0, "split": "train", "reference": obj["response"],
              "style": "ideal", **obj}
    return {key: unicodedata.normalize("NFC", value) if key in _TEXTS else value for key, value in record.items()}


def read_jsonl(path: str | os.PathLike, on_error: str = "stop",
               skipped: list[tuple[int, str]] | None = None) -> list[dict]:
    """Instruction records from a JSONL file (see `jsonl.read_records` for on_error and skipped).

    Records without an id get "record<N>", N counting the good records from 1; two records with one
    id are a DataError. A test record that asks a training record's prompt is warned of: SFT is scored
    on it as on a new question, but may only recall the answer it was trained on.
    """
    records = read_records(path, check_instruction_record, on_error, skipped)
    first_with: dict[str, int] = {}  # id -> the number of the first record that has it
    for i, rec in enumerate(records, start=1):
        rec["id"] = rec["id"] or f"record{i}"
        if rec["id"] in first_with:  # answers and rankings are matched to their records by id
            raise DataError(f"{path}: records {first_with[rec['id']]} and {i} have the same id {rec['id']!r} (a "
                            "record without an id gets record<N>, N its number); give each record an id of its own")
        first_with[rec["id"]] = i
    trained = {rec["prompt"] for rec in records if rec["split"] == "train"}
    seen = [rec["prompt"] for rec in records if rec["split"] != "train" and rec["prompt"] in trained]
    if seen:
        warnings.warn(f"{path}: {len(seen)} test record(s) ask a prompt that a training record asks too (the "
                      f"first: {seen[0]!r}): SFT's exact match on them measures recall of a trained answer, not "
                      "a new question answered; give the test splits prompts of their own", stacklevel=2)
    return records


def instruction_records(cfg: PipelineConfig, path: str | os.PathLike | None,
                        skip_bad_lines: bool = False) -> list[dict]:
    """The instruction suite for stages 2 and 3: the JSONL file at `path` (a malformed line stops the
    read, or with `skip_bad_lines` is reported and skipped), or the suite generated with `cfg.data_seed`."""
    check_section(cfg, PipelineConfig, "instruction_records")
    if path:
        return read_jsonl(path, on_error="skip" if skip_bad_lines else "stop")
    return generate_instruction_suite(seed=cfg.data_seed)


INSTRUCTIONS = "instructions"  # the key of `instructions_record` in an SFT run's config.json


def instructions_record(records: list[dict], path: str | os.PathLike | None, data_seed: int) -> dict:
    """Which instructions a run read, as `instruction_records` read them: the file at `path` (by its
    absolute path) or the suite generated with `data_seed`, and the sha256 of the `records` themselves.
    The hash tells apart what a path or a seed cannot: a file edited since, a suite that another version
    of minillm generates from the same seed; a file moved elsewhere keeps it, and so does a file that holds
    the generated suite (data/instructions.jsonl): the records are hashed with their keys sorted.

        {"file": "/home/me/mine.jsonl", "data_seed": 0, "sha256": "9f2c..."}
        {"file": null, "data_seed": 0, "sha256": "41d7..."}

    A file's record keeps `data_seed` too, though the file does not read it: it is the suite a run without the
    file would generate, so that the advice to read another (run_data's `how_to_read`) names it only where it
    differs. (A record written before holds null there: unknown.)
    """
    return {"file": str(Path(path).resolve()) if path else None, "data_seed": data_seed,
            "sha256": json_sha256(records, sort_keys=True)}


def instructions_given(records: Sequence[dict]) -> dict:
    """Which instructions a run read where its caller gave the `records` in Python (a lesson's `train_ppo(cfg,
    sft_dir, rm_dir, records, folder)`), not a file or the generated suite by its seed: no path or setting names
    them, so the record says so, how many records there are, and their sha256, taken as `instructions_record`
    takes it: the records of a file, or the generated suite, given in Python are the same data as a run of
    the file or the suite read. Not the records themselves.

        {"file": null, "given_in_python": true, "records": 120, "sha256": "41d7..."}
    """
    return {"file": None, "given_in_python": True, "records": len(records),
            "sha256": json_sha256(records, sort_keys=True)}


def instructions_text(record: dict) -> str:
    """A record of `instructions_record` (or `instructions_given`) as a phrase: "the instructions in
    /home/me/mine.jsonl", "the generated suite (data_seed 0)", "the instructions given in Python (120 records)"."""
    if record.get("given_in_python"):
        count = record.get("records")
        return f"the instructions given in Python ({count} record{'' if count == 1 else 's'})"
    if record.get("file"):
        return f"the instructions in {record['file']}"
    return f"the generated suite (data_seed {record.get('data_seed')})"

"""The pretraining corpus: varied English prose about the small world, and how to read and write it.

Stage 1 learns from raw text by predicting hidden or next tokens, so the corpus decides what a
pretrained model can know. We write it ourselves, from the world of `world.py`, in these kinds of
documents:

- **weather bulletins**: watches, warnings and advisories "in effect all night / all day / all
  weekend / until Friday evening", so that "A flash flood watch will be in effect all [MASK]."
  has a handful of plausible answers for BERT to rank;
- **forecasts**: skies, temperatures and winds for a town;
- **town profiles** and **person profiles**: the world's facts ("Dorvik lies on the Mell.",
  "Mira works as a baker."), each in several wordings, repeated across many documents so that a
  tiny model can memorise them; stage 2 asks about them;
- **stories**: people of the world doing things, in the past tense, with plurals, lists and
  pronouns: grammar to learn rather than facts to memorise;
- **language notes** and **grammar notes**: the words of Kelish, the toy language stage 2 translates
  into, and English plurals and past tenses. Like the headlines of the bulletins and the lists in
  the stories ("The first item was pears and the last was figs."), they put the *concepts* of the
  stage 2 tasks into pretraining, as real web text does, without their instructions;
- **nature notes, chronicles and market reports**: breadth of vocabulary (`vocabulary.py`), so
  that there is syntax to learn and enough distinct words to fill the presets' BPE vocabularies
  (`tokenizer.vocab_size`): with fewer, BPE would run out of pairs to merge.

Every sentence is drawn from several templates and filled with the world's names, so the same fact
reaches the model in different words and word orders: to predict well, the model has to learn
which words go together, not one fixed string.

The file format is plain text, one document after another, separated by a blank line. Any text
file in that format (or any plain text file with paragraphs) can replace ours.
"""

from __future__ import annotations

import math
import os
import random
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from minillm.config import PipelineConfig, check_section
from minillm.datasets.vocabulary import (
    BIRDS,
    BUILDINGS,
    CELEBRATIONS,
    COLOURS,
    DISASTERS,
    FEELINGS,
    FOODS,
    INTRANSITIVE_PAST,
    LANDSCAPES,
    MONTHS,
    OCCUPATIONS,
    PLANTS,
    SEASONS,
    TOOLS,
    TRANSITIVE_PAST,
    WEATHER_WORDS,
    WILD_ANIMALS,
)
from minillm.datasets.world import (
    ADJECTIVES,
    JOBS,
    MARKET_GOODS,
    NOUN_PLURALS,
    TOY_ENGLISH,
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
from minillm.utils import atomic_write_bytes, check_not_one_str, json_sha256, read_utf8_text

# --------------------------------------------------------------------------------------------------
# Weather vocabulary, shared with the instruction suite (the headline task summarises bulletins).

# hazard -> (sentences saying why, filled with {river}, {region}, {n}; advice for the public)
HAZARDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "flash flood watch": (("Heavy rain may cause {river} to rise quickly.",
                           "Up to {n} centimetres of rain could fall over {region}."),
                          ("Do not drive through flooded roads.", "Stay away from the river banks.")),
    "flash flood warning": (("{river} is rising fast after hours of heavy rain.",
                             "Streams in {region} are already over their banks."),
                            ("Move to higher ground now.", "Do not drive through flooded roads.")),
    "flood watch": (("{river} may flood low roads and fields.", "Several days of rain have filled {river}."),
                    ("Stay away from the river banks.", "Listen for further bulletins.")),
    "wind advisory": (("Gusts of up to {n} kilometres per hour are expected.",
                       "Strong winds will blow across {region}."),
                      ("Tie down anything the wind could carry.",)),
    "high wind warning": (("Gusts could reach {n} kilometres per hour.", "Trees may fall across roads."),
                          ("Stay indoors if you can.", "Tie down anything the wind could carry.")),
    "frost advisory": (("Temperatures will fall close to freezing.",
                        "Frost will form in the fields of {region}."),
                       ("Cover tender plants before dark.", "Keep your pets indoors.")),
    "freeze warning": (("Temperatures will drop well below freezing.", "Water pipes may freeze."),
                       ("Keep your pets indoors.", "Check on your neighbours.")),
    "winter storm watch": (("Up to {n} centimetres of snow may fall.",
                            "Snow and ice will make roads slippery."),
                           ("Drive slowly and use your lamps.", "Keep food and candles at home.")),
    "heat advisory": (("Temperatures will rise above {n} degrees.",
                       "The air over {region} will stay hot and still."),
                      ("Drink plenty of water.", "Check on your neighbours.")),
    "dense fog advisory": (("Fog will rise from {river} and hide the roads.",
                            "You may not see further than {n} metres."),
                           ("Drive slowly and use your lamps.",)),
    "thunderstorm watch": (("Lightning and hail are possible.", "Storms will cross {region} from the west."),
                           ("Stay away from tall trees.", "Listen for further bulletins.")),
    "fire weather watch": (("Dry air and strong winds will help fires spread.",
                            "The grass of {region} is very dry."),
                           ("Do not light fires outdoors.",)),
}
# "all ..." spans are the common ones, so BERT can rank them for the flash-flood sentence.
ALL_SPANS = ("all night", "all day", "all weekend", "all morning", "all afternoon", "all evening", "all week")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_PARTS = ("morning", "afternoon", "evening", "night")
SKIES = ("sunny", "cloudy", "rainy", "windy", "foggy", "clear", "stormy", "mild", "grey", "bright")
WIND_DIRECTIONS = ("north", "south", "east", "west", "north west", "south east")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven")


def random_span(rng: random.Random) -> str:
    """How long a watch lasts: 'all night' (70% of the time) or 'until Friday evening' and kin."""
    if rng.random() < 0.7:
        return rng.choice(ALL_SPANS)
    day, part = rng.choice(WEEKDAYS), rng.choice(DAY_PARTS)
    return rng.choice((f"until {day} {part}", f"through {day} {part}", "until midnight", "until noon",
                       "through the weekend", f"until {day}"))


def hazard_kind(hazard: str) -> str:
    """'watch', 'warning' or 'advisory': the last word of the hazard's name."""
    return hazard.split()[-1]


def capitalize(text: str) -> str:
    """Upper-case the first letter only ('the Mell runs' -> 'The Mell runs')."""
    return text[:1].upper() + text[1:]


def bulletin_sentences(rng: random.Random, town: Town, hazard: str, span: str) -> list[str]:
    """The sentences of a bulletin about one hazard in one town (used by the corpus and the headline task).

    The town, the hazard and the span are each stated once, in one of several wordings and orders,
    so summarising the bulletin means finding them, not copying a fixed position.
    """
    kind = hazard_kind(hazard)
    fill = {"town": town.name, "region": town.region, "river": town.river, "hazard": hazard, "kind": kind,
            "span": span, "n": rng.choice((20, 30, 40, 50, 60, 80))}
    issue = rng.choice((
        "The weather office has issued a {hazard} for {town}.",
        "A {hazard} has been issued for {town} in {region}.",
        "Forecasters have put {town} under a {hazard}.",
        "The weather office in {region} has issued a {hazard} for {town}.",
    ))
    duration = rng.choice((
        "The {kind} will be in effect {span}.",
        "It will be in effect {span}.",
        "The {kind} remains in effect {span}.",
        "The {kind} is in effect {span}.",
    ))
    cause = rng.choice(HAZARDS[hazard][0])
    if rng.random() < 0.3:  # the compact form: one sentence says what, where and how long
        issue, duration = rng.choice((
            ("A {hazard} will be in effect {span} for {town}.", ""),
            ("For {town}, a {hazard} will be in effect {span}.", ""),
        ))
    order = rng.choice(((issue, cause, duration), (issue, duration, cause), (cause, issue, duration)))
    return [capitalize(s.format(**fill)) for s in order if s]


# --------------------------------------------------------------------------------------------------
# The documents. Each function writes one document (a few sentences) from a random generator.


T = TypeVar("T")


def in_turn(items: Sequence[T], i: int) -> T:
    """The `i`-th item, starting again from the first after the last (round robin)."""
    return items[i % len(items)]


def bulletin_document(rng: random.Random, world: World, town: Town) -> str:
    """A weather bulletin: title line, the hazard, its span, why, and advice."""
    hazard, span = rng.choice(list(HAZARDS)), random_span(rng)
    headline = f"{capitalize(hazard)} for {town.name} {span}."  # as a newspaper would title it
    title = rng.choice((headline, headline, f"Weather bulletin for {town.name}",
                        f"Bulletin from the weather office of {town.region}",
                        f"Weather warning for {capitalize(town.region)}"))
    body = bulletin_sentences(rng, town, hazard, span)
    # The sentence BERT is asked to complete, in its plain form (a compact body may say it with the town too).
    if rng.random() < 0.6:
        body.append(f"A {hazard} will be in effect {span}.")
    body.append(rng.choice(HAZARDS[hazard][1]))  # the advice
    if rng.random() < 0.4:
        other = rng.choice(world.towns)
        body.append(f"A {rng.choice(list(HAZARDS))} will also be in effect {random_span(rng)} "
                    f"for {other.name} and the rest of {other.region}.")
    return title + "\n" + " ".join(body)


def forecast_document(rng: random.Random, town: Town) -> str:
    """A daily forecast: skies, temperatures, wind, maybe a watch."""
    day = rng.choice(WEEKDAYS)
    low = rng.randrange(-5, 15)
    high = low + rng.randrange(3, 12)
    lines = [
        rng.choice((f"Forecast for {town.name}, {day}.", f"The weather in {town.name} on {day}.")),
        f"{capitalize(rng.choice(SKIES))} in the morning, then {rng.choice(SKIES)} in the afternoon.",
        rng.choice((f"High of {high} degrees, low of {low}.", f"Temperatures from {low} to {high} degrees.")),
        f"Wind from the {rng.choice(WIND_DIRECTIONS)} at {rng.randrange(5, 40)} kilometres per hour.",
        f"Tonight: {rng.choice(SKIES)}, with a low of {low - rng.randrange(0, 4)}.",
    ]
    if rng.random() < 0.5:
        lines.append(f"A {rng.choice(list(HAZARDS))} will be in effect {random_span(rng)}.")
    else:
        lines.append(rng.choice(("No watches or warnings are in effect.",
                                 f"It will be a quiet day in {town.region}.")))
    return " ".join(lines)


def town_fact_sentences(rng: random.Random, town: Town) -> dict[str, str]:
    """One sentence per fact about a town, each in one of several wordings."""
    t, r, river = town.name, town.region, town.river
    return {
        "region": rng.choice((f"{t} is a town in {r}.", f"{t} lies in {r}.",
                              f"{t} is one of the towns of {r}.", f"The town of {t} is in {r}.",
                              f"{t} belongs to {r}.",
                              f"If you travel to {t}, you will be in {r}.")),
        "river": rng.choice((f"{t} lies on {river}.", f"{t} sits on the banks of {river}.",
                             f"The river that runs through {t} is {river}.",
                             f"{capitalize(river)} runs through {t}.",
                             f"In {t}, the river is {river}.", f"{t} was built beside {river}.")),
        "population": rng.choice((f"About {town.population} people live in {t}.",
                                  f"{t} has about {town.population} people.")),
        "known_for": rng.choice((f"{t} is known for {town.known_for}.",
                                 f"Visitors come to {t} for {town.known_for}.")),
    }


def town_document(rng: random.Random, world: World, town: Town) -> str:
    """A town profile: its facts in shuffled order, and some of the people who live there."""
    facts = list(town_fact_sentences(rng, town).values())
    first, rest = facts[0], facts[1:]  # the region sentence introduces the town
    rng.shuffle(rest)
    residents = [p for p in world.people if p.home == town.name]
    extra = [rng.choice((f"{p.name} the {p.job} lives in {town.name}.",
                         f"{town.name} is home to {p.name}, {with_article(p.job)}."))
             for p in rng.sample(residents, min(2, len(residents)))]
    return " ".join([first, *rest, *extra])


def person_fact_sentences(rng: random.Random, world: World, person: Person) -> dict[str, str]:
    """One sentence per fact about a person, each in one of several wordings."""
    p, home, job, pet = person.name, person.home, with_article(person.job), person.pet
    region = world.town(home).region
    return {
        "home": rng.choice((f"{p} lives in {home}.", f"{p} comes from {home}.", f"{p}'s home is in {home}.",
                            f"{p} has lived in {home} all {person.possessive} life.",
                            f"{p} lives in the town of {home}, in {region}.")),
        "job": rng.choice((f"{p} is {job}.", f"{p} works as {job}.", f"By trade, {p} is {job}.",
                           f"{p}'s job is to work as {job}.", f"In {home}, {p} works as {job}.")),
        "pet": rng.choice((f"{p} keeps {with_article(pet)} named {person.pet_name}.", f"{p} has a pet {pet}.",
                           f"{capitalize(person.possessive)} pet is {with_article(pet)} "
                           f"called {person.pet_name}.",
                           f"{p}'s pet is {with_article(pet)}.", f"{p} owns {with_article(pet)}.")),
    }


def verb_phrase(rng: random.Random, past: bool) -> str:
    """'walks to the market' (present) or 'walked to the market' (past)."""
    verb = rng.choice(list(VERB_COMPLEMENTS))
    return f"{VERB_PAST[verb] if past else verb} {rng.choice(VERB_COMPLEMENTS[verb])}"


def person_document(rng: random.Random, world: World, person: Person) -> str:
    """A person profile: home, job and pet in shuffled order, and a daily habit (present tense)."""
    facts = list(person_fact_sentences(rng, world, person).values())
    rng.shuffle(facts)
    habit = f"Every {rng.choice(DAY_PARTS)}, {person.pronoun} {verb_phrase(rng, past=False)}."
    return " ".join([*facts, habit])


def quiz_document(rng: random.Random, world: World, index: int) -> str:
    """A page of a pub quiz about the world: questions and their answers on a town or a person.

    Real pretraining text holds questions with answers (quizzes, FAQs, forums), and a model that
    has read facts *both* as statements and as answers to questions is far better at answering
    new questions about facts it read only as statements (Allen-Zhu and Li, "Physics of Language
    Models 3.1"). The wording here is the quizmaster's own, not the instruction suite's.
    """
    if index % 2 == 0:  # towns and people take turns, each in their own round robin
        town = in_turn(world.towns, index // 2)
        qa = [(f"Which river will you find at {town.name}?", capitalize(town.river)),
              (f"Which region do you reach when you travel to {town.name}?", capitalize(town.region)),
              (f"What is {town.name} known for?", capitalize(town.known_for))]
    else:
        person = in_turn(world.people, index // 2)
        qa = [(f"Which town does {person.name} call home?", person.home),
              (f"What does {person.name} work as?", capitalize(with_article(person.job))),
              (f"What animal lives with {person.name}?", capitalize(with_article(person.pet)))]
    rng.shuffle(qa)
    title = rng.choice(("Quiz night at the inn.", "Questions for the travellers' quiz.", "Test your knowledge."))
    return " ".join([title, *(f"Q: {q} A: {a}." for q, a in qa)])


def object_phrase(rng: random.Random) -> str:
    """'repaired a lantern', 'cooked some stew', 'spotted a heron': a past-tense verb and its object."""
    verb = rng.choice(list(TRANSITIVE_PAST))
    thing = rng.choice(TRANSITIVE_PAST[verb])
    return f"{verb} {'some ' + thing if TRANSITIVE_PAST[verb] in (FOODS, PLANTS) else with_article(thing)}"


def story_document(rng: random.Random, world: World, hero: Person) -> str:
    """A short story in the past tense: a person of the world, some events, pronouns, plurals, a list."""
    town = world.town(hero.home)
    friend = rng.choice([p for p in world.people if p != hero])
    pro, pos = hero.pronoun, hero.possessive
    opening = rng.choice((
        f"One {rng.choice(('cold', 'warm', 'grey', 'bright'))} {rng.choice(DAY_PARTS)}, {hero.name} the "
        f"{hero.job} left {town.name} with {pos} {hero.pet}, {hero.pet_name}.",
        f"{hero.name} was {with_article(hero.job)} who lived in {town.name}.",
        f"Long ago, in {town.name}, there lived {with_article(hero.job)} named {hero.name}.",
    ))
    goods = rng.sample(MARKET_GOODS, rng.randrange(3, 6))
    events = [
        # the river of the town reached, so that the sentence says where that town lies, and truly
        f"{capitalize(pro)} walked along {world.town(friend.home).river} until {pro} reached {friend.home}.",
        f"At the market, {pro} bought {rng.choice(NUMBER_WORDS)} {rng.choice(list(NOUN_PLURALS.values()))}.",
        f"On the road, {pro} saw {rng.choice(NUMBER_WORDS)} {rng.choice(ADJECTIVES)} "
        f"{rng.choice(list(NOUN_PLURALS.values()))} and {random_noun_phrase(rng).singular}.",
        f"There {pro} met {friend.name}, {with_article(friend.job)} from {friend.home}.",
        f"They talked about the {rng.choice(list(HAZARDS))} that was in effect {rng.choice(ALL_SPANS)}.",
        f"{capitalize(pro)} {verb_phrase(rng, past=True)} and {verb_phrase(rng, past=True)}.",
        f"{hero.name} wrote a list: {', '.join(goods)}. There were {len(goods)} items on the list. "
        f"The first item was {goods[0]} and the last was {goods[-1]}.",
        f"{capitalize(pos)} {hero.pet} followed {random_noun_phrase(rng).plural} across the square.",
        f"When the rain started, {pro} went home to {town.name}.",
    ]
    events += [
        f"{capitalize(pro)} {rng.choice(INTRANSITIVE_PAST)} near the {rng.choice(LANDSCAPES)}.",
        f"{capitalize(pro)} {object_phrase(rng)}, and {hero.name} felt {rng.choice(FEELINGS)}.",
        f"Later, {pro} {object_phrase(rng)} with {friend.name}.",
    ]
    ending = rng.choice((f"It was a good day in {town.name}.", f"Then {pro} went to sleep.",
                         f"{hero.name} never forgot that day."))
    return " ".join([opening, *rng.sample(events, rng.randrange(3, 6)), ending])


def language_document(rng: random.Random, world: World) -> str:
    """A note on Kelish: a few words of the lexicon and an example sentence with its translation."""
    words = rng.sample(TOY_ENGLISH, rng.randrange(4, 8))
    entries = [rng.choice((f"In {TOY_LANGUAGE}, the word for {w} is {world.lexicon[w]}.",
                           f"The {TOY_LANGUAGE} word {world.lexicon[w]} means {w}."))
               for w in words]
    example = toy_sentence(rng)
    return " ".join([
        rng.choice((f"A note on {TOY_LANGUAGE}.", f"The people of {rng.choice(world.regions)} still speak "
                    f"{TOY_LANGUAGE} at the market.")),
        *entries,
        f"{TOY_LANGUAGE} puts its words in the same order as English.",
        rng.choice((f'For example, "{example}" is "{translate_to_toy(world, example)}" in {TOY_LANGUAGE}.',
                    f'To translate "{example}" into {TOY_LANGUAGE}, say "{translate_to_toy(world, example)}".')),
    ])


def grammar_document(rng: random.Random, world: World) -> str:
    """A page of an English grammar book: plurals and past tenses, as the rewriting tasks use them."""
    nouns = rng.sample(list(NOUN_PLURALS), 3)
    verbs = rng.sample(list(VERB_PAST), 2)
    subject, phrase = rng.choice(world.people).name, random_noun_phrase(rng)
    return " ".join([
        rng.choice(("A page from an old grammar book.", "Notes on English grammar.")),
        *(rng.choice((f"The plural of {n} is {NOUN_PLURALS[n]}.", f"One {n}, two {NOUN_PLURALS[n]}."))
          for n in nouns),
        f'The plural of "{phrase.singular}" is "{phrase.plural}".',
        *(f'In the past tense, "{subject} {v} {rng.choice(VERB_COMPLEMENTS[v])}" becomes '
          f'"{subject} {VERB_PAST[v]} ..."' for v in verbs),
        rng.choice(("Learners should practise these forms every day.", "Irregular forms must be learned by heart.")),
    ])


def nature_document(rng: random.Random, town: Town) -> str:
    """Nature notes: plants, birds, animals and landscapes around a town, in a month of the year."""
    land, land2 = rng.sample(LANDSCAPES, 2)
    lines = [
        f"The {rng.choice(PLANTS)} is in flower along {town.river}.",
        f"{capitalize(with_article(rng.choice(BIRDS)))} was seen near the {land} outside {town.name}.",
        f"Walkers in the {land2} met {with_article(rng.choice(WILD_ANIMALS))} at dusk.",
        f"In {rng.choice(SEASONS)}, the {land} turns {rng.choice(COLOURS)}.",
        f"The {rng.choice(WEATHER_WORDS)} came early this year, but the {rng.choice(PLANTS)} did not mind.",
    ]
    title = f"Nature notes from {town.region}, {rng.choice(MONTHS)}."
    return " ".join([title, *rng.sample(lines, rng.randrange(3, 6))])


def chronicle_document(rng: random.Random, world: World, town: Town) -> str:
    """A page of a town's chronicle: years, buildings, celebrations and disasters."""
    year = rng.randrange(1100, 1800)
    building, other = rng.sample(BUILDINGS, 2)
    newcomer = rng.choice(world.towns)
    return " ".join([
        f"From the chronicle of {town.name}.",
        f"In the year {year}, the people of {town.name} built {with_article(building)}.",
        f"In {year + rng.randrange(1, 40)}, a {rng.choice(CELEBRATIONS)} was held by {town.river}.",
        f"{capitalize(with_article(rng.choice(OCCUPATIONS)))} from {newcomer.name} came to live there.",
        f"In {year + rng.randrange(40, 120)}, a {rng.choice(DISASTERS)} struck, and the {building} "
        f"had to be rebuilt next to the {other}.",
    ])


def market_document(rng: random.Random, world: World, town: Town) -> str:
    """A market report: goods, foods, prices and the mood of the stallholders."""
    goods = rng.sample(MARKET_GOODS + FOODS, rng.randrange(3, 6))
    return " ".join([
        rng.choice((f"Market day in {town.name}.", f"News from the market of {town.name}.")),
        f"On sale today: {', '.join(goods)}.",
        f"{capitalize(with_article(rng.choice(TOOLS)))} cost {rng.randrange(2, 60)} coins, "
        f"and a bowl of {rng.choice(FOODS)} cost {rng.randrange(1, 9)}.",
        f"The {rng.choice(OCCUPATIONS)} at the corner stall looked {rng.choice(FEELINGS)}.",
        f"The {rng.choice(JOBS)} from {rng.choice(world.towns).name} sold everything by noon.",
    ])


# kind of document -> (share of the corpus, writer). A writer gets the number of documents of its kind
# written so far: town, person and story documents take the next town or person in turn, so every fact is
# repeated about equally often.
DocWriter = Callable[[random.Random, World, int], str]
DOCUMENT_KINDS: dict[str, tuple[float, DocWriter]] = {
    "bulletin": (0.19, lambda rng, w, i: bulletin_document(rng, w, in_turn(w.towns, i))),
    "forecast": (0.05, lambda rng, w, i: forecast_document(rng, in_turn(w.towns, i))),
    "town": (0.18, lambda rng, w, i: town_document(rng, w, in_turn(w.towns, i))),
    "person": (0.18, lambda rng, w, i: person_document(rng, w, in_turn(w.people, i))),
    "story": (0.14, lambda rng, w, i: story_document(rng, w, in_turn(w.people, i))),
    "quiz": (0.06, quiz_document),
    "language": (0.05, lambda rng, w, i: language_document(rng, w)),
    "grammar": (0.03, lambda rng, w, i: grammar_document(rng, w)),
    "nature": (0.04, lambda rng, w, i: nature_document(rng, in_turn(w.towns, i))),
    "chronicle": (0.04, lambda rng, w, i: chronicle_document(rng, w, in_turn(w.towns, i))),
    "market": (0.04, lambda rng, w, i: market_document(rng, w, in_turn(w.towns, i))),
}


def generate_corpus(seed: int = 0, size_mb: float = 2.0, world: World | None = None) -> list[str]:
    """Documents about `world` (default: `build_world(0)`) until their text reaches `size_mb` MB.

    `seed` chooses the sentences; the world's facts stay the same for every seed, so a corpus of any
    seed agrees with the instruction suite. The same arguments always give the same documents.
    """
    if not 0 < size_mb < math.inf:  # an infinite size would write documents until memory ran out
        raise ConfigError(f"size_mb={size_mb}: the corpus size must be positive and finite (e.g. 2.0)")
    world = world if world is not None else build_world(0)
    rng = random.Random(seed)
    kinds = list(DOCUMENT_KINDS)
    weights = [DOCUMENT_KINDS[k][0] for k in kinds]
    turn = dict.fromkeys(kinds, 0)  # the next entity each kind of document writes about
    docs, n_bytes, target = [], 0, size_mb * 1_000_000
    while n_bytes < target:
        kind = rng.choices(kinds, weights)[0]
        doc = DOCUMENT_KINDS[kind][1](rng, world, turn[kind])
        turn[kind] += 1
        docs.append(doc)
        n_bytes += len(doc.encode("utf-8")) + 2  # + the blank line that separates documents
    return docs


# --------------------------------------------------------------------------------------------------
# Files: documents separated by blank lines.


def write_corpus(path: str | os.PathLike, docs: Sequence[str]) -> None:
    """Write documents separated by one blank line (atomically). Documents may not contain blank lines.

    What is written must read back as the same documents: `read_corpus` reads text files the way
    Python does, where "\r\n" and a lone "\r" end a line as "\n" does, so a blank line made with
    "\r" is refused too; and so is a NUL character, which `read_corpus` refuses in a text file.
    """
    check_not_one_str("write_corpus", docs=docs)
    if not docs:
        raise DataError("write_corpus: no documents; read_corpus refuses a file that holds no text")
    for i, doc in enumerate(docs):
        if not doc.strip():
            raise DataError(f"write_corpus: document {i} is empty; drop empty documents before writing")
        if "\x00" in doc:
            raise DataError(f"write_corpus: document {i} contains a NUL character, which read_corpus refuses "
                            f"(no text file holds one); remove it")
        lines = doc.strip().replace("\r\n", "\n").replace("\r", "\n").split("\n")  # the lines read_corpus sees
        if any(not line.strip() for line in lines):
            raise DataError(f"write_corpus: document {i} contains a blank line, which would split it in two "
                            f"when read back; join its paragraphs with single newlines")
    atomic_write_bytes(path, ("\n\n".join(doc.strip() for doc in docs) + "\n").encode("utf-8"))


def read_corpus(path: str | os.PathLike) -> list[str]:
    """The documents of a text file: blocks of lines separated by one or more blank lines.

    Any UTF-8 text file works; a file without blank lines is a single document. The text is put in
    NFC, Unicode's composed form: "한" typed as one syllable and "한" as three jamo (as macOS often
    writes it) are then the same bytes, so the tokenizer and the model see one spelling, not two.
    Raises DataError if the file is missing, not UTF-8, or holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"corpus file {path} does not exist (or is not a file); pass a UTF-8 text file, "
                        f"or generate one with minillm.datasets.generate_corpus")
    text = unicodedata.normalize("NFC", read_utf8_text(path, "corpus file"))
    docs, lines = [], []
    # Lines end at "\n" only (str.splitlines would also cut at a form feed or U+2028 inside a line).
    for line in text.split("\n") + [""]:  # the extra blank line closes the last document
        if line.strip():
            lines.append(line.rstrip())
        elif lines:
            docs.append("\n".join(lines))
            lines = []
    if not docs:
        raise DataError(f"corpus file {path} holds no text (it is empty or only whitespace): give a UTF-8 text "
                        "file of documents separated by blank lines")
    return docs


def split_documents(docs: Sequence[str], val_fraction: float = 0.05,
                    seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, val): a random `val_fraction` of whole documents goes to validation.

    Splitting by document, not by token, keeps the rest of a validation document out of training, so
    validation loss does not reward recalling the rest of a seen document. It cannot make templated
    text new: the generated corpus repeats a few documents word for word (mostly quiz pages) and about
    three quarters of its validation sentences occur in training, so there validation loss measures how
    well the templates and facts were learnt. Both lists keep the documents' original order. At least
    one document goes to each side.
    """
    check_not_one_str("split_documents", docs=docs)
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: expected a number strictly between 0 and 1, "
                          f"e.g. 0.05")
    if len(docs) < 2:
        raise DataError(f"only {len(docs)} document(s): at least 2 are needed to split into train and "
                        f"validation; separate documents with a blank line")
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    val_idx = set(random.Random(seed).sample(range(len(docs)), n_val))
    train = [d for i, d in enumerate(docs) if i not in val_idx]
    val = [d for i, d in enumerate(docs) if i in val_idx]
    return train, val


def corpus_splits(cfg: PipelineConfig, path: str | os.PathLike | None) -> tuple[list[str], list[str]]:
    """(train, val) documents of the pretraining corpus: the file at `path`, or when there is none the
    generated corpus of `cfg.corpus_mb` megabytes; split by `cfg.val_fraction` with `cfg.data_seed`."""
    check_section(cfg, PipelineConfig, "corpus_splits")
    if path:
        docs = read_corpus(path)
    else:
        docs = generate_corpus(seed=cfg.data_seed, size_mb=cfg.corpus_mb)
        if len(docs) < 2:  # (split_documents' advice, a blank line between documents, is for a file of your own)
            raise ConfigError(f"corpus_mb={cfg.corpus_mb} generates {len(docs)} document, and the split into train "
                              f"and validation needs 2 or more; use a larger corpus_mb, e.g. --set corpus_mb="
                              f"{PipelineConfig().corpus_mb} (the default)")
    return split_documents(docs, val_fraction=cfg.val_fraction, seed=cfg.data_seed)


CORPUS = "corpus"  # the key of `corpus_record` in a run's config.json (datasets/run_data.py)


def corpus_record(splits: tuple[Sequence[str], Sequence[str]], path: str | os.PathLike | None,
                  cfg: PipelineConfig) -> dict:
    """Which pretraining text a run read, as `corpus_splits` gave it (`splits`): the file at `path` (by its
    absolute path) or the corpus generated with `cfg.corpus_mb` and `cfg.data_seed`, the settings that split it
    (`data_seed`, `val_fraction`), and the sha256 of the (train, val) documents themselves: a file edited since,
    another split, or other text generated from the same settings by another version of minillm hash otherwise.
    A hash of a few megabytes of text, taken once: milliseconds beside the tokenizer's pass over the same text.

        {"file": "/home/me/mine.txt", "corpus_mb": 2.0, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e..."}

    A file's record keeps `corpus_mb` too, though the file does not read it: it is what a run without the file
    would generate, so that a resume's advice (run_data's `how_to_read`) names it only where it differs. (A
    record written before holds null there: unknown.)
    """
    return {"file": str(Path(path).resolve()) if path else None, "corpus_mb": cfg.corpus_mb,
            "data_seed": cfg.data_seed, "val_fraction": cfg.val_fraction, "sha256": json_sha256(splits)}


def corpus_given(splits: Sequence[Sequence[str]]) -> dict:
    """Which pretraining text a run read where its caller gave the documents in Python (a lesson's
    `train_clm(cfg, tokenizer, train_docs, val_docs, folder)`: its `splits`; SFT's replayed `pretrain_docs`
    alone, one split), not a file or the generator: no path or setting names them, so the record says so, how
    many documents there are, and their sha256, taken as `corpus_record` takes it. The same (train, val) split
    of a file's text is then the same data as a run of that file read; SFT's one split never is, for a file's
    record hashes both: its record says `"split": "train"`, and no check sets its hash against theirs.
    Not the text itself: a run folder keeps what the run made, not a copy of what it read.

        {"file": null, "given_in_python": true, "documents": 1000, "sha256": "5b1e..."}
    """
    record = {"file": None, "given_in_python": True, "documents": sum(len(split) for split in splits),
              "sha256": json_sha256(splits)}
    if len(splits) == 1:  # SFT's replayed training documents: run_data's `same_span` keeps them from a file's
        record["split"] = "train"
    return record


def corpus_text(record: dict) -> str:
    """A record of `corpus_record` (or `corpus_given`) as a phrase: "the corpus in /home/me/mine.txt (data_seed
    0, val_fraction 0.05)", "the generated corpus (corpus_mb 2.0, data_seed 0, val_fraction 0.05)", "the corpus
    given in Python (1000 documents)"."""
    if record.get("given_in_python"):
        count = record.get("documents")
        return f"the corpus given in Python ({count} document{'' if count == 1 else 's'})"
    split = f"data_seed {record.get('data_seed')}, val_fraction {record.get('val_fraction')}"
    if record.get("file"):
        return f"the corpus in {record['file']} ({split})"
    return f"the generated corpus (corpus_mb {record.get('corpus_mb')}, {split})"

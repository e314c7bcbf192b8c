"""A small fictional world, built from a seed: the facts the corpus states and stage 2 asks about.

Why invent a world? To *measure* what a model learned, we need facts that it can only have read in
our own pretraining corpus. Real facts ("Paris is in France") leak in from everywhere; invented
ones ("Dorvik lies on the Mell") exist nowhere else. So the world's names are made up by gluing
syllables together, and every fact about them is written down here, once, as data:

- regions ("the Ossel Marshes") and rivers ("the Mell");
- towns, each in one region, on one river, known for one thing;
- people, each living in one town, with one job and one pet;
- a toy language ("Kelish") with a fixed word-for-word lexicon, and the English grammar tables
  (plurals, past tenses) that the stories use and the rewriting tasks test.

The world is deliberately *small* (40 towns, 48 people by default): the tiny CPU model sees about 1.6
million tokens of pretraining, so each fact must be repeated dozens of times in varied sentences
to be memorised at all. Everything is drawn from `random.Random(seed)`, so the same seed always
builds the same world.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from minillm.errors import ConfigError
from minillm.utils import is_whole_number

# --------------------------------------------------------------------------------------------------
# Fixed vocabulary of the world (English words; only the proper names are invented).

JOBS = ("baker", "fisher", "smith", "weaver", "teacher", "miller", "potter", "carpenter",
        "shepherd", "healer", "farmer", "innkeeper")
PETS = ("cat", "dog", "goat", "parrot", "tortoise", "rabbit", "goose", "owl")
KNOWN_FOR = ("its apple orchards", "its stone bridge", "its autumn market", "its windmills",
             "its fine wool", "its cheese", "its boat builders", "its hot springs", "its bell tower",
             "its pottery")
REGION_KINDS = ("Hills", "Marshes", "Coast", "Plains", "Valley", "Highlands")

# Nouns and their plurals: the regular ones and the irregular ones a model must memorise.
NOUN_PLURALS = {
    "apple": "apples", "basket": "baskets", "boat": "boats", "bridge": "bridges", "candle": "candles",
    "lamp": "lamps", "road": "roads", "tree": "trees", "window": "windows", "bird": "birds",
    "box": "boxes", "fox": "foxes", "dress": "dresses", "brush": "brushes", "church": "churches",
    "berry": "berries", "city": "cities", "story": "stories", "key": "keys", "day": "days",
    "child": "children", "mouse": "mice", "goose": "geese", "man": "men", "woman": "women",
    "tooth": "teeth", "foot": "feet", "sheep": "sheep", "fish": "fish", "knife": "knives",
    "leaf": "leaves", "wolf": "wolves", "loaf": "loaves",
}
# Verbs: third person present -> past, and the base form used after "did" or "will".
VERB_PAST = {
    "walks": "walked", "helps": "helped", "opens": "opened", "cleans": "cleaned", "paints": "painted",
    "visits": "visited", "carries": "carried", "watches": "watched", "fixes": "fixed",
    "plays": "played", "goes": "went", "sees": "saw", "finds": "found", "takes": "took",
    "makes": "made", "brings": "brought", "eats": "ate", "runs": "ran", "sings": "sang",
    "writes": "wrote", "buys": "bought", "sells": "sold", "meets": "met", "leaves": "left",
}
# What each verb is done to: "Mira walks to the market." -> "Mira walked to the market."
VERB_COMPLEMENTS = {
    "walks": ("to the market", "home", "along the road"), "helps": ("the baker", "a child", "the old man"),
    "opens": ("the door", "the window", "the shop"), "cleans": ("the kitchen", "the boat", "the windows"),
    "paints": ("the fence", "a picture", "the door"), "visits": ("the market", "a friend", "the old church"),
    "carries": ("a basket", "the boxes", "water"), "watches": ("the birds", "the river", "the sheep"),
    "fixes": ("the roof", "the lamp", "a boat"), "plays": ("a song", "with the children", "in the garden"),
    "goes": ("to the market", "home", "to bed"), "sees": ("a fox", "the geese", "a red boat"),
    "finds": ("a key", "the lost sheep", "an old knife"), "takes": ("the road", "a loaf", "the boat"),
    "makes": ("bread", "a basket", "soup"), "brings": ("apples", "the candles", "a letter"),
    "eats": ("bread", "an apple", "soup"), "runs": ("home", "to the bridge", "along the road"),
    "sings": ("a song", "to the children", "by the fire"), "writes": ("a letter", "a story", "a list"),
    "buys": ("bread", "apples", "a new lamp"), "sells": ("fish", "cheese", "baskets"),
    "meets": ("a friend", "the teacher", "the children"), "leaves": ("the house", "early", "the town"),
}
ADJECTIVES = ("red", "old", "small", "big", "quiet", "green", "heavy", "bright", "cold", "new")
# Determiners of a noun phrase and their plural: "this fox" -> "these foxes".
DETERMINER_PLURALS = {"the": "the", "this": "these", "that": "those", "my": "my", "her": "her", "his": "his"}
# Goods on market lists: the items of the list tasks (count, first and last item).
MARKET_GOODS = ("pears", "plums", "figs", "lemons", "onions", "carrots", "cabbages", "eggs", "bread",
                "cheese", "honey", "rope", "nails", "candles", "soap", "salt", "apples", "beans", "milk",
                "wool", "flour", "butter", "turnips", "leeks")

# --------------------------------------------------------------------------------------------------
# The toy language: English words -> invented words, translated one word at a time, same order.

TOY_LANGUAGE = "Kelish"
TOY_DETERMINERS = ("the", "a")
TOY_NOUNS = ("dog", "cat", "bird", "fish", "river", "bridge", "house", "tree", "boat", "road", "hill",
             "child", "farmer", "horse")
TOY_ADJECTIVES = ("small", "big", "old", "red", "green", "quiet", "happy", "cold")
TOY_VERBS_TRANSITIVE = ("sees", "finds", "likes", "follows", "crosses", "watches", "hears", "paints")
TOY_VERBS_INTRANSITIVE = ("sleeps", "runs", "waits", "sings", "rests", "swims")
TOY_PREPOSITIONS = ("near", "under", "over", "behind", "by")
TOY_ENGLISH = (TOY_DETERMINERS + TOY_NOUNS + TOY_ADJECTIVES + TOY_VERBS_TRANSITIVE
               + TOY_VERBS_INTRANSITIVE + TOY_PREPOSITIONS)

# Syllable inventories. Each kind of name has its own sound, so a reader (and a model) can tell a
# town from a person from a river by its shape alone.
_TOWN_STEMS = ("Dorv", "Kesk", "Brann", "Tulv", "Osk", "Hald", "Ard", "Fenn", "Corr", "Pell", "Lunn",
               "Rav", "Sel", "Torv", "Ulm", "Garr", "Morr", "Bald", "Yarr", "Esk", "Vald", "Thorn",
               "Grim", "Hask", "Iver", "Jorn", "Kell", "Lind", "Mald", "Nor", "Orm", "Pask", "Quen",
               "Rund", "Skarr", "Tost", "Umb", "Varr", "Wend", "Brec", "Cald", "Drum", "Falk", "Gund")
_TOWN_ENDINGS = ("ik", "holm", "stead", "mere", "by", "wick", "ford", "dale", "ness", "garth")
_PERSON_STEMS = tuple(c + v for c in "BDFHJKLMNPRSTVYZ" for v in "aeiou")
_PERSON_ENDINGS = ("ra", "lan", "ssa", "rin", "vo", "dis", "mel", "nox", "ta", "ren", "bel", "dan")
_RIVER_STEMS = ("M", "Or", "Sk", "V", "T", "Is", "Bl", "Qu", "Dr", "Ny", "Y", "Gl")
_RIVER_ENDINGS = ("ell", "uun", "ey", "arr", "ith", "ode", "ax", "ul", "orn", "isk")
_REGION_STEMS = ("Oss", "Kar", "Vel", "Tam", "Bry", "Hol", "Ner", "Quil")
_REGION_ENDINGS = ("el", "ow", "ane", "ith", "en")
_PET_NAME_STEMS = tuple(c + v for c in "BDFGLMNPRTWZ" for v in "aeiou")
_PET_NAME_ENDINGS = ("nko", "ssy", "bbin", "mkin")
_TOY_ONSETS = ("k", "v", "t", "m", "r", "s", "l", "d", "p", "z", "b", "n")
_TOY_VOWELS = ("a", "e", "i", "o", "u")


@dataclass(frozen=True)
class Town:
    name: str
    region: str  # e.g. "the Ossel Marshes" (with its article, as it is written in a sentence)
    river: str  # e.g. "the Mell"
    population: int
    known_for: str  # e.g. "its stone bridge"


@dataclass(frozen=True)
class Person:
    name: str
    pronoun: str  # "she" or "he"
    home: str  # the name of a Town
    job: str  # one of JOBS
    pet: str  # one of PETS
    pet_name: str

    @property
    def possessive(self) -> str:
        return "her" if self.pronoun == "she" else "his"


@dataclass(frozen=True)
class World:
    seed: int
    regions: tuple[str, ...]
    rivers: tuple[str, ...]
    towns: tuple[Town, ...]
    people: tuple[Person, ...]
    lexicon: dict[str, str]  # English word -> Kelish word

    def town(self, name: str) -> Town:
        """The town called `name` (KeyError if there is none)."""
        for town in self.towns:
            if town.name == name:
                return town
        raise KeyError(name)


def invent_names(rng: random.Random, n: int, stems: Sequence[str], endings: Sequence[str],
                 taken: set[str]) -> list[str]:
    """`n` distinct names stem+ending, each from a different stem, none of them in `taken`.

    A different stem for every name keeps names easy to tell apart ("Dorvik" and "Dorvholm" would
    be needlessly confusable for a tiny model); `taken` (updated here) keeps towns, people, rivers
    and toy words apart from one another. It holds names in lower case: the person "Kulan" and the
    toy word "kulan" would be the same word to a reader.
    """
    names = []
    for stem in rng.sample(list(stems), n):
        name = stem + rng.choice([e for e in endings if (stem + e).lower() not in taken])
        names.append(name)
        taken.add(name.lower())
    return names


def invent_toy_words(rng: random.Random, english: Sequence[str], taken: set[str]) -> dict[str, str]:
    """A distinct invented word per English word: words of up to three letters (the, a, dog, by) get
    one syllable while the one-syllable words last, longer ones two."""
    one = [c + v for c in _TOY_ONSETS for v in _TOY_VOWELS]
    two = [a + b + end for a in one for b in one for end in ("", "n", "r")]
    lexicon: dict[str, str] = {}
    pool_one = [w for w in rng.sample(one, len(one)) if w not in taken]
    pool_two = [w for w in rng.sample(two, len(two)) if w not in taken and w not in TOY_ENGLISH]
    for word in english:
        lexicon[word] = pool_one.pop() if len(word) <= 3 and pool_one else pool_two.pop()
    taken.update(lexicon.values())
    return lexicon


# The sizes build_world accepts, (least, most). Each name has a stem of its own (invent_names), so there
# are at most as many as the stems; each region has a kind of its own, each person a pet name of their
# own. A story in the corpus names its hero's friend: two people at least.
WORLD_SIZES = {
    "n_towns": (1, len(_TOWN_STEMS)),
    "n_people": (2, min(len(_PERSON_STEMS), len(_PET_NAME_STEMS))),
    "n_regions": (1, min(len(_REGION_STEMS), len(REGION_KINDS))),
    "n_rivers": (1, len(_RIVER_STEMS)),
}


def check_world_sizes(sizes: dict[str, int]) -> None:
    """A ConfigError naming the first size outside WORLD_SIZES, before any name is drawn."""
    for name, n in sizes.items():
        least, most = WORLD_SIZES[name]
        if not is_whole_number(n) or not least <= n <= most:
            raise ConfigError(f"build_world: {name}={n!r}; expected a whole number from {least} to {most}")


def build_world(seed: int = 0, n_towns: int = 40, n_people: int = 48, n_regions: int = 6,
                n_rivers: int = 10) -> World:
    """The whole world for `seed`: the same seed always gives the same names and facts."""
    check_world_sizes({"n_towns": n_towns, "n_people": n_people, "n_regions": n_regions, "n_rivers": n_rivers})
    rng = random.Random(seed)
    taken: set[str] = set()
    region_names = invent_names(rng, n_regions, _REGION_STEMS, _REGION_ENDINGS, taken)
    regions = tuple(f"the {name} {kind}" for name, kind in
                    zip(region_names, rng.sample(REGION_KINDS, n_regions), strict=True))
    rivers = tuple(f"the {name}" for name in invent_names(rng, n_rivers, _RIVER_STEMS, _RIVER_ENDINGS, taken))
    town_names = invent_names(rng, n_towns, _TOWN_STEMS, _TOWN_ENDINGS, taken)
    # Round-robin over regions, so that every region has several towns; each town's river is drawn at random.
    towns = tuple(
        Town(name=name, region=regions[i % n_regions], river=rivers[rng.randrange(n_rivers)],
             population=rng.randrange(8, 120) * 100, known_for=rng.choice(KNOWN_FOR))
        for i, name in enumerate(town_names)
    )
    person_names = invent_names(rng, n_people, _PERSON_STEMS, _PERSON_ENDINGS, taken)
    pet_names = invent_names(rng, n_people, _PET_NAME_STEMS, _PET_NAME_ENDINGS, set())
    people = tuple(
        Person(name=name, pronoun=rng.choice(("she", "he")), home=rng.choice(town_names),
               job=rng.choice(JOBS), pet=rng.choice(PETS), pet_name=pet_name)
        for name, pet_name in zip(person_names, pet_names, strict=True)
    )
    lexicon = invent_toy_words(rng, TOY_ENGLISH, taken)
    return World(seed=seed, regions=regions, rivers=rivers, towns=towns, people=people, lexicon=lexicon)


# --------------------------------------------------------------------------------------------------
# Grammar: the English forms the corpus writes and the rewriting tasks ask for, and Kelish sentences.


def with_article(noun: str) -> str:
    """'a baker', 'an owl', 'an innkeeper': the indefinite article a noun takes."""
    return ("an " if noun[0] in "aeiou" else "a ") + noun


@dataclass(frozen=True)
class NounPhrase:
    """'this old fox': a determiner, maybe an adjective, and a noun, with its plural forms."""

    det: str
    adjective: str  # "" when there is none
    noun: str

    def _words(self, det: str, noun: str) -> str:
        return " ".join(w for w in (det, self.adjective, noun) if w)

    @property
    def singular(self) -> str:
        return self._words(self.det, self.noun)

    @property
    def plural(self) -> str:
        """'these old foxes'."""
        return self._words(DETERMINER_PLURALS[self.det], NOUN_PLURALS[self.noun])

    @property
    def regularised_plural(self) -> str:
        """The learner's mistake: a bare '-s' where the plural is spelled otherwise ('these mouses', 'these
        boxs'), and no '-s' at all where a bare '-s' is right ('these apple')."""
        plural = NOUN_PLURALS[self.noun]
        return self._words(DETERMINER_PLURALS[self.det], self.noun + "s" if plural != self.noun + "s" else self.noun)


def random_noun_phrase(rng: random.Random, adjective_prob: float = 0.5) -> NounPhrase:
    """A noun phrase of the grammar tables, with an adjective `adjective_prob` of the time."""
    adjective = rng.choice(ADJECTIVES) if rng.random() < adjective_prob else ""
    return NounPhrase(rng.choice(list(DETERMINER_PLURALS)), adjective, rng.choice(list(NOUN_PLURALS)))


def toy_sentence(rng: random.Random) -> str:
    """A random English sentence (lowercase, no full stop) that Kelish can translate word by word.

    Two shapes: 'the old dog sees a red boat' and 'a child sleeps under the bridge'.
    """
    def noun_phrase() -> list[str]:
        adjective = [rng.choice(TOY_ADJECTIVES)] if rng.random() < 0.5 else []
        return [rng.choice(TOY_DETERMINERS), *adjective, rng.choice(TOY_NOUNS)]

    if rng.random() < 0.6:
        words = [*noun_phrase(), rng.choice(TOY_VERBS_TRANSITIVE), *noun_phrase()]
    else:
        words = [*noun_phrase(), rng.choice(TOY_VERBS_INTRANSITIVE), rng.choice(TOY_PREPOSITIONS),
                 rng.choice(TOY_DETERMINERS), rng.choice(TOY_NOUNS)]
    return " ".join(words)


def translate_to_toy(world: World, sentence: str) -> str:
    """Word-for-word translation into Kelish (KeyError for a word outside the lexicon)."""
    return " ".join(world.lexicon[word] for word in sentence.split())

"""The data: the world, the corpus and its files, the instruction suite, its splits and its judge."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from minillm.config import apply_overrides, preset
from minillm.datasets import (
    FAMILIES,
    HELDOUT_FAMILIES,
    SPLITS,
    STYLES,
    TRAIN_FAMILIES,
    build_world,
    contains_answer,
    corpus_splits,
    generate_corpus,
    generate_instruction_suite,
    instruction_records,
    instructions,
    is_correct,
    normalize_answer,
    read_corpus,
    read_jsonl,
    split_documents,
    write_corpus,
    write_jsonl,
)
from minillm.datasets.corpus import CORPUS, corpus_given, corpus_record, corpus_text
from minillm.datasets.instructions import (
    FACT_PHRASINGS,
    HELDOUT_PHRASING,
    INSTRUCTIONS,
    PHRASINGS,
    instructions_given,
    instructions_record,
    seen_entities,
)
from minillm.datasets.run_data import check_same_data, data_record, how_to_read, saved_data
from minillm.datasets.world import NOUN_PLURALS, TOY_ENGLISH, VERB_PAST, invent_names
from minillm.errors import ConfigError, DataError
from minillm.stage2_sft.template import encode_example
from minillm.stage3_rlhf.online_rl import rl_records
from minillm.tokenizer import train_tokenizer

DATA = Path(__file__).resolve().parents[1] / "data"
WORLD = build_world(0)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return generate_corpus(seed=0, size_mb=2.0)


@pytest.fixture(scope="module")
def suite() -> list[dict]:
    return generate_instruction_suite(seed=0)


def by_split(records: list[dict], split: str) -> list[dict]:
    return [r for r in records if r["split"] == split]


# --------------------------------------------------------------------------------------------------
# The world


def test_world_is_deterministic_and_its_names_are_distinct():
    assert build_world(0) == WORLD
    assert build_world(1) != WORLD
    assert len(set(WORLD.lexicon.values())) == len(WORLD.lexicon)  # translation is invertible
    assert all(t.region in WORLD.regions and t.river in WORLD.rivers for t in WORLD.towns)
    assert all(any(t.name == p.home for t in WORLD.towns) for p in WORLD.people)


def test_toy_words_of_short_english_words_have_one_syllable():
    """As invent_toy_words says: English words of up to three letters (not only "the" and "a") get a
    one-syllable Kelish word (onset + vowel), longer ones two syllables."""
    short = {w: k for w, k in WORLD.lexicon.items() if len(w) <= 3}
    assert {"the", "a", "dog", "by"} <= set(short)
    assert all(len(k) == 2 for k in short.values())
    assert all(len(k) in (4, 5) for w, k in WORLD.lexicon.items() if len(w) > 3)


# --------------------------------------------------------------------------------------------------
# The corpus


@pytest.mark.parametrize("seed", range(0, 200, 3))
def test_names_of_every_kind_are_distinct_words_whatever_the_case(seed):
    """Towns, people, rivers, regions and toy words never share a word, not even as "Kulan" and "kulan"."""
    world = build_world(seed)
    names = ([t.name for t in world.towns] + [p.name for p in world.people]
             + [r.removeprefix("the ") for r in world.rivers] + [g.split()[1] for g in world.regions]
             + list(world.lexicon.values()))
    assert len({n.lower() for n in names}) == len(names)


def test_a_name_taken_in_another_case_is_never_drawn():
    """`taken` holds lower-case names, so "Kulan" is refused when "kulan" (a toy word, say) is taken; the
    kinds' syllables can spell one name (region "Ner" + "en" and person "Ne" + "ren" are both "Neren")."""
    for seed in range(20):
        assert invent_names(random.Random(seed), 1, ["Kul"], ["an", "ix"], {"kulan"}) == ["Kulix"]


def test_corpus_is_deterministic_and_seed_dependent():
    a, b = generate_corpus(seed=3, size_mb=0.1), generate_corpus(seed=3, size_mb=0.1)
    assert a == b
    assert a != generate_corpus(seed=4, size_mb=0.1)
    assert a == generate_corpus(seed=3, size_mb=0.1, world=build_world(0))  # the seed draws text, not a world
    other = build_world(1)  # the world passed in is the one written about
    assert {t.name for t in other.towns} <= set(re.findall(r"\w+", "\n".join(generate_corpus(3, 0.1, other))))
    with pytest.raises(ConfigError, match="must be positive"):
        generate_corpus(size_mb=0)  # (an empty corpus would fail later, far from its cause)
    assert 0.1e6 <= sum(len(d.encode()) + 2 for d in a) < 0.1e6 + 2000


def test_shipped_corpus_is_the_generator_output(corpus):
    assert read_corpus(DATA / "corpus.txt") == corpus


def test_shipped_files_are_the_generators_bytes(tmp_path, corpus, suite):
    """Byte for byte, as data/README.md says (reading back would forgive a trailing space or a key order)."""
    write_corpus(tmp_path / "corpus.txt", corpus)
    write_jsonl(tmp_path / "instructions.jsonl", suite)
    for name in ("corpus.txt", "instructions.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), (
            f"data/{name} is not the generators' output: after changing a generator, regenerate it with "
            "python -m minillm.datasets --out data (data/README.md)")


def test_flash_flood_sentence_has_many_plausible_spans(corpus):
    text = "\n".join(corpus)
    assert "A flash flood watch will be in effect all night." in text
    spans = Counter(re.findall(r"will be in effect all (\w+)", text))
    for word in ("night", "day", "weekend", "morning", "afternoon", "evening"):
        assert spans[word] >= 150, (word, spans)
    assert set(spans) <= {"night", "day", "weekend", "morning", "afternoon", "evening", "week"}


def test_every_fact_is_stated_many_times(corpus):
    sentences = [set(re.findall(r"\w+", s)) for doc in corpus for s in re.split(r"(?<=\.) ", doc)]
    naming: defaultdict[str, set[int]] = defaultdict(set)  # word -> the sentences holding it: one pass, not one a fact
    for i, words in enumerate(sentences):
        for word in words:
            naming[word].add(i)

    def together(a: str, b: str) -> int:  # sentences naming both
        a, b = a.removeprefix("the "), b.removeprefix("the ").split()[0]
        return len(naming[a] & naming[b])

    for town in WORLD.towns:
        assert together(town.name, town.river) >= 10 and together(town.name, town.region) >= 10, town
    for person in WORLD.people:
        assert together(person.name, person.home) >= 10 and together(person.name, person.job) >= 10, person
    # and never contradicted: whenever a sentence gives a person a job, it is their job
    jobs = {p.name: p.job for p in WORLD.people}
    claims = re.findall(r"(?:^|\. )(\w+) (?:is|works as) an? (\w+)\.", "\n".join(corpus), flags=re.M)
    claims = [(name, job) for name, job in claims if name in jobs and job in set(jobs.values())]
    assert len(claims) > 300 and all(jobs[name] == job for name, job in claims)


def test_no_sentence_puts_a_town_on_another_river_or_in_another_region(corpus):
    """A sentence naming one town and one river (or region) never pairs them wrongly: "she walked along
    the Mell until she reached Dorvik" would place Dorvik on the Mell."""
    river_of = {t.name: t.river.removeprefix("the ") for t in WORLD.towns}
    region_of = {t.name: t.region.split()[1] for t in WORLD.towns}
    rivers, regions = set(river_of.values()), set(region_of.values())
    wrong = []
    for sentence in (s for doc in corpus for s in re.split(r"(?<=\.) ", doc)):
        words = set(re.findall(r"\w+", sentence))
        towns = words & river_of.keys()
        if len(towns) == 1:
            town = towns.pop()
            wrong += [sentence for place, places in ((river_of[town], rivers), (region_of[town], regions))
                      if len(words & places) == 1 and place not in words]
    assert not wrong, (len(wrong), wrong[:3])


def test_corpus_files_round_trip(tmp_path):
    docs = ["First document.\nIts second line.", "Second document.", "Third."]
    write_corpus(tmp_path / "c.txt", docs)
    assert read_corpus(tmp_path / "c.txt") == docs
    # a user's plain text: paragraphs separated by (whitespace-only) blank lines, CRLF line ends
    (tmp_path / "user.txt").write_bytes(b"Para one,\r\nstill one.\r\n  \r\n\r\nPara two.\r\n")
    assert read_corpus(tmp_path / "user.txt") == ["Para one,\nstill one.", "Para two."]
    (tmp_path / "bom.txt").write_bytes("\ufeffTitle.\n\nSecond.\n".encode())  # a Windows editor's byte order mark
    assert read_corpus(tmp_path / "bom.txt") == ["Title.", "Second."]


# Characters that Python's str.splitlines() also treats as line ends, though no file writer does.
NOT_LINE_ENDS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_corpus_lines_end_only_at_newlines(tmp_path):
    docs = [f"Page one{c}page two.\nNext line." for c in NOT_LINE_ENDS] + ["A\u2028\u2028B"]
    write_corpus(tmp_path / "c.txt", docs)
    assert read_corpus(tmp_path / "c.txt") == docs


@pytest.mark.parametrize("doc", ["One.\r\rTwo.", "One.\r \rTwo.", "One.\n\rTwo.", "One.\x00"])
def test_write_corpus_refuses_what_would_not_read_back_as_written(tmp_path, doc):
    # a lone "\r" ends a line when the file is read, so "\r\r" is a blank line that splits the
    # document in two; a NUL is refused by read_corpus. write_corpus refuses both before writing.
    with pytest.raises(DataError, match="document 1"):
        write_corpus(tmp_path / "c.txt", ["Zero.", doc])
    assert not (tmp_path / "c.txt").exists()


@pytest.mark.parametrize("content", [b"", b"  \n\n \t\n", b"caf\xe9 au lait\n"], ids=["empty", "blank", "latin1"])
def test_read_corpus_rejects_unusable_files(tmp_path, content):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad.txt"):
        read_corpus(path)


def test_a_documents_indented_lines_keep_their_indentation(tmp_path):
    docs = ["A recipe:\n  two eggs\n\tand a pinch of salt.", "Next."]  # only the ends of lines are trimmed
    write_corpus(tmp_path / "c.txt", docs)
    assert read_corpus(tmp_path / "c.txt") == docs
    (tmp_path / "code.txt").write_bytes(b"def f():\n    return 1   \n")
    assert read_corpus(tmp_path / "code.txt") == ["def f():\n    return 1"]


def test_read_corpus_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.txt.*does not exist"):
        read_corpus(tmp_path / "nope.txt")


def test_write_corpus_refuses_documents_that_would_not_read_back(tmp_path):
    with pytest.raises(DataError, match="blank line"):
        write_corpus(tmp_path / "c.txt", ["one\n\ntwo"])
    with pytest.raises(DataError, match="empty"):
        write_corpus(tmp_path / "c.txt", ["one", "  "])


def test_write_corpus_refuses_a_line_of_spaces_inside_a_document(tmp_path):
    # read_corpus takes a whitespace-only line for the blank line between documents: "one" and "two"
    # would come back as two documents
    with pytest.raises(DataError, match="document 1 contains a blank line"):
        write_corpus(tmp_path / "c.txt", ["fine", "one\n \t \ntwo"])
    assert not (tmp_path / "c.txt").exists()


def test_split_documents_by_document():
    docs = [f"doc {i}" for i in range(100)]
    train, val = split_documents(docs, val_fraction=0.1, seed=1)
    assert len(val) == 10 and len(train) == 90
    assert sorted(train + val, key=docs.index) == docs
    assert (train, val) == split_documents(docs, val_fraction=0.1, seed=1)
    assert val != split_documents(docs, val_fraction=0.1, seed=2)[1]
    assert sorted(map(len, split_documents(["a", "b"], val_fraction=0.01))) == [1, 1]
    with pytest.raises(DataError, match="at least 2"):
        split_documents(["only one"])


def test_a_large_val_fraction_still_leaves_a_document_to_train_on():
    # round(2 * 0.9) = 2 and round(10 * 0.99) = 10 would hold out every document
    assert sorted(map(len, split_documents(["a", "b"], val_fraction=0.9))) == [1, 1]
    train, val = split_documents([f"doc {i}" for i in range(10)], val_fraction=0.99)
    assert (len(train), len(val)) == (1, 9)


def test_a_corpus_files_split_follows_data_seed_and_val_fraction(tmp_path):
    docs = [f"Document {i}." for i in range(40)]
    write_corpus(tmp_path / "c.txt", docs)
    splits = {seed: corpus_splits(apply_overrides(preset("micro"), [f"data_seed={seed}", "val_fraction=0.25"]),
                                  tmp_path / "c.txt") for seed in (1, 2)}
    for train, val in splits.values():
        assert (len(train), len(val)) == (30, 10) and sorted(train + val, key=docs.index) == docs
    assert splits[1][1] != splits[2][1]  # another data_seed holds out other documents of the same file
    train, val = corpus_splits(apply_overrides(preset("micro"), ["data_seed=1", "corpus_mb=0.02"]), None)
    assert sorted(train + val) == sorted(generate_corpus(seed=1, size_mb=0.02))  # the generated corpus too
    for val_fraction in (0.0, 1.0):  # (0.0 would still hold out one document, against what was asked)
        with pytest.raises(ConfigError, match="val_fraction"):
            split_documents(docs, val_fraction=val_fraction)


# --------------------------------------------------------------------------------------------------
# The instruction suite


def test_suite_is_deterministic_and_shipped(suite):
    assert generate_instruction_suite(seed=0) == suite
    assert generate_instruction_suite(seed=1) != suite
    assert read_jsonl(DATA / "instructions.jsonl") == suite


def test_the_shipped_examples_fit_the_tiny_presets_context_and_answer_limit():
    """In the tokens of the tiny preset's BPE, trained as its pipeline trains it (about a second), every
    shipped example fits the GPT's context whole, and every test reference with its <eos> fits the
    answer limit SFT is evaluated with: no question is cut and no right answer is cut short (data/README.md
    and SFTConfig.max_new_tokens's comment quote the longest)."""
    cfg = preset("tiny")
    train_docs, _ = split_documents(read_corpus(DATA / "corpus.txt"), val_fraction=cfg.val_fraction,
                                    seed=cfg.data_seed)
    tok = train_tokenizer(train_docs, cfg.tokenizer.vocab_size, kind=cfg.tokenizer.kind, progress=False)
    records = read_jsonl(DATA / "instructions.jsonl")
    longest = max(len(encode_example(tok, r["prompt"], r["response"], 10**6).ids) for r in records)
    assert longest <= cfg.clm.model.block_size
    answer = max(len(tok.encode(r["reference"])) + 1 for r in records if r["split"] != "train")
    assert answer <= cfg.sft.max_new_tokens


def test_records_are_well_formed(suite):
    assert {r["split"] for r in suite} == set(SPLITS)
    assert {r["family"] for r in suite} == set(FAMILIES)
    assert len({r["id"] for r in suite}) == len(suite)
    for r in suite:
        assert set(r) == {"id", "family", "phrasing", "split", "prompt", "response", "reference", "style"}
        assert r["style"] in STYLES
        assert len(r["prompt"].split()) + len(r["response"].split()) <= 70  # fits a 128-token context
        if r["split"] != "train":
            assert r["style"] == "ideal" and r["response"] == r["reference"]
    train_counts = Counter(r["family"] for r in by_split(suite, "train"))
    assert all(train_counts[f] == 1800 for f in PHRASINGS if f not in HELDOUT_FAMILIES), train_counts
    assert 300 <= train_counts["world_fact"] <= 600, train_counts
    for split in SPLITS[1:]:
        counts = Counter(r["family"] for r in by_split(suite, split))
        assert all(100 <= n <= 200 for n in counts.values()), (split, counts)


def test_prompts_are_unambiguous(suite):
    references: dict[str, set[str]] = {}
    for r in suite:
        references.setdefault(r["prompt"], set()).add(r["reference"])
    assert len(references) == len(suite)  # every prompt occurs once, so it has one reference


def test_splits_are_disjoint_and_held_out_parts_never_trained(suite):
    train = by_split(suite, "train")
    train_prompts = {r["prompt"] for r in train}
    assert not any(r["prompt"] in train_prompts for r in suite if r["split"] != "train")
    assert {r["family"] for r in train} == set(TRAIN_FAMILIES)
    assert not any(r["family"] in HELDOUT_FAMILIES for r in suite if r["split"] != "test_heldout_family")
    assert all(r["phrasing"] != HELDOUT_PHRASING for r in train + by_split(suite, "test_seen"))
    assert all(r["phrasing"] == HELDOUT_PHRASING for r in by_split(suite, "test_heldout_phrasing"))


def test_no_test_prompt_is_a_training_prompt_up_to_case_spaces_and_punctuation(suite):
    train_prompts = {normalize_answer(r["prompt"]) for r in by_split(suite, "train")}
    assert not [r["id"] for r in suite if r["split"] != "train" and normalize_answer(r["prompt"]) in train_prompts]


def test_no_test_headline_is_a_training_headline(suite):
    """A headline is all that matters in its bulletin (town, hazard, span): a test bulletin with a trained
    headline would be a trained example in other words."""
    trained = {r["reference"] for r in by_split(suite, "train") if r["family"] == "headline"}
    tests = [r for r in suite if r["family"] == "headline" and r["split"] != "train"]
    assert len(tests) == 300 and not [r["id"] for r in tests if r["reference"] in trained]


def _task_input(r: dict) -> str:
    """The input of a non-fact record: its prompt without the wording of its phrasing around it."""
    before, after = PHRASINGS[r["family"]][r["phrasing"]].split("{x}")
    return r["prompt"][len(before):len(r["prompt"]) - len(after)]


def test_data_readme_counts_the_tests_near_copies_of_training_text(suite, corpus):
    """data/README.md ("New inputs, small input spaces") counts the test inputs that are a trained one
    with another town in it, and those that the corpus stage 1 trains on states with their answer.
    It once counted 3 such headline bulletins where there are 11: it had counted whole prompts."""
    def masked(r: dict, text: str) -> str:  # the headline's town and its region made anonymous
        town = WORLD.town(r["reference"].split(" for ")[1].split()[0])
        return text.replace(town.name, "<town>").replace(town.region, "<region>")

    headlines = {split: [r for r in by_split(suite, split) if r["family"] == "headline"] for split in SPLITS[:3]}
    trained_bulletins = {masked(r, _task_input(r)) for r in headlines["train"]}
    trained_prompts = {masked(r, r["prompt"]) for r in headlines["train"]}
    seen, heldout = ([r for r in headlines[split] if masked(r, _task_input(r)) in trained_bulletins]
                     for split in SPLITS[1:3])
    same_wording = [r for r in seen if masked(r, r["prompt"]) in trained_prompts]

    text = "\n".join(split_documents(corpus)[0])  # the pipeline's split: what stage 1 trains on
    notes = set(re.findall(r'The plural of "([a-z ]+)" is "([a-z ]+)"\.', text))
    stories = set(re.findall(r"wrote a list: ([a-z, ]+)\. There were \d+ items", text))
    tests = [r for r in suite if r["split"] != "train"]
    plurals = [r for r in tests if r["family"] == "plural" and (_task_input(r), r["reference"]) in notes]
    lists = Counter(r["family"] for r in tests if r["family"] in ("first_item", "last_item", "count")
                    and _task_input(r) in stories)

    readme = " ".join((DATA / "README.md").read_text(encoding="utf-8").split())
    for claim in (f"{len(seen)} `test_seen` bulletins ({len(same_wording)} of them in a training prompt's wording",
                  f"and {len(heldout)} `test_heldout_phrasing` ones are a trained bulletin",
                  f"{len(plurals)} of the 300 `plural` test inputs with their plural",
                  f"{lists['first_item']} `first_item` and {lists['last_item']} `last_item` test list"):
        assert claim in readme, claim
    assert lists["count"] == 0


def test_training_never_asks_the_held_out_families_operations(suite):
    """No training record asks about a pet (pet_fact) or for the last item of a list (last_item)."""
    train = by_split(suite, "train")
    pet_questions = [re.escape(t).replace(re.escape("{x}"), ".+") for t in FACT_PHRASINGS["pet"]]
    assert not [r["id"] for r in train if re.search(r"\b(pet|animal|last)\b", r["prompt"], flags=re.I)
                or any(re.fullmatch(q, r["prompt"], flags=re.S) for q in pet_questions)]


def test_every_held_out_fact_is_stated_in_the_corpus_training_split(corpus):
    """The facts of test_world_fact (unseen towns and people) and of pet_fact (everyone) are in the
    documents stage 1 trains on, not only in its validation documents: dozens of sentences each."""
    train_docs, _ = split_documents(corpus)  # the pipeline's split: val_fraction 0.05, seed 0
    sentences: dict[str, set[int]] = {}  # word -> the sentences that hold it
    for i, sentence in enumerate(s for doc in train_docs for s in re.split(r"(?<=\.) ", doc)):
        for word in set(re.findall(r"\w+", sentence)):
            sentences.setdefault(word, set()).add(i)

    def together(a: str, b: str) -> int:  # sentences naming both
        return len(sentences.get(a, set()) & sentences.get(b.removeprefix("the ").split()[0], set()))

    seen = seen_entities(WORLD)
    facts = ([(t.name, t.river) for t in WORLD.towns if t not in seen.towns]
             + [(t.name, t.region) for t in WORLD.towns if t not in seen.towns]
             + [(p.name, p.home) for p in WORLD.people if p not in seen.people]
             + [(p.name, p.job) for p in WORLD.people if p not in seen.people]
             + [(p.name, p.pet) for p in WORLD.people])
    assert len(facts) == 2 * 16 + 2 * 19 + 48
    assert min(together(a, b) for a, b in facts) >= 20, sorted((together(a, b), a, b) for a, b in facts)[:3]


def test_rl_trains_on_training_prompts_and_is_judged_on_prompts_no_stage_trained_on(suite):
    """PPO and GRPO roll out on the training prompts (as the reward model's rankings and DPO's pairs
    are drawn from them); every policy is compared on held-out records, none of them a training prompt."""
    prompts, heldout = rl_records(suite, 200, "PPO")
    assert len(prompts) == len(by_split(suite, "train")) and len(heldout) == 200
    assert all(r["split"] != "train" for r in heldout)
    assert not {r["prompt"] for r in prompts} & {r["prompt"] for r in heldout}
    assert {r["split"] for r in heldout} == set(SPLITS[1:])  # every test split has a say


def _template_index(r: dict) -> int:
    """Which wording of its family a prompt uses, found by matching the prompt against each template."""
    tables = [PHRASINGS[r["family"]]] if r["family"] in PHRASINGS else FACT_PHRASINGS.values()
    matches = {k for table in tables for k, t in enumerate(table)
               if re.fullmatch(re.escape(t).replace(re.escape("{x}"), ".+"), r["prompt"], flags=re.S)}
    assert len(matches) == 1, (r, matches)
    return matches.pop()


def test_phrasing_field_tells_the_truth(suite):
    assert all(_template_index(r) == r["phrasing"] for r in suite)


def test_world_fact_test_entities_are_only_in_the_corpus(suite, corpus):
    seen = seen_entities(WORLD)
    unseen_towns = [t for t in WORLD.towns if t not in seen.towns]
    unseen_people = [p for p in WORLD.people if p not in seen.people]
    assert len(unseen_towns) >= 10 and len(unseen_people) >= 10
    unseen = [t.name for t in unseen_towns] + [p.name for p in unseen_people]
    pattern = re.compile(r"\b(" + "|".join(unseen) + r")\b")
    assert not any(pattern.search(r["prompt"] + " " + r["response"]) for r in by_split(suite, "train"))
    tests = by_split(suite, "test_world_fact")
    assert all(r["family"] == "world_fact" and pattern.search(r["prompt"]) for r in tests)
    corpus_text = "\n".join(corpus)
    assert all(name in corpus_text for name in unseen)


def _expected_reference(r: dict) -> str:
    """The right answer computed from the world's tables, independently of the generator's makers."""
    x = re.sub(r"^.*?: |\n.*$|^.*\"(.*)\".*$", r"\1", r["prompt"], flags=re.S).rstrip("?")
    if r["family"] == "count":
        return str(len(x.split(", ")))
    if r["family"] == "first_item":
        return x.split(", ")[0]
    if r["family"] == "last_item":
        return x.split(", ")[-1]
    if r["family"] == "translate":
        return " ".join(WORLD.lexicon[w] for w in x.split())
    if r["family"] == "plural":
        *adjectives, noun = x.split()[1:]
        det = {"this": "these", "that": "those"}.get(x.split()[0], x.split()[0])
        return " ".join([det, *adjectives, NOUN_PLURALS[noun]])
    if r["family"] == "past_tense":
        return " ".join(VERB_PAST.get(w, w) for w in x.rstrip(".").split()) + "."
    raise AssertionError(r["family"])


def test_references_are_right(suite):
    checked = 0
    for r in suite:
        if r["family"] in ("count", "first_item", "last_item", "translate", "plural", "past_tense"):
            assert r["reference"] == _expected_reference(r), r
            checked += 1
        elif r["family"] in ("world_fact", "pet_fact"):
            subject = next(n for n in [t.name for t in WORLD.towns] + [p.name for p in WORLD.people]
                           if re.search(rf"\b{n}\b", r["prompt"]))
            person = next((p for p in WORLD.people if p.name == subject), None)
            facts = ([person.home, person.job, person.pet] if person else
                     [WORLD.town(subject).river, WORLD.town(subject).region])
            assert normalize_answer(r["reference"]) in {normalize_answer(f) for f in facts}, r
        elif r["family"] == "headline":
            assert all(w in r["prompt"].lower() for w in r["reference"].rstrip(".").lower().split()), r
    assert checked > 3000


def test_training_styles_vary_and_reference_stays_ideal(suite):
    train = by_split(suite, "train")
    shares = Counter(r["style"] for r in train)
    assert 0.55 < shares["ideal"] / len(train) < 0.7
    assert all(shares[s] >= 50 for s in STYLES)
    # chatty and rude flaws come mostly after the answer, so the most likely answer stays the ideal one
    flawed = [r for r in train if r["style"] in ("padded", "impolite")]
    answer_first = sum(r["response"].startswith(r["reference"]) for r in flawed)
    assert 0.7 < answer_first / len(flawed) < 0.9
    for r in train:
        right = is_correct(r["response"], r["reference"])
        assert right == (r["style"] in ("ideal", "terse")), r
        assert contains_answer(r["response"], r["reference"]) == (r["style"] != "wrong"), r


def test_judge():
    assert normalize_answer("  The Mell. ") == "mell"
    assert is_correct("Mell", "The Mell.") and is_correct("the  mell!", "The Mell.")
    assert not is_correct("The Tuun.", "The Mell.")
    assert not is_correct("Sure! The Mell. I hope this helps!", "The Mell.")
    assert contains_answer("Sure! The Mell. I hope this helps!", "The Mell.")
    assert not contains_answer("The Mellow river.", "The Mell.")
    assert is_correct("3", "3") and not is_correct("13", "3") and not contains_answer("13 items", "3")
    # a reference that normalises to nothing is in no answer, not even an empty one
    assert not contains_answer("", "") and not contains_answer("...", "The")


def test_a_reference_that_normalises_to_nothing_matches_no_answer():
    # a user's record with an empty response has an empty reference: a blank answer is not right
    assert not is_correct("", "") and not is_correct("...", "The.") and not is_correct("The", "")
    assert not contains_answer("", "")
    assert is_correct("3", "3.")


def test_the_judge_forgives_a_leading_article_and_no_other():
    assert normalize_answer("The dog sees a cat under the bridge.") == "dog sees a cat under the bridge"
    assert normalize_answer("An owl.") == normalize_answer("A owl") == "owl"  # "a" and "an" lead no answer either
    # an article inside the answer is part of it: "the child" is not "a child"
    assert not is_correct("The baker helped the child.", "The baker helped a child.")
    assert not is_correct("a cat sees the dog", "a cat sees a dog")


def test_the_judge_reads_composed_and_decomposed_unicode_alike():
    # "é" as one code point (NFC) or as "e" + a combining accent (NFD); "한국" as syllables or as jamo
    assert is_correct("Caf\u00e9 na\u00efve", "Cafe\u0301 nai\u0308ve.")
    assert is_correct("\ud55c\uad6d", "\u1112\u1161\u11ab\u1100\u116e\u11a8")
    assert contains_answer("It is the caf\u00e9.", "The cafe\u0301")
    # a combining mark is part of its word, not punctuation: no "nai ve", no Hindi word cut in two
    assert normalize_answer("nai\u0308ve") == "na\u00efve"
    assert normalize_answer("\u0928\u092e\u0938\u094d\u0924\u0947") == "\u0928\u092e\u0938\u094d\u0924\u0947"
    # a spacing mark (category Mc, e.g. the vowel signs of "kitab") is a combining mark too
    assert normalize_answer("\u0915\u093f\u0924\u093e\u092c") == "\u0915\u093f\u0924\u093e\u092c"


def test_the_judge_reads_full_width_forms_as_their_ascii():
    # a Korean, Japanese or Chinese input method types "３" and "ＡＢＣ" in full width
    assert is_correct("\uff13", "3") and is_correct("\uff34\uff55\uff55\uff4e\uac15\uff0e", "Tuun\uac15")
    assert contains_answer("\ub2f5: \uff13", "3")


def test_korean_corpus_and_instructions_are_read_in_composed_form(tmp_path):
    # macOS often stores Hangul decomposed: "한" as three jamo. Read in NFC, the tokenizer sees one spelling
    nfc, nfd = "\ud55c\ube5b\ub9c8\uc744", "\u1112\u1161\u11ab\u1107\u1175\u11be\u1106\u1161\u110b\u1173\u11af"
    kept = "x\u00b2 \ufb01le \uff21"  # "x²", the "fi" ligature, a full-width "A": kept (NFKC would fold them)
    (tmp_path / "c.txt").write_text(f"{nfd}\n\n{nfc}\n\n{kept}\n", encoding="utf-8")
    assert read_corpus(tmp_path / "c.txt") == [nfc, nfc, kept]
    line = json.dumps({"prompt": nfd + "?", "response": nfd}, ensure_ascii=False)
    (tmp_path / "i.jsonl").write_text(line + "\n", encoding="utf-8")
    (record,) = read_jsonl(tmp_path / "i.jsonl")
    assert (record["prompt"], record["response"], record["reference"]) == (nfc + "?", nfc, nfc)


# --------------------------------------------------------------------------------------------------
# JSONL files


def test_jsonl_round_trip_and_user_file_defaults(tmp_path, suite):
    write_jsonl(tmp_path / "s.jsonl", suite[:5])
    assert read_jsonl(tmp_path / "s.jsonl") == suite[:5]
    (tmp_path / "mine.jsonl").write_text('{"prompt": "Hi?", "response": "Hello."}\n\n', encoding="utf-8")
    [rec] = read_jsonl(tmp_path / "mine.jsonl")
    assert rec == {"id": "record1", "family": "custom", "phrasing": 0, "split": "train", "prompt": "Hi?",
                   "response": "Hello.", "reference": "Hello.", "style": "ideal"}


def test_a_file_of_the_generated_suite_is_recorded_as_the_same_instructions_as_the_suite(tmp_path, suite):
    """An SFT run on the generated suite, then `minillm ppo --data data/instructions.jsonl` (that suite, written
    out): reading orders each record's keys otherwise, and hashed as read the same records looked like others,
    a warning that the prompts were not those SFT learnt (stage2_sft/learnt.py)."""
    write_jsonl(tmp_path / "suite.jsonl", suite[:5])
    read = read_jsonl(tmp_path / "suite.jsonl")
    assert [list(r) for r in read] != [list(r) for r in suite[:5]]  # (the premise: the keys come in another order)
    from_file = instructions_record(read, tmp_path / "suite.jsonl", data_seed=0)
    assert from_file["sha256"] == instructions_record(suite[:5], None, data_seed=0)["sha256"]


def test_a_resume_on_another_corpus_or_split_is_refused_and_a_moved_file_or_an_older_run_is_not(tmp_path):
    """`pretrain clm --resume --corpus other.txt` (with the run's own --tokenizer-file) went on into the same weights
    on other text, as `--set data_seed=1` did on another split (the validation documents of one are training
    documents of the other): no setting of the run names either (datasets/run_data.py). The refusal says what to
    pass, and only what differs: a run from a file resuming one on generated text was told `--set corpus_mb=0.02`
    whatever its corpus_mb (a file's record held none)."""
    cfg = apply_overrides(preset("micro"), ["corpus_mb=0.02"])
    (tmp_path / "mine.txt").write_text("One document.\n\nAnother one.\n\nA third.\n", encoding="utf-8")
    splits = corpus_splits(cfg, tmp_path / "mine.txt")
    mine = corpus_record(splits, tmp_path / "mine.txt", cfg)
    config = tmp_path / "clm" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"run": {}, CORPUS: mine}), encoding="utf-8")
    generated = corpus_record(corpus_splits(cfg, None), None, cfg)
    assert corpus_text(generated) == "the generated corpus (corpus_mb 0.02, data_seed 0, val_fraction 0.05)"
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot resume {tmp_path / 'clm'}: it read the corpus in {tmp_path / 'mine.txt'} (data_seed 0, "
            "val_fraction 0.05), and this run reads the generated corpus (corpus_mb 0.02, data_seed 0, val_fraction "
            f"0.05); pass --corpus {tmp_path / 'mine.txt'} to resume it, or start a new run in another folder")):
        check_same_data(config, {CORPUS: generated})
    reseeded = apply_overrides(cfg, ["data_seed=1"])
    with pytest.raises(ConfigError, match=r"mine.txt \(data_seed 0, .*mine.txt \(data_seed 1, val_fraction 0.05\); "
                                          r"pass --set data_seed=0 to resume it, or"):  # (its --corpus is given)
        check_same_data(config, {CORPUS: corpus_record(corpus_splits(reseeded, tmp_path / "mine.txt"),
                                                        tmp_path / "mine.txt", reseeded)})
    for saved in (mine, {**mine, "corpus_mb": None}):  # (and as a record written before held it: null)
        config.write_text(json.dumps({"run": {}, CORPUS: saved}), encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"; pass --corpus {re.escape(str(tmp_path / 'mine.txt'))} to resume"):
            check_same_data(config, {CORPUS: {**generated, "corpus_mb": 0.5}})  # (a file reads no corpus_mb)
    config.write_text(json.dumps({"run": {}, CORPUS: generated}), encoding="utf-8")  # each option it needs, in one line
    from_file = corpus_record(corpus_splits(reseeded, tmp_path / "mine.txt"), tmp_path / "mine.txt", reseeded)
    with pytest.raises(ConfigError, match=r"; leave out --corpus and pass --set data_seed=0 to resume it"):
        check_same_data(config, {CORPUS: from_file})  # (its corpus_mb is the generated one's already: not named)
    with pytest.raises(ConfigError, match=r"; leave out --corpus and pass --set corpus_mb=0.02 --set data_seed=0 to"):
        check_same_data(config, {CORPUS: {**from_file, "corpus_mb": 0.5}})
    config.write_text(json.dumps({"run": {}, CORPUS: mine}), encoding="utf-8")
    (tmp_path / "mine.txt").write_text("One document.\n\nAnother one.\n\nA third, edited.\n", encoding="utf-8")
    edited = corpus_record(corpus_splits(cfg, tmp_path / "mine.txt"), tmp_path / "mine.txt", cfg)
    with pytest.raises(ConfigError, match=r"val_fraction 0.05\) \(other contents now\); resume it on the corpus"):
        check_same_data(config, {CORPUS: edited})
    check_same_data(config, {CORPUS: {**mine, "file": str(tmp_path / "moved.txt")}})  # the same text, moved
    check_same_data(config, {CORPUS: None})  # no corpus read
    config.write_text(json.dumps({"run": {}}), encoding="utf-8")
    check_same_data(config, {CORPUS: generated})  # a run made before pretraining recorded its corpus: resumed


def test_data_given_in_python_is_recorded_by_its_count_and_hash_and_a_resume_on_other_data_is_refused(tmp_path):
    """A lesson's `train_clm(cfg, tokenizer, train_docs, val_docs, folder)` named no file or seed, and its run
    recorded nothing: unknown data, like a run made before the records, so a resume on other documents went on
    into the same weights. Data given in Python is recorded as such (`data_record`), hashed as a file's is: the
    same documents or records are the same data however they came, and other ones are refused, with no option
    to pass (no file or setting names what a caller held)."""
    cfg = preset("micro")
    (tmp_path / "mine.txt").write_text("One document.\n\nAnother one.\n\nA third.\n", encoding="utf-8")
    splits = corpus_splits(cfg, tmp_path / "mine.txt")
    given = data_record(CORPUS, None, splits)
    assert given == {"file": None, "given_in_python": True, "documents": 3,
                     "sha256": corpus_record(splits, tmp_path / "mine.txt", cfg)["sha256"]}  # the file's documents
    assert data_record(CORPUS, corpus_record(splits, None, cfg), splits)["file"] is None  # a caller's own: kept
    assert data_record(INSTRUCTIONS, None, None) is None  # no records (a reward model without them): none
    records = [{"prompt": "Where is Vell?", "response": "On the river.", "split": "train"}]
    assert instructions_given(records) == {"file": None, "given_in_python": True, "records": 1,
                                           "sha256": instructions_record(records, None, 0)["sha256"]}
    config = tmp_path / "clm" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"run": {}, CORPUS: given}), encoding="utf-8")
    check_same_data(config, {CORPUS: corpus_given(splits)})  # the same documents: resumed
    check_same_data(config, {CORPUS: corpus_record(splits, tmp_path / "moved.txt", cfg)})  # ... from a file too
    other = corpus_given((splits[0], ["Another validation document."]))
    with pytest.raises(ConfigError, match=re.escape(
            f"cannot resume {tmp_path / 'clm'}: it read the corpus given in Python (3 documents), and this run reads "
            "the corpus given in Python (3 documents) (other contents now); resume it on the corpus it read, or "
            "start a new run in another folder")):
        check_same_data(config, {CORPUS: other})
    generated = corpus_record(corpus_splits(cfg, None), None, cfg)
    assert how_to_read(CORPUS, given, generated) == how_to_read(CORPUS, generated, given) == ""  # (no --set of it)
    with pytest.raises(ConfigError, match=r"it read the generated corpus \(corpus_mb 0.2, data_seed 0, val_fraction "
                                          r"0.05\), and this run reads the corpus given in Python \(2 documents\); "
                                          r"resume it on the corpus it read"):
        config.write_text(json.dumps({"run": {}, CORPUS: generated}), encoding="utf-8")
        check_same_data(config, {CORPUS: corpus_given((["a"], ["b"]))})
    check_same_data(config, {CORPUS: corpus_given((splits[0],))})  # SFT's replayed split alone: another span
    config.write_text(json.dumps({"run": {}}), encoding="utf-8")
    check_same_data(config, {CORPUS: other})  # a run made before it recorded documents given in Python: resumed


def test_records_given_in_python_with_a_value_json_has_no_type_for_are_recorded_not_a_type_error():
    """Records built in Python may hold what JSON cannot write (a numpy number): their hash was a TypeError from
    inside json, a stack trace before SFT's own check of the records could name the record in one line."""
    record = {"prompt": "How many?", "response": "3", "count": np.int64(3)}
    assert instructions_given([record]) == instructions_given([{**record, "count": "3"}])


def test_a_record_edited_into_another_shape_is_no_record_and_refuses_no_resume(tmp_path):
    """A config.json's record edited by hand (no sha256 string, a file that is no path, no dict) is read as none
    (`saved_data`): the data is unknown, as for a run made before its stage recorded it, so a resume goes on; it
    is not compared as a record, which refused it ("it read the generated corpus (corpus_mb None, ...)") or
    failed inside the check (a TypeError on a string)."""
    config = tmp_path / "config.json"
    now = {"file": None, "corpus_mb": 0.02, "data_seed": 0, "val_fraction": 0.05, "sha256": "5b1e" * 16}
    for edited in ({**now, "sha256": None}, {**now, "file": 3}, "5b1e" * 16, [now]):
        config.write_text(json.dumps({"run": {}, CORPUS: edited}), encoding="utf-8")
        assert saved_data(config, CORPUS) is None, edited
        check_same_data(config, {CORPUS: now})


def test_an_id_that_a_record_without_one_would_get_is_refused_without_blaming_that_record(tmp_path):
    """Record 2 has no id and gets "record2", which record 1 gave itself: the refusal says where "record2"
    comes from, not that record 2 should have had none (it had none)."""
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": "record2", "prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"records 1 and 2 have the same id 'record2' \(a record without an id "
                                        r"gets record<N>, N its number\); give each record an id of its own$"):
        read_jsonl(path)


def test_a_jsonl_line_cut_inside_a_character_is_one_bad_line(tmp_path, suite):
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [{**suite[0], "prompt": "서울의 날씨"}])
    whole = path.read_bytes()
    path.write_bytes(whole + whole[:whole.index("서".encode()) + 1])  # a crash cut line 2 inside "서"
    skipped = []
    with pytest.warns(UserWarning, match="line 2: not UTF-8 text"):
        assert read_jsonl(path, on_error="skip", skipped=skipped) == [{**suite[0], "prompt": "서울의 날씨"}]
    assert skipped[0][0] == 2
    with pytest.raises(DataError, match=r"line 2: not UTF-8 text \(byte \d+ of the line\): convert it"):
        read_jsonl(path)


def test_jsonl_strings_keep_characters_that_splitlines_would_cut_at(tmp_path, suite):
    # json.dumps(ensure_ascii=False) writes these raw inside a string, so a line ends at "\n" only
    records = [{**suite[0], "id": f"r{i}", "prompt": f"first{c}second"} for i, c in enumerate(NOT_LINE_ENDS)]
    write_jsonl(tmp_path / "s.jsonl", records)
    assert read_jsonl(tmp_path / "s.jsonl") == records


BAD_LINES = [
    ('{"prompt": "a", "response": "b"', "line 2: invalid JSON"),
    ('["prompt", "response"]', "line 2: expected a JSON object"),
    ('{"prompt": "a"}', 'line 2: missing field "response"'),
    ('{"prompt": "a", "response": 3}', 'line 2: field "response" should be a string'),
    ('{"prompt": "a", "response": "b", "phrasing": "1"}', 'line 2: field "phrasing" should be a whole number'),
    ('{"prompt": "a", "response": "b", "split": "dev"}', 'line 2: field "split" is \'dev\''),
    ('{"prompt": "a", "response": "b", "split": ""}', 'line 2: field "split" is \'\''),  # named, but none: not "train"
    ('{"prompt": "a", "response": "b", "phrasing": true}', 'field "phrasing" should be a whole number, got bool'),
    ('{"prompt": "  ", "response": "b"}', 'line 2: field "prompt" is empty: there is nothing to answer'),
    # a blank response was read: SFT trained the model to stop at once, and it was the reference no answer matches
    ('{"prompt": "a", "response": ""}', 'line 2: field "response" is empty: SFT would train the model to answer it '
                                        'with nothing (<eos> at once), and answers are judged against it when no '
                                        '"reference" is given'),
    ('{"prompt": "a", "response": " ", "reference": "b"}', 'line 2: field "response" is empty'),
    ('{"prompt": "a", "response": "b", "reference": " "}', 'line 2: field "reference" is empty: no answer could ever '
                                                           'match it'),
    ('{"prompt": "a", "response": "b", "style": "rude"}', 'line 2: field "style" is \'rude\''),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_read_jsonl_stops_at_bad_line_with_its_number(tmp_path, line, message):
    good = json.dumps({"prompt": "p", "response": "r"})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        read_jsonl(path)


def test_a_folder_given_for_a_jsonl_file_names_the_jsonl_files_in_it(tmp_path):
    """`dpo --prefs runs/rm`: a run folder for the rankings file inside it, said as that, not "does not exist"."""
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")  # (a file of the folder, not a JSONL one)
    with pytest.raises(DataError, match=r"is a folder, not a JSONL file: give the file itself \(the JSONL files in "
                                        r"it: none\)$"):
        read_jsonl(tmp_path)
    for name in ("prefs.jsonl", "answers.jsonl"):
        (tmp_path / name).write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"\(the JSONL files in it: answers.jsonl, prefs.jsonl\)$"):
        read_jsonl(tmp_path)


def test_a_line_nested_too_deeply_for_json_is_one_bad_line_with_its_number(tmp_path):
    good = json.dumps({"prompt": "p", "response": "r"})
    path = tmp_path / "deep.jsonl"
    path.write_text(f"{good}\n{'[' * 100_000}{']' * 100_000}\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"deep.jsonl, line 2: invalid JSON \(nested too deeply"):
        read_jsonl(path)
    skipped: list[tuple[int, str]] = []
    with pytest.warns(UserWarning, match=r"line 2: invalid JSON \(nested too deeply"):
        assert len(read_jsonl(path, on_error="skip", skipped=skipped)) == 2
    assert [n for n, _ in skipped] == [2]


def test_read_jsonl_skip_reports_every_skipped_line(tmp_path):
    good = json.dumps({"prompt": "p", "response": "r"})
    path = tmp_path / "mixed.jsonl"
    path.write_text(f"{good}\nnot json\n{good}\n{{\"prompt\": 1, \"response\": \"r\"}}\n{good[:-3]}", encoding="utf-8")
    skipped: list[tuple[int, str]] = []
    with pytest.warns(UserWarning, match=r"skipped 3 bad line\(s\): line 2: .*line 4: .*line 5: "):
        records = read_jsonl(path, on_error="skip", skipped=skipped)
    assert len(records) == 2 and [n for n, _ in skipped] == [2, 4, 5]
    # what stages 2 and 3 read: a bad line stops them, unless --skip-bad-lines
    with pytest.raises(DataError, match="line 2"):
        instruction_records(preset("micro"), path)
    with pytest.warns(UserWarning, match="skipped 3 bad line"):
        assert instruction_records(preset("micro"), path, skip_bad_lines=True) == records


def test_skipped_lists_every_bad_line_though_the_warning_names_the_first_20(tmp_path):
    good = json.dumps({"prompt": "p", "response": "r"})
    path = tmp_path / "mixed.jsonl"
    path.write_text(good + "\n" + "not json\n" * 25, encoding="utf-8")  # bad lines 2 to 26
    skipped: list[tuple[int, str]] = []
    with pytest.warns(UserWarning, match=r"skipped 25 bad line\(s\): line 2: .*line 21: [^;]*\(and 5 more\)$"):
        assert len(read_jsonl(path, on_error="skip", skipped=skipped)) == 1
    assert [n for n, _ in skipped] == list(range(2, 27))


def test_jsonl_from_a_windows_editor_reads_as_written(tmp_path):
    """A byte order mark before the first record and blank lines with spaces or "\\r" (CRLF line ends)
    are not records: a file saved by a Windows editor reads without a bad line."""
    good = json.dumps({"prompt": "p", "response": "r"})
    (tmp_path / "win.jsonl").write_bytes(("\ufeff" + good + "\r\n  \r\n\r\n" + good + "\r\n").encode())
    assert [r["prompt"] for r in read_jsonl(tmp_path / "win.jsonl")] == ["p", "p"]


def test_a_test_record_asking_a_training_prompt_is_warned_of(tmp_path):
    """A file of your own whose test split repeats training prompts (an easy slip with templated data) was
    scored, and reported, as new questions: exact match there is recall of the trained answer."""
    lines = [{"prompt": "Opposite of hot?", "response": "cold"}, {"prompt": "Opposite of wet?", "response": "dry"},
             {"prompt": "Opposite of hot?", "response": "cold", "split": "test_seen"},
             {"prompt": "Opposite of big?", "response": "small", "split": "test_seen"},
             {"prompt": "Opposite of wet?", "response": "dry", "split": "test_seen"}]
    (tmp_path / "own.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"own.jsonl: 2 test record\(s\) ask a prompt that a training record asks "
                                         r"too \(the first: 'Opposite of hot\?'\): SFT's exact match on them"):
        assert len(read_jsonl(tmp_path / "own.jsonl")) == 5


def test_read_jsonl_unusable_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no valid record"):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(ConfigError, match="on_error"):
        read_jsonl(tmp_path / "empty.jsonl", on_error="ignore")


def test_a_task_family_added_in_some_places_only_is_refused_naming_the_others(monkeypatch):
    """A learner's new family ("reverse the words"): wordings alone are not enough, and the error says
    what else to add where (it was a KeyError deep in the generator, or an IndexError with 4 wordings)."""
    monkeypatch.setitem(instructions.PHRASINGS, "reverse_words", ("Reverse the words: {x}",) * 4)
    with pytest.raises(ConfigError, match=r"'reverse_words' lacks its name in TRAIN_FAMILIES or HELDOUT_FAMILIES "
                                          r"and a maker in MAKERS and 9 wordings \(the last held out\) in PHRASINGS"):
        generate_instruction_suite(n_train=2, n_test=1)
    with monkeypatch.context() as m:  # a trained family one wording short: it has no held-out wording
        m.setitem(instructions.PHRASINGS, "plural", instructions.PHRASINGS["plural"][:HELDOUT_PHRASING])
        with pytest.raises(ConfigError, match=r"'plural' lacks 9 wordings \(the last held out\)"):
            generate_instruction_suite(n_train=2, n_test=1)
    monkeypatch.setitem(instructions.MAKERS, "reverse_words", instructions.make_count)
    monkeypatch.setattr(instructions, "FAMILIES", (*instructions.FAMILIES, "reverse_words"))
    monkeypatch.setattr(instructions, "HELDOUT_FAMILIES", (*instructions.HELDOUT_FAMILIES, "reverse_words"))
    assert {r["family"] for r in generate_instruction_suite(n_train=2, n_test=1)
            if r["split"] == "test_heldout_family"} == {"last_item", "pet_fact", "reverse_words"}


def test_regenerating_writes_the_generators_output_for_the_settings_given_and_says_its_sizes(tmp_path, monkeypatch,
                                                                                            capsys):
    """`python -m minillm.datasets --out DIR --seed 3 ...` writes what the generators make with *those* settings
    (a seed or size dropped on its way would regenerate data/ as another corpus than the one asked for), and
    each line it prints names the file, its count and its size in MB as the file on disk has them."""
    from minillm.datasets.__main__ import main

    out = tmp_path / "data"
    monkeypatch.setattr("sys.argv", ["datasets", "--out", str(out), "--seed", "3", "--corpus-mb", "0.05",
                                     "--n-train", "2"])
    main()
    docs, records = read_corpus(out / "corpus.txt"), read_jsonl(out / "instructions.jsonl")
    assert docs == generate_corpus(seed=3, size_mb=0.05) and records == generate_instruction_suite(seed=3, n_train=2)
    said = capsys.readouterr().out.splitlines()
    for line, name, count in zip(said, ("corpus.txt", "instructions.jsonl"), (f"{len(docs)} documents",
                                                                               f"{len(records)} records"), strict=True):
        megabytes = len((out / name).read_bytes()) / 1_000_000
        assert line.startswith(f"{out / name}: {count}, {megabytes:.2f} MB, ") and line.endswith(" s"), line


def test_regenerating_more_records_than_a_family_has_inputs_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from minillm.datasets.__main__ import main

    monkeypatch.setattr("sys.argv", ["datasets", "--out", str(tmp_path / "data"), "--corpus-mb", "0.05",
                                     "--n-train", "3000"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "family plural: cannot find 3300 distinct inputs; ask for fewer" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing written: the shipped files stay as they were


@pytest.mark.parametrize("argv, complaint", [
    (["--n-train", "0"], "argument --n-train: '0' is not an integer >= 1"),
    # named as typed: "size_mb=inf" named the parameter of generate_corpus, which the user never saw
    (["--corpus-mb", "inf"], "argument --corpus-mb: 'inf' is not a positive, finite size"),
    (["--corpus-mb", "0"], "argument --corpus-mb: '0' is not a positive, finite size"),
    (["--out", "{file}"], "is a file; it names the folder to write corpus.txt and instructions.jsonl into"),
])
def test_regenerating_with_no_records_or_into_a_file_fails_in_one_line(argv, complaint, tmp_path, monkeypatch, capsys):
    from minillm.datasets.__main__ import main

    (tmp_path / "a_file").write_text("mine", encoding="utf-8")
    argv = [a.format(file=tmp_path / "a_file") for a in argv]
    monkeypatch.setattr("sys.argv", ["datasets", "--out", str(tmp_path / "data"), "--corpus-mb", "0.05", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and complaint in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text(encoding="utf-8") == "mine" and not (tmp_path / "data").exists()


def test_regenerating_into_a_folder_under_a_file_fails_in_one_line(tmp_path, monkeypatch, capsys):
    """(It was a NotADirectoryError traceback, from the write after the generators had run.)"""
    from minillm.datasets.__main__ import main

    (tmp_path / "a_file").write_text("mine", encoding="utf-8")
    monkeypatch.setattr("sys.argv", ["datasets", "--out", str(tmp_path / "a_file" / "data"), "--corpus-mb", "0.01",
                                     "--n-train", "2"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    said = capsys.readouterr().err
    assert exit_info.value.code == 2 and said == (f"python -m minillm.datasets: error: {tmp_path / 'a_file' / 'data'} "
                                                  "(or a folder above it) is a file, not a folder; give a folder path "
                                                  "(see python -m minillm.datasets --help)\n")


def test_regenerating_into_a_folder_named_with_a_tilde_writes_in_the_home_folder(tmp_path, monkeypatch):
    """`--out ~/data` quoted, or `--out=~/data`, where the shell leaves the `~`: it made a folder named "~" in
    the current one, where every `minillm` path argument means the home folder (console.path_arg)."""
    from minillm.datasets.__main__ import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["datasets", "--out=~/data", "--corpus-mb", "0.01", "--n-train", "2"])
    main()
    assert (tmp_path / "home" / "data" / "corpus.txt").is_file() and not (tmp_path / "~").exists()


def test_no_kelish_word_is_an_english_word_it_translates():
    for seed in (0, 62):  # seed 62 would draw "river" without the check
        assert not set(build_world(seed).lexicon.values()) & set(TOY_ENGLISH)


def test_a_pretty_printed_json_array_given_as_jsonl_gets_the_hint_and_an_ordinary_bad_line_does_not(tmp_path):
    """json.dump(records, f, indent=2) writes "[" alone on the first line, as a pretty-printed object
    writes "{": both are one document spread over lines. A line that only begins with "{" is just a
    bad line, and the hint would mislead there."""
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps([{"prompt": "Say hi", "response": "hi"}], indent=2), encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: .*one JSON document spread over lines"):
        read_jsonl(path)
    path.write_text('{"prompt": "Say hi", "response": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: invalid JSON") as caught:
        read_jsonl(path)
    assert "spread over lines" not in str(caught.value)


@pytest.mark.parametrize(("world", "relation"), [
    (dict(n_towns=1), "river"), (dict(n_towns=2), "river"),  # one seen town: no other town to name wrongly
    (dict(n_rivers=1), "river"), (dict(n_regions=1), "region"),
])
def test_a_world_without_a_wrong_answer_to_a_fact_is_refused_naming_the_minimum(world, relation):
    """(It was "IndexError: Cannot choose from an empty sequence", from the draw of a fact's wrong answer.)"""
    with pytest.raises(ConfigError, match=rf"^world: .* to the {relation} question, .* at least 2 different"):
        generate_instruction_suite(0, build_world(0, **world), n_train=5, n_test=2)


@pytest.mark.parametrize(("size", "least", "most"), [
    ("n_towns", 1, 44), ("n_people", 2, 60), ("n_regions", 1, 6), ("n_rivers", 1, 12)])
def test_a_world_size_out_of_range_is_refused_naming_it_and_its_range(size, least, most):
    """Only the Python API builds such a world. n_towns=0 was "IndexError: Cannot choose from an empty sequence",
    n_regions=0 a ZeroDivisionError, n_rivers=0 "empty range for randrange()", n_towns=45 "only 44 stems for 45
    names: add stems", n_people=1 an IndexError as the corpus drew the friend of a story's hero."""
    for bad in (least - 1, -1, most + 1, "3", 2.0, True):
        with pytest.raises(ConfigError, match=rf"^build_world: {size}={bad!r}; expected a whole number from "
                                              rf"{least} to {most}$"):
            build_world(0, **{size: bad})
    for good in (least, most):  # each end of the range builds a world the corpus can write about
        assert generate_corpus(size_mb=0.02, world=build_world(0, **{size: good}))
    # a size from numpy (an array's element, say) is a whole number too: it was refused as not one
    assert build_world(0, **{size: np.int64(least)}) == build_world(0, **{size: least})


@pytest.mark.parametrize("size_mb", [0, -1.0, float("nan"), float("inf")])
def test_a_corpus_size_that_is_not_positive_and_finite_is_refused(size_mb):
    """(size_mb=inf wrote documents until memory ran out.)"""
    with pytest.raises(ConfigError, match=rf"^size_mb={size_mb}: the corpus size must be positive and finite"):
        generate_corpus(size_mb=size_mb)


def test_a_world_of_few_towns_or_people_that_has_wrong_answers_makes_a_suite():
    for world in (dict(n_towns=3), dict(n_people=2), dict(n_towns=3, n_people=3)):
        assert generate_instruction_suite(0, build_world(0, **world), n_train=5, n_test=2)

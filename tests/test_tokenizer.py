"""Our byte-level BPE: hand-checked merges, simple == fast trainer, lossless round trip, bad input."""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator

import pytest
from _tokenizer_files import corrupt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillm.errors import TokenizerError
from minillm.tokenizer import SPECIAL_TOKENS, BPETokenizer, SentencePieceTokenizer, load_tokenizer, train_tokenizer
from minillm.tokenizer.base import check_vocab_size
from minillm.tokenizer.bpe import (
    PRESPLIT_PATTERN,
    best_pair,
    compile_pattern,
    count_chunks,
    merge_pair,
    split_text,
    train_merges_fast,
    train_merges_simple,
)

A, B, C, D = (ord(ch) for ch in "abcd")

ENGLISH = [
    "A flash flood watch will be in effect all night. Rain, then more rain!",
    "The night was cold; the wind blew from the north at 30 km/h.",
    "She said: 'it's fine, we'll go tomorrow' -- and they went on 2024-05-01.",
]
KOREAN = ["안녕하세요, 세계! 오늘 날씨는 맑습니다.", "한국어 문장은 띄어쓰기로 나눕니다. 날씨 날씨 날씨"]
EMOJI = ["🙂🙂 hello 👋🏽 world 🙂", "e\u0301t\u00e9 caf\u00e9 na\u00efve \u2603\u2603"]
REPEATS = ["aaaa aaa aa aaaaaaa", "bbbbbbbbb ab ab abab", "   \n\n\n\t\t  x  \n"]
CORPORA = {"english": ENGLISH, "korean": KOREAN, "emoji": EMOJI, "repeats": REPEATS,
           "mixed": ENGLISH + KOREAN + EMOJI + REPEATS}


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    """A tokenizer of every corpus above: the 256 byte tokens, the special tokens and 150 merges."""
    return BPETokenizer.train(CORPORA["mixed"] * 3, 256 + len(SPECIAL_TOKENS) + 150, progress=False)


def all_chunks(texts: list[str]) -> list[bytes]:
    """Every chunk occurrence of a corpus, as the simple trainer sees it."""
    regex = compile_pattern(PRESPLIT_PATTERN)
    return [chunk.encode() for text in texts for chunk in split_text(text, regex)]


# ---- hand-checked cases ---------------------------------------------------------------------------


def test_textbook_aaabdaaabac_three_merges() -> None:
    # aaabdaaabac: (a,a) occurs 4 times (overlaps count) -> Z=256: Z a b d Z a b a c
    # then (Z,a) and (a,b) both occur twice; the smaller pair (a,b)=(97,98) wins -> Y=257: Z Y d Z Y a c
    # then (Z,Y) occurs twice -> X=258: X d X a c
    expected = [(A, A), (A, B), (256, 257)]
    word = b"aaabdaaabac"
    assert train_merges_simple([word], 3) == expected
    assert train_merges_fast({word: 1}, 3) == expected
    tok = BPETokenizer(expected)
    assert tok.encode("aaabdaaabac") == [258, D, 258, A, C]
    assert tok.id_to_piece(258) == "aaab"


def test_overlapping_pairs_are_counted_but_merged_left_to_right() -> None:
    assert merge_pair([A, A, A], (A, A), 256) == [256, A]
    assert merge_pair([A, A, A, A], (A, A), 256) == [256, 256]
    # "aaa" x3 and "ab" x4: (a,a) counts 2 per "aaa" = 6 > (a,b) = 4
    chunks = {b"aaa": 3, b"ab": 4}
    every = [c for c, n in chunks.items() for _ in range(n)]
    assert train_merges_simple(every, 1) == [(A, A)]
    assert train_merges_fast(chunks, 1) == [(A, A)]
    # after it "aaa" is [aa, a]: the pairs left are (aa, a) x3 and (a, b) x4
    assert train_merges_fast(chunks, 2)[1] == (A, B)


def test_tie_break_is_highest_count_then_smallest_pair() -> None:
    assert best_pair({(5, 1): 3, (2, 9): 3, (1, 1): 2}) == (2, 9)
    assert best_pair({(5, 1): 4, (2, 9): 3}) == (5, 1)
    # a corpus where every pair occurs once: the merges come in pair order
    assert train_merges_fast({b"dcba": 1}, 1) == train_merges_simple([b"dcba"], 1) == [(B, A)]


# ---- simple and fast trainers agree ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_simple_and_fast_trainers_agree_until_exhausted(name: str) -> None:
    texts = CORPORA[name] * 2
    chunks = all_chunks(texts)
    simple = train_merges_simple(chunks, 10_000)
    fast = train_merges_fast(Counter(chunks), 10_000)
    assert fast == simple
    assert len(simple) < 10_000  # both ran until every chunk was one token
    # at exhaustion every chunk is a single token of the final tokenizer
    tok = BPETokenizer(fast)
    assert all(len(tok.encode(c.decode())) == 1 for c in set(chunks))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab \n한🙂", max_size=25), min_size=1, max_size=6), st.integers(1, 40))
def test_simple_and_fast_agree_on_random_corpora(texts: list[str], num_merges: int) -> None:
    chunks = all_chunks(texts)
    assert train_merges_fast(Counter(chunks), num_merges) == train_merges_simple(chunks, num_merges)


def test_train_with_either_trainer_gives_the_same_tokenizer() -> None:
    vocab = 256 + len(SPECIAL_TOKENS) + 60
    fast = BPETokenizer.train(CORPORA["mixed"], vocab, trainer="fast", progress=False)
    simple = BPETokenizer.train(CORPORA["mixed"], vocab, trainer="simple", progress=False)
    assert fast.merges == simple.merges
    assert fast.vocab_size == vocab


# ---- round trip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", " ", "   ", "\n\n\n", " \t\r\n  \x00\x01\x7f", "안녕하세요  세계\n", "👋🏽🙂 emoji", "a\u2581b",
     "<eos> <|user|>", "line one\n\n  indented\n\t\ttab", "e\u0301 \U0010ffff \ufeff"],
)
def test_round_trip_examples(tok: BPETokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text), errors="strict") == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())  # st.text() never draws lone surrogates: every string it makes is valid UTF-8
def test_round_trip_any_text(tok: BPETokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text), errors="strict") == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_presplit_covers_the_text(text: str) -> None:
    assert "".join(split_text(text, compile_pattern(PRESPLIT_PATTERN))) == text


def encode_by_applying_merges_in_order(tok: BPETokenizer, text: str) -> list[int]:
    """The definition of BPE encoding, independent of the heap inside the tokenizer."""
    ids: list[int] = []
    for chunk in split_text(text, compile_pattern(tok.pattern)):
        chunk_ids = list(chunk.encode())
        for k, pair in enumerate(tok.merges):
            chunk_ids = merge_pair(chunk_ids, pair, 256 + k)
        ids += chunk_ids
    return ids


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from("aaab  \n\tthe night 한국🙂,.!1"), max_size=200))
def test_encode_applies_merges_in_the_order_learned(tok: BPETokenizer, text: str) -> None:
    assert tok.encode(text) == encode_by_applying_merges_in_order(tok, text)


def test_long_chunks_encode_correctly(tok: BPETokenizer) -> None:
    # Long chunks (text without spaces, a base64 blob) are where the encoder's heap and linked list do
    # their work (BPETokenizer._encode_chunk): the same ids as the definition, merge by merge.
    text = "aaaa" * 5000 + " " * 20000 + "안녕하세요" * 2000  # three chunks of 20-30 KB
    assert tok.encode(text) == encode_by_applying_merges_in_order(tok, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["<eos>", "<|user|>", "<pad", "|>", "x", " ", "한"]), max_size=12).map("".join))
def test_round_trip_with_allowed_special_tokens(tok: BPETokenizer, text: str) -> None:
    ids = tok.encode(text, allow_special=True)
    assert tok.decode(ids, errors="strict") == text
    assert ids.count(tok.eos_id) == text.count("<eos>")


def test_progress_bar_can_be_switched_off(capsys) -> None:
    BPETokenizer.train(ENGLISH, 300, progress=True)
    assert "BPE merges" in capsys.readouterr().err
    BPETokenizer.train(ENGLISH, 300, progress=False)
    assert capsys.readouterr().err == ""


def test_lone_surrogate_is_a_clear_error(tok: BPETokenizer) -> None:
    with pytest.raises(TokenizerError, match="surrogate"):
        tok.encode("ok \ud800 no")


def test_merges_are_used_and_cache_gives_the_same_ids(tok: BPETokenizer) -> None:
    text = " ".join(ENGLISH)
    ids = tok.encode(text)
    assert len(ids) < len(text.encode())  # merges shortened it
    assert tok.encode(text) == ids == BPETokenizer(tok.merges).encode(text)  # cached == fresh


def test_presplit_cuts_words_with_their_leading_space_and_digits_in_threes() -> None:
    # GPT-style: a word keeps the space before it, "'s" stands alone, numbers go by at most three
    # digits, and a run of whitespace leaves its last space to the word after it.
    regex = compile_pattern(PRESPLIT_PATTERN)
    assert split_text("Hello world, it's 12345!\n\n  ok", regex) == [
        "Hello", " world", ",", " it", "'s", " 123", "45", "!", "\n\n ", " ok"]
    assert split_text("날씨는 맑음", regex) == ["날씨는", " 맑음"]


def test_custom_pattern() -> None:
    vocab = 256 + len(SPECIAL_TOKENS) + 2  # the chunks "ab" and "cd" allow two merges
    tok = BPETokenizer.train(["ab ab ab cd"], vocab, pattern=r"\S+|\s+", progress=False)
    assert tok.pattern == r"\S+|\s+"
    assert tok.decode(tok.encode("ab cd  ab"), errors="strict") == "ab cd  ab"
    with pytest.raises(TokenizerError, match="capturing groups"):
        BPETokenizer([], pattern=r"(\S+)|\s+")
    with pytest.raises(TokenizerError, match="skips characters"):
        BPETokenizer([], pattern=r"[a-z]+").encode("abc!")


# ---- special tokens -------------------------------------------------------------------------------


def test_special_tokens_take_the_last_ids_and_only_allow_special_makes_them(tok: BPETokenizer) -> None:
    ids = tok.special_tokens
    assert tuple(ids) == SPECIAL_TOKENS
    assert sorted(ids.values()) == list(range(tok.vocab_size - len(SPECIAL_TOKENS), tok.vocab_size))
    named = (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.user_id, tok.assistant_id)
    assert named == tuple(ids.values())
    # ordinary text never yields a special id, even the special strings themselves
    text = "".join(SPECIAL_TOKENS) + " <eos>"
    assert not set(tok.encode(text)) & set(ids.values())
    assert tok.encode("hi<eos>", allow_special=True) == tok.encode("hi") + [tok.eos_id]
    # with allow_special, every special string (the last, <|assistant|>, too) is its one id
    assert [tok.encode(s, allow_special=True) for s in SPECIAL_TOKENS] == [[i] for i in ids.values()]
    seq = [tok.bos_id] + tok.encode("night") + [tok.eos_id, tok.pad_id]
    assert tok.decode(seq) == "<bos>night<eos><pad>"
    assert tok.decode(seq, skip_special=True) == "night"
    assert tok.id_to_piece(tok.mask_id) == "<mask>"


def test_decode_rejects_unknown_ids_and_replaces_cut_characters(tok: BPETokenizer) -> None:
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([-1])
    # a token holding only the start of "한": its first token if it takes several, else its first byte
    half = tok.encode("한")[:1] if len(tok.encode("한")) > 1 else list("한".encode())[:1]
    assert tok.decode(half) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        tok.decode(half, errors="strict")


def test_a_token_holding_part_of_a_character_shows_its_bytes(tok: BPETokenizer) -> None:
    # "한" is the 3 bytes ED 95 9C: one of them alone is no text, and is shown as \xNN, not as U+FFFD
    assert tok.id_to_piece(0xED) == "\\xed" and tok.id_to_piece(ord("a")) == "a"
    assert tok.decode([0xED, 0x95, 0x9C], errors="strict") == "한"


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("corpus", [[], [""], ["   \n\t ", "\n"]])
def test_an_empty_or_whitespace_only_corpus_is_refused(corpus: list[str]) -> None:
    with pytest.raises(TokenizerError, match="empty or only whitespace"):
        train_tokenizer(corpus, 300, progress=False)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])  # both trainers check their texts alike
def test_a_corpus_is_strings_of_valid_utf8(kind: str) -> None:
    with pytest.raises(TokenizerError, match="iterable of strings"):
        train_tokenizer("some text", 300, kind=kind, progress=False)
    with pytest.raises(TokenizerError, match="must hold strings, found a bytes"):
        train_tokenizer([b"bytes"], 300, kind=kind, progress=False)
    with pytest.raises(TokenizerError, match="must hold strings, found a NoneType"):
        train_tokenizer(["ok text", None], 300, kind=kind, progress=False)
    with pytest.raises(TokenizerError, match="lone surrogate"):
        train_tokenizer(["ok \ud800 text"], 300, kind=kind, progress=False)


def test_vocab_size_too_small() -> None:
    with pytest.raises(TokenizerError, match=f">= {256 + len(SPECIAL_TOKENS)}"):
        train_tokenizer(ENGLISH, 256 + len(SPECIAL_TOKENS) - 1, progress=False)
    assert train_tokenizer(ENGLISH, 256 + len(SPECIAL_TOKENS), progress=False).merges == []


def test_the_largest_vocab_size_is_the_largest_32_bit_int() -> None:
    """sentencepiece reads vocab_size as a signed 32-bit int: 2**31 - 1 is allowed, one more is refused."""
    check_vocab_size(2**31 - 1, 256)
    with pytest.raises(TokenizerError, match="too large"):
        check_vocab_size(2**31, 256)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
@pytest.mark.parametrize("vocab_size", [1000.0, True])
def test_a_vocab_size_that_is_no_integer_is_called_so_not_too_small(kind: str, vocab_size: object) -> None:
    # The trainers' own check (not only train_tokenizer's): 1000.0 was "too small: use vocab_size >= 262".
    cls = BPETokenizer if kind == "bpe" else SentencePieceTokenizer
    with pytest.raises(TokenizerError, match=re.escape(f"vocab_size={vocab_size!r} must be an integer, e.g. 4096")):
        cls.train(ENGLISH, vocab_size, progress=False)
    with pytest.raises(TokenizerError, match="must be an integer"):
        train_tokenizer(ENGLISH, vocab_size, kind=kind, progress=False)


def test_vocab_size_larger_than_the_corpus_supplies() -> None:
    # "abc abc": chunks "abc" and " abc" allow (a,b), (ab,c), (" ",abc) = 3 merges
    with pytest.warns(UserWarning, match=r"allows only 3 merges .* vocab_size=265"):
        tok = train_tokenizer(["abc abc"], 300, progress=False)
    assert tok.vocab_size == 256 + 3 + len(SPECIAL_TOKENS) == 265
    assert tok.encode(" abc") == [258]
    assert tok.eos_id == 259 + SPECIAL_TOKENS.index("<eos>")


def test_a_corpus_with_enough_merges_trains_without_a_warning() -> None:
    # The same corpus asked for exactly its 3 merges, and for fewer: the vocabulary asked for, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for merges in (3, 2):
            asked = 256 + merges + len(SPECIAL_TOKENS)
            assert train_tokenizer(["abc abc"], asked, progress=False).vocab_size == asked


def test_unknown_kind_and_trainer() -> None:
    """Each refusal names the value given and those allowed, before the corpus is read: counting a big
    corpus's chunks takes a while, and an unknown trainer was refused only after it."""
    def unread() -> Iterator[str]:  # a corpus that fails the test when it is read
        raise AssertionError("the corpus was read before the refusal")
        yield

    with pytest.raises(TokenizerError, match=r"kind='wordpiece': train_tokenizer .* trains bpe or sentencepiece"):
        train_tokenizer(unread(), 300, kind="wordpiece")
    with pytest.raises(TokenizerError, match=r"trainer='quick': expected 'fast' or 'simple'"):
        BPETokenizer.train(unread(), 300, trainer="quick", progress=False)


# ---- the file -------------------------------------------------------------------------------------


def test_save_load_round_trip(tok: BPETokenizer, tmp_path) -> None:
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == "bpe" and data["format_version"] == 1
    assert data["merges"][0] == list(tok.merges[0])
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    text = " ".join(ENGLISH + KOREAN)
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.special_tokens == tok.special_tokens
    assert BPETokenizer.load(path).merges == tok.merges
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved again by an editor that adds a BOM, as
    assert load_tokenizer(path).merges == tok.merges  # the corpus and JSONL readers forgive it


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "wordpiece"}, "unknown tokenizer kind"),
        ({"kind": None}, "no 'kind'"),
        ({"format_version": 99}, "format_version=99"),
        ({"merges": None}, r"missing \['merges'\]"),
        ({"merges": [[300, 5]]}, "unknown id"),
        ({"merges": [[256, 5]]}, "unknown id"),  # merge 0 makes id 256: it cannot use 256 itself
        ({"pattern": None}, r"missing \['pattern'\]"),  # each missing key is named, the first one too
        ({"merges": [[1, 2], [1, 2]]}, "repeat"),
        ({"merges": [[1, 2, 3]]}, r"\[int, int\]"),
        ({"merges": [[True, 2]]}, r"\[int, int\]"),  # a bool is an int to Python, not a token id
        ({"merges": "abc"}, r"\[int, int\]"),
        ({"special_tokens": {"<pad>": 0}}, "special_tokens .* do not match"),
        ({"pattern": "(a)"}, "capturing groups"),
    ],
)
def test_corrupt_file(tok: BPETokenizer, tmp_path, changes: dict, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(corrupt(tok, tmp_path, **changes))


def test_missing_bad_json_and_wrong_kind(tok: BPETokenizer, tmp_path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "bpe", "merges": [', encoding="utf-8")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(bad)
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(TokenizerError, match="no 'kind'"):
        load_tokenizer(bad)
    good = tmp_path / "tok.json"
    tok.save(good)
    with pytest.raises(TokenizerError, match=re.escape("not 'sentencepiece'")):
        SentencePieceTokenizer.load(good)


def test_count_chunks_counts_each_distinct_chunk() -> None:
    counts = count_chunks(["the cat, the cat", "the"], compile_pattern(PRESPLIT_PATTERN))
    assert counts == {b"the": 2, b" cat": 2, b",": 1, b" the": 1}

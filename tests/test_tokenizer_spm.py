"""The sentencepiece wrapper: lossless round trip, special tokens, files, bad input."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import sentencepiece as spm
from _tokenizer_files import corrupt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minillm.errors import TokenizerError
from minillm.tokenizer import SPECIAL_TOKENS, SentencePieceTokenizer, load_tokenizer, train_tokenizer
from minillm.tokenizer.spm import MAX_LINE_BYTES, split_long_line

CORPUS = [
    "A flash flood watch will be in effect all night.\nRain, then more rain tonight.",
    "The night was cold; the wind blew from the north.\n\n  Indented line\twith a tab.",
    "안녕하세요, 세계! 오늘 날씨는 맑습니다.\n한국어 문장은 띄어쓰기로 나눕니다.",
    "🙂🙂 hello 👋🏽 world 🙂 café naïve",
] * 5
VOCAB = 330  # <unk> + 6 specials + 256 bytes + a few dozen learned pieces


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request) -> SentencePieceTokenizer:
    return train_tokenizer(CORPUS, VOCAB, kind="sentencepiece", spm_model_type=request.param, progress=False)


@pytest.mark.parametrize(
    "text",
    ["", " ", "   ", "\n", "\n\n\n", "  lead", "trail  ", " \t\r\n  \x00\x01\x7f", "안녕하세요  세계\n",
     "👋🏽🙂 emoji", "a\u2581b \u2581\u2581", "<eos> <|user|>", "line one\n\n  indented\n\t\ttab",
     "e\u0301 \U0010ffff \ufeff", "Ｆｕｌｌｗｉｄｔｈ ﬁ"],  # the last: NFKC would change these
)
def test_round_trip_examples(tok: SentencePieceTokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text), errors="strict") == text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text())  # st.text() never draws lone surrogates: every string it makes is valid UTF-8
def test_round_trip_any_text(tok: SentencePieceTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids, errors="strict") == text
    assert tok._sp.unk_id() not in ids  # a character the corpus never had is spelled in bytes, never <unk>


def test_decode_agrees_with_sentencepiece(tok: SentencePieceTokenizer) -> None:
    text = " ".join(CORPUS[:4])  # no literal "▁", so sentencepiece's own decode is exact too
    ids = tok.encode(text)
    assert tok.decode(ids) == tok._sp.decode(ids) == text


def test_learned_pieces_are_used(tok: SentencePieceTokenizer) -> None:
    text = "the night rain"
    assert len(tok.encode(text)) < len(text.encode())


def test_special_tokens(tok: SentencePieceTokenizer) -> None:
    ids = tok.special_tokens
    assert tuple(ids) == SPECIAL_TOKENS and len(set(ids.values())) == len(SPECIAL_TOKENS)
    assert all(0 <= i < tok.vocab_size for i in ids.values())
    named = (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.user_id, tok.assistant_id)
    assert named == tuple(ids.values())
    text = "".join(SPECIAL_TOKENS) + " <eos> <pad>"
    assert not set(tok.encode(text)) & set(ids.values())
    assert tok.encode("hi<eos>", allow_special=True) == tok.encode("hi") + [tok.eos_id]
    seq = [tok.bos_id] + tok.encode("night") + [tok.eos_id]
    assert tok.decode(seq) == "<bos>night<eos>"
    assert tok.decode(seq, skip_special=True) == "night"
    assert tok.id_to_piece(tok.user_id) == "<|user|>"
    assert tok.decode([0]) == "\ufffd"  # <unk> (id 0): encode never makes it, but a model may sample it; it shows


def test_vocab_size_is_as_asked(tok: SentencePieceTokenizer) -> None:
    assert tok.vocab_size == VOCAB


def test_save_load_round_trip(tok: SentencePieceTokenizer, tmp_path) -> None:
    path = tmp_path / "spm.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == "sentencepiece" and data["format_version"] == 1
    assert data["model_type"] == tok.model_type
    loaded = load_tokenizer(path)
    assert isinstance(loaded, SentencePieceTokenizer)
    assert loaded.model_type == tok.model_type and loaded.to_dict() == tok.to_dict()
    text = " ".join(CORPUS[:4]) + "\u2581"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.special_tokens == tok.special_tokens


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_proto_base64": None}, "missing"),
        ({"model_proto_base64": "not base64!"}, "not base64"),
        ({"model_proto_base64": "AAAA"}, "corrupt"),
        ({"special_tokens": {"<pad>": 1}}, "do not match"),
        ({"format_version": 0}, "format_version=0"),
    ],
)
def test_corrupt_file(tok: SentencePieceTokenizer, tmp_path, changes: dict, message: str) -> None:
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(corrupt(tok, tmp_path, **changes))


def test_one_character_outside_the_base64_alphabet_is_refused(tok: SentencePieceTokenizer, tmp_path) -> None:
    data = tok.to_dict()
    proto = data["model_proto_base64"]
    data["model_proto_base64"] = proto[:8] + "!" + proto[8:]  # padding still fine: only the alphabet is wrong
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenizerError, match="not base64"):
        load_tokenizer(path)


@pytest.mark.parametrize("corpus", [[], [""], ["  \n\n\t"]])
def test_empty_corpus(corpus: list[str]) -> None:
    with pytest.raises(TokenizerError, match="empty or only whitespace"):
        train_tokenizer(corpus, 400, kind="sentencepiece", progress=False)


def test_vocab_size_too_small_or_too_large_or_bad_model_type() -> None:
    with pytest.raises(TokenizerError, match=">= 263"):
        train_tokenizer(CORPUS, 262, kind="sentencepiece", progress=False)
    with pytest.warns(UserWarning, match="vocab_size=5000 is more than the corpus supports"):
        tok = train_tokenizer(CORPUS, 5000, kind="sentencepiece", progress=False)
    assert VOCAB < tok.vocab_size < 5000
    assert tok.decode(tok.encode(CORPUS[0]), errors="strict") == CORPUS[0]
    with warnings.catch_warnings():  # exactly the size asked for: no warning
        warnings.simplefilter("error")
        assert train_tokenizer(CORPUS, VOCAB, kind="sentencepiece", progress=False).vocab_size == VOCAB
    # 1000 distinct characters + <unk> + 256 bytes + 6 specials: 1263 pieces at least, the size to name
    many_characters = ["".join(chr(0xAC00 + i) for i in range(k, k + 50)) for k in range(0, 1000, 50)]
    with pytest.raises(TokenizerError, match="could not train a vocabulary of 300 .*tokenizer.vocab_size=1263 "):
        train_tokenizer(many_characters, 300, kind="sentencepiece", progress=False)
    with pytest.raises(TokenizerError, match="model_type"):
        train_tokenizer(CORPUS, 400, kind="sentencepiece", spm_model_type="char")


def test_a_sentencepiece_model_without_our_special_tokens_is_refused() -> None:
    model = io.BytesIO()  # trained by sentencepiece itself: <unk>, <s>, </s>, no <pad> or <|user|>
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400,
                                   byte_fallback=True, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(TokenizerError, match="lacks minillm's special tokens"):
        SentencePieceTokenizer(model.getvalue(), "unigram")


def test_long_lines_are_cut_at_spaces_and_between_characters() -> None:
    line = "ab cd 가나다라"  # 5 + 1 + 12 bytes
    parts = split_long_line(line, limit=8)
    assert "".join(parts) == line and all(len(p.encode("utf-8")) <= 8 for p in parts)
    assert parts[:2] == ["ab cd", " 가나"]  # the space begins the next part; a character is never cut
    assert split_long_line("short", limit=8) == ["short"]
    assert split_long_line("🙂🙂x", limit=4) == ["🙂", "🙂", "x"]  # the smallest limit: one 4-byte character
    with pytest.raises(ValueError, match="up to 4 bytes"):
        split_long_line("🙂x", limit=3)  # (before the check, a loop that never ended)


def test_a_line_longer_than_sentencepiece_takes_trains_in_full() -> None:
    # one line of 90 KB whose second half is another word: sentencepiece alone skips the whole line
    line = "flood " * 7000 + "weekend " * 6000
    assert len(line.encode("utf-8")) > MAX_LINE_BYTES
    with pytest.warns(UserWarning, match="more than the corpus supports"):
        tok = train_tokenizer([line], 300, kind="sentencepiece", progress=False)
    assert len(tok.encode(" weekend")) == 1 and tok.decode(tok.encode(line)) == line
    assert len(tok.encode(" flood")) == 1  # learnt from the first part, which is all but 64 KB long


def test_lone_surrogate_is_a_clear_error(tok: SentencePieceTokenizer) -> None:
    with pytest.raises(TokenizerError, match="surrogate"):
        tok.encode("\udfff")


def test_training_says_what_it_does_since_sentencepiece_shows_no_progress_bar(capsys) -> None:
    # a unigram vocabulary took a minute on a 50 MB corpus, with nothing on the screen
    SentencePieceTokenizer.train(CORPUS, VOCAB, model_type="unigram")
    out = capsys.readouterr().out
    assert f"sentencepiece: training a unigram vocabulary of {VOCAB} on 0.0 MB of text" in out
    assert "no progress bar" in out
    SentencePieceTokenizer.train(CORPUS, VOCAB, model_type="unigram", progress=False)
    assert capsys.readouterr().out == ""

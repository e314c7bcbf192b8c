"""The same tokenizer interface over sentencepiece, the industrial reference (BPE or unigram).

sentencepiece is written in C++ and used by many real models. Wrapping it behind minillm's
`Tokenizer` interface lets every stage swap tokenizers with one config switch, and lets lesson 01
compare it with our own BPE. Its `unigram` model type learns the other way round from BPE: it
starts from many candidate pieces and drops the ones a probabilistic model of the text misses least.

Out of the box sentencepiece is NOT lossless: it normalises text (NFKC: "ﬁ" becomes "fi", a
full-width "Ａ" an "A"), adds a space in front of the text ("dummy prefix"), folds runs of spaces
into one, and maps characters it has not seen to <unk>. We switch all of that off:

- `normalization_rule_name="identity"`: the text is used exactly as given;
- `add_dummy_prefix=False`, `remove_extra_whitespaces=False`: spaces are neither added nor folded;
- `byte_fallback=True`: a character without a piece is spelled with byte pieces <0x00>..<0xFF>,
  so nothing is ever <unk>. Newlines take this route: we train on lines (sentencepiece works on
  "sentences", and the training text is passed as an iterator of them so that nothing is read
  from a file and cut at newlines behind our back), and "\\n" is then encoded as <0x0A>;
- `allow_whitespace_only_pieces=True`: a run of spaces can be one piece.

Two details remain, handled here:

- sentencepiece writes a space as "▁" (U+2581) inside pieces, so a literal "▁" in the text would
  come back as a space. We encode each literal "▁" with its three UTF-8 byte pieces instead.
- The special tokens are *control symbols*: they get ids, but encoding text never produces them
  (the text "<eos>" becomes '<', 'e', 'o', 's', '>'). sentencepiece's own <bos>/<eos>/<pad> are
  switched off so that ours are the only ones; <unk> (id 0) must exist but is never produced.

The trained model (a protobuf) is stored base64-encoded inside the JSON file, so a tokenizer is
one file like ours. Decoding reads the bytes of each piece (like our BPE) so that the shared
`Tokenizer.decode` can decode strictly.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import sentencepiece as spm

from minillm.config import SPM_MODEL_TYPES
from minillm.errors import TokenizerError
from minillm.tokenizer.base import (
    FORMAT_VERSION,
    SPECIAL_TOKENS,
    Tokenizer,
    asking_for_vocab_size,
    check_vocab_size,
    checked_texts,
    require_keys,
    warn_smaller_vocab,
)

META_SPACE = "\u2581"  # "▁": how sentencepiece writes a space inside a piece
N_RESERVED = 1 + 256  # <unk> and the 256 byte pieces; with the specials, the least a vocabulary holds
MAX_LINE_BYTES = 1 << 16  # sentencepiece silently skips longer training lines: we cut them (and raise its limit)


def split_long_line(line: str, limit: int = MAX_LINE_BYTES) -> list[str]:
    """`line` in parts of at most `limit` UTF-8 bytes, cut before a space where there is one (a space
    begins a piece, "▁word"), else between two characters. A one-line file then trains as BPE's does.
    A limit under 4 bytes could not hold every character (UTF-8 takes up to 4), so it is refused."""
    if limit < 4:
        raise ValueError(f"limit={limit}: a part must hold any UTF-8 character, which takes up to 4 bytes")
    data = line.encode("utf-8")
    parts = []
    while len(data) > limit:
        cut = data.rfind(b" ", 1, limit + 1)
        if cut <= 0:
            cut = limit
            while data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: step back to the character's start
                cut -= 1
        parts.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    return [*parts, data.decode("utf-8")]


def spm_trainer_options(vocab_size: int, model_type: str) -> dict[str, Any]:
    """The sentencepiece settings that make it lossless and give us our special tokens."""
    return {
        "vocab_size": vocab_size,
        "model_type": model_type,
        "normalization_rule_name": "identity",
        "add_dummy_prefix": False,
        "remove_extra_whitespaces": False,
        "split_by_whitespace": True,  # pieces stay inside words, like our regex pre-split
        "allow_whitespace_only_pieces": True,
        "byte_fallback": True,
        "unk_id": 0,
        "bos_id": -1,
        "eos_id": -1,
        "pad_id": -1,
        "control_symbols": list(SPECIAL_TOKENS),
        "max_sentence_length": MAX_LINE_BYTES,
        "hard_vocab_limit": False,  # a corpus too small for vocab_size gives a smaller vocabulary
        "num_threads": 2,
        "minloglevel": 2,  # only errors
    }


def spm_advice(message: str, vocab_size: int) -> str:
    """sentencepiece's training error, with the fix that works in minillm.

    Its own advice names its command-line options (`--character_coverage`), which minillm does not
    pass through; what minillm exposes is the vocabulary size, so we say which size to ask for, and how
    each of its callers takes it (`asking_for_vocab_size`).
    """
    reason = re.sub(r"^.*\]\s*", "", message.strip()).split(" Increase vocab_size or")[0].rstrip(".")
    reason = reason or message.strip()  # a message of another form: sentencepiece's own words
    numbers = re.search(r"(\d+) vs (\d+)", reason) or re.search(r"<= ?(\d+)", reason)
    size = numbers.groups()[-1] if numbers else "N"  # the size it needs (or the most it allows)
    return (f"sentencepiece could not train a vocabulary of {vocab_size} on this corpus ({reason}); use vocab_size="
            f"{size}: {asking_for_vocab_size(size)}")


class SentencePieceTokenizer(Tokenizer):
    """minillm's tokenizer interface over a trained sentencepiece model."""

    kind: ClassVar[str] = "sentencepiece"

    def __init__(self, model_proto: bytes, model_type: str) -> None:
        self.model_proto = model_proto
        self.model_type = model_type
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_proto)
        except (RuntimeError, TypeError) as e:
            raise TokenizerError(f"the sentencepiece model is corrupt ({e}); retrain the tokenizer") from None
        special = {s: self._sp.piece_to_id(s) for s in SPECIAL_TOKENS}
        if not all(self._sp.is_control(i) for i in special.values()):
            raise TokenizerError("the sentencepiece model lacks minillm's special tokens; retrain it")
        super().__init__(special)
        self._bytes = [self._piece_bytes(i) for i in range(self._sp.get_piece_size())]
        # a literal "▁" in the text is spelled with the byte pieces of its UTF-8 bytes, <0xE2> <0x96> <0x81>
        self._meta_space_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in META_SPACE.encode("utf-8")]

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, *, model_type: str = "bpe", progress: bool = True
    ) -> SentencePieceTokenizer:
        """Train sentencepiece on the lines of `texts`. Like ours, it warns and returns a smaller
        vocabulary when the corpus cannot supply `vocab_size` pieces. sentencepiece trains in C++
        and shows no progress bar, so with `progress` one line says what it is doing: a unigram
        vocabulary took a minute on 50 MB of text (2 CPU cores), without a word otherwise."""
        if model_type not in SPM_MODEL_TYPES:
            raise TokenizerError(f"model_type={model_type!r}: expected one of {', '.join(SPM_MODEL_TYPES)}")
        check_vocab_size(vocab_size, N_RESERVED)
        lines = [part for text in checked_texts(texts) for line in text.split("\n") if line.strip()
                 for part in split_long_line(line)]
        if not lines:
            raise TokenizerError("the training corpus is empty or only whitespace; give it some text")
        if progress:
            n_mb = sum(len(line.encode("utf-8")) for line in lines) / 1e6
            print(f"sentencepiece: training a {model_type} vocabulary of {vocab_size} on {n_mb:.1f} MB of text "
                  "(it trains in C++ and shows no progress bar; a unigram vocabulary takes longest)", flush=True)
        model = io.BytesIO()
        try:
            options = spm_trainer_options(vocab_size, model_type)
            spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **options)
        except RuntimeError as e:
            raise TokenizerError(spm_advice(str(e), vocab_size)) from None
        tok = cls(model.getvalue(), model_type)
        if tok.vocab_size < vocab_size:
            warn_smaller_vocab(vocab_size, tok.vocab_size, f"sentencepiece found only {tok.vocab_size} pieces")
        return tok

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def _piece_bytes(self, i: int) -> bytes:
        """The bytes piece i stands for: a byte piece is one byte; "▁" is a space."""
        piece = self._sp.id_to_piece(i)
        if self._sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])  # "<0xAB>" -> b"\xab"
        if self._sp.is_unknown(i):
            return "\ufffd".encode()  # never produced by encode (byte fallback); shown as U+FFFD
        if self._sp.is_control(i):
            return b""  # special tokens are rendered by Tokenizer.decode
        return piece.replace(META_SPACE, " ").encode("utf-8")

    def id_to_bytes(self, i: int) -> bytes:
        return self._bytes[i]

    def _encode_ordinary(self, text: str) -> list[int]:
        """sentencepiece's encode, except that a literal "▁" is spelled with its byte pieces."""
        ids: list[int] = []
        for k, part in enumerate(text.split(META_SPACE)):
            if k:
                ids += self._meta_space_ids
            if part:
                ids += self._sp.encode(part)
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "model_type": self.model_type,
            "special_tokens": self.special_tokens,
            "model_proto_base64": base64.b64encode(self.model_proto).decode("ascii"),
            "pieces": [self.id_to_piece(i) for i in range(self.vocab_size)],  # for reading only
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SentencePieceTokenizer:
        require_keys(data, ("model_type", "special_tokens", "model_proto_base64"), "sentencepiece")
        try:
            proto = base64.b64decode(data["model_proto_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise TokenizerError(f"sentencepiece tokenizer file: the model is not base64 ({e})") from None
        tok = cls(proto, data["model_type"])
        if data["special_tokens"] != tok.special_tokens:
            raise TokenizerError(
                f"sentencepiece tokenizer file: special_tokens {data['special_tokens']} do not match "
                f"the model's {tok.special_tokens}; the file is corrupt, retrain it"
            )
        return tok

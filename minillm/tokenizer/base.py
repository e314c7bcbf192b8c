"""What every minillm tokenizer shares: the special tokens, the `Tokenizer` interface, the file.

Two tokenizers stand behind one interface: our byte-level BPE (bpe.py, the one to read to learn how
a tokenizer is trained) and sentencepiece (spm.py, the industrial reference). A model, a training
stage or a lesson only ever holds a `Tokenizer`: it asks it for ids (`encode`), for text (`decode`)
and for the ids of the special tokens by name (`tok.eos_id`, `tok.special_tokens["<mask>"]`), never
for a number written into the code.

Special tokens (`SPECIAL_TOKENS`) mark the structure that text alone does not: where a document
begins and ends, a blank for BERT to fill, who speaks in a chat. Ordinary text can never produce
them (the text "<eos>" is five ordinary characters); only `encode(text, allow_special=True)` turns
their exact strings into their ids.

A tokenizer is saved as one readable JSON file (`TOKENIZER_NAME` in a run folder) with its `kind`
and a `FORMAT_VERSION`; `read_tokenizer_json` checks both before a subclass reads the rest. The checks
of a training input (`checked_texts`, `check_vocab_size`) live here too, so that both trainers refuse
the same bad input with the same words.
"""

from __future__ import annotations

import json
import operator
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from minillm.errors import TokenizerError
from minillm.utils import parse_json, write_json

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<mask>", "<|user|>", "<|assistant|>")
TOKENIZER_NAME = "tokenizer.json"  # the tokenizer file in a run folder
FORMAT_VERSION = 1  # bump when the JSON layout changes; load refuses versions it does not know
MAX_VOCAB_SIZE = 2**31 - 1  # sentencepiece reads vocab_size as a 32-bit int; a bigger one ends in a traceback


class Tokenizer:
    """The interface of every minillm tokenizer: ids for special tokens, encode, decode, save, load.

    A subclass provides `vocab_size`, `_encode_ordinary(text)`, `id_to_bytes(i)`, `to_dict()` and
    `from_dict(data)`; everything else is here, shared.
    """

    kind: ClassVar[str]

    def __init__(self, special_tokens: Mapping[str, int]) -> None:
        if tuple(special_tokens) != SPECIAL_TOKENS:
            raise TokenizerError(
                f"special tokens {list(special_tokens)} differ from {list(SPECIAL_TOKENS)}; "
                "retrain the tokenizer"
            )
        self.special_tokens: dict[str, int] = dict(special_tokens)
        self._special_of_id = {i: s for s, i in self.special_tokens.items()}
        self._special_re = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS))

    # ---- what a subclass provides -----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def _encode_ordinary(self, text: str) -> list[int]:
        raise NotImplementedError

    def id_to_bytes(self, i: int) -> bytes:
        """The bytes an ordinary (non-special) id stands for."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokenizer:
        raise NotImplementedError

    # ---- the names of the special ids (never hard-code the numbers) --------------------------
    @property
    def pad_id(self) -> int:
        return self.special_tokens["<pad>"]

    @property
    def bos_id(self) -> int:
        return self.special_tokens["<bos>"]

    @property
    def eos_id(self) -> int:
        return self.special_tokens["<eos>"]

    @property
    def mask_id(self) -> int:
        return self.special_tokens["<mask>"]

    @property
    def user_id(self) -> int:
        return self.special_tokens["<|user|>"]

    @property
    def assistant_id(self) -> int:
        return self.special_tokens["<|assistant|>"]

    # ---- text <-> ids -------------------------------------------------------------------------
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> ids. Special-token strings in `text` stay ordinary text unless `allow_special`."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects a str, got {type(text).__name__}")
        utf8(text)  # fail early, with a clear message, on text that is not valid UTF-8
        if not allow_special:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in self._special_re.finditer(text):
            ids += self._encode_ordinary(text[start : m.start()])
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        return ids + self._encode_ordinary(text[start:])

    def decode(self, ids: Iterable[int], skip_special: bool = False, errors: str = "replace") -> str:
        """Ids -> text. Special ids render as their strings ("<eos>") unless `skip_special`.

        Ids from a model can cut a multi-byte character in half, so by default invalid UTF-8
        becomes U+FFFD; pass errors="strict" to get an error instead (the tests do).
        """
        parts: list[bytes] = []
        for item in ids:
            try:
                i = operator.index(item)  # an int, or a one-element integer tensor; not a float, not a row
            except TypeError:
                raise TokenizerError(f"decode takes a sequence of integer ids, got {item!r} among them; for a "
                                     "(batch, time) tensor decode one row at a time, e.g. ids[0]") from None
            self._check_in_vocab(i)
            special = self._special_of_id.get(i)
            if special is None:
                parts.append(self.id_to_bytes(i))
            elif not skip_special:
                parts.append(special.encode("utf-8"))
        return b"".join(parts).decode("utf-8", errors=errors)

    def id_to_piece(self, i: int) -> str:
        """A readable form of one token, e.g. " night"; a partial UTF-8 character shows as \\xNN."""
        self._check_in_vocab(i)
        if i in self._special_of_id:
            return self._special_of_id[i]
        return self.id_to_bytes(i).decode("utf-8", errors="backslashreplace")

    def _check_in_vocab(self, i: int) -> None:
        if not 0 <= i < self.vocab_size:
            raise TokenizerError(f"id {i} is outside the vocabulary (0..{self.vocab_size - 1})")

    # ---- one JSON file --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as one human-readable JSON file (atomically)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by `save`; TokenizerError if it is missing, corrupt or of another kind."""
        data = read_tokenizer_json(path)
        if data["kind"] != cls.kind:
            raise TokenizerError(
                f"{path} holds a {data['kind']!r} tokenizer, not {cls.kind!r}; use load_tokenizer"
            )
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------------
# Checks of the input, and the tokenizer file.


def utf8(text: str) -> bytes:
    """Encode text as UTF-8, or explain why it cannot be (lone surrogates are not valid UTF-8)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TokenizerError(
            f"the text contains {text[e.start:e.end]!r} at position {e.start}, a lone surrogate that "
            "is not valid UTF-8; clean it first, e.g. text.encode('utf-8', 'replace').decode()"
        ) from None


def checked_texts(texts: Iterable[str]) -> Iterator[str]:
    """The training texts one by one, each checked to be a str of valid UTF-8 (ours and sentencepiece's
    training both read their texts through this)."""
    if isinstance(texts, str):
        raise TokenizerError("texts must be an iterable of strings (e.g. a list of documents), not one str")
    for text in texts:
        if not isinstance(text, str):
            raise TokenizerError(f"texts must hold strings, found a {type(text).__name__}")
        utf8(text)
        yield text


def asking_for_vocab_size(size: int | str) -> str:
    """How to ask for a vocabulary of `size` in each command that trains a tokenizer: an error about the
    size cannot tell which command called, so it names them all."""
    return (f"--vocab-size {size} with `minillm tokenizer train` or bench/tokenizer.py, --set "
            f"tokenizer.vocab_size={size} with the training commands")


def check_vocab_size(vocab_size: int, n_base: int) -> None:
    """A vocabulary size is a whole number (not a float, not a bool) that holds the base pieces (e.g.
    the 256 bytes) and the special tokens, and fits in the 32-bit count that sentencepiece (and a
    progress bar's length) can take."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TokenizerError(f"vocab_size={vocab_size!r} must be an integer, e.g. 4096")
    minimum = n_base + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise TokenizerError(
            f"vocab_size={vocab_size!r} is too small: it must hold {n_base} base pieces and "
            f"{len(SPECIAL_TOKENS)} special tokens, so use vocab_size >= {minimum}: {asking_for_vocab_size(minimum)}"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise TokenizerError(f"vocab_size={vocab_size} is too large: at most 2**31 - 1 = {MAX_VOCAB_SIZE} "
                             "(a corpus supports far fewer; e.g. use 4096)")


def warn_smaller_vocab(asked: int, got: int, why: str) -> None:
    """Say that training stopped early, with a vocabulary smaller than asked."""
    warnings.warn(
        f"vocab_size={asked} is more than the corpus supports: {why}, so the tokenizer has "
        f"vocab_size={got}. Give more varied text for a bigger vocabulary.",
        stacklevel=3,
    )


def read_tokenizer_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a tokenizer file and check the fields every kind has ("kind", "format_version").

    A run folder stands for the tokenizer.json in it, as a run folder does for its checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / TOKENIZER_NAME).is_file():
            raise TokenizerError(f"{path} is a folder without a {TOKENIZER_NAME}: pass a tokenizer file, or a run "
                                 "folder that holds one")
        path = path / TOKENIZER_NAME
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist; train one first "
                             f"(minillm tokenizer train --input FILE --out {path})")
    raw = path.read_bytes()
    if raw.startswith(b"PK\x03\x04"):  # a zip archive, as torch.save writes a checkpoint
        raise TokenizerError(f"{path} is a checkpoint (or another zip archive), not a tokenizer; pass the run "
                             f"folder, or the {TOKENIZER_NAME} beside the checkpoint")
    try:
        data = parse_json(raw.decode("utf-8-sig"))  # (-sig: a byte order mark an editor adds is dropped)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"tokenizer file {path} is not valid JSON ({e}); retrain it") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise TokenizerError(f"tokenizer file {path} has no 'kind' field; it is not a minillm tokenizer")
    if data.get("format_version") != FORMAT_VERSION:
        raise TokenizerError(
            f"tokenizer file {path} has format_version={data.get('format_version')!r}, this minillm "
            f"reads version {FORMAT_VERSION}; retrain the tokenizer with this version"
        )
    return data


def require_keys(data: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    """Fail with the names of the missing keys of a tokenizer file."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise TokenizerError(f"{what} tokenizer file is missing {missing}; it is corrupt, retrain it")

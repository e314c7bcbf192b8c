"""Tokenizers: text <-> integer ids.

Two implementations share one interface (`Tokenizer`, defined in base.py):
- `BPETokenizer` (bpe.py): our own byte-level BPE, written to be read;
- `SentencePieceTokenizer` (spm.py): the sentencepiece library, configured to be lossless.

Use `train_tokenizer` and `load_tokenizer`; never hard-code ids, ask the tokenizer
(`tok.eos_id`, `tok.special_tokens["<mask>"]`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from minillm.errors import TokenizerError
from minillm.tokenizer.base import SPECIAL_TOKENS, TOKENIZER_NAME, Tokenizer, read_tokenizer_json
from minillm.tokenizer.bpe import BPETokenizer
from minillm.tokenizer.spm import SentencePieceTokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "TOKENIZER_NAME",
    "BPETokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "train_tokenizer",
]

KINDS: dict[str, type[Tokenizer]] = {"bpe": BPETokenizer, "sentencepiece": SentencePieceTokenizer}


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    kind: str = "bpe",
    spm_model_type: str = "bpe",
    progress: bool = True,
) -> Tokenizer:
    """Train a tokenizer of `kind` ("bpe": ours, "sentencepiece") with `vocab_size` ids in total
    (the special tokens included, and the base pieces: 256 bytes for ours, <unk> and 256 bytes for
    sentencepiece). `spm_model_type` ("bpe" or "unigram") only applies to sentencepiece."""
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size, progress=progress)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, vocab_size, model_type=spm_model_type, progress=progress)
    raise TokenizerError(f"kind={kind!r}: train_tokenizer (minillm/tokenizer/__init__.py) trains bpe or "
                         "sentencepiece; a new kind gets its branch there, and its class in KINDS")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer file written by `save`, whatever its kind."""
    data = read_tokenizer_json(path)
    cls = KINDS.get(data["kind"]) if isinstance(data["kind"], str) else None  # (a list is no key of KINDS)
    if cls is None:
        raise TokenizerError(f"{path}: unknown tokenizer kind {data['kind']!r}, not one of {sorted(KINDS)}")
    return cls.from_dict(data)

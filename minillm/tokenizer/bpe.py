"""Our own byte-level BPE tokenizer, plus the interface every minillm tokenizer shares.

A language model reads integers, not text. A tokenizer turns text into integer *ids* and back.
Byte-level BPE (byte-pair encoding, as in GPT-2) does it in two ideas:

1. **Start from bytes.** Encode the text as UTF-8: every string becomes a sequence of numbers
   0..255, so any text at all (English, Korean, emoji, control characters) can be represented and
   nothing is ever "unknown". Ids 0..255 are the 256 bytes.
2. **Merge frequent pairs.** Training counts adjacent pairs of ids over a corpus, gives the most
   frequent pair a new id (256, 257, ...) and replaces it everywhere; then repeats. Each merge is
   one new vocabulary entry: after a few thousand merges, common words are single tokens and rare
   ones are spelled with a few pieces.

Before counting, a regular expression splits the text into chunks (words with their leading
space, runs of digits, punctuation, whitespace); merges never cross a chunk boundary, so a token
is never "end of one word + start of the next". `PRESPLIT_PATTERN` documents the rule; any pattern
that matches every character and has no capturing groups can replace it.

Two trainers give the *same* merges:

- `train_merges_simple` is the textbook loop: recount every pair of the whole corpus, merge the
  best, repeat. Easy to check, but its cost is (corpus size x number of merges).
- `train_merges_fast` counts each distinct chunk once (with how often it occurs), keeps the pair
  counts up to date by looking only at the chunks where a merge happened, and finds the best pair
  with a heap. Same answer, orders of magnitude less work.

Ties are broken by ONE rule in both trainers: **the highest count wins; among equal counts, the
smallest pair (a, b), compared as a tuple of ids**. That makes training reproducible.

Pairs are counted the textbook way, overlapping ones included: "aaa" holds the pair (a, a) twice.
A merge replaces occurrences left to right, so merging (a, a) turns "aaa" into [aa, a].

Special tokens (`SPECIAL_TOKENS`) get the ids after the merges. Ordinary text can NEVER produce
them: the text "<eos>" is encoded as the bytes '<', 'e', 'o', 's', '>' like any other text. Only
`encode(text, allow_special=True)` turns the exact special strings into their ids (the chat
template of stage 2 builds its ids from `special_tokens` directly instead).

The `Tokenizer` base class below holds what both minillm tokenizers share (special tokens,
decode, the JSON file); `spm.py` wraps sentencepiece behind the same interface.
"""

from __future__ import annotations

import heapq
import json
import operator
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

from tqdm.auto import tqdm

from minillm.errors import TokenizerError
from minillm.utils import parse_json, write_json

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<mask>", "<|user|>", "<|assistant|>")
N_BYTES = 256  # ids 0..255 are the bytes; merge k creates the id N_BYTES + k
TOKENIZER_NAME = "tokenizer.json"  # the tokenizer file in a run folder
FORMAT_VERSION = 1  # bump when the JSON layout changes; load refuses versions it does not know

# The GPT-style pre-split, written for the standard `re` module:
#   '(?:[sdmt]|ll|ve|re)    English contractions: 's 'd 'm 't 'll 've 're
#    ?[^\W\d_]+             a run of letters (any script), with one optional leading space
#    ?\d{1,3}               digits in groups of at most three (so numbers do not flood the vocab)
#    ?(?:_|[^\w\s])+        punctuation and symbols (everything that is neither letter, digit nor space)
#   \s+(?!\S)               whitespace, leaving the last space to prefix the next word
#   \s+                     any other whitespace (at the end of the text)
# `[^\W\d_]` is "a word character that is not a digit or underscore": a letter, in any script
# (and the few numeric characters that are not decimal digits, such as ² ½ Ⅻ). A combining accent
# (U+0301) is not a word character but "other", so a decomposed "é" (e + U+0301) splits in two.
# Every character is a letter, a digit, whitespace or "other", so the chunks always cover
# the whole text; `split_text` still checks it, for patterns that users supply.
PRESPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:_|[^\w\s])+|\s+(?!\S)|\s+"""

Pair = tuple[int, int]
MAX_VOCAB_SIZE = 2**31 - 1  # sentencepiece reads vocab_size as a 32-bit int; a bigger one ends in a traceback
CACHE_LIMIT = 200_000  # chunks remembered by encode; the cache is emptied when it grows past this


# --------------------------------------------------------------------------------------------------
# The BPE building blocks: split, count, merge.


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a pre-split pattern; it must not have capturing groups (findall would return them)."""
    try:
        regex = re.compile(pattern)
    except (re.error, TypeError) as e:
        raise TokenizerError(f"pre-split pattern {pattern!r} is not a valid regex: {e}") from None
    if regex.groups:
        raise TokenizerError(f"pre-split pattern {pattern!r} has capturing groups; write (?:...), not (...)")
    return regex


def split_text(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Cut text into the chunks that merges may not cross; they must cover the text exactly."""
    chunks = pattern.findall(text)
    if sum(map(len, chunks)) != len(text):
        raise TokenizerError(
            f"the pre-split pattern {pattern.pattern!r} skips characters of {text[:40]!r}; "
            "a pattern must match every character (end it with an alternative like |\\s+|.)"
        )
    return chunks


def count_chunks(texts: Iterable[str], regex: re.Pattern[str]) -> dict[bytes, int]:
    """How often each distinct chunk occurs in the corpus, as {utf8 bytes: count}."""
    counts: Counter[str] = Counter()
    for text in checked_texts(texts):
        counts.update(split_text(text, regex))
    if not any(chunk.strip() for chunk in counts):
        raise TokenizerError("the training corpus is empty or only whitespace; give it some text")
    return {utf8(chunk): n for chunk, n in counts.items()}


def merge_pair(seq: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `seq`, scanning left to right, by `new_id`."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(seq)
    while i < n:
        if seq[i] == a and i + 1 < n and seq[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(seq[i])
            i += 1
    return out


def best_pair(counts: Mapping[Pair, int]) -> Pair:
    """The tie-break rule: highest count, then the smallest pair (a, b)."""
    return min(counts, key=lambda p: (-counts[p], p))


def train_merges_simple(
    sequences: Iterable[Sequence[int]], num_merges: int, progress: bool = False
) -> list[Pair]:
    """The textbook BPE trainer: count every adjacent pair, merge the most frequent, repeat.

    `sequences` holds every chunk of the corpus as byte ids, repeats included. Stops early when
    no pair is left (every chunk is a single token). Returns the merges in order; merge k creates
    the id N_BYTES + k.
    """
    seqs = [list(s) for s in sequences]
    merges: list[Pair] = []
    for k in tqdm(range(num_merges), desc="BPE merges (simple)", disable=not progress):
        counts: Counter[Pair] = Counter()
        for seq in seqs:
            counts.update(pairwise(seq))
        if not counts:
            break
        pair = best_pair(counts)
        seqs = [merge_pair(seq, pair, N_BYTES + k) for seq in seqs]
        merges.append(pair)
    return merges


def train_merges_fast(
    chunk_counts: Mapping[bytes, int], num_merges: int, progress: bool = False
) -> list[Pair]:
    """The same merges as `train_merges_simple`, computed incrementally.

    `chunk_counts` maps each distinct chunk (as UTF-8 bytes) to how often it occurs. We keep:
      chunks[i]   the current ids of distinct chunk i, freqs[i] its number of occurrences
      counts      pair -> occurrences in the whole corpus (= the simple trainer's Counter)
      where       pair -> the chunks that may contain it (may hold stale entries, never misses one)
      heap        (-count, pair) entries; an entry whose count is out of date is skipped when popped
    A merge only touches the chunks in where[pair]: for each, the pairs of its old ids are
    subtracted and the pairs of its new ids added (times the chunk's frequency), which keeps
    `counts` exactly equal to a full recount. Old pairs only lose counts and new pairs all contain
    the new id, so pushing a fresh heap entry for every changed pair is enough.
    """
    chunks = [list(chunk) for chunk in chunk_counts]  # bytes -> a list of byte ids that merges rewrite
    freqs = list(chunk_counts.values())
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for i, (chunk, freq) in enumerate(zip(chunks, freqs, strict=True)):
        for pair in pairwise(chunk):
            counts[pair] += freq
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    for k in tqdm(range(num_merges), desc="BPE merges", disable=not progress):
        pair = _pop_best(heap, counts)
        if pair is None:
            break
        delta = _merge_in_chunks(pair, N_BYTES + k, chunks, freqs, where)
        _update_counts(delta, counts, where, heap)
        merges.append(pair)
    return merges


def _pop_best(heap: list[tuple[int, Pair]], counts: Mapping[Pair, int]) -> Pair | None:
    """Pop heap entries until one is up to date; the heap order is the tie-break rule."""
    while heap:
        neg_count, pair = heapq.heappop(heap)
        if counts.get(pair, 0) == -neg_count:
            return pair
    return None


def _merge_in_chunks(
    pair: Pair, new_id: int, chunks: list[list[int]], freqs: list[int], where: dict[Pair, set[int]]
) -> dict[Pair, int]:
    """Apply one merge to the chunks that contain `pair`; return the change of every pair count."""
    delta: dict[Pair, int] = defaultdict(int)
    for i in where.pop(pair, ()):
        old = chunks[i]
        new = merge_pair(old, pair, new_id)
        if len(new) == len(old):  # a stale entry: an earlier merge already used these ids
            continue
        freq = freqs[i]
        for p in pairwise(old):
            delta[p] -= freq
        for p in pairwise(new):
            delta[p] += freq
            if new_id in p:
                where[p].add(i)
        chunks[i] = new
    return delta


def _update_counts(delta: Mapping[Pair, int], counts: dict[Pair, int], where: dict[Pair, set[int]],
                   heap: list[tuple[int, Pair]]) -> None:
    """Add a merge's `delta` to the pair counts, and push a heap entry for every count that changed."""
    for p, d in delta.items():
        if d == 0:
            continue
        counts[p] += d
        if counts[p] > 0:
            heapq.heappush(heap, (-counts[p], p))
        else:  # gone for good: old pairs never come back
            del counts[p]
            where.pop(p, None)


# --------------------------------------------------------------------------------------------------
# What every tokenizer shares.


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
# Our tokenizer.


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 0..255 are bytes, then one id per merge, then the special tokens."""

    kind: ClassVar[str] = "bpe"

    def __init__(self, merges: Sequence[Pair], pattern: str = PRESPLIT_PATTERN) -> None:
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self._regex = compile_pattern(pattern)
        self._bytes = [bytes([b]) for b in range(N_BYTES)]  # id -> the bytes it stands for
        self._rank: dict[Pair, int] = {}  # pair -> the id it merges into (a lower id merges first)
        for k, (a, b) in enumerate(self.merges):
            new_id = N_BYTES + k
            if not (0 <= a < new_id and 0 <= b < new_id) or (a, b) in self._rank:
                raise TokenizerError(f"merge {k} = ({a}, {b}) is a repeat or uses an unknown id; retrain")
            self._bytes.append(self._bytes[a] + self._bytes[b])
            self._rank[(a, b)] = new_id
        first_special = N_BYTES + len(self.merges)
        super().__init__({s: first_special + j for j, s in enumerate(SPECIAL_TOKENS)})
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        pattern: str = PRESPLIT_PATTERN,
        trainer: str = "fast",
        progress: bool = True,
    ) -> BPETokenizer:
        """Learn vocab_size - N_BYTES - len(SPECIAL_TOKENS) merges from `texts`.

        `trainer` is "fast" (default) or "simple" (the textbook loop; same merges, much slower).
        Raises TokenizerError when the corpus is empty. When the corpus cannot supply that many
        merges, training stops after the last possible one and warns: the tokenizer is then
        smaller than asked (read its `vocab_size`; never assume the one you asked for).
        """
        if trainer not in ("fast", "simple"):  # before the pass over the corpus, which takes a while
            raise TokenizerError(f"trainer={trainer!r}: expected 'fast' or 'simple'")
        check_vocab_size(vocab_size, N_BYTES)
        regex = compile_pattern(pattern)
        chunk_counts = count_chunks(texts, regex)
        num_merges = vocab_size - N_BYTES - len(SPECIAL_TOKENS)
        if trainer == "fast":
            merges = train_merges_fast(chunk_counts, num_merges, progress=progress)
        else:
            every_chunk = (chunk for chunk, n in chunk_counts.items() for _ in range(n))
            merges = train_merges_simple(every_chunk, num_merges, progress=progress)
        tok = cls(merges, pattern)
        if len(merges) < num_merges:
            warn_smaller_vocab(vocab_size, tok.vocab_size, f"this corpus allows only {len(merges)} merges "
                               "(after them every chunk is a single token)")
        return tok

    @property
    def vocab_size(self) -> int:
        return N_BYTES + len(self.merges) + len(SPECIAL_TOKENS)

    def id_to_bytes(self, i: int) -> bytes:
        return self._bytes[i]

    def _encode_ordinary(self, text: str) -> list[int]:
        """Split into chunks, then encode each distinct chunk once (the cache remembers it)."""
        cache = self._cache
        ids: list[int] = []
        for chunk in split_text(text, self._regex):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                chunk_ids = cache[chunk] = self._encode_chunk(chunk)
            ids += chunk_ids
        return ids

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply the merges to one chunk: the earliest-learned merge first, leftmost first.

        That is the rule "for each merge in the order learned, replace its pairs left to right"
        (what training did, so a training chunk encodes exactly as the trainer left it). Rescanning
        the chunk for every merge would cost O(length x merges), which hurts on long chunks (a
        base64 blob, text without spaces). Instead a heap holds the candidate merges as
        (new_id, position) and the tokens live in a linked list, so a merge never shifts positions:
        `after[i]` is the next live position and a token merged into its left neighbour becomes None.
        """
        ids: list[int | None] = list(chunk.encode("utf-8"))
        end = len(ids)
        after = list(range(1, end + 1))  # next live position; `end` means none
        before = list(range(-1, end - 1))  # previous live position; -1 means none
        rank = self._rank
        heap = [(rank[p], i) for i, p in enumerate(pairwise(ids)) if p in rank]
        heapq.heapify(heap)
        while heap:
            new_id, i = heapq.heappop(heap)
            j = after[i]
            if ids[i] is None or j == end or rank.get((ids[i], ids[j])) != new_id:
                continue  # stale: a neighbour was merged after this candidate was pushed
            ids[i], ids[j] = new_id, None
            after[i] = after[j]
            if after[i] != end:
                before[after[i]] = i
            # the merged token makes two new pairs, with its left and its right neighbour
            for left, right in ((before[i], i), (i, after[i])):
                if left >= 0 and right != end and (ids[left], ids[right]) in rank:
                    heapq.heappush(heap, (rank[ids[left], ids[right]], left))
        return [t for t in ids if t is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "merges": [list(m) for m in self.merges],  # merge k makes id N_BYTES + k
            # for reading only: what each merged id stands for
            "pieces": {str(i): self.id_to_piece(i) for i in range(N_BYTES, N_BYTES + len(self.merges))},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BPETokenizer:
        require_keys(data, ("pattern", "special_tokens", "merges"), "bpe")
        merges = data["merges"]
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
        ):
            raise TokenizerError("bpe tokenizer file: 'merges' must be a list of [int, int]; retrain it")
        tok = cls([(a, b) for a, b in merges], data["pattern"])
        if data["special_tokens"] != tok.special_tokens:
            raise TokenizerError(
                f"bpe tokenizer file: special_tokens {data['special_tokens']} do not match the ids "
                f"{tok.special_tokens} that follow the merges; the file is corrupt, retrain it"
            )
        return tok


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

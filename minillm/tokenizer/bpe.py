"""Our own byte-level BPE tokenizer.

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

`BPETokenizer` fills in the `Tokenizer` interface of base.py, which holds what both minillm tokenizers
share (special tokens, decode, the JSON file); `spm.py` wraps sentencepiece behind the same interface.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar

from tqdm.auto import tqdm

from minillm.errors import TokenizerError
from minillm.tokenizer.base import (
    FORMAT_VERSION,
    SPECIAL_TOKENS,
    Tokenizer,
    check_vocab_size,
    checked_texts,
    require_keys,
    utf8,
    warn_smaller_vocab,
)

N_BYTES = 256  # ids 0..255 are the bytes; merge k creates the id N_BYTES + k

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



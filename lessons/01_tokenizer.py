# %% [markdown]
# # Lesson 1: from text to tokens
#
# A language model reads integers. This lesson builds the tokenizer that turns text into them:
#
# 1. Text is bytes: every string becomes numbers 0..255 (UTF-8), Korean and emoji included.
# 2. BPE merges, step by step: on a tiny text, the most frequent adjacent pair becomes a new token,
#    again and again; you see each merge and the text shrink.
# 3. The fast trainer on the shipped corpus (data/corpus.txt): the same merges as the textbook
#    loop, thousands of times faster. You see what it learned.
# 4. Ours beside sentencepiece (the library many real models use), on English and Korean: tokens
#    per byte, the pieces each makes, and training time.
#
# Run it: `python lessons/01_tokenizer.py` (2-4 s on a 2-core CPU), or step through its cells in
# VS Code, PyCharm or Jupyter (`pip install -e ".[notebooks]"`, then
# `jupytext --to notebook lessons/01_tokenizer.py`). It writes both trained tokenizers to
# runs/lessons/01/ (open them: they are plain JSON). The experiments to try are at the end.

# %%
from __future__ import annotations

import sys
import time
from collections import Counter

from minillm.datasets.corpus import read_corpus, split_documents
from minillm.lessons import DATA, ROOT, lesson_args, lesson_dir
from minillm.tokenizer import SPECIAL_TOKENS, BPETokenizer, Tokenizer, train_tokenizer
from minillm.tokenizer.bpe import (
    PRESPLIT_PATTERN,
    compile_pattern,
    split_text,
    train_merges_fast,
    train_merges_simple,
)

CORPUS = DATA / "corpus.txt"
# no arguments to take: read anyway, so that --help is answered and a stray one refused, not ignored
lesson_args("Lesson 1: from text to tokens", reuses_runs=False)
OUT = lesson_dir(1)
VOCAB_SIZE = 2048
TINY_TEXT = "the night, the nightly news, a new night: the newest news tonight"
ENGLISH = "A flash flood watch will be in effect all night. Winds from the north will ease by morning."
KOREAN = "오늘 밤에는 비가 내리겠습니다. 내일 아침에는 바람이 약해지겠습니다."


def show(tok: Tokenizer, text: str, limit: int = 16) -> str:
    """The first `limit` pieces of `text` in brackets, e.g. [A][ flash][ flood]..."""
    pieces = [tok.id_to_piece(i) for i in tok.encode(text)]
    return "".join(f"[{p}]" for p in pieces[:limit]) + ("..." if len(pieces) > limit else "")


# %% [markdown]
# ## 1. Text is bytes
# Every string is a list of numbers 0..255, so a byte-level tokenizer never meets a character it
# cannot spell.

# %%
def step1_bytes() -> None:
    print("== 1. Text is bytes ==")
    for text in ["night", "밤", "🌧"]:
        print(f"  {text!r:>9} -> UTF-8 bytes {list(text.encode('utf-8'))}")
    print("  Every string is a list of numbers 0..255, so a byte-level tokenizer never meets an unknown\n"
          "  character. The price: Korean takes 3 bytes per syllable, an emoji 4.\n")


step1_bytes()

# %% [markdown]
# ## 2. BPE merges, step by step
# On a tiny text, count every adjacent pair of tokens, merge the most frequent one into a new token,
# and repeat. The text is first split into chunks (words with their leading space, punctuation),
# and merges never cross a chunk boundary. The loop is `train_merges_simple` in
# minillm/tokenizer/bpe.py, a dozen lines; `train_merges_fast` beside it is step 3's trainer.

# %%
def step2_merges_by_hand() -> None:
    print("== 2. BPE merges, step by step ==")
    regex = compile_pattern(PRESPLIT_PATTERN)
    chunks = [c.encode("utf-8") for c in split_text(TINY_TEXT, regex)]
    print(f"  text: {TINY_TEXT!r}")
    print(f"  pre-split into chunks (merges never cross them): {[c.decode() for c in chunks]}")
    merges = train_merges_simple(chunks, 12)
    print(f"  before any merge the text is {len(TINY_TEXT.encode())} tokens, one per byte")
    print(f"  {'merge':>5}  {'pair':<18} -> {'new token':<12} tokens in the text")
    for k in range(1, len(merges) + 1):
        tok = BPETokenizer(merges[:k])
        a, b = merges[k - 1]
        pair = f"{tok.id_to_piece(a)!r} + {tok.id_to_piece(b)!r}"
        print(f"  {k:>5}  {pair:<18} -> {tok.id_to_piece(256 + k - 1)!r:<12} {len(tok.encode(TINY_TEXT))}")
    print(f"  after {len(merges)} merges: {show(BPETokenizer(merges), TINY_TEXT, limit=30)}")
    same = train_merges_fast(Counter(chunks), 12) == merges
    print(f"  the fast trainer learns the same {len(merges)} merges: {same}\n")


step2_merges_by_hand()

# %% [markdown]
# ## 3. The fast trainer on the shipped corpus
# The same merges as the loop above, found by updating pair counts incrementally instead of
# recounting the whole text after each merge. 5% of the documents are held out for step 4.

# %%
if not CORPUS.is_file():
    sys.exit(f"{CORPUS} is missing: steps 3 and 4 need the shipped corpus. Regenerate it with "
             "`python -m minillm.datasets --out data` (see data/README.md).")
docs, held_out = split_documents(read_corpus(CORPUS), val_fraction=0.05, seed=0)


def step3_train_on_corpus(docs: list[str]) -> BPETokenizer:
    print(f"== 3. The fast trainer on {CORPUS.relative_to(ROOT)} ==", flush=True)  # before tqdm's bar
    size = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    start = time.perf_counter()
    tok = train_tokenizer(docs, VOCAB_SIZE, kind="bpe")
    seconds = time.perf_counter() - start
    print(f"  {size:.2f} MB, {len(tok.merges)} merges in {seconds:.1f} s: a vocabulary of 256 bytes + "
          f"{len(tok.merges)} merges + {len(SPECIAL_TOKENS)} special tokens = {tok.vocab_size}")
    first = [tok.id_to_piece(256 + k) for k in range(15)]
    print(f"  first merges: {first}")
    longest = sorted(range(256, tok.vocab_size - len(SPECIAL_TOKENS)), key=lambda i: -len(tok.id_to_bytes(i)))
    print(f"  longest pieces: {[tok.id_to_piece(i) for i in longest[:8]]}")
    print(f"  special tokens (ids after the merges): {tok.special_tokens}")
    text = "<eos> in text stays text"
    print(f"  {text!r} -> {show(tok, text)}  (no special id: ordinary text never makes one)\n")
    return tok


ours = step3_train_on_corpus(docs)

# %% [markdown]
# ## 4. Ours beside sentencepiece
# Same corpus, same vocabulary size. Fewer tokens per byte means shorter sequences for the model.

# %%
def tokens_per_byte(tok: Tokenizer, docs: list[str]) -> float:
    return sum(len(tok.encode(d)) for d in docs) / sum(len(d.encode("utf-8")) for d in docs)


def step4_side_by_side(docs: list[str], held_out: list[str], ours: BPETokenizer) -> None:
    print("== 4. Ours beside sentencepiece BPE (same corpus, same vocab size) ==")
    start = time.perf_counter()
    spm = train_tokenizer(docs, VOCAB_SIZE, kind="sentencepiece", spm_model_type="bpe")
    spm_seconds = time.perf_counter() - start
    print(f"  sentencepiece trained in {spm_seconds:.1f} s (C++, 2 threads)")
    print(f"  held-out documents: ours {tokens_per_byte(ours, held_out):.3f}, sentencepiece "
          f"{tokens_per_byte(spm, held_out):.3f} tokens per byte (fewer = shorter sequences for the model)")
    for name, text in [("English", ENGLISH), ("Korean", KOREAN)]:
        print(f"  {name}: {text!r} ({len(text.encode())} bytes)")
        for label, tok in [("ours", ours), ("sentencepiece", spm)]:
            ids = tok.encode(text)
            print(f"    {label:<14} {len(ids) / len(text.encode()):.3f} tokens/byte  {show(tok, text)}")
    # fewer tokens than bytes: a tokenizer that learned no Korean piece spells Korean byte by byte
    learned = [label for label, tok in [("ours", ours), ("sentencepiece", spm)]
               if len(tok.encode(KOREAN)) < len(KOREAN.encode())]
    if learned:  # (Try 2 below puts Korean into the corpus)
        print(f"  {' and '.join(learned)} learned Korean pieces from its corpus: fewer tokens than bytes.")
    else:
        print("  The corpus is English, so neither learned Korean: both spell it with bytes (3 per syllable).")
    ours.save(OUT / "bpe.json")
    spm.save(OUT / "sentencepiece.json")
    print(f"  saved both to {OUT.relative_to(ROOT)}/ (plain JSON: look at 'merges' and 'pieces')\n")


step4_side_by_side(docs, held_out, ours)

# %% [markdown]
# ## Try this
# 1. Set `VOCAB_SIZE = 512`: the English line costs about 0.32 tokens per byte instead of 0.25.
#    Then ask for 8192: this corpus, generated about one small made-up world, only supports about
#    2,600 merges, so the trainer warns, stops there, and the tokenizer's vocab_size tells you what
#    you got.
# 2. Train on `docs + [KOREAN] * 50`: Korean words such as ' 밤에는' become pieces and the Korean
#    line drops from 1.0 to about 0.1 tokens per byte (50 copies of one sentence get learned
#    whole). A tokenizer is only efficient on the languages it was trained on.
# 3. In step 3, train with `BPETokenizer.train(docs, VOCAB_SIZE, pattern=r'\S+|\s+')` instead
#    (`train_tokenizer` takes no pattern; this one splits on whitespace only): spaces become tokens
#    of their own, pieces like 'night.' appear, and the English line rises to about 0.42 tokens per
#    byte (the held-out documents from 0.23 to about 0.38).

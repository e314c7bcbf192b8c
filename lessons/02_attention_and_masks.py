# %% [markdown]
# # Lesson 2: attention, and the masks that decide who may look at whom
#
# Attention is how a token gathers information from the other tokens of its sequence. Everything
# else in a transformer works on each token alone; attention is the only place where tokens meet.
# Masks decide which meetings are allowed: pads must be ignored, and a GPT must not peek at the
# future it is trained to predict.
#
# What you will see:
# 1. A padded batch of three sentences, and its masks printed as grids of 1 (may attend) / 0:
#    the padding mask, the causal mask, and their combination.
# 2. Multi-head attention computed by hand, step by step (project, split heads, scores, mask,
#    softmax, weighted sum, merge, project), and the library's module giving the same numbers,
#    in its manual form and through PyTorch's fused kernel (SDPA).
# 3. An attention map (PNG): the weights of one head for the padded sentence, without and with the
#    causal mask. Hidden keys get exactly zero weight.
# 4. What the causal mask hides: change a LATER word and the GPT's predictions for earlier
#    positions do not move at all, while BERT's (no causal mask) do.
# 5. Why the KV cache exists: generating with and without it gives the same tokens, in less time.
#
# Run it: `python lessons/02_attention_and_masks.py` (3-5 s on a 2-core CPU), or step through its
# cells. Output: runs/lessons/02/attention_map.png. The experiments to try are at the end.

# %%
from __future__ import annotations

import math
import time

import matplotlib

matplotlib.use("Agg")  # write PNG files; no window needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minillm.config import ModelConfig  # noqa: E402
from minillm.lessons import lesson_args, lesson_dir, use_threads  # noqa: E402
from minillm.model import GPT, Bert, MultiHeadAttention, causal_mask, combine_masks, padding_mask  # noqa: E402

# no arguments to take: read anyway, so that --help is answered and a stray one refused, not ignored
lesson_args("Lesson 2: attention and its masks", reuses_runs=False)
OUT = lesson_dir(2)
use_threads(1)  # small tensors: one thread is fastest, and fair to a shared machine

# Lesson 1 builds real tokenizers; here one word = one token, so that every printed row is readable.
SENTENCES = ["the storm reached the coast at night", "rain again", "the river rose fast"]
PAD = "<pad>"
WORDS = [PAD] + sorted({w for s in SENTENCES for w in s.split()} | {"harbour"})
VOCAB = {w: i for i, w in enumerate(WORDS)}


def grid(mask: torch.Tensor, rows: list[str], cols: list[str]) -> str:
    """A boolean (rows, cols) tensor as a table of 1 / . with labels."""
    width = max(len(c) for c in cols)
    head = " " * 10 + " ".join(f"{c[:width]:>{width}}" for c in cols)
    lines = [f"{r[:9]:>9} " + " ".join(f"{'1' if v else '.':>{width}}" for v in row.tolist())
             for r, row in zip(rows, mask, strict=True)]
    return "\n".join([head, *lines])


def left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """ids (B, T) and attention_mask (B, T), True on real words; the short rows are padded on the left."""
    T = max(len(s.split()) for s in SENTENCES)
    rows = [[PAD] * (T - len(s.split())) + s.split() for s in SENTENCES]
    ids = torch.tensor([[VOCAB[w] for w in row] for row in rows])
    return ids, ids != VOCAB[PAD], rows


# %% [markdown]
# ## 1. The masks of a padded batch
# Short rows are padded on the left. The padding mask hides the pads from every query; the causal
# mask hides the future; a decoder uses both at once. The three mask functions are in
# minillm/model/attention.py. Shapes in the comments: B rows in the batch, T positions in a row.

# %%
def step1_masks(ids: torch.Tensor, attention_mask: torch.Tensor, rows: list[list[str]]) -> torch.Tensor:
    print("== 1. The masks of a padded batch (1 = may attend, . = hidden) ==")
    print(f"  ids {tuple(ids.shape)}:\n{ids}\n  attention_mask (True = real word):\n{attention_mask.int()}")
    T = ids.shape[1]
    pad = padding_mask(attention_mask)  # (B, 1, 1, T): one row per sentence, the same for every query
    future = causal_mask(T, T)  # (T, T)
    both = combine_masks(pad, future)  # (B, 1, T, T)
    words = rows[1]
    print(f"\n  Padding mask of row 1 {words}: every query sees the same keys, the pads are hidden\n"
          + grid(pad[1, 0].expand(T, T), words, words))
    print("\n  Causal mask: query t (row) may see keys 0..t (columns)\n" + grid(future, words, words))
    print("\n  Combined (padding AND causal): a pad query sees nothing at all; its output is set to 0\n"
          + grid(both[1, 0], words, words))
    return both


ids, attention_mask, rows = left_padded_batch()
mask = step1_masks(ids, attention_mask, rows)

# %% [markdown]
# ## 2. Multi-head attention by hand vs the module
# Project to queries, keys and values, split into heads, score every query against every key,
# hide what the mask hides, softmax, take the weighted sum of the values, merge the heads, project.
# The module is `MultiHeadAttention` in minillm/model/attention.py; C is the width of a token's vector.

# %%
def weights_by_hand(module: MultiHeadAttention, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The attention weights (B, H, T, T) of `module` on x (B, T, C), step by step; also v (B, H, T, D),
    where H is the number of heads and D = C // H the size of each head's queries, keys and values."""
    B, T, C = x.shape
    H = module.n_head
    q, k, v = module.qkv(x).split(C, dim=2)  # project: each (B, T, C)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # split heads: (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)  # (B, H, T, T): how well query t matches key s
    scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys can never win
    weights = scores.softmax(dim=-1)  # (B, H, T, T); a fully hidden row is 0/0 = NaN here...
    weights = weights.nan_to_num(0.0)  # ...so, like the module, give such rows weight 0
    return weights, v


def step2_attention_by_hand(mask: torch.Tensor) -> tuple[MultiHeadAttention, torch.Tensor]:
    print("\n== 2. Multi-head attention by hand vs the module ==")
    torch.manual_seed(0)
    module = MultiHeadAttention(ModelConfig(n_embd=16, n_head=2)).eval()
    B, T = mask.shape[0], mask.shape[-1]
    x = torch.randn(B, T, 16)  # stand-in for the token vectors of the batch
    with torch.no_grad():
        weights, v = weights_by_hand(module, x, mask)
        out = (weights @ v).transpose(1, 2).reshape(B, T, 16)  # weighted sum of values, heads merged
        by_hand = module.proj(out)  # (B, T, C)
        by_module = module(x, mask)
        module.use_sdpa = True  # the same module through torch's fused kernel
        by_sdpa = module(x, mask)
        module.use_sdpa = False
    print(f"  x {tuple(x.shape)} -> weights {tuple(weights.shape)} -> out {tuple(by_hand.shape)}")
    print(f"  max |by hand - module (manual)| = {(by_hand - by_module).abs().max():.2e}")
    print(f"  max |by hand - module (SDPA)|   = {(by_hand - by_sdpa).abs().max():.2e}")
    print("  (0, or about 1e-7: the fused kernel adds in another order, and float32 rounds each order its own way)")
    print(f"  every row of weights sums to 1 (or 0 for a query with nothing to see): "
          f"{sorted({round(s, 4) for s in weights.sum(-1).flatten().tolist()})}")
    return module, x


module, x = step2_attention_by_hand(mask)

# %% [markdown]
# ## 3. An attention map
# The weights of one (untrained) head, as an image: without and with the causal mask.

# %%
def step3_attention_map(module: MultiHeadAttention, x: torch.Tensor, attention_mask: torch.Tensor,
                        rows: list[list[str]]) -> None:
    row = 2
    print(f"\n== 3. An attention map (head 0, row {row} of the batch) ==")
    T = x.shape[1]
    pad = padding_mask(attention_mask)  # (B, 1, 1, T)
    masks = {"padding only (an encoder, BERT)": combine_masks(pad, None),
             "padding + causal (a decoder, GPT)": combine_masks(pad, causal_mask(T, T))}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, (title, mask) in zip(axes, masks.items(), strict=True):
        with torch.no_grad():
            weights = weights_by_hand(module, x, mask)[0][row, 0]  # (T, T)
        image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1)  # matplotlib draws numpy arrays
        ax.set_xticks(range(T), rows[row], rotation=45, ha="right")
        ax.set_yticks(range(T), rows[row])
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query (attending)")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("Attention weights of an untrained head: the mask decides where they can be non-zero")
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "attention_map.png", dpi=110)
    plt.close(fig)
    print(f"  wrote {OUT / 'attention_map.png'}: pad columns are 0 everywhere; with the causal mask the")
    print("  upper triangle (the future) is 0 too. Untrained, the weights follow no pattern yet: each row")
    print("  spreads over the keys it may see, unevenly (the projections are random).")


step3_attention_map(module, x, attention_mask, rows)

# %% [markdown]
# ## 4. What the causal mask hides
# Change one word and measure how much each position's output moves, in a GPT and in a BERT. The
# output is the *logits*: at each position, one score per word of the vocabulary (softmax turns them
# into probabilities), the GPT's for the word that comes next, BERT's for the word at that position.

# %%
def step4_what_causality_hides(changed_at: int = 4) -> None:
    print("\n== 4. What the causal mask hides ==")
    config = ModelConfig(vocab_size=len(WORDS), block_size=16, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    gpt = GPT(config).eval()
    # BERT's original block: LayerNorm after the residual ("post", lesson 3's Try 3) and the exact GELU
    bert = Bert(ModelConfig(**{**vars(config), "norm": "post", "activation": "gelu"})).eval()
    sentence = SENTENCES[0].split()
    changed = sentence[:changed_at] + ["harbour"] + sentence[changed_at + 1:]  # change that one word only
    ids = torch.tensor([[VOCAB[w] for w in sentence]])
    ids2 = torch.tensor([[VOCAB[w] for w in changed]])
    print(f"  {' '.join(sentence)!r} -> {' '.join(changed)!r}")
    print(f"  {'position':>8} {'word':>8} {'GPT logits moved by':>20} {'BERT logits moved by':>21}")
    with torch.no_grad():
        d_gpt = (gpt(ids) - gpt(ids2)).abs().amax(-1)[0]  # (T,): largest change per position
        d_bert = (bert(ids) - bert(ids2)).abs().amax(-1)[0]
    for t, word in enumerate(sentence):
        print(f"  {t:>8} {word:>8} {d_gpt[t]:>20.2e} {d_bert[t]:>21.2e}")
    print(f"  GPT: exactly 0 before position {changed_at}. Its prediction at position t may only use words 0..t, so")
    print("  training it to predict word t+1 is an honest exam. BERT sees both sides: every position moves")
    print("  (by little here, because untrained weights are small, but never by exactly 0).")


step4_what_causality_hides()

# %% [markdown]
# ## 5. Generation with and without the KV cache
# Each new token needs the keys and values of every earlier one. Keep them (the cache) and only the
# new token's are computed; drop them and every step recomputes the whole sequence.

# %%
def step5_kv_cache() -> None:
    print("\n== 5. Generation with and without the KV cache ==")
    torch.manual_seed(0)
    gpt = GPT(ModelConfig(vocab_size=512, block_size=160, n_layer=2, n_head=4, n_embd=128)).eval()
    prompt = torch.randint(0, 512, (8, 8), generator=torch.Generator().manual_seed(0))  # 8 prompts
    results = {}
    for use_cache in (True, False):
        start = time.perf_counter()
        # temperature=0 is greedy: the likeliest token at every step, so both ways must give the same tokens
        results[use_cache] = gpt.generate(prompt, 150, temperature=0, use_cache=use_cache)
        print(f"  use_cache={use_cache!s:5}: {time.perf_counter() - start:.2f} s for 8 x 150 tokens")
    print(f"  same tokens: {torch.equal(results[True].new_ids, results[False].new_ids)}. Without the cache every"
          "\n  step recomputes the keys and values of the whole sequence; with it, only the new token's.")


step5_kv_cache()

# %% [markdown]
# ## Try this
# 1. In `weights_by_hand`, delete the line `weights = weights.nan_to_num(0.0)`: step 2's `by_hand[1]`,
#    the pad queries of row 1, become NaN (softmax of a row of -inf). Then see how `attend` in
#    minillm/model/attention.py avoids it without ever producing a NaN, not even in the gradient.
# 2. Pad on the RIGHT instead (put the pads after the words in `left_padded_batch`) and print the
#    combined mask: now no real query ever sees a pad even without the padding mask, because pads
#    lie in the future. Why must `GPT.generate` still use LEFT padding?
# 3. In step 4, change the FIRST word instead of word 4 (`step4_what_causality_hides(changed_at=0)`):
#    now every GPT position moves, since every later prediction reads word 0. Then, back at word 4,
#    set `n_layer=6` or `n_head=1`: the zeros before the changed word stay exact for any size,
#    because the mask, not the learned weights, enforces causality.

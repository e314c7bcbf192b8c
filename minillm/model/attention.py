"""Attention: who may look at whom (the masks), how looking works (multi-head attention), and the KV cache.

Attention lets every position of a sequence gather information from other positions. Each token
asks a question (its *query*), offers a label (its *key*) and carries a payload (its *value*). The
score of query i against key j is their dot product; a softmax turns a row of scores into weights
that sum to 1, and the output for position i is the weighted sum of the values.

Which keys a query may see is decided by a **mask**. In minillm a mask is always a boolean tensor
and the convention is the same everywhere:

    True  = this query MAY attend to this key
    False = it may not (its score becomes -inf, so its softmax weight is exactly 0)

Two reasons to hide a key:
- **padding**: a batch stacks sequences of different lengths, so short ones are filled with pad
  tokens. Pads are not text; nobody should read them. `padding_mask` hides them.
- **causality**: a language model predicts token t+1 from tokens 0..t. If position t could see
  position t+1 it would simply copy the answer. `causal_mask` hides the future.
`combine_masks` puts both together: a key is visible only if both masks allow it.

A query whose every key is hidden (e.g. a pad token at the start of a left-padded row, under a
causal mask) has nothing to attend to: softmax over a row of -inf is 0/0 = NaN. We define its
output as zero instead, so NaNs never leak into the rest of the network (see `attend`).

Finally, the **KV cache**. When a GPT generates text one token at a time, the keys and values of
the tokens it has already seen never change (a token never sees the future, so later tokens
cannot alter them). Instead of recomputing them at every step, we keep them: each step then only
computes the query, key and value of the ONE new token and attends over the stored keys. What it
saves is the projections and MLP of every past token, redone at each step without it; attention
itself still reads all t stored keys at step t, so generating N tokens stays O(N^2) in attention.

The letters of the shape comments (B, T, C, H, Hkv, D, ...) are listed in minillm/model/__init__.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.config import ModelConfig
from minillm.errors import ConfigError, ModelInputError

# --------------------------------------------------------------------------------------------------
# Masks: boolean tensors, True = may attend. Shapes broadcast to (B, n_head, T_query, T_key).


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Which keys are real tokens: (B, T_key) bool -> (B, 1, 1, T_key), the same for every query and head."""
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)


def causal_mask(t_query: int, t_key: int, device: torch.device | str | None = None) -> Tensor:
    """Which keys are not in the future: (T_query, T_key) bool, lower-triangular.

    The queries are the LAST t_query positions of the t_key keys (with a KV cache the keys include
    the tokens seen at earlier steps), so query i sits at position i + (t_key - t_query) and may see
    every key j at or before that position.
    """
    offset = t_key - t_query
    return torch.ones(t_query, t_key, dtype=torch.bool, device=device).tril(diagonal=offset)  # (Tq, Tk)


def combine_masks(padding: Tensor | None, causal: Tensor | None) -> Tensor | None:
    """A key is visible only if every mask allows it: (B, 1, 1, Tk) & (Tq, Tk) -> (B, 1, Tq, Tk).

    Either mask may be None (nothing hidden for that reason); None & None is None.
    """
    if padding is None or causal is None:
        return padding if causal is None else causal[None, None]  # (B, 1, 1, Tk) or (1, 1, Tq, Tk)
    return padding & causal  # broadcasting: (B, 1, 1, Tk) & (Tq, Tk) -> (B, 1, Tq, Tk)


# --------------------------------------------------------------------------------------------------
# The attention computation itself, on already split heads.


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, causal: bool = False,
    use_sdpa: bool = False, dropout: float = 0.0,
) -> Tensor:
    """softmax(q k^T / sqrt(D) masked) v for q (B, H, Tq, D), k and v (B, H, Tk, D) -> (B, H, Tq, D).

    Why divide by sqrt(D): a dot product of D channels grows with D (its spread is sqrt(D) times a
    channel's), and large scores make the softmax put all its weight on one key, whose gradients
    then vanish; dividing brings the spread back to about 1 at any head width.

    `mask` is boolean, True = may attend, broadcastable to (B, H, Tq, Tk) (typically the padding
    mask); `causal=True` also hides the future. With `use_sdpa` the same maths runs in PyTorch's
    fused `scaled_dot_product_attention` kernel (faster, less memory). `dropout` drops attention
    weights with that probability (pass 0.0 outside training).
    Queries with no visible key get an output of zero (finite, never NaN).
    A raw (B, T) attention mask would broadcast as (Tq, Tk), hiding the wrong keys without an error,
    so a mask that is not a 4-D bool tensor is refused.
    """
    if mask is not None and (mask.dtype != torch.bool or mask.dim() != 4):
        raise ModelInputError(
            f"mask must be a bool tensor broadcastable to (B, H, Tq, Tk), got dtype {mask.dtype} and shape "
            f"{tuple(mask.shape)}; build it with padding_mask(attention_mask) or combine_masks(...)"
        )
    t_query, t_key = q.shape[2], k.shape[2]
    if use_sdpa and causal and mask is None and t_query == t_key:
        # Causality is the only rule: SDPA's built-in causal kernel never even builds the mask.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
    if causal and t_query > 1:  # (a single query, the newest token, may see every key: nothing to hide)
        mask = combine_masks(mask, causal_mask(t_query, t_key, q.device))  # (B or 1, 1, Tq, Tk)
    has_key = None
    if mask is not None:
        has_key = mask.any(dim=-1, keepdim=True)  # (B or 1, 1, Tq or 1, 1): does this query see anything?
        # A query that may see nothing is allowed to see everything instead (so its softmax is
        # finite); its output is then replaced by zeros below.
        mask = mask | ~has_key
    if use_sdpa:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, Tq, D)
    else:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))  # hidden keys: weight exp(-inf) = 0
        weights = scores.softmax(dim=-1)  # (B, H, Tq, Tk), each row sums to 1
        if dropout > 0:
            weights = F.dropout(weights, p=dropout)  # forget some links at random (training only)
        out = weights @ v  # (B, H, Tq, D): the weighted sum of values
    if has_key is not None:
        out = out.masked_fill(~has_key, 0.0)  # the queries that could see nothing: zero, as promised
    return out


# --------------------------------------------------------------------------------------------------
# Rotary position embeddings (RoPE): where a token is, told to attention by turning its query and key.
#
# A learned position table adds "I am at position 7" to a token's vector; to copy "the word two
# places after the last 'the'", a head must then learn that relation separately for every position.
# RoPE (Su et al., 2021) instead rotates each pair of channels (x_i, x_{i+D/2}) of a query or key by
# the angle position * theta_i, with one frequency theta_i = base^(-2i/D) per pair. The dot product of
# a query turned by angle a and a key turned by angle b depends only on a - b: attention scores see
# the DISTANCE between two tokens, the same rule at every position. Values are not turned.
# Pairing channel i with channel i + D/2 ("rotate half", as GPT-NeoX and Hugging Face's Llama do)
# rather than the neighbours 2i and 2i + 1 (the paper's and Meta's original Llama code) only
# reorders each head's channels; a model learns the same with either, but imported weights must
# follow the layout they were trained with (see GPT.from_llama_state_dict).


def rotary_angles(position_ids: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and signed sin of every (position, channel) angle: (B, T) -> two (B, 1, T, head_dim) tensors.

    Channel i and its partner i + D/2 turn by the same angle, so both halves of cos are equal; sin
    carries the rotation's minus sign on its first half (see `apply_rotary`).
    """
    pairs = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32)  # (D/2,)
    theta = base ** (-pairs / head_dim)  # (D/2,) from 1 (fast turn) down to base^(-(D-2)/D) (slow)
    angles = position_ids[:, None, :, None].float() * theta  # (B, 1, T, D/2)
    sin = angles.sin()
    return torch.cat([angles.cos()] * 2, dim=-1), torch.cat([-sin, sin], dim=-1)  # (B, 1, T, D) each


def apply_rotary(x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
    """Turn each channel pair (x_i, x_{i + D/2}) of x (B, H, T, D) by its angle a: a 2-D rotation,

        x_i'       = x_i cos a - x_{i+D/2} sin a
        x_{i+D/2}' = x_{i+D/2} cos a + x_i sin a

    written for the whole head at once as x * cos + swapped(x) * signed_sin, where swapped(x) puts
    each channel's partner in its place. Five tensor operations per call: generation turns the
    queries and keys of one token per step in every layer, and each operation costs microseconds.
    """
    cos, signed_sin = rotary  # each (B, 1, T, D), float32
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each: the two halves of every pair
    swapped = torch.cat([x2, x1], dim=-1)  # (B, H, T, D): channel i holds its partner
    return (x * cos + swapped * signed_sin).to(x.dtype)  # float32 cos/sin promote a bfloat16 x: cast back


# --------------------------------------------------------------------------------------------------
# The KV cache: what generation remembers between steps.


class KVCache:
    """The keys and values of every token seen so far, one (k, v) pair per layer, growing along T.

    Each layer's keys live in a buffer with room to spare, as a Python list keeps its items: a step
    writes its new keys into the next free slots, and only a full buffer is copied, into one twice
    as long. Concatenating instead (`torch.cat([stored, new])`) copies ALL the stored keys at every
    step; generating 256 tokens with bench/model.py's GPT on a 2-core Intel Xeon, that copy took 5%
    of the time for one sequence and 18% for a batch of 8. `generate` knows how long its sequences
    can get (prompt + max_new_tokens) and asks for that `capacity` at once, so that it never copies
    a buffer to grow it. `update` returns a view of the filled part, so attention sees exactly "all
    keys so far".
    It also remembers which of the cached tokens are padding (`key_mask`), so that a left-padded
    prompt's pads stay hidden for the whole generation, not only during the first forward pass.
    One cache belongs to one batch of sequences; make a new one for every `generate` call. It is
    mostly for inference: its buffers are written in place, so autograd cannot backpropagate through a
    step after a later step has written into the same buffer (training recomputes the whole sequence,
    without a cache). One exception works: a prompt pass, `take_rows`, then one pass on top
    (`GPT.response_states`), since take_rows makes new buffers and each is written only once.
    """

    def __init__(self, n_layer: int, capacity: int = 0) -> None:
        self.capacity = capacity  # tokens the first buffers make room for (0: twice the first tokens)
        self.keys: list[Tensor | None] = [None] * n_layer  # per layer (B, Hkv, room, D), room >= capacity
        self.values: list[Tensor | None] = [None] * n_layer  # per layer the same shape as its keys
        self.filled = [0] * n_layer  # per layer: how many positions of the room are in use
        self.key_mask: Tensor | None = None  # (B, T_past), True = real token; None = no padding at all
        self.length = 0  # T_past: tokens already stored

    def add_tokens(self, attention_mask: Tensor | None, batch: int, t_new: int) -> Tensor | None:
        """Record the padding mask of `t_new` incoming tokens; return the mask over ALL keys (B, T_past+T)."""
        if attention_mask is not None or self.key_mask is not None:
            device = (attention_mask if attention_mask is not None else self.key_mask).device
            old = self.key_mask
            if old is None:
                old = torch.ones(batch, self.length, dtype=torch.bool, device=device)
            new = attention_mask
            if new is None:
                new = torch.ones(batch, t_new, dtype=torch.bool, device=device)
            self.key_mask = torch.cat([old, new.bool()], dim=1)  # (B, T_past + T)
        self.length += t_new
        return self.key_mask

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's keys/values (B, Hkv, T, D) of `layer`; return all of them (B, Hkv, T_past+T, D).

        Hkv = n_kv_head: with grouped-query attention the cache holds fewer heads than the queries have.
        """
        past, end = self.filled[layer], self.filled[layer] + k.shape[2]
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:  # none yet, or full: a bigger buffer
            room = self.capacity if end <= self.capacity else 2 * end  # the capacity asked for, or twice the need
            self.keys[layer] = self._grown(self.keys[layer], k, past, room)
            self.values[layer] = self._grown(self.values[layer], v, past, room)
        self.keys[layer][:, :, past:end] = k
        self.values[layer][:, :, past:end] = v
        self.filled[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    @property
    def batch(self) -> int | None:
        """How many sequences the stored keys belong to; None while nothing is stored yet."""
        return None if not self.keys or self.keys[0] is None else self.keys[0].shape[0]

    def nbytes(self) -> int:
        """Bytes of the keys and values stored so far (the filled part of every layer's buffers)."""
        return sum(self.keys[i][:, :, :n].nbytes + self.values[i][:, :, :n].nbytes
                   for i, n in enumerate(self.filled) if n)

    def take_rows(self, rows: Tensor) -> None:
        """Keep the sequences that `rows` picks, in its order: a (B,) bool mask or (b,) indices.

        Generation drops the rows that have finished, and copies a shared prompt's keys and values
        to every row that asked it (`GPT.generate`).
        """
        if rows.dtype == torch.bool:
            rows = rows.nonzero().squeeze(1)  # (b,) the indices of the True rows
        # index_select, not buffer[rows]: on a CPU it copies these buffers 1.4-3x faster than indexing does.
        for layer, buffer in enumerate(self.keys):
            if buffer is not None:  # (B, Hkv, capacity, D) -> (b, Hkv, capacity, D)
                self.keys[layer] = buffer.index_select(0, rows)
                self.values[layer] = self.values[layer].index_select(0, rows)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, rows)

    @staticmethod
    def _grown(buffer: Tensor | None, like: Tensor, filled: int, capacity: int) -> Tensor:
        """A (B, Hkv, capacity, D) buffer holding the first `filled` positions of `buffer`."""
        B, H, _, D = like.shape
        grown = like.new_empty(B, H, capacity, D)
        if buffer is not None:
            grown[:, :, :filled] = buffer[:, :, :filled]
        return grown


# --------------------------------------------------------------------------------------------------
# Multi-head attention as a module: project, split heads, attend, merge heads, project.


def uses_sdpa(config: ModelConfig) -> bool:
    """Whether `config.attention` runs `attend` in torch's fused kernel ("sdpa") or written out
    ("manual"). A new way to attend gets its branch here (and in attend) and its name in config.ATTENTIONS."""
    if config.attention == "sdpa":
        return True
    if config.attention == "manual":
        return False
    raise ConfigError(f"attention={config.attention}: uses_sdpa (minillm/model/attention.py) knows no attention of "
                      "that name; add its branch there, and its computation in attend")


class MultiHeadAttention(nn.Module):
    """n_head attention heads side by side, each of width head_dim = n_embd / n_head.

    One Linear (`qkv`) makes queries, keys and values in a single matrix multiply (faster than
    three, same maths); `proj` mixes the heads' outputs back into the residual stream (the (B, T, C)
    tensor that every block reads and adds to, blocks.py).

    **Grouped-query attention** (GQA, Ainslie et al., 2023; `config.n_kv_head` < n_head): the
    queries keep their n_head heads, but keys and values have only n_kv_head, and each one serves a
    group of n_head / n_kv_head query heads. n_kv_head = 1 is multi-query attention (Shazeer, 2019).
    What it saves is the KV cache: generation stores n_kv_head heads per token instead of n_head,
    and reads them all at every step, which is what limits a large model's generation speed.
    """

    def __init__(self, config: ModelConfig, layer: int = 0, causal: bool = False) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.causal = causal  # True in a decoder (GPT): no token sees the tokens after it
        self.layer = layer  # index of this layer's slot in a KV cache
        self.use_sdpa = uses_sdpa(config)
        self.dropout = config.dropout
        # How many heads of queries, keys and values qkv makes, each head_dim channels wide.
        self.qkv_heads = [self.n_head, self.n_kv_head, self.n_kv_head]
        self.qkv = nn.Linear(config.n_embd, sum(self.qkv_heads) * self.head_dim, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, heads * D) -> (B, heads, T, D): each head gets its own slice of the channels."""
        B, T, width = x.shape
        return x.view(B, T, width // self.head_dim, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None,
                rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C). mask: bool, True = may attend, e.g. padding (B, 1, 1, T_key).

        The causal rule is added inside (self.causal), where the number of cached keys is known.
        `rotary`: the (cos, signed sin) of `rotary_angles` for these T tokens when positions are RoPE.
        """
        B, T, C = x.shape
        heads = self.split_heads(self.qkv(x))  # (B, H + 2 * Hkv, T, D): every query, key and value head
        q, k, v = heads.split(self.qkv_heads, dim=1)  # (B, H, T, D), (B, Hkv, T, D), (B, Hkv, T, D)
        if rotary is not None:  # turn queries and keys by their positions' angles (before caching)
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, Hkv, T_past + T, D): all keys so far
        if self.n_kv_head != self.n_head:  # GQA: query head h reads key/value head h // group
            group = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # (B, H, Tk, D)
        out = attend(
            q, k, v, mask, causal=self.causal, use_sdpa=self.use_sdpa,
            dropout=self.dropout if self.training else 0.0,
        )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, C)  # merge heads: (B, T, H*D)
        return self.proj(out)  # (B, T, C)

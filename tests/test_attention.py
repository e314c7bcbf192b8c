"""Masks and attention, each checked against an independent, deliberately naive computation."""

import math

import pytest
import torch

from minillm.config import ModelConfig
from minillm.errors import ModelInputError
from minillm.model.attention import (
    KVCache,
    MultiHeadAttention,
    apply_rotary,
    attend,
    causal_mask,
    combine_masks,
    padding_mask,
    rotary_angles,
)


def brute_force_mask(real: list[list[bool]], t_query: int, causal: bool) -> torch.Tensor:
    """May query i of row b see key j? One Python loop per question."""
    B, t_key = len(real), len(real[0])
    out = torch.zeros(B, 1, t_query, t_key, dtype=torch.bool)
    for b in range(B):
        for i in range(t_query):
            position = t_key - t_query + i  # queries are the last t_query positions
            for j in range(t_key):
                out[b, 0, i, j] = real[b][j] and (not causal or j <= position)
    return out


@pytest.mark.parametrize("t_query", [1, 3, 6])
@pytest.mark.parametrize("causal", [True, False])
def test_masks_match_brute_force(t_query, causal):
    real = [[False, False, True, True, True, True], [True, True, True, True, True, False],  # padded left, right
            [True, False, True, False, True, True]]  # and holes anywhere: the mask must not assume a side
    pad = padding_mask(torch.tensor(real))
    future = causal_mask(t_query, 6) if causal else None
    got = combine_masks(pad, future).expand(3, 1, t_query, 6)
    assert got.dtype == torch.bool
    assert torch.equal(got, brute_force_mask(real, t_query, causal))


def test_the_causal_mask_is_lower_triangular_and_no_masks_combine_to_none():
    assert torch.equal(causal_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    assert combine_masks(None, None) is None
    assert combine_masks(None, causal_mask(2, 2)).shape == (1, 1, 2, 2)


def reference_attention(q, k, v, mask):
    """Float64, one (batch, head, query) at a time, softmax written as exp / sum; no key visible -> 0."""
    q, k, v = q.double(), k.double(), v.double()
    B, H, Tq, D = q.shape
    mask = mask.expand(B, H, Tq, k.shape[2])
    out = torch.zeros(B, H, Tq, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                visible = [j for j in range(k.shape[2]) if mask[b, h, i, j]]
                if not visible:
                    continue
                scores = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(D) for j in visible])
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                out[b, h, i] = sum(w * v[b, h, j] for w, j in zip(weights, visible, strict=True))
    return out


def random_qkv(seed, B=2, H=3, Tq=5, Tk=5, D=4, dtype=torch.float32):
    """Queries (B, H, Tq, D), keys and values (B, H, Tk, D), drawn from `seed`: Tq < Tk is a step of
    generation, its new queries against the cached keys as well."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, t, D, generator=g, dtype=dtype) for t in (Tq, Tk, Tk)]


def left_padded_causal_mask():
    """Row 0 has two pads in front, so its first two queries see nothing at all."""
    real = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    return combine_masks(padding_mask(real), causal_mask(5, 5))


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_attention_matches_float64_reference(use_sdpa):
    q, k, v = random_qkv(0)
    mask = left_padded_causal_mask()
    got = attend(q, k, v, mask, use_sdpa=use_sdpa)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), reference_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_manual_and_sdpa_agree_with_cached_keys():
    q, k, v = random_qkv(1, Tq=2, Tk=7)  # two new queries against seven keys (five of them cached)
    keeps = torch.rand(2, 7, generator=torch.Generator().manual_seed(1)) > 0.3  # seeded: a failure reproduces
    mask = combine_masks(padding_mask(keeps), causal_mask(2, 7))
    torch.testing.assert_close(attend(q, k, v, mask), attend(q, k, v, mask, use_sdpa=True))
    torch.testing.assert_close(attend(q, k, v, None), attend(q, k, v, None, use_sdpa=True))


@pytest.mark.parametrize("use_sdpa", [False, True])
@pytest.mark.parametrize("t_query", [1, 4, 6])
def test_causal_flag_equals_explicit_causal_mask(use_sdpa, t_query):
    q, k, v = random_qkv(5, Tq=t_query, Tk=6)  # t_query < 6: the first keys come from a cache
    explicit = causal_mask(t_query, 6)[None, None]
    expected = reference_attention(q, k, v, explicit)
    got = attend(q, k, v, causal=True, use_sdpa=use_sdpa)  # t_query == 6 takes SDPA's causal kernel
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_fully_masked_rows_are_zero_with_finite_gradients(use_sdpa):
    q, k, v = (t.requires_grad_() for t in random_qkv(2))
    mask = torch.zeros(1, 1, 5, 5, dtype=torch.bool)  # nobody may see anything
    out = attend(q, k, v, mask, use_sdpa=use_sdpa)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_gradcheck_attention_float64():
    q, k, v = (t.requires_grad_() for t in random_qkv(3, B=1, H=2, Tq=4, Tk=4, D=3, dtype=torch.float64))
    mask = combine_masks(padding_mask(torch.tensor([[False, True, True, True]])), causal_mask(4, 4))
    assert torch.autograd.gradcheck(lambda q, k, v: attend(q, k, v, mask), (q, k, v))


def test_gradcheck_multi_head_attention_module_float64():
    module = MultiHeadAttention(ModelConfig(n_embd=8, n_head=2)).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    mask = causal_mask(4, 4)[None, None]
    assert torch.autograd.gradcheck(lambda x: module(x, mask), (x,))


def test_module_manual_equals_sdpa_and_heads_are_split_correctly():
    torch.manual_seed(0)
    manual = MultiHeadAttention(ModelConfig(n_embd=12, n_head=3))
    fused = MultiHeadAttention(ModelConfig(n_embd=12, n_head=3, attention="sdpa"))
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(2, 5, 12)
    mask = left_padded_causal_mask()
    torch.testing.assert_close(manual(x, mask), fused(x, mask))
    # Independent check of the head split: head 1 uses channels 4..8 of q, k and v.
    q, k, v = manual.qkv(x).split(12, dim=2)
    one_head = reference_attention(*(t[:, :, 4:8].unsqueeze(1) for t in (q, k, v)), mask)[:, 0]  # (B, T, 4)
    heads = attend(*(manual.split_heads(t) for t in (q, k, v)), mask)  # (B, H, T, 4)
    torch.testing.assert_close(heads[:, 1].double(), one_head, atol=1e-6, rtol=1e-6)
    # The whole module by hand: qkv's rows are queries, keys, values in that order (GPT-2's c_attn
    # and the weight importers rely on it); head h's output fills channels 4h..4h+4 before proj.
    every_head = [reference_attention(*(t[:, :, 4 * h:4 * h + 4].unsqueeze(1) for t in (q, k, v)), mask)[:, 0]
                  for h in range(3)]  # 3 x (B, T, 4)
    by_hand = torch.cat(every_head, dim=-1) @ manual.proj.weight.double().T + manual.proj.bias.double()
    torch.testing.assert_close(manual(x, mask).double(), by_hand, atol=1e-5, rtol=1e-5)


def test_kv_cache_grows_along_time_and_remembers_padding():
    cache = KVCache(n_layer=2)
    first = cache.add_tokens(torch.tensor([[False, True, True], [True, True, True]]), batch=2, t_new=3)
    k0, v0 = cache.update(0, torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5))
    assert first.shape == (2, 3) and k0.shape == (2, 4, 3, 5) and cache.length == 3
    mask = cache.add_tokens(None, batch=2, t_new=1)  # the new token is real in every row
    k1, v1 = cache.update(0, torch.randn(2, 4, 1, 5), torch.randn(2, 4, 1, 5))
    assert torch.equal(mask, torch.tensor([[False, True, True, True], [True, True, True, True]]))
    assert k1.shape == (2, 4, 4, 5) and torch.equal(k1[:, :, :3], k0) and torch.equal(v1[:, :, :3], v0)
    assert cache.keys[1] is None and cache.length == 4 and cache.filled == [4, 0]
    for t in range(20):  # past the buffer's first capacity: it grows, and keeps every key so far
        k_next, v_next = cache.update(0, torch.full((2, 4, 1, 5), float(t)), torch.full((2, 4, 1, 5), -float(t)))
    assert k_next.shape == (2, 4, 24, 5) and cache.keys[0].shape[2] >= 24
    assert torch.equal(k_next[:, :, :4], k1) and torch.equal(v_next[:, :, :4], v1)
    steps = torch.arange(20.0)
    assert torch.equal(k_next[0, 0, 4:, 0], steps) and torch.equal(v_next[0, 0, 4:, 0], -steps)


def test_kv_cache_given_a_capacity_makes_room_for_it_at_once():
    cache = KVCache(n_layer=1, capacity=10)
    cache.update(0, torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5))
    first = cache.keys[0]
    assert first.shape == (2, 4, 10, 5)  # room for all 10 tokens, not twice the first 3
    for _ in range(7):
        cache.update(0, torch.randn(2, 4, 1, 5), torch.randn(2, 4, 1, 5))
    assert cache.keys[0] is first  # 10 tokens written, not one buffer copied
    k, _ = cache.update(0, torch.randn(2, 4, 1, 5), torch.randn(2, 4, 1, 5))
    assert k.shape == (2, 4, 11, 5) and cache.keys[0].shape[2] == 22  # past it: twice as long, as usual


def test_kv_cache_keeps_only_the_rows_asked_for():
    cache = KVCache(n_layer=2)
    cache.add_tokens(torch.tensor([[False, True], [True, True], [False, False]]), batch=3, t_new=2)
    keys, values = torch.randn(3, 4, 2, 5), torch.randn(3, 4, 2, 5)
    cache.update(0, keys, values)
    cache.take_rows(torch.tensor([True, False, True]))
    mask = cache.add_tokens(None, batch=2, t_new=1)
    k, v = cache.update(0, torch.zeros(2, 4, 1, 5), torch.ones(2, 4, 1, 5))
    assert torch.equal(mask, torch.tensor([[False, True, True], [False, False, True]]))
    assert torch.equal(k[:, :, :2], keys[[0, 2]]) and torch.equal(v[:, :, :2], values[[0, 2]])
    assert (k[:, :, 2] == 0).all() and (v[:, :, 2] == 1).all() and cache.keys[1] is None
    cache.take_rows(torch.tensor([1, 1, 0]))  # indices: rows copied, in the order asked
    assert torch.equal(cache.keys[0][:, :, :2], keys[[2, 2, 0]]) and cache.key_mask.shape == (3, 3)


def test_kv_cache_without_padding_keeps_no_mask():
    cache = KVCache(n_layer=1)
    assert cache.add_tokens(None, batch=2, t_new=4) is None
    assert cache.add_tokens(None, batch=2, t_new=1) is None and cache.length == 5
    # A first padded step: the five tokens before it were all real, and stay visible.
    mask = cache.add_tokens(torch.tensor([[True], [False]]), batch=2, t_new=1)
    assert torch.equal(mask, torch.tensor([[True] * 6, [True] * 5 + [False]]))


@pytest.mark.parametrize("use_sdpa", [False, True])
@pytest.mark.parametrize("masked", [False, True])  # SDPA takes another call with a mask than without
def test_attention_dropout_drops_weights_only_when_asked(use_sdpa, masked):
    q, k, v = random_qkv(6)
    mask = left_padded_causal_mask() if masked else None
    torch.manual_seed(0)
    dropped = attend(q, k, v, mask, causal=True, use_sdpa=use_sdpa, dropout=0.5)
    kept = attend(q, k, v, mask, causal=True, use_sdpa=use_sdpa)
    assert not torch.allclose(dropped, kept)
    assert torch.equal(kept, attend(q, k, v, mask, causal=True, use_sdpa=use_sdpa, dropout=0.0))


@pytest.mark.parametrize("mask", [
    torch.ones(5, 5, dtype=torch.bool),  # a raw (B, T) attention_mask: with B == T it would broadcast as (Tq, Tk)
    torch.ones(5, 1, 1, 5),  # float, right shape
    torch.ones(5, 1, 1, 5, dtype=torch.long),  # int, right shape
], ids=["raw-2d", "float", "int"])
def test_attend_refuses_a_mask_that_is_not_4d_bool(mask):
    q, k, v = random_qkv(7, B=5)
    with pytest.raises(ModelInputError, match=r"mask must be a bool tensor broadcastable to \(B, H, Tq, Tk\).*"
                                              r"padding_mask\(attention_mask\) or combine_masks"):
        attend(q, k, v, mask)


# --------------------------------------------------------------------------------------------------
# Rotary position embeddings.


def test_rotary_is_complex_multiplication_by_position_angles():
    """Each channel pair (x_i, x_{i+D/2}) as the complex number x_i + j x_{i+D/2}, times e^{j p theta_i}."""
    torch.manual_seed(0)
    D, positions = 8, torch.tensor([[0, 3, 11], [7, 1, 2]])  # (B, T)
    x = torch.randn(2, 2, 3, D, dtype=torch.float64)  # (B, H, T, D)
    got = apply_rotary(x, rotary_angles(positions, D))
    expected = torch.empty_like(x)
    for b in range(2):
        for t in range(3):
            for i in range(D // 2):
                angle = positions[b, t].item() * 10000.0 ** (-2 * i / D)  # 10000: RoPE's base, rope_base
                z = complex(1, 0) * (x[b, :, t, i] + 1j * x[b, :, t, i + D // 2]).numpy() * complex(
                    math.cos(angle), math.sin(angle))
                expected[b, :, t, i] = torch.from_numpy(z.real)
                expected[b, :, t, i + D // 2] = torch.from_numpy(z.imag)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_rotary_scores_depend_only_on_the_distance():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(query_position: int, key_position: int) -> float:
        turned_q = apply_rotary(q, rotary_angles(torch.tensor([[query_position]]), 16))
        turned_k = apply_rotary(k, rotary_angles(torch.tensor([[key_position]]), 16))
        return (turned_q * turned_k).sum().item()

    assert score(5, 2) == pytest.approx(score(40, 37), abs=1e-4)  # same distance, same score
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)  # another distance, another score
    assert apply_rotary(q, rotary_angles(torch.tensor([[9]]), 16)).norm() == pytest.approx(q.norm().item())


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_attention_dropout_zeroes_weights_at_rate_p_and_rescales_the_rest(use_sdpa):
    """Dropout removes attention LINKS (weights), each with probability p, and scales the survivors by
    1 / (1 - p) so that their expected sum is still 1. Equal scores make every weight 1 / Tk, and
    one-hot values (v_j = e_j) copy each weight into its own output channel, so the output shows the
    dropped weights themselves; an extra all-ones channel must then hold their sum (a dropout on the
    output instead would drop that channel on its own)."""
    B, H, Tq, Tk, p = 1, 4, 64, 16, 0.25
    q, k = torch.zeros(B, H, Tq, 8), torch.zeros(B, H, Tk, 8)  # every score 0: every weight 1 / Tk
    v = torch.cat([torch.eye(Tk), torch.ones(Tk, 1)], dim=1).expand(B, H, Tk, Tk + 1)  # (B, H, Tk, Tk + 1)
    torch.manual_seed(0)
    out = attend(q, k, v, use_sdpa=use_sdpa, dropout=p)  # (B, H, Tq, Tk + 1)
    weights, row_sums = out[..., :Tk], out[..., Tk]
    kept = weights != 0
    torch.testing.assert_close(weights[kept], torch.full_like(weights[kept], 1 / (Tk * (1 - p))))
    assert (~kept).float().mean().item() == pytest.approx(p, abs=0.03)  # 4096 weights: p to about +-0.007
    torch.testing.assert_close(row_sums, weights.sum(dim=-1))

"""GPT and BERT: invariances a correct transformer must have, the KV cache, sampling, and bad input."""

import itertools
import math
import re

import pytest
import torch

from minillm.config import MIN_TEMPERATURE, ModelConfig
from minillm.errors import ConfigError, ModelInputError
from minillm.model import GPT, Bert, Block, KVCache
from minillm.model.attention import rotary_angles
from minillm.model.blocks import make_activation
from minillm.model.gpt import filter_logits, inverse_cdf_sample, sample_next

V = 53


def gpt_config(**kw) -> ModelConfig:
    return ModelConfig(**{"vocab_size": V, "block_size": 48, "n_layer": 2, "n_head": 4, "n_embd": 32, **kw})


def bert_config(**kw) -> ModelConfig:
    return gpt_config(norm="post", activation="gelu", layer_norm_eps=1e-12, **kw)


def make(cls, config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # larger-than-init weights: differences are not hidden by tiny activations
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ids_of(*shape, seed=0) -> torch.Tensor:
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Shapes and configuration switches.


def test_shapes_and_tied_heads():
    gpt, bert = make(GPT, gpt_config()), make(Bert, bert_config())
    ids = ids_of(2, 7)
    assert gpt(ids).shape == (2, 7, V) and gpt.hidden_states(ids).shape == (2, 7, 32)
    assert bert(ids).shape == (2, 7, V) and bert.hidden_states(ids).shape == (2, 7, 32)
    torch.testing.assert_close(gpt(ids), gpt.hidden_states(ids) @ gpt.tok_emb.weight.T)  # tied by hand
    assert not any("lm_head" in k for k in gpt.state_dict())  # the head IS the embedding table


@pytest.mark.parametrize("cls", [GPT, Bert])
def test_logits_at_selected_positions_are_those_rows_of_the_full_logits(cls):
    model = make(cls, gpt_config() if cls is GPT else bert_config())
    ids = ids_of(2, 7)
    at = torch.tensor([[False, True, True, False, False, False, False], [True] + [False] * 5 + [True]])
    picked = model(ids, logits_at=at)  # (4, V): one row per True, row-major
    assert picked.shape == (4, V)
    full = model(ids)  # (2, 7, V)
    torch.testing.assert_close(picked, torch.stack([full[b, t] for b, t in ((0, 1), (0, 2), (1, 0), (1, 6))]))


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_gradcheck_one_block_float64(norm):
    torch.manual_seed(0)
    block = Block(ModelConfig(n_embd=8, n_head=2, norm=norm), causal=True).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False, True, True], [True, True, True]])[:, None, None, :]  # (B, 1, 1, T)
    assert torch.autograd.gradcheck(lambda x: block(x, padding), (x,))


def test_gradcheck_one_block_with_rotary_positions_float64():
    torch.manual_seed(0)
    block = Block(ModelConfig(n_embd=8, n_head=2, position="rope"), causal=True).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = rotary_angles(torch.tensor([[0, 1, 2], [5, 6, 7]]), head_dim=4)
    assert torch.autograd.gradcheck(lambda x: block(x, rotary=(cos.double(), sin.double())), (x,))


def test_rope_model_has_no_position_table_and_sees_order():
    model = make(GPT, gpt_config(position="rope"))
    assert model.pos_emb is None and not any("pos_emb" in k for k in model.state_dict())
    ids = ids_of(1, 6)
    swapped = ids[:, [1, 0, 2, 3, 4, 5]]  # same tokens, first two swapped: the last logit must change
    assert not torch.allclose(model(ids)[:, -1], model(swapped)[:, -1])


def test_pre_and_post_norm_differ_and_post_ends_normalised():
    torch.manual_seed(0)
    pre, post = Block(ModelConfig(n_embd=8, n_head=2)), Block(ModelConfig(n_embd=8, n_head=2, norm="post"))
    post.load_state_dict(pre.state_dict())
    x = 3 * torch.randn(2, 3, 8)
    out = post(x)
    assert not torch.allclose(pre(x), out)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)  # LN is last in post-LN


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_a_block_is_its_residual_formula_by_hand(norm):
    """GPT-2's pre-LN block, h = x + attn(LN_1(x)) then h + MLP(LN_2(h)), and BERT's post-LN one,
    h = LN_1(x + attn(x)) then LN_2(h + MLP(h)), from the sub-layers called one by one (each checked
    on its own elsewhere). Only the comparisons with transformers (test_weight_import.py, skipped
    without it) told a sub-layer that read the other norm, or the stream before its norm."""
    block = make(Block, ModelConfig(n_embd=8, n_head=2, norm=norm)).double()  # make(): LN_1 and LN_2 differ
    x = torch.randn(2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if norm == "pre":
        h = x + block.attn(block.ln_1(x))
        by_hand = h + block.mlp(block.ln_2(h))
    else:
        h = block.ln_1(x + block.attn(x))
        by_hand = block.ln_2(h + block.mlp(h))
    torch.testing.assert_close(block(x), by_hand)


def test_residual_projections_start_smaller_by_the_square_root_of_twice_the_depth():
    torch.manual_seed(0)
    model = GPT(gpt_config(n_layer=8, n_embd=64))  # 8 x 4096 weights per kind: std known to ~0.5%

    def std(suffix: str) -> float:
        return torch.cat([p.flatten() for n, p in model.named_parameters() if n.endswith(suffix)]).std().item()

    assert std("attn.qkv.weight") == pytest.approx(0.02, rel=0.03)
    assert std("attn.proj.weight") == pytest.approx(0.02 / 4, rel=0.03)  # 0.02 / sqrt(2 * 8)
    assert std("mlp.proj.weight") == pytest.approx(0.02 / 4, rel=0.03)
    # Biases start at 0 and LayerNorm gains at 1 (nn.Linear's own init would give random biases).
    assert all((p == 0).all() for n, p in model.named_parameters() if n.endswith(".bias"))
    assert all((p == 1).all() for n, p in model.named_parameters() if ".ln_" in n and n.endswith(".weight"))


def test_sdpa_model_equals_manual_model():
    manual = make(GPT, gpt_config())
    fused = GPT(gpt_config(attention="sdpa")).eval()
    fused.load_state_dict(manual.state_dict())
    ids, mask = ids_of(3, 9), torch.ones(3, 9, dtype=torch.bool)
    mask[0, :4] = False
    torch.testing.assert_close(fused(ids, mask), manual(ids, mask), atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training_mode():
    model = make(GPT, gpt_config(dropout=0.3))
    ids = ids_of(2, 6)
    assert torch.equal(model(ids), model(ids))
    model.train()
    assert not torch.equal(model(ids), model(ids))


# --------------------------------------------------------------------------------------------------
# Invariances: causality, padding.


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_changing_a_future_token_never_changes_an_earlier_gpt_logit(position):
    model = make(GPT, gpt_config(position=position))
    ids = ids_of(1, 12)
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % V
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=0, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_bert_without_segment_ids_reads_every_token_as_segment_a():
    model = make(Bert, bert_config(type_vocab_size=2))
    ids = ids_of(2, 9)
    torch.testing.assert_close(model(ids), model(ids, token_type_ids=torch.zeros_like(ids)))
    assert not torch.allclose(model(ids), model(ids, token_type_ids=torch.ones_like(ids)), atol=1e-3)


def test_bert_sees_both_directions():
    model = make(Bert, bert_config())
    ids = ids_of(1, 12)
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % V
    assert not torch.allclose(model(ids)[:, :7], model(changed)[:, :7])


def test_pre_ln_bert_ends_with_its_final_layernorm():
    """The hidden states are LayerNorm(last block's output), computed here by hand in float64."""
    model = make(Bert, gpt_config(norm="pre"))  # make() moves ln_f's gain and bias away from 1 and 0
    seen = {}
    model.blocks[-1].register_forward_hook(lambda module, inputs, output: seen.update(last=output))
    h = model.hidden_states(ids_of(2, 7))  # (B, T, C)
    x = seen["last"].double()  # (B, T, C)
    centred = x - x.mean(-1, keepdim=True)
    by_hand = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + model.ln_f.eps)
    torch.testing.assert_close(h.double(), by_hand * model.ln_f.weight + model.ln_f.bias, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("cls", [GPT, Bert])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_real_token_logits(cls, side, position):
    model = make(cls, gpt_config(position=position) if cls is GPT else bert_config(position=position))
    real = ids_of(1, 6, seed=1)
    pads = ids_of(1, 3, seed=2)  # arbitrary ids in the pad slots: they must not matter
    padded = torch.cat([pads, real], 1) if side == "left" else torch.cat([real, pads], 1)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[:, 3:] = side == "left"
    mask[:, :6] |= side == "right"
    alone, together = model(real), model(padded, mask)
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together[mask].view(1, 6, V), alone, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# KV cache and generation.


def left_padded_batch():
    """Three prompts of lengths 5, 2 and 4, left-padded to 5 (pad slots hold arbitrary ids)."""
    ids = ids_of(3, 5, seed=4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    return ids, mask


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1, 1), (2, 3, 1)])  # one token at a time, or several at once
@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("padded", [False, True])
def test_cached_logits_equal_full_recompute_at_every_step(padded, position, chunks, attention):
    model = make(GPT, gpt_config(position=position, attention=attention))
    ids, mask = left_padded_batch()
    mask = mask if padded else None
    cont = ids_of(3, 6, seed=5)  # tokens fed in `chunks` after the prompt
    full_ids = torch.cat([ids, cont], 1)
    full_mask = None if mask is None else torch.cat([mask, torch.ones(3, 6, dtype=torch.bool)], 1)
    full = model(full_ids, full_mask)  # (3, 11, V) all at once, no cache
    cache = KVCache(model.config.n_layer)
    got = [model(ids, mask, cache=cache)]
    for chunk in cont.split(list(chunks), dim=1):  # (3, c): a chunk attends to the cache and causally within
        got.append(model(chunk, None if mask is None else torch.ones_like(chunk, dtype=torch.bool), cache=cache))
    got = torch.cat(got, 1)
    real = full_mask if full_mask is not None else torch.ones(3, 11, dtype=torch.bool)
    torch.testing.assert_close(got[real], full[real], atol=1e-5, rtol=1e-5)
    assert cache.length == 11 and cache.filled == [11] * model.config.n_layer


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_greedy_generation_same_with_and_without_cache_and_alone_vs_batched(position):
    model = make(GPT, gpt_config(position=position))
    ids, mask = left_padded_batch()
    cached = model.generate(ids, 12, temperature=0, attention_mask=mask)
    recomputed = model.generate(ids, 12, temperature=0, attention_mask=mask, use_cache=False)
    assert torch.equal(cached.new_ids, recomputed.new_ids)
    torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-5, rtol=1e-5)
    for row in range(3):
        prompt = ids[row][mask[row]][None]  # the prompt without its padding
        alone = model.generate(prompt, 12, temperature=0)
        assert torch.equal(alone.new_ids[0], cached.new_ids[row])
    assert len(set(map(tuple, cached.new_ids.tolist()))) > 1  # rows really are different


def test_logprobs_are_those_a_forward_pass_recomputes():
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()
    gen = model.generate(ids, 8, temperature=0.7, top_k=20, attention_mask=mask,
                         generator=torch.Generator().manual_seed(0))
    full_mask = torch.cat([mask, gen.response_mask], 1)
    logits = model(gen.ids, full_mask)[:, ids.shape[1] - 1:-1] / 0.7  # positions that predicted new_ids
    expected = logits.log_softmax(-1).gather(-1, gen.new_ids[..., None])[..., 0]
    torch.testing.assert_close(gen.logprobs, expected, atol=1e-5, rtol=1e-5)


def test_generation_is_deterministic_under_a_seeded_generator():
    model = make(GPT, gpt_config())
    ids = ids_of(2, 3)

    def sample(seed):
        g = torch.Generator().manual_seed(seed)
        return model.generate(ids, 15, temperature=1.0, top_p=0.9, generator=g).new_ids

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_sampled_rows_that_finish_early_leave_the_batch_without_changing_the_others():
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()
    ids, mask = ids.repeat(3, 1), mask.repeat(3, 1)  # 9 rows: they sample different answers

    def sample(eos_id, use_cache=True):
        return model.generate(ids, 12, temperature=1.0, attention_mask=mask, eos_id=eos_id, pad_id=V - 1,
                              generator=torch.Generator().manual_seed(3), use_cache=use_cache)

    eos = int(sample(None).new_ids[0, 1])  # row 0's second token ends its answer
    cached, recomputed = sample(eos), sample(eos, use_cache=False)
    lengths = cached.response_mask.sum(1)
    assert lengths.min() < lengths.max() and lengths.max() > 2  # rows did finish at different steps
    assert torch.equal(cached.new_ids, recomputed.new_ids)  # the cache dropped the same rows
    torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-5, rtol=1e-5)
    full_mask = torch.cat([mask, cached.response_mask], 1)  # the log-probs of what was sampled
    logits = model(cached.ids, full_mask)[:, ids.shape[1] - 1:-1]
    expected = logits.log_softmax(-1).gather(-1, cached.new_ids[..., None])[..., 0]
    torch.testing.assert_close(cached.logprobs, expected * cached.response_mask, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_a_repeated_prompt_is_run_once_and_its_rows_sample_as_if_each_ran_alone(padded):
    """Rows with the same prompt (n samples of one prompt) share its prefill: the model reads each
    distinct prompt once, and every row still gets the answers that recomputing without the cache gives."""
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()
    order = torch.tensor([0, 1, 0, 2, 1, 0])  # 6 rows, 3 distinct prompts, copies not side by side
    ids, mask = ids[order], mask[order] if padded else None
    if padded:  # what a pad slot holds does not make two copies of a prompt different
        ids[4, :3] = torch.tensor([7, 8, 9])
    batch_sizes = []
    hook = model.tok_emb.register_forward_hook(lambda module, args, out: batch_sizes.append(out.shape[0]))

    def sample(temperature, use_cache=True):
        return model.generate(ids, 8, temperature=temperature, attention_mask=mask, use_cache=use_cache,
                              generator=torch.Generator().manual_seed(5))

    sampled = sample(1.0)
    hook.remove()
    assert batch_sizes[0] == 3 and batch_sizes[1:] == [6] * 7  # the prompts once each, then every row
    torch.testing.assert_close(sampled.logprobs, sample(1.0, use_cache=False).logprobs, atol=1e-5, rtol=1e-5)
    assert torch.equal(sampled.new_ids, sample(1.0, use_cache=False).new_ids)
    assert len(set(map(tuple, sampled.new_ids[order == 0].tolist()))) > 1  # copies sample their own answers
    greedy = sample(0.0)
    assert torch.equal(greedy.new_ids[0], greedy.new_ids[2]) and torch.equal(greedy.new_ids[1], greedy.new_ids[4])
    assert torch.equal(greedy.new_ids, sample(0.0, use_cache=False).new_ids)


def prompts_and_responses(n: int):
    """6 rows, 3 distinct left-padded prompts (rows 0, 2, 5 and rows 1, 4 repeat one), then n response
    columns; row 1's answer ended after 2 tokens (right pads)."""
    prompts, prompt_mask = left_padded_batch()
    order = torch.tensor([0, 1, 0, 2, 1, 0])
    ids = torch.cat([prompts[order], ids_of(6, n, seed=7)], dim=1)  # (6, 5 + n)
    response_mask = torch.ones(6, n, dtype=torch.bool)
    response_mask[1, 2:] = False
    ids[4, :3] = torch.tensor([7, 8, 9])  # what a pad slot holds does not make row 4 another prompt
    return ids, torch.cat([prompt_mask[order], response_mask], dim=1)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_response_states_read_a_repeated_prompt_once_and_match_a_full_pass_and_its_gradients(position):
    """RL reads G answers to one prompt: `response_states` runs each distinct prompt once, then the
    responses on top of its copied keys and values. States and gradients equal one full pass over every row."""
    model = make(GPT, gpt_config(position=position)).double()
    n = 4
    ids, mask = prompts_and_responses(n)
    real = mask[:, -n - 1:]  # (6, n + 1): the positions whose states anything reads
    weights = torch.randn(6, n + 1, model.config.n_embd, dtype=torch.float64)
    rows_seen = []
    hook = model.tok_emb.register_forward_hook(lambda module, args, out: rows_seen.append(out.shape[0]))
    shared = model.response_states(ids, mask, n)  # (6, n + 1, C)
    hook.remove()
    assert rows_seen == [3, 6]  # the 3 prompts once each, then the 6 responses
    full = model.hidden_states(ids, mask)[:, -n - 1:]  # (6, n + 1, C)
    torch.testing.assert_close(shared[real], full[real])
    grads = []
    for states in (shared, full):
        model.zero_grad()
        (states * weights)[real].sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for shared_grad, full_grad in zip(*grads, strict=True):
        torch.testing.assert_close(shared_grad, full_grad)


def test_response_states_without_repeats_is_one_pass_and_refuses_a_missing_prompt():
    model = make(GPT, gpt_config())
    ids, mask = prompts_and_responses(4)
    ids, mask = ids[[0, 1, 3]], mask[[0, 1, 3]]  # three different prompts
    rows_seen = []
    hook = model.tok_emb.register_forward_hook(lambda module, args, out: rows_seen.append(out.shape[0]))
    states = model.response_states(ids, mask, 4)
    hook.remove()
    assert rows_seen == [3]
    assert torch.equal(states, model.hidden_states(ids, mask)[:, -5:])
    for n in (0, ids.shape[1]):
        with pytest.raises(ModelInputError, match="leave no prompt or no response"):
            model.response_states(ids, mask, n)


def test_inverse_cdf_sampling_draws_each_token_as_often_as_its_probability():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    n = 40_000
    tokens = inverse_cdf_sample(probs.repeat(n, 1), torch.Generator().manual_seed(0))  # (n,)
    freq = torch.bincount(tokens, minlength=5).double() / n
    assert freq[1] == 0 and freq[4] == 0  # a token of probability 0 is never drawn, nor one past the end
    torch.testing.assert_close(freq, probs.double(), atol=0.01, rtol=0)  # 4 standard errors
    last_only = torch.tensor([[0.0, 0.0, 1.0]]).repeat(100, 1)
    assert (inverse_cdf_sample(last_only, torch.Generator().manual_seed(1)) == 2).all()


def test_inverse_cdf_sampling_never_draws_a_token_of_probability_zero_even_when_u_is_0(monkeypatch):
    """torch.rand may return exactly 0 (once in 2**24 draws): the token drawn is the first whose
    cumulative probability exceeds u, so a filtered token at the start of the row owns no stretch
    even then; and u on a boundary belongs to the next token's stretch."""
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75], [0.0, 0.0, 1.0, 0.0]])
    for u, expected in ((0.0, [1, 2]), (0.25, [3, 2])):
        monkeypatch.setattr(torch, "rand", lambda *shape, u=u, **_: torch.full(shape, u))
        assert inverse_cdf_sample(probs, None).tolist() == expected


def test_inverse_cdf_sampling_rescales_rows_that_do_not_sum_to_one():
    """Float rounding leaves a row's total a hair off 1; u is scaled to the total, so no draw runs past the end."""
    n = 6000
    tokens = inverse_cdf_sample(torch.tensor([[0.3, 0.3, 0.3]]).repeat(n, 1), torch.Generator().manual_seed(0))
    assert tokens.max() < 3
    torch.testing.assert_close(torch.bincount(tokens, minlength=3).double() / n,
                               torch.full((3,), 1 / 3, dtype=torch.double), atol=0.03, rtol=0)  # 4.9 s.e.


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampling_draws_from_the_temperature_scaled_distribution(temperature):
    """p_T(v) = softmax(logits / T): T = 0.5 squares the probabilities (renormalised), T = 2 takes
    their square root. The token frequencies and the returned log-probs must both follow p_T."""
    p = torch.tensor([0.6, 0.3, 0.1])
    n = 20_000
    logits = p.log().repeat(n, 1)  # (n, 3)
    tokens, logprobs = sample_next(logits, temperature, None, None, torch.Generator().manual_seed(0))
    expected = p ** (1 / temperature) / (p ** (1 / temperature)).sum()  # softmax(log p / T), by hand
    torch.testing.assert_close(torch.bincount(tokens, minlength=3).float() / n, expected, atol=0.015, rtol=0)
    torch.testing.assert_close(logprobs, expected.log()[tokens])


def test_sampling_frequencies_follow_the_temperature_then_top_k_then_top_p_filtered_softmax():
    """Temperature first, then top-k, then the top-p nucleus (the token that crosses p kept), then a draw.

    The expected distribution is built by hand in float64 with plain sorting and a loop; 10 000
    draws must match it within 0.02 (4 standard errors). At temperature 0.5 the nucleus of
    top_p=0.7 holds 2 tokens; at temperature 1 it would hold 3, so a sampler that scales by the
    temperature after filtering (a plausible slip: it draws the same text without top_p) draws a
    third token here and fails. The log-probs stay those of the untruncated scaled distribution.
    """
    p = [0.05, 0.3, 0.12, 0.25, 0.2, 0.08]
    temperature, top_k, top_p, n = 0.5, 4, 0.7, 10_000
    scaled = [q ** (1 / temperature) for q in p]
    scaled = [q / sum(scaled) for q in scaled]  # softmax(log p / T)
    ranked = sorted(range(len(p)), key=lambda v: -scaled[v])[:top_k]  # the top-k, likeliest first
    kept_mass = sum(scaled[v] for v in ranked)
    nucleus, mass = [], 0.0
    for v in ranked:
        if mass >= top_p * kept_mass:  # the likelier tokens already reach p of the top-k's mass
            break
        nucleus.append(v)
        mass += scaled[v]
    expected = torch.zeros(len(p), dtype=torch.float64)
    expected[nucleus] = torch.tensor([scaled[v] / mass for v in nucleus], dtype=torch.float64)
    assert nucleus == [1, 3]
    logits = torch.tensor(p).log().repeat(n, 1)  # (n, V)
    tokens, logprobs = sample_next(logits, temperature, top_k, top_p, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=len(p)).double() / n
    torch.testing.assert_close(freq, expected, atol=0.02, rtol=0)
    torch.testing.assert_close(logprobs, torch.tensor(scaled).log()[tokens])


@pytest.mark.parametrize("top_p", [None, 0.9])
def test_a_bfloat16_model_samples_as_a_float32_one(top_p):
    """bfloat16 keeps 8 bits of precision: in its softmax and running sum over 1000 tokens of
    probability 1/1000, the later tokens' shares round away and about half are never drawn."""
    logits = torch.zeros(2000, 1000)  # (B, V) uniform: every token equally likely

    def draw(dtype):
        return sample_next(logits.to(dtype), 1.0, None, top_p, torch.Generator().manual_seed(0))

    (tokens, logprobs), (expected, expected_logprobs) = draw(torch.bfloat16), draw(torch.float32)
    assert torch.equal(tokens, expected) and torch.equal(logprobs, expected_logprobs)
    assert tokens.unique().numel() > 700  # 2000 draws from 1000 (900 with top_p) tokens hit ~860 (~800)


def test_greedy_picks_the_argmax_and_returns_its_log_probability_at_temperature_1():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, -1.0, 0.5]])
    tokens, logprobs = sample_next(logits, 0.0, None, None, None)
    assert tokens.tolist() == [1, 0]
    torch.testing.assert_close(logprobs, logits.log_softmax(-1).max(-1).values)


def test_top_p_keeps_the_smallest_set_whose_probability_reaches_p():
    logits = torch.tensor([[2.0, 1.0, 1.0]], dtype=torch.float64).log()  # probabilities 0.5, 0.25, 0.25
    kept = {p: torch.isfinite(filter_logits(logits, None, p)).sum().item() for p in (0.4, 0.5, 0.6, 0.75, 0.8, 1.0)}
    assert kept == {0.4: 1, 0.5: 1, 0.6: 2, 0.75: 2, 0.8: 3, 1.0: 3}


def textbook_kept(logits: list[float], top_k: int | None, top_p: float | None) -> list[int]:
    """The tokens a top-k then top-p filter keeps, written from the definitions in plain float64 Python.

    top-k: every token whose logit is at least the k-th largest (tokens tied with the k-th all stay).
    top-p (Holtzman et al., 2020): of what top-k left, renormalised, the likeliest tokens, best first,
    up to and including the one whose running mass first reaches p: the smallest such set."""
    kept = range(len(logits))
    if top_k is not None:
        kth = sorted(logits, reverse=True)[min(top_k, len(logits)) - 1]
        kept = [v for v in kept if logits[v] >= kth]
    if top_p is not None:
        weights = {v: math.exp(logits[v] - max(logits)) for v in kept}
        nucleus, mass = [], 0.0
        for v in sorted(kept, key=lambda v: -logits[v]):
            if mass >= top_p:
                break
            nucleus.append(v)
            mass += weights[v] / sum(weights.values())
        kept = nucleus
    return sorted(kept)


def test_filter_logits_keeps_exactly_the_textbook_top_k_and_nucleus():
    """Every vector of 1 to 4 logits drawn from {-1, 0, 1, 2.5} (ties included), every top_k, and
    top_p on and across the boundaries (two equal tokens hold 0.5 each: top_p=0.5 keeps one), against
    `textbook_kept`. Where tied tokens straddle the nucleus's edge either may stay: the kept logits
    must match as a multiset, and no token likelier than a kept one may be dropped."""
    for n in range(1, 5):
        rows = [list(row) for row in itertools.product([-1.0, 0.0, 1.0, 2.5], repeat=n)]
        logits = torch.tensor(rows, dtype=torch.float64)  # (B, n): all rows in one call
        for top_k, top_p in itertools.product([None, *range(1, n + 2)], [None, 0.2, 0.5, 0.75, 0.9, 1.0]):
            finite = torch.isfinite(filter_logits(logits, top_k, top_p))  # (B, n)
            for row, kept in zip(rows, finite.tolist(), strict=True):
                got = [v for v in range(n) if kept[v]]
                expected = textbook_kept(row, top_k, top_p)
                assert sorted(row[v] for v in got) == sorted(row[v] for v in expected), (row, top_k, top_p)
                assert all(v in got for v in range(n) if row[v] > min(row[u] for u in got)), (row, top_k, top_p)


def test_sampled_frequencies_and_log_probs_match_the_textbook_distribution():
    """100 000 draws per case must land within 0.012 of the exact probabilities (float64, from
    `textbook_kept` and a softmax at the temperature), token by token. Hoeffding's inequality bounds
    the chance that a correct sampler misses by that much: 2 exp(-2 * 100 000 * 0.012**2) = 6e-13
    per token, under 1e-9 for all 18 (case, token) pairs together, so the test cannot flake whatever
    the seed. The cases: temperature before filtering (the nucleus of 0.7 holds 2 tokens at T = 0.5,
    3 at T = 1), top_p exactly reached (0.5 + 0.25 = 0.75 keeps two tokens, not three), top-k ties
    (all three tokens tied for 2nd place stay), and plain temperature. The returned log-probs are
    those of the temperature-scaled distribution before filtering (Generation's docstring)."""
    n, bound = 100_000, 0.012
    cases = [([0.05, 0.3, 0.12, 0.25, 0.2, 0.08], 0.5, 4, 0.7), ([0.5, 0.25, 0.125, 0.125], 1.0, None, 0.75),
             ([0.4, 0.15, 0.15, 0.15, 0.15], 2.0, 2, None), ([0.6, 0.3, 0.1], 1.5, None, None)]
    for seed, (p, temperature, top_k, top_p) in enumerate(cases):
        scaled = [math.log(q) / temperature for q in p]
        full = [math.exp(s) for s in scaled]
        full = [w / sum(full) for w in full]  # softmax(log p / T): the unfiltered distribution
        kept = textbook_kept(scaled, top_k, top_p)
        exact = torch.tensor([full[v] / sum(full[u] for u in kept) if v in kept else 0.0 for v in range(len(p))],
                             dtype=torch.float64)
        logits = torch.tensor(p).log().repeat(n, 1)  # (n, V)
        tokens, logprobs = sample_next(logits, temperature, top_k, top_p, torch.Generator().manual_seed(seed))
        freq = torch.bincount(tokens, minlength=len(p)).double() / n
        assert (freq - exact).abs().max() < bound, (p, temperature, top_k, top_p, freq, exact)
        assert freq[exact == 0].sum() == 0  # a filtered token is never drawn
        torch.testing.assert_close(logprobs.double(), torch.tensor(full, dtype=torch.float64).log()[tokens],
                                   atol=1e-5, rtol=0)


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = make(GPT, gpt_config())
    ids = ids_of(2, 4)
    greedy = model.generate(ids, 6, temperature=0).new_ids
    assert torch.equal(model.generate(ids, 6, temperature=1.0, top_k=1).new_ids, greedy)
    assert torch.equal(model.generate(ids, 6, temperature=1.0, top_p=1e-6).new_ids, greedy)
    # below float32's range top_p compares as 0, so every token's mass before it reaches it: the best stays
    assert torch.equal(model.generate(ids, 6, temperature=1.0, top_p=1e-50).new_ids, greedy)


def test_generate_runs_without_dropout_and_gives_the_model_back_in_its_mode():
    model = make(GPT, gpt_config(dropout=0.3))
    ids = ids_of(2, 3)
    greedy = model.generate(ids, 6, temperature=0).new_ids
    assert not model.training  # in eval mode it stays in eval mode
    model.train()
    assert torch.equal(model.generate(ids, 6, temperature=0).new_ids, greedy)  # no dropout inside
    assert model.training  # and in training mode it goes back to training


def test_rows_stop_at_eos_then_pad_and_generation_stops_when_all_are_done():
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()
    free = model.generate(ids, 10, temperature=0, attention_mask=mask).new_ids
    eos = int(free[0, 2])  # make row 0's third token the end of its answer
    stop = int((free[0] == eos).nonzero()[0])  # (its first occurrence)
    gen = model.generate(ids, 10, temperature=0, attention_mask=mask, eos_id=eos, pad_id=V - 1)
    assert gen.new_ids[0, stop] == eos and gen.response_mask[0, : stop + 1].all()
    assert (gen.new_ids[0, stop + 1:] == V - 1).all() and not gen.response_mask[0, stop + 1:].any()
    assert (gen.logprobs[0, stop + 1:] == 0).all()
    for row in range(3):  # every row equals the free run up to its own first eos
        n = int(gen.response_mask[row].sum())
        assert torch.equal(gen.new_ids[row, :n], free[row, :n])
    everyone = model.generate(ids[:1], 10, temperature=0, eos_id=eos)
    assert everyone.new_ids.shape == (1, stop + 1)  # stopped early: nothing left to generate
    default_pad = model.generate(ids, 10, temperature=0, attention_mask=mask, eos_id=eos)  # no pad_id given
    assert (default_pad.new_ids[0, stop + 1:] == eos).all()  # the docstring's default: pad_id = eos_id


# --------------------------------------------------------------------------------------------------
# Bad input.


def test_n_embd_not_divisible_by_n_head_is_a_config_error():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(n_embd=30, n_head=4)


@pytest.mark.parametrize("cls", [GPT, Bert])
def test_bad_ids_and_masks_are_model_input_errors(cls):
    model = make(cls, gpt_config())
    with pytest.raises(ModelInputError, match="vocab_size"):
        model(torch.tensor([[1, V]]))
    with pytest.raises(ModelInputError, match="vocab_size"):
        model(torch.tensor([[-1, 2]]))
    assert model(ids_of(1, 48)).shape == (1, 48, V)  # exactly block_size tokens fit
    with pytest.raises(ModelInputError, match="block_size"):
        model(ids_of(1, 49))
    with pytest.raises(ModelInputError, match="attention_mask"):
        model(ids_of(2, 5), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ModelInputError, match="batch"):
        model(ids_of(5))


def test_bad_generate_arguments():
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()
    with pytest.raises(ModelInputError, match="LEFT padding"):
        model.generate(ids, 3, attention_mask=mask.flip(1))
    with pytest.raises(ModelInputError, match="block_size"):
        model.generate(ids, 44)
    for top_p in (1.5, 0):  # (0 is no nucleus at all: with it allowed, generate ran on without a word)
        with pytest.raises(ModelInputError, match=rf"top_p={top_p} must be in \(0, 1\]"):
            model.generate(ids, 3, top_p=top_p)
    with pytest.raises(ModelInputError, match=r"temperature=-1.0 must be >= 0"):
        model.generate(ids, 3, temperature=-1.0)
    with pytest.raises(ModelInputError, match="eos_id"):
        model.generate(ids, 3, eos_id=V)
    with pytest.raises(ModelInputError, match=r"ids has no prompt tokens; give at least one \(e.g. <bos>\)"):
        model.generate(ids[:, :0], 3)
    with pytest.raises(ModelInputError, match="block_size"):  # the cache counts the past tokens too
        cache = KVCache(2)
        model(ids_of(1, 40), cache=cache)
        model(ids_of(1, 9), cache=cache)


def test_every_generate_argument_at_the_edge_of_its_range_is_accepted():
    """The limits are inclusive where the docstring says so: a prompt and max_new_tokens that fill
    block_size exactly, top_p=1 (no truncation), a top_k above the vocabulary size, the last token id
    as eos_id and pad_id, and the smallest temperature allowed. Refusing one would turn a valid
    request into an error that names no real problem."""
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()  # (3, 5)
    fill = model.config.block_size - ids.shape[1]
    full = model.generate(ids, fill, temperature=0, attention_mask=mask)
    assert full.ids.shape == (3, model.config.block_size)
    cold = model.generate(ids, 4, temperature=MIN_TEMPERATURE, top_k=V + 1, top_p=1.0, attention_mask=mask,
                          eos_id=V - 1, pad_id=V - 1, generator=torch.Generator().manual_seed(0))
    real = cold.response_mask
    assert torch.equal(cold.new_ids[real], full.new_ids[:, :4][real])  # so cold a temperature is greedy


def test_generate_sizes_its_kv_cache_once_for_prompt_and_answer(monkeypatch):
    """generate knows the longest its sequences get (prompt + max_new_tokens) and makes each layer's
    key and value buffers that long at once: none is copied into a bigger one mid-answer."""
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()  # (3, 5)
    sizes = []
    grown = KVCache._grown
    monkeypatch.setattr(KVCache, "_grown", staticmethod(lambda *args: sizes.append(args[-1]) or grown(*args)))
    model.generate(ids, 10, temperature=0, attention_mask=mask)
    assert sizes == [5 + 10] * (2 * model.config.n_layer)  # keys and values of every layer, once each


def test_a_kv_cache_of_another_model_or_batch_is_refused_before_it_is_changed():
    model = make(GPT, gpt_config())  # 2 layers
    with pytest.raises(ModelInputError, match=r"has 1 layers.*n_layer=2.*belongs to one model and one batch"):
        model(ids_of(1, 3), cache=KVCache(1))
    cache = KVCache(2)
    model(ids_of(2, 3), cache=cache)
    with pytest.raises(ModelInputError, match=r"holds a batch of 2.*ids a batch of 1.*make a new one"):
        model(ids_of(1, 1), cache=cache)
    assert cache.length == 3 and cache.filled == [3, 3]  # untouched: it still serves its own batch
    assert model(ids_of(2, 1), cache=cache).shape == (2, 1, V)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_residual_dropout_drops_what_both_sub_layers_add(norm):
    """With the residual dropout at p=1 in training mode, attention and MLP add nothing: a pre-LN
    block is the identity, a post-LN block is its two LayerNorms one after the other."""
    torch.manual_seed(0)
    block = Block(ModelConfig(n_embd=8, n_head=2, norm=norm, dropout=0.5)).train()
    block.drop.p = 1.0  # (the config refuses 1.0; set here to drop every sub-layer output)
    x = torch.randn(2, 3, 8)
    expected = x if norm == "pre" else block.ln_2(block.ln_1(x))
    torch.testing.assert_close(block(x), expected)
    block.eval()
    assert not torch.allclose(block(x), expected)  # in eval mode the sub-layers do add something


def test_generate_refuses_a_row_that_is_all_padding():
    """A row with no real token has no prompt to continue (its last column must be True)."""
    model = make(GPT, gpt_config())
    ids, mask = left_padded_batch()
    mask[1] = False
    with pytest.raises(ModelInputError, match="LEFT padding"):
        model.generate(ids, 3, attention_mask=mask)


def test_bert_refuses_segment_ids_outside_its_segment_table():
    """Segment id 2 with type_vocab_size=2, or any segment id for a model without segments, is a clear
    ModelInputError (not torch's IndexError, and not silently ignored)."""
    ids = ids_of(1, 5)
    for type_vocab_size, segment in ((2, 2), (0, 0)):
        model = make(Bert, bert_config(type_vocab_size=type_vocab_size))
        with pytest.raises(ModelInputError, match=rf"token_type_ids must be in \[0, {type_vocab_size}\)"):
            model(ids, token_type_ids=torch.full_like(ids, segment))


def test_bert_refuses_segment_ids_shaped_otherwise_than_the_ids():
    """One segment id per token: a row of segments for a batch of two rows would broadcast silently (both rows
    given the same segments), one segment short would stop torch in the addition; each is a ModelInputError."""
    model = make(Bert, bert_config(type_vocab_size=2))
    ids = ids_of(2, 5)
    for segments in (torch.zeros(5, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)):
        with pytest.raises(ModelInputError, match=rf"token_type_ids has shape {re.escape(str(tuple(segments.shape)))} "
                                                  r"but ids have \(2, 5\)"):
            model(ids, token_type_ids=segments)


def test_bert_mlm_head_is_dense_gelu_layernorm_then_the_tied_table_plus_a_bias_by_hand():
    """The MLM head by its formula in float64: LayerNorm(GELU(h W^T + b)) E^T + bias, E the token table.
    Without this check a head that forgot its GELU or its bias would still train (only worse), and
    only the optional comparison with Hugging Face (test_weight_import.py) would notice."""
    model = make(Bert, bert_config())  # make() moves every bias, gain and head_bias away from 0 and 1
    ids = ids_of(2, 7)
    h = model.hidden_states(ids).double()  # (B, T, C)
    dense, ln = model.head_dense, model.head_ln
    x = h @ dense.weight.double().T + dense.bias.double()
    x = 0.5 * x * (1 + torch.erf(x / 2 ** 0.5))  # BERT's exact GELU
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12)
    x = x * ln.weight.double() + ln.bias.double()
    by_hand = x @ model.tok_emb.weight.double().T + model.head_bias.double()  # (B, T, V)
    torch.testing.assert_close(model(ids).double(), by_hand, atol=1e-4, rtol=1e-4)


def test_gpt2_gelu_is_the_tanh_formula_by_hand():
    """GPT-2's MLP uses the tanh approximation of GELU, not the exact erf form: they differ by up to
    ~5e-4, too little to see in training curves but enough to miss GPT-2's logits when its weights
    are imported (which only the optional comparison with Hugging Face checks)."""
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    by_hand = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    torch.testing.assert_close(make_activation(gpt_config())(x), by_hand)


def test_bert_blocks_read_the_layernorm_of_token_position_and_segment_vectors_by_hand():
    """BERT's embedding by its formula in float64: LayerNorm(E_tok[id] + E_pos[p] + E_seg[s]) (eps
    1e-12), caught as it enters the first block. The LayerNorm is what keeps three summed tables at
    a sane scale; forgetting it trains on, and only the comparison with Hugging Face would notice."""
    model = make(Bert, bert_config(type_vocab_size=2))  # make() moves emb_ln's gain and bias off 1 and 0
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda module, inputs: seen.update(first=inputs[0]))
    ids, segments = ids_of(2, 7), ids_of(2, 7, seed=1) % 2
    model.hidden_states(ids, token_type_ids=segments)
    x = (model.tok_emb.weight[ids] + model.pos_emb.weight[:7] + model.seg_emb.weight[segments]).double()
    x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12)
    by_hand = x * model.emb_ln.weight.double() + model.emb_ln.bias.double()  # (B, T, C)
    torch.testing.assert_close(seen["first"].double(), by_hand, atol=1e-5, rtol=1e-5)

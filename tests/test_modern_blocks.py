"""The Llama-style switches: RMSNorm, SwiGLU, grouped-query attention, no biases, an untied head, `arch`.

Each is checked against an independent computation (the formula by hand, or the same model written
another way); the whole Llama import is checked against `transformers` in test_weight_import.py.
"""

import pytest
import torch
from test_models import V, bert_config, gpt_config, ids_of, left_padded_batch, make

from minillm.config import CLMConfig, ModelConfig, apply_overrides, from_dict, to_dict
from minillm.errors import ConfigError
from minillm.model import GPT, Bert, KVCache
from minillm.model.blocks import MLP, RMSNorm, mlp_width

LLAMA = {"norm_type": "rmsnorm", "mlp": "swiglu", "position": "rope", "bias": False, "tie_embeddings": False}


def test_rmsnorm_is_the_formula_in_float64():
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    norm = RMSNorm(8, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
    by_hand = x / torch.sqrt((x * x).sum(-1, keepdim=True) / 8 + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), by_hand)
    assert torch.autograd.gradcheck(norm, (x.clone().requires_grad_(),))


def test_rmsnorm_of_bfloat16_is_computed_in_float32():
    """A bfloat16 input gives the float64 formula rounded once to bfloat16. Computed in bfloat16,
    the mean of squares loses digits and a quarter of the outputs land on another bfloat16 value."""
    x = (3 * torch.randn(4, 16, 64, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    norm = RMSNorm(64, eps=1e-6).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 64))
    x64 = x.double()
    by_hand = (x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16) * norm.weight
    got = norm(x)
    assert got.dtype == torch.bfloat16
    # A float32 sum may round a value that sits on a bfloat16 rounding tie the other way: allow 1%.
    assert (got != by_hand).float().mean() < 0.01


def test_swiglu_mlp_is_silu_gate_times_up_with_two_thirds_width():
    config = gpt_config(mlp="swiglu", bias=False)
    mlp = MLP(config)
    H = mlp_width(config)
    assert H == 96  # 2/3 of 4 * 32 = 85, rounded up to a multiple of 32
    assert mlp_width(ModelConfig(n_embd=128, mlp="swiglu")) == 352  # 341 -> 352, not GELU's 512
    gate, up = mlp.fc.weight[:H], mlp.fc.weight[H:]  # (H, C) each
    x = torch.randn(2, 3, 32)
    by_hand = (x @ gate.T * torch.sigmoid(x @ gate.T)) * (x @ up.T) @ mlp.proj.weight.T
    torch.testing.assert_close(mlp(x), by_hand)
    assert mlp_width(gpt_config(mlp="swiglu", mlp_hidden=40)) == 40  # an explicit width wins


def test_grouped_query_attention_equals_multi_head_with_shared_keys():
    """GQA with n_kv_head=2 of 4 heads is plain multi-head attention whose key/value heads 0 and 1
    are copies (and 2 and 3 too): build that model by hand and compare."""
    gqa = make(GPT, gpt_config(n_kv_head=2, position="rope"))
    mha = GPT(gpt_config(position="rope")).eval()
    state = gqa.state_dict()
    C, D = 32, 8
    for i in range(2):
        w = state[f"blocks.{i}.attn.qkv.weight"]  # (C + 2 * 2D, C)
        b = state[f"blocks.{i}.attn.qkv.bias"]
        q, k, v = w.split([C, 2 * D, 2 * D])
        qb, kb, vb = b.split([C, 2 * D, 2 * D])
        share = lambda t: t.view(2, D, *t.shape[1:]).repeat_interleave(2, dim=0).reshape(C, *t.shape[1:])  # noqa: E731
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, share(k), share(v)])
        state[f"blocks.{i}.attn.qkv.bias"] = torch.cat([qb, share(kb), share(vb)])
    mha.load_state_dict(state)
    ids = ids_of(2, 9)
    torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-5, rtol=1e-5)
    assert gqa.blocks[0].attn.qkv.weight.shape == (C + 2 * 2 * D, C)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_kv_cache_stores_only_the_kv_heads(n_kv_head):
    model = make(GPT, gpt_config(n_kv_head=n_kv_head, **LLAMA))
    cache = KVCache(model.config.n_layer)
    model(ids_of(3, 7), cache=cache)
    assert cache.keys[0].shape[:2] == (3, n_kv_head) and cache.values[1].shape[:2] == (3, n_kv_head)
    # 2 (keys and values) x layers x kv heads x head_dim x 4 bytes, per token of each row
    assert cache.nbytes() == 3 * 7 * 2 * 2 * n_kv_head * 8 * 4


@pytest.mark.parametrize("n_kv_head", [0, 1, 2])
def test_llama_cached_generation_equals_recompute_and_padding_changes_nothing(n_kv_head):
    model = make(GPT, gpt_config(n_kv_head=n_kv_head, **LLAMA))
    ids, mask = left_padded_batch()
    cached = model.generate(ids, 10, temperature=0, attention_mask=mask)
    recomputed = model.generate(ids, 10, temperature=0, attention_mask=mask, use_cache=False)
    assert torch.equal(cached.new_ids, recomputed.new_ids)
    torch.testing.assert_close(cached.logprobs, recomputed.logprobs, atol=1e-5, rtol=1e-5)
    alone = model.generate(ids[1][mask[1]][None], 10, temperature=0)  # the short prompt, unpadded
    assert torch.equal(alone.new_ids[0], cached.new_ids[1])


def test_llama_gpt_is_causal():
    model = make(GPT, gpt_config(n_kv_head=1, **LLAMA))
    ids = ids_of(1, 10)
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % V
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_untied_head_and_no_biases_change_the_parameters_as_counted():
    C, tied = 32, make(GPT, gpt_config())
    untied = make(GPT, gpt_config(tie_embeddings=False))
    assert untied.head.weight.shape == (V, C) and tied.head is None
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) - n(tied) == V * C
    torch.testing.assert_close(untied(ids_of(1, 4)), untied.hidden_states(ids_of(1, 4)) @ untied.head.weight.T)
    no_bias = make(GPT, gpt_config(bias=False, norm_type="rmsnorm"))
    assert not any(name.endswith("bias") for name, _ in no_bias.named_parameters())


def test_bert_takes_the_switches_and_still_ignores_padding():
    model = make(Bert, bert_config(norm_type="rmsnorm", mlp="swiglu", n_kv_head=2, tie_embeddings=False,
                                   position="rope"))
    real = ids_of(1, 6, seed=1)
    padded = torch.cat([real, ids_of(1, 3, seed=2)], 1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    torch.testing.assert_close(model(padded, mask)[:, :6], model(real), atol=1e-5, rtol=1e-5)


def test_arch_llama_sets_every_switch_and_survives_a_round_trip():
    config = ModelConfig(arch="llama", n_kv_head=2)
    assert {k: getattr(config, k) for k in LLAMA} == LLAMA and config.kv_heads == 2
    assert from_dict(ModelConfig, to_dict(config)) == config
    cli = apply_overrides(CLMConfig(), ["model.arch=llama", "model.n_kv_head=1"]).model
    assert (cli.norm_type, cli.mlp, cli.bias, cli.kv_heads) == ("rmsnorm", "swiglu", False, 1)
    with pytest.raises(ConfigError, match="ModelConfig.arch='mistral' is invalid"):
        ModelConfig(arch="mistral")


@pytest.mark.parametrize("overrides", [["model.arch=llama", "model.position=learned"],
                                       ["model.bias=true", "model.arch=llama"]])  # in either order
def test_a_set_switch_that_arch_would_drop_is_refused(overrides):
    """arch wins over the switches it sets: a --set of one of them to another value (an ablation of
    RoPE, say) would train Llama's value without a word, so it is refused, naming the way to do it."""
    with pytest.raises(ConfigError, match=r"--set model\.(position|bias)=.*model\.arch=llama sets .* leave "
                                          r"model\.arch empty and set the switches one by one"):
        apply_overrides(CLMConfig(), overrides)
    agreeing = apply_overrides(CLMConfig(), ["model.arch=llama", "model.bias=false", "model.position=rope"]).model
    assert (agreeing.bias, agreeing.position) == (False, "rope")  # what arch sets anyway is no conflict


@pytest.mark.parametrize(("fields", "message"), [
    ({"n_kv_head": 3}, "n_head \\(4\\) must be divisible by it"),
    ({"n_kv_head": 8}, "n_head \\(4\\) must be divisible by it"),
    ({"norm_type": "batchnorm"}, "expected one of layernorm, rmsnorm"),
    ({"mlp": "relu"}, "expected one of gelu, swiglu"),
    ({"mlp_hidden": -1}, "expected an integer >= 0"),
    ({"rope_base": 0.0}, "ModelConfig.rope_base=0.0 is invalid"),
])
def test_bad_switches_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message):
        gpt_config(**fields)


@pytest.mark.parametrize(("field", "value", "where"), [("activation", "relu", "make_activation"),
                                                      ("position", "alibi", "position_table")])
def test_a_choice_added_to_the_config_alone_is_refused_naming_where_to_build_it(field, value, where):
    """A learner's new activation or position scheme, allowed by ModelConfig but not built: the
    activation was built as the exact GELU, the scheme failed in the forward pass on a None table."""
    config = gpt_config()
    setattr(config, field, value)  # (as if ModelConfig's list of allowed values had it)
    for model in (GPT, Bert):
        with pytest.raises(ConfigError, match=rf"{field}={value}: {where} \(minillm/model/blocks.py\)"):
            model(config)


def test_default_model_is_unchanged_by_the_switches():
    """The defaults build GPT-2's modules, same names, same shapes, same random draws."""
    torch.manual_seed(0)
    default = GPT(gpt_config())
    torch.manual_seed(0)
    spelled_out = GPT(gpt_config(norm_type="layernorm", mlp="gelu", n_kv_head=4, tie_embeddings=True))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), spelled_out.state_dict().values(),
                                                  strict=True))
    assert isinstance(default.ln_f, torch.nn.LayerNorm) and default.blocks[0].mlp.fc.weight.shape == (128, 32)
    assert default.head is None


def test_rope_logits_do_not_change_when_every_position_moves_by_the_same_amount():
    """RoPE's promise at the model level: scores depend on the distance between query and key only,
    so giving every token position p + 7 instead of p leaves every logit as it was (a learned position
    table gives no such promise). It fails if queries and keys are not BOTH turned."""
    model = make(GPT, gpt_config(n_kv_head=2, **LLAMA))
    ids = ids_of(2, 9)
    moved = torch.arange(7, 16)[None]  # (1, T): positions 7..15 instead of 0..8
    torch.testing.assert_close(model(ids, position_ids=moved), model(ids), atol=1e-4, rtol=1e-4)

"""Loading GPT-2 and BERT state dicts: same logits as the reference implementation, clear errors otherwise.

The reference is HuggingFace `transformers` (an optional test dependency): tiny models are built
locally from a config with random weights (nothing is downloaded), their weights are scrambled well
away from the initialisation (so that a wrong GELU, eps or transpose shows up far above 1e-4), and
our models loaded from their state dicts must give the same logits.
"""

import pytest
import torch

from minillm.errors import CheckpointError
from minillm.model import GPT, Bert

V, P, C, L, H = 67, 24, 32, 2, 4  # vocab, positions, width, layers, heads: tiny on purpose


def scramble(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter large random values (LayerNorm gains around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.3 * noise if "LayerNorm.weight" in name or "ln_" in name else 0.3 * noise)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_gpt2(transformers):
    config = transformers.GPT2Config(vocab_size=V, n_positions=P, n_embd=C, n_layer=L, n_head=H,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    scramble(model, seed=1)
    return model


def hf_bert(transformers, head: str, intermediate_size: int = 2 * C):
    config = transformers.BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                                     intermediate_size=intermediate_size, max_position_embeddings=P, type_vocab_size=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
    model = getattr(transformers, head)(config).eval()
    scramble(model, seed=2)
    model.tie_weights()  # scrambling replaced the tied tensor's values in place; keep the tie explicit
    return model


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_gpt2_logits_match_transformers(hf_gpt2, attention):
    ours = GPT.from_gpt2_state_dict(hf_gpt2.state_dict(), n_head=H, attention=attention).eval()
    assert (ours.config.n_layer, ours.config.n_embd, ours.config.block_size) == (L, C, P)
    ids = torch.randint(0, V, (3, P), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf_gpt2(ids).logits
        got = ours(ids)
    assert expected.abs().max() > 1.0  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_gpt2_right_padded_batch_matches_transformers(hf_gpt2):
    ours = GPT.from_gpt2_state_dict(hf_gpt2.state_dict(), n_head=H).eval()
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        expected = hf_gpt2(ids, attention_mask=mask.long()).logits
        got = ours(ids, attention_mask=mask)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head", ["BertForMaskedLM", "BertForPreTraining"])
def test_bert_logits_match_transformers(transformers, head):
    reference = hf_bert(transformers, head)
    ours = Bert.from_bert_state_dict(reference.state_dict(), n_head=H).eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, V, (3, 16), generator=g)
    segments = torch.randint(0, 2, (3, 16), generator=g)
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[0, 10:] = False  # right padding, as BERT batches are padded
    with torch.no_grad():
        out = reference(ids, attention_mask=mask.long(), token_type_ids=segments)
        expected = out.logits if head == "BertForMaskedLM" else out.prediction_logits
        got = ours(ids, attention_mask=mask, token_type_ids=segments)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("hidden", [3 * C + 5, C // 2])  # 101 // C would be 3; 16 // C, 0
def test_bert_mlp_width_that_is_no_multiple_of_the_width_matches_transformers(transformers, hidden):
    """BertConfig.intermediate_size may be any width; the logits still match Hugging Face's."""
    reference = hf_bert(transformers, "BertForMaskedLM", intermediate_size=hidden)
    ours = Bert.from_bert_state_dict(reference.state_dict(), n_head=H).eval()
    assert ours.config.mlp_hidden == hidden
    ids = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_bert_with_an_untied_decoder_is_refused(transformers):
    """BERT ties its MLM decoder to the word embeddings, and so does our Bert: a decoder that differs would be
    dropped without a word (the table read in its place), so it is refused."""
    sd = hf_bert(transformers, "BertForMaskedLM").state_dict()
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1
    with pytest.raises(CheckpointError, match="cls.predictions.decoder.weight differs from "
                                              "embeddings.word_embeddings.weight"):
        Bert.from_bert_state_dict(sd, n_head=H)


def test_bert_without_n_head_gets_heads_64_wide(transformers):
    """Every released BERT's heads are 64 wide (base: 768 / 12): without n_head a 128-wide one gets 2."""
    config = transformers.BertConfig(vocab_size=V, hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=P)
    assert Bert.from_bert_state_dict(transformers.BertForMaskedLM(config).state_dict()).config.n_head == 2


# --------------------------------------------------------------------------------------------------
# Bad state dicts: written out by hand in GPT-2's layout, so these run without transformers.


def gpt2_layout_state_dict(hidden: int = 4 * C) -> dict[str, torch.Tensor]:
    """A valid GPT-2 state dict (random values), keys and Conv1D shapes as GPT-2 stores them.

    hidden: the MLP's width (GPT2Config.n_inner; every released GPT-2 has 4 * n_embd)."""
    sd = {"wte.weight": torch.randn(V, C), "wpe.weight": torch.randn(P, C),
          "ln_f.weight": torch.ones(C), "ln_f.bias": torch.zeros(C)}
    for i in range(L):
        for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("ln_2.weight", (C,)),
                            ("ln_2.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
                            ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)),
                            ("attn.c_proj.bias", (C,)), ("mlp.c_fc.weight", (C, hidden)),
                            ("mlp.c_fc.bias", (hidden,)), ("mlp.c_proj.weight", (hidden, C)),
                            ("mlp.c_proj.bias", (C,))):
            sd[f"h.{i}.{name}"] = torch.randn(shape)
    return sd


def test_hand_written_gpt2_state_dict_loads_with_transposed_weights():
    sd = gpt2_layout_state_dict()
    model = GPT.from_gpt2_state_dict(sd, n_head=H)
    assert torch.equal(model.blocks[1].mlp.fc.weight, sd["h.1.mlp.c_fc.weight"].T)
    assert model.config.n_layer == L and model.config.mlp_ratio == 4


@pytest.mark.parametrize("hidden", [3 * C + 5, C // 2])  # 101 // C would be 3; 16 // C, 0
def test_gpt2_mlp_width_that_is_no_multiple_of_the_width_loads(hidden):
    """GPT2Config.n_inner may be any width: it is read from c_fc's shape, not rounded to a multiple of C."""
    sd = gpt2_layout_state_dict(hidden)
    model = GPT.from_gpt2_state_dict(sd, n_head=H)
    assert model.config.mlp_hidden == hidden
    assert torch.equal(model.blocks[1].mlp.proj.weight, sd["h.1.mlp.c_proj.weight"].T)


def test_missing_and_extra_keys_are_listed():
    sd = gpt2_layout_state_dict()
    del sd["h.1.attn.c_proj.bias"]
    sd["h.1.attn.rotary.weight"] = torch.randn(3)
    with pytest.raises(CheckpointError) as err:
        GPT.from_gpt2_state_dict(sd, n_head=H)
    assert "h.1.attn.c_proj.bias" in str(err.value) and "h.1.attn.rotary.weight" in str(err.value)


def test_misshaped_keys_are_listed():
    sd = gpt2_layout_state_dict()
    sd["h.1.mlp.c_proj.weight"] = torch.randn(4 * C, C + 1)
    sd["h.0.ln_2.bias"] = torch.randn(C - 2)
    with pytest.raises(CheckpointError) as err:
        GPT.from_gpt2_state_dict(sd, n_head=H)
    message = str(err.value)
    assert "h.1.mlp.c_proj.weight" in message and "h.0.ln_2.bias" in message
    assert "mlp.c_fc" not in message  # only the broken ones are named


def test_not_a_gpt2_state_dict():
    with pytest.raises(CheckpointError, match="wte.weight"):
        GPT.from_gpt2_state_dict({"embeddings.word_embeddings.weight": torch.randn(V, C)})
    with pytest.raises(CheckpointError, match="word_embeddings"):
        Bert.from_bert_state_dict(gpt2_layout_state_dict())


def test_untied_lm_head_is_refused():
    sd = gpt2_layout_state_dict()
    sd["lm_head.weight"] = torch.randn(V, C)
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        GPT.from_gpt2_state_dict(sd, n_head=H)


# --------------------------------------------------------------------------------------------------
# Llama (Hugging Face's LlamaForCausalLM): RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases.

LLAMA_KV_HEADS, LLAMA_HIDDEN = 2, 56  # 4 query heads share 2 key/value heads; a hidden width no rule gives


def hf_llama(transformers, tie: bool):
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=C, intermediate_size=LLAMA_HIDDEN, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=LLAMA_KV_HEADS, max_position_embeddings=P,
        rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=tie, attention_bias=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    scramble(model, seed=4)
    if tie:
        model.tie_weights()
    return model


def llama_from(reference) -> GPT:
    return GPT.from_llama_state_dict(reference.state_dict(), n_head=H, block_size=P, rope_base=500.0,
                                     norm_eps=1e-6).eval()


@pytest.mark.parametrize("tie", [False, True])
def test_llama_logits_match_transformers(transformers, tie):
    reference = hf_llama(transformers, tie)
    ours = llama_from(reference)
    c = ours.config
    assert (c.n_layer, c.n_embd, c.n_kv_head, c.mlp_hidden, c.tie_embeddings) == (L, C, LLAMA_KV_HEADS,
                                                                                   LLAMA_HIDDEN, tie)
    ids = torch.randint(0, V, (3, P), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(ids).logits
        got = ours(ids)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_llama_generation_with_cache_equals_without(transformers):
    ours = llama_from(hf_llama(transformers, tie=False))
    ids = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(6))
    runs = [ours.generate(ids, 12, temperature=1.0, generator=torch.Generator().manual_seed(7), use_cache=cached)
            for cached in (True, False)]
    assert torch.equal(runs[0].ids, runs[1].ids)
    torch.testing.assert_close(runs[0].logprobs, runs[1].logprobs, atol=1e-5, rtol=1e-5)


def llama_layout_state_dict() -> dict[str, torch.Tensor]:
    """A Llama state dict written by hand (random values), as LlamaForCausalLM names and shapes it."""
    D = C // H
    sd = {"model.embed_tokens.weight": torch.randn(V, C), "model.norm.weight": torch.ones(C),
          "lm_head.weight": torch.randn(V, C)}
    for i in range(L):
        for name, shape in (("input_layernorm", (C,)), ("post_attention_layernorm", (C,)),
                            ("self_attn.q_proj", (C, C)), ("self_attn.k_proj", (D, C)),
                            ("self_attn.v_proj", (D, C)), ("self_attn.o_proj", (C, C)),
                            ("mlp.gate_proj", (40, C)), ("mlp.up_proj", (40, C)), ("mlp.down_proj", (C, 40))):
            sd[f"model.layers.{i}.{name}.weight"] = torch.randn(shape)
    return sd


def test_hand_written_llama_state_dict_loads_multi_query():
    sd = llama_layout_state_dict()
    model = GPT.from_llama_state_dict(sd, n_head=H)
    assert model.config.kv_heads == 1 and model.config.mlp_hidden == 40  # read from the shapes
    q, k, v = (sd[f"model.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(model.blocks[1].attn.qkv.weight, torch.cat([q, k, v]))
    assert torch.equal(model.head.weight, sd["lm_head.weight"])


def test_llama_biases_and_bad_head_counts_are_refused():
    sd = llama_layout_state_dict()
    sd["model.layers.0.self_attn.q_proj.bias"] = torch.randn(C)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['layers.0.self_attn.q_proj.bias'\]"):
        GPT.from_llama_state_dict(sd, n_head=H)
    with pytest.raises(CheckpointError, match="n_head=5 does not divide the width 32"):
        GPT.from_llama_state_dict(llama_layout_state_dict(), n_head=5)
    with pytest.raises(CheckpointError, match="not a Llama state dict"):
        GPT.from_llama_state_dict(gpt2_layout_state_dict(), n_head=H)


def test_q_k_v_that_cannot_be_stacked_are_named_as_misshaped():
    """A k_proj one column too wide cannot be stacked under q_proj into our qkv (torch.cat refuses): the
    error names the three keys and their shapes, as for any other mis-shaped tensor, not torch's RuntimeError."""
    sd = llama_layout_state_dict()
    sd["model.layers.1.self_attn.k_proj.weight"] = torch.randn(C // H, C + 1)
    with pytest.raises(CheckpointError, match=r"mis-shaped") as err:
        GPT.from_llama_state_dict(sd, n_head=H)
    stacked = "+".join(f"layers.1.self_attn.{n}_proj.weight" for n in "qkv")
    assert f"{stacked} has shape [({C}, {C}), ({C // H}, {C + 1}), ({C // H}, {C})]" in str(err.value)

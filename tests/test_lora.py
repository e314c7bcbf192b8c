"""LoRA: the adapted model starts as the base, merging changes nothing, the base never moves, and
only the adapters (as many numbers as counted by hand) train; wired into SFT."""

from __future__ import annotations

import pytest
import torch
from test_models import V, bert_config, gpt_config, ids_of, make
from test_sft import RECORDS, _toy_tokenizer

from minillm.config import LoRAConfig, ModelConfig, SFTConfig, TrainConfig
from minillm.errors import CheckpointError, ConfigError
from minillm.model import GPT, Bert
from minillm.model.lora import (
    LoRALinear,
    add_lora,
    count_parameters,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    merge_lora,
    merged_state_dict,
    unmerge_lora,
)
from minillm.stage2_sft.sft import ADAPTERS_NAME, add_adapters, load_adapted, train_sft
from minillm.train import load_model
from minillm.train.optim import make_optimizer


def adapted(seed: int = 0, targets: str = "qkv,proj", rank: int = 4) -> tuple[GPT, GPT]:
    """A base GPT and a copy of it with LoRA adapters whose B is random (as if trained)."""
    base = make(GPT, gpt_config(), seed=seed)
    model = make(GPT, gpt_config(), seed=seed)
    add_lora(model, rank=rank, alpha=8.0, dropout=0.0, targets=targets)
    return base, model


def randomise_adapters(model: GPT, seed: int = 0) -> None:
    """Move both A and B away from their initial values, as training does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_A.normal_(0.0, 0.3, generator=g)
            layer.lora_B.normal_(0.0, 0.3, generator=g)


def test_at_initialisation_the_adapted_model_is_the_base():
    base, model = adapted()
    ids = ids_of(2, 9)
    assert torch.equal(model(ids), base(ids))  # B = 0: the update is exactly zero
    assert model.state_dict().keys() - base.state_dict().keys() == {
        f"blocks.{i}.{name}.{part}" for i in range(2) for name in ("attn.qkv", "attn.proj", "mlp.proj")
        for part in ("lora_A", "lora_B")}


def test_an_adapted_layer_is_the_base_plus_alpha_over_r_times_b_a_by_hand():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, rank=4, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        layer.lora_B.normal_()  # a trained-looking adapter (a fresh B is zero)
    x = torch.randn(3, 6)
    by_hand = x @ base.weight.T + base.bias + (8.0 / 4) * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), by_hand)


def test_a_target_names_a_whole_module_not_the_end_of_a_longer_name():
    model = torch.nn.ModuleDict({"proj": torch.nn.Linear(4, 4), "out_proj": torch.nn.Linear(4, 4)})
    assert add_lora(model, rank=2, alpha=2.0, dropout=0.0, targets="proj") == ["proj"]
    assert type(model["out_proj"]) is torch.nn.Linear


def test_merged_equals_unmerged_and_unmerge_restores_the_base():
    base, model = adapted()
    randomise_adapters(model)
    ids = ids_of(2, 9)
    unmerged = model(ids)
    assert not torch.allclose(unmerged, base(ids), atol=1e-3)  # the adapters do change the output
    merge_lora(model)
    torch.testing.assert_close(model(ids), unmerged, atol=1e-5, rtol=1e-5)
    plain = GPT(gpt_config()).eval()
    # the merged layers' own weights hold W + scale * B A: without their adapters they give the same logits
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))})
    torch.testing.assert_close(plain(ids), unmerged, atol=1e-5, rtol=1e-5)
    plain.load_state_dict(merged_state_dict(model))  # merged weights need no LoRA code
    torch.testing.assert_close(plain(ids), unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, base.blocks[0].attn.qkv.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(model(ids), unmerged, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", [GPT, Bert])
def test_an_adapter_on_an_untied_lm_head_changes_the_logits_and_trains(cls):
    """The untied head is a Linear like qkv: its adapter must count in the forward pass (as merging it
    into the weight does) and receive gradients."""
    model = make(cls, (gpt_config if cls is GPT else bert_config)(tie_embeddings=False))
    assert add_lora(model, rank=2, alpha=4.0, dropout=0.0, targets="head") == ["head"]
    randomise_adapters(model)
    ids = ids_of(2, 9)
    unmerged = model(ids)
    merge_lora(model)  # W + scale * B A, read by a plain matmul
    torch.testing.assert_close(model(ids), unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    model(ids).square().mean().backward()
    assert model.head.lora_A.grad is not None and model.head.lora_B.grad.abs().max() > 0


def test_muon_with_adapters_on_the_head_only_names_the_setting_to_change():
    """Muon updates the blocks' matrices: with none trainable it has nothing to hold, and torch's own
    error ("optimizer got an empty parameter list") would not say why."""
    model = make(GPT, gpt_config(tie_embeddings=False))
    add_lora(model, rank=2, alpha=4.0, dropout=0.0, targets="head")
    with pytest.raises(ConfigError, match="optimizer=muon: no trainable weight matrix .* use optimizer=adamw"):
        make_optimizer(model, TrainConfig(optimizer="muon"))
    held = [p for group in make_optimizer(model, TrainConfig(optimizer="adamw")).param_groups for p in group["params"]]
    assert {id(p) for p in held} == {id(model.head.lora_A), id(model.head.lora_B)}  # AdamW takes the head's adapters


def test_training_moves_the_adapters_only_and_the_optimizer_holds_only_them():
    base, model = adapted()
    model.train()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1))  # decay would move any weight held
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)}
    ids = ids_of(4, 12)
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = model.state_dict()
    for name, tensor in base.state_dict().items():
        assert torch.equal(trained[name], tensor), name  # bit for bit
    assert all(layer.lora_B.abs().max() > 0 for layer in lora_layers(model).values())


def test_trainable_parameter_count_by_hand():
    _, model = adapted(targets="qkv,proj", rank=4)
    # per layer: qkv (in 32, out 96), attn.proj (32, 32), mlp.proj (in 128, out 32); r * (in + out) each
    assert count_parameters(model, trainable_only=True) == 2 * 4 * ((32 + 96) + (32 + 32) + (128 + 32))
    _, mlp_only = adapted(targets="mlp.fc", rank=2)
    assert count_parameters(mlp_only, trainable_only=True) == 2 * 2 * (32 + 128)
    assert set(lora_layers(mlp_only)) == {"blocks.0.mlp.fc", "blocks.1.mlp.fc"}
    with_table = make(GPT, gpt_config())
    add_lora(with_table, rank=2, alpha=4.0, dropout=0.0, targets="fc", also_train="tok_emb")
    assert count_parameters(with_table, trainable_only=True) == 2 * 2 * (32 + 128) + V * 32  # + the token table
    assert "tok_emb.weight" in lora_state_dict(with_table)
    with pytest.raises(ConfigError, match=r"also_train \['tok_embedding'\] names no module"):
        add_lora(make(GPT, gpt_config()), 2, 4.0, 0.0, "fc", also_train="tok_embedding")


def test_adapters_alone_round_trip_onto_the_base():
    _, model = adapted()
    randomise_adapters(model)
    _, fresh = adapted()
    randomise_adapters(fresh, seed=1)  # other values: every adapter tensor, A and B, must come from the file
    load_lora_state_dict(fresh, lora_state_dict(model))
    ids = ids_of(1, 7)
    assert torch.equal(fresh(ids), model(ids))
    _, other_rank = adapted(rank=2)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_lora_state_dict(other_rank, lora_state_dict(model))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_adapters_take_the_dtype_of_the_layer_they_adapt(dtype):
    model = make(GPT, gpt_config()).to(dtype)
    add_lora(model, rank=4, alpha=8.0, dropout=0.0, targets="qkv,proj")
    assert {p.dtype for p in lora_state_dict(model).values()} == {dtype}
    assert model(ids_of(1, 7)).dtype == dtype


def test_bad_targets_and_double_adapters_are_refused():
    with pytest.raises(ConfigError, match=r"lora targets \['qvk'\] match no Linear.*'fc', 'proj', 'qkv'"):
        adapted(targets="qkv,qvk")
    _, model = adapted()
    with pytest.raises(ConfigError, match="already has LoRA"):
        add_lora(model, 2, 4.0, 0.0, "fc")
    with pytest.raises(ConfigError, match="LoRAConfig.targets"):
        LoRAConfig(targets=" , ")
    # sft.lora.targets=head on a tied head (the preset's GPT): say why there is no head Linear to adapt
    with pytest.raises(ConfigError, match=r"LM head is the token table \(tie_embeddings=true\), no Linear: pretrain"):
        adapted(targets="qkv,head")
    assert isinstance(model.blocks[0].attn.qkv, LoRALinear)


def test_sfts_refusal_of_a_tied_head_names_the_pretraining_setting_as_the_command_line_takes_it():
    """SFT names its LoRA settings for --set (`named`), and the hint said "pretrain with tie_embeddings=false",
    of no section: the setting is clm's, in the pretraining command."""
    with pytest.raises(ConfigError, match=r"no Linear: pretrain with --set clm\.model\.tie_embeddings=false in the "
                                          r"pretraining command to adapt it, or train the table in full with "
                                          r"--set sft\.lora\.also_train=tok_emb$"):
        add_adapters(make(GPT, gpt_config()), LoRAConfig(rank=4, targets="head"))


def test_lora_sft_learns_writes_adapters_and_a_plain_merged_checkpoint(tmp_path, capsys):
    tokenizer = _toy_tokenizer()
    model_cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    train_cfg = TrainConfig(max_steps=40, batch_size=8, lr=2e-2, warmup_steps=2, eval_every=1000, eval_batches=2,
                            log_every=1, save_every=1000)
    swapped = {"hello": "bye", "bye": "one two three", "one two three": "hello"}
    wrong = [{**r, "response": swapped[r["response"]]} for r in RECORDS]
    cfg = SFTConfig(train=train_cfg, lora=LoRAConfig(rank=4, alpha=8.0, targets="qkv,proj,fc", also_train="tok_emb"),
                    max_new_tokens=8)
    base_run = train_sft(cfg, wrong, tmp_path / "base", scratch_model_config=model_cfg,
                         tokenizer=tokenizer)  # a base that answers every request with another request's answer
    assert base_run["trainable_params"] == base_run["params"]  # from scratch there is nothing to adapt: all train
    assert not (tmp_path / "base" / ADAPTERS_NAME).exists()
    result = train_sft(cfg, RECORDS, tmp_path / "lora", init_dir=tmp_path / "base")
    assert result["final_loss"] < 0.2 * result["first_loss"], result
    adapters = 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))  # qkv, attn.proj, mlp.fc, mlp.proj
    assert result["trainable_params"] == adapters + 32 * tokenizer.vocab_size  # + the token table, trained in full
    trainable, params = result["trainable_params"], result["params"]
    assert (f"sft: {trainable:,} of the model's {params:,} parameters train ({trainable / params:.0%}): LoRA rank 4 "
            "on qkv,proj,fc\n") in capsys.readouterr().out
    merged, _ = load_model(tmp_path / "lora", GPT)  # a plain GPT: later stages need no LoRA code
    on_base = load_adapted(tmp_path / "base", tmp_path / "lora" / ADAPTERS_NAME)
    ids = ids_of(2, 9) % tokenizer.vocab_size
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), on_base(ids), atol=1e-5, rtol=1e-5)
    base, _ = load_model(tmp_path / "base", GPT)
    trained = lora_state_dict(on_base)
    assert "tok_emb.weight" in trained and not torch.equal(trained["tok_emb.weight"], base.tok_emb.weight)
    for name, tensor in base.state_dict().items():
        if name not in trained:
            assert torch.equal(on_base.state_dict()[name], tensor), name  # the frozen base, bit for bit
    with pytest.raises(CheckpointError, match="finished LoRA run"):
        train_sft(cfg, RECORDS, tmp_path / "lora", init_dir=tmp_path / "base", resume=True)
    # the adapters alone are no model to load ("holds a None model, not a 'gpt' one" said generate and chat)
    refusal = r"adapters.pt holds no model of any kind \(its entries: adapters, .*lora, model_config\); point to"
    with pytest.raises(CheckpointError, match=refusal):
        load_model(tmp_path / "lora" / ADAPTERS_NAME, GPT)


def test_adapter_dropout_drops_the_adapters_input_in_training_only():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = LoRALinear(base, rank=4, alpha=8.0, dropout=1.0)  # every input of the adapter dropped
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    layer.train()
    torch.testing.assert_close(layer(x), base(x))  # training: the adapter sees zeros, only the base is left
    layer.eval()
    torch.testing.assert_close(layer(x), base(x) + 2.0 * (x @ layer.lora_A.T @ layer.lora_B.T))


def test_merging_or_unmerging_twice_changes_nothing_more():
    base, model = adapted()
    randomise_adapters(model)
    ids = ids_of(2, 9)
    unmerged = model(ids)
    merge_lora(model)
    merge_lora(model)
    torch.testing.assert_close(model(ids), unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    unmerge_lora(model)
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, base.blocks[0].attn.qkv.weight, atol=1e-6, rtol=0)


def test_adapters_trained_with_another_also_train_are_refused():
    with_table = make(GPT, gpt_config())
    add_lora(with_table, rank=2, alpha=4.0, dropout=0.0, targets="fc", also_train="tok_emb")
    without = make(GPT, gpt_config())
    add_lora(without, rank=2, alpha=4.0, dropout=0.0, targets="fc")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_lora_state_dict(without, lora_state_dict(with_table))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_lora_state_dict(with_table, lora_state_dict(without))


def test_count_parameters_counts_the_frozen_base_and_the_adapters():
    base, model = adapted(targets="qkv,proj", rank=4)
    assert count_parameters(model) == count_parameters(base) + 2 * 4 * ((32 + 96) + (32 + 32) + (128 + 32))

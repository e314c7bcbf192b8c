"""Configs: every broken rule is named (field, value, what is allowed), overrides, (de)serialisation.

The range checks are tested at their boundaries and, with hypothesis, against an independent
statement of each rule; the overrides against configs built directly; the dict round trip through
real JSON text, since that is how config.json and checkpoints store them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm import config, pipeline, report
from minillm.cli import build_parser
from minillm.config import (
    PRESETS,
    DPOConfig,
    GRPOConfig,
    LoRAConfig,
    MLMConfig,
    ModelConfig,
    PipelineConfig,
    PPOConfig,
    RewardConfig,
    SFTConfig,
    TokenizerConfig,
    TrainConfig,
    apply_overrides,
    changed_settings,
    diff_configs,
    first_changes,
    from_dict,
    preset,
    replace_train_configs,
    to_dict,
)
from minillm.errors import ConfigError, MinillmError
from minillm.model import GPT, Bert
from minillm.pipeline import Journey
from minillm.stage3_rlhf import grpo
from minillm.stage3_rlhf.dpo import chosen_pairs
from minillm.stage3_rlhf.grpo import group_advantages
from minillm.stage3_rlhf.ppo import uses_gold
from minillm.tokenizer import train_tokenizer
from minillm.train.precision import make_grad_scaler
from minillm.utils import resolve_device

# each holds a TrainConfig named "train"
STAGES = ("mlm", "clm", "sft", "reward", "ppo", "dpo", "grpo", "grpo_verifiable")

# --------------------------------------------------------------------------------------------------
# Validation: the message names the class and field, the value, and what is allowed.

BROKEN = [
    (ModelConfig, {"n_embd": 32, "n_head": 5}, ["ModelConfig.n_head=5", "n_embd (32) must be divisible",
                                                 "[1, 2, 4, 8, 16, 32]"]),
    (ModelConfig, {"dropout": -0.1}, ["ModelConfig.dropout=-0.1", "[0.0, 1.0)"]),
    (ModelConfig, {"dropout": 1.0}, ["ModelConfig.dropout=1.0", "[0.0, 1.0)"]),
    (ModelConfig, {"norm": "middle"}, ["ModelConfig.norm='middle'", "pre, post"]),
    (ModelConfig, {"activation": "relu"}, ["activation='relu'", "gelu_tanh, gelu"]),
    (ModelConfig, {"attention": "flash"}, ["attention='flash'", "manual, sdpa"]),
    (ModelConfig, {"n_layer": 0}, ["ModelConfig.n_layer=0", "integer >= 1"]),
    (ModelConfig, {"n_layer": 2.0}, ["ModelConfig.n_layer=2.0", "integer >= 1"]),
    (ModelConfig, {"vocab_size": True}, ["ModelConfig.vocab_size=True", "integer >= 1"]),
    (ModelConfig, {"layer_norm_eps": 0.0}, ["layer_norm_eps=0.0", "(0.0, 1.0]"]),
    (ModelConfig, {"bias": "no"}, ["ModelConfig.bias='no'", "true or false"]),
    (TrainConfig, {"batch_size": 32, "grad_accum_steps": 3},
     ["TrainConfig.grad_accum_steps=3", "batch_size (32) must be divisible"]),
    (TrainConfig, {"lr": 0.0}, ["TrainConfig.lr=0.0", "(0.0, 10.0]"]),
    (TrainConfig, {"lr": -1e-3}, ["TrainConfig.lr=-0.001", "(0.0, 10.0]"]),
    (TrainConfig, {"lr": math.nan}, ["TrainConfig.lr=nan", "(0.0, 10.0]"]),
    (TrainConfig, {"beta2": 1.0}, ["TrainConfig.beta2=1.0", "[0.0, 1.0)"]),
    (TrainConfig, {"warmup_steps": -1}, ["warmup_steps=-1", "integer >= 0"]),
    (TrainConfig, {"dtype": "float8"}, ["TrainConfig.dtype='float8'", "float32, bfloat16, float16"]),
    (TrainConfig, {"device": "tpu"}, ["TrainConfig.device='tpu'", "auto, cpu, cuda, cuda:N", "mps"]),
    (TrainConfig, {"device": "cuda:first"}, ["device='cuda:first'", "cuda:0"]),
    (TrainConfig, {"compile": "yes"}, ["TrainConfig.compile='yes'", "true or false"]),
    (TrainConfig, {"optimizer": "sgd"}, ["TrainConfig.optimizer='sgd'", "adamw, muon"]),
    (TokenizerConfig, {"kind": "wordpiece"}, ["TokenizerConfig.kind='wordpiece'", "bpe, sentencepiece"]),
    (TokenizerConfig, {"vocab_size": 0}, ["TokenizerConfig.vocab_size=0", "integer >= 1"]),
    (TokenizerConfig, {"spm_model_type": "char"}, ["spm_model_type='char'", "bpe, unigram"]),
    (PipelineConfig, {"val_fraction": 0.0}, ["PipelineConfig.val_fraction=0.0", "(0.0, 0.5]"]),
    (PipelineConfig, {"corpus_mb": -1.0}, ["PipelineConfig.corpus_mb=-1.0", "(0.0, 1000.0]"]),
    (PipelineConfig, {"data_seed": -3}, ["PipelineConfig.data_seed=-3", "integer in [0, 2**63 - 1]"]),
    (TrainConfig, {"seed": 2**64}, ["TrainConfig.seed=18446744073709551616", "integer in [0, 2**63 - 1]"]),
    (PipelineConfig, {"device": "gpu"}, ["PipelineConfig.device='gpu'", "cuda"]),
    (SFTConfig, {"replay_length": 0}, ["SFTConfig.replay_length=0", "integer >= 1"]),
    (SFTConfig, {"pretrain_mix": 1.0}, ["SFTConfig.pretrain_mix=1.0", "[0.0, 1.0)"]),
    (SFTConfig, {"scratch_max_steps": -1}, ["SFTConfig.scratch_max_steps=-1", "integer >= 0"]),
    (SFTConfig, {"scratch_optimizer": "lion"}, ["SFTConfig.scratch_optimizer='lion'", "adamw, muon"]),
    (DPOConfig, {"nll_coef": -0.5}, ["DPOConfig.nll_coef=-0.5", "[0.0, 100.0]"]),
    (PPOConfig, {"train": TrainConfig(optimizer="muon")}, ["PPOConfig.train.optimizer='muon'", "use adamw"]),
    (PPOConfig, {"train": TrainConfig(grad_accum_steps=2)}, ["PPOConfig.train.grad_accum_steps=2", "minibatch_size"]),
    (GRPOConfig, {"train": TrainConfig(grad_accum_steps=2)}, ["GRPOConfig.train.grad_accum_steps=2", "minibatch_size"]),
    (PPOConfig, {"clip_range": 0.0}, ["PPOConfig.clip_range=0.0"]),
    (PPOConfig, {"rollout_batch_size": 32, "minibatch_size": 12}, ["PPOConfig.minibatch_size=12", "must be divisible"]),
    (GRPOConfig, {"group_size": 1, "minibatch_size": 16}, ["GRPOConfig.group_size=1"]),
    (GRPOConfig, {"group_size": 8, "prompts_per_step": 3, "minibatch_size": 12},
     ["GRPOConfig.minibatch_size=12", "multiple of group_size (8)", "whole groups"]),
    (GRPOConfig, {"passk_samples": 0}, ["GRPOConfig.passk_samples=0", "integer >= 1"]),
    (ModelConfig, {"n_embd": 30, "n_head": 2, "position": "rope"}, ["ModelConfig.position='rope'",
                                                                    "head_dim (n_embd / n_head = 15) must be even"]),
    (TrainConfig, {"min_lr_ratio": 1.5}, ["TrainConfig.min_lr_ratio=1.5", "[0.0, 1.0]"]),
    (TrainConfig, {"weight_decay": -0.1}, ["TrainConfig.weight_decay=-0.1", "[0.0, 10.0]"]),
    (TrainConfig, {"grad_clip": -1.0}, ["TrainConfig.grad_clip=-1.0", "[0.0, 1000000.0]"]),
    (TrainConfig, {"beta1": 1.0}, ["TrainConfig.beta1=1.0", "[0.0, 1.0)"]),
    (TrainConfig, {"warmup_steps": True}, ["TrainConfig.warmup_steps=True", "integer >= 0"]),
    (MLMConfig, {"mask_prob": 0.0}, ["MLMConfig.mask_prob=0.0", "(0.0, 1.0]"]),
    (MLMConfig, {"mask_token_prob": 0.9, "random_token_prob": 0.2},
     ["MLMConfig.random_token_prob=0.2", "mask_token_prob + random_token_prob must be <= 1"]),
    (RewardConfig, {"answers_per_prompt": 1}, ["RewardConfig.answers_per_prompt=1", "integer >= 2"]),
    (PPOConfig, {"critic_lr": 0.0}, ["PPOConfig.critic_lr=0.0", "(0.0, 10.0]"]),
    # logits / 1e-40 overflow float32: sampling would give NaN probabilities
    (PPOConfig, {"temperature": 1e-40}, ["PPOConfig.temperature=1e-40", "[1e-30, 10.0]"]),
    # the same floor in every config that samples (each has its own _in_range call)
    (RewardConfig, {"sample_temperature": 1e-40}, ["RewardConfig.sample_temperature=1e-40", "[1e-30, 10.0]"]),
    (GRPOConfig, {"temperature": 1e-40}, ["GRPOConfig.temperature=1e-40", "[1e-30, 10.0]"]),
    (DPOConfig, {"temperature": 1e-40}, ["DPOConfig.temperature=1e-40", "[1e-30, 10.0]"]),
    (DPOConfig, {"beta": 0.0}, ["DPOConfig.beta=0.0", "(0.0, 100.0]"]),
    (LoRAConfig, {"dropout": 1.0}, ["LoRAConfig.dropout=1.0", "[0.0, 1.0)"]),
    (LoRAConfig, {"also_train": 5}, ["LoRAConfig.also_train=5", "comma-separated module names"]),
    (SFTConfig, {"single_family_baseline": "false"}, ["SFTConfig.single_family_baseline='false'", "true or false"]),
    (SFTConfig, {"train_on_prompt": 1}, ["SFTConfig.train_on_prompt=1", "true or false"]),
    (SFTConfig, {"single_family": 3}, ["SFTConfig.single_family=3", "a family's name"]),
    (PPOConfig, {"adaptive_kl": "off"}, ["PPOConfig.adaptive_kl='off'", "true or false"]),
    # 0.01 of 32 rows rounds to none: replay would be off; 0.99 rounds to all: no instructions
    (SFTConfig, {"pretrain_mix": 0.01}, ["SFTConfig.pretrain_mix=0.01", "0 of a batch's 32 rows", "0.0312 to 0.969"]),
    (SFTConfig, {"pretrain_mix": 0.99}, ["SFTConfig.pretrain_mix=0.99", "32 of a batch's 32 rows"]),
    # the empty choice (no named architecture) was shown as nothing: "expected one of , llama"
    (ModelConfig, {"arch": "llama3"}, ["ModelConfig.arch='llama3'", 'expected one of "", llama']),
]


@pytest.mark.parametrize("cls, kwargs", [(TrainConfig, {"min_lr_ratio": 1.0}), (TrainConfig, {"grad_clip": 0.0}),
                                         (SFTConfig, {"pretrain_mix": 1 / 32}), (SFTConfig, {"pretrain_mix": 31 / 32})])
def test_the_ends_of_an_allowed_range_are_allowed(cls, kwargs):
    """min_lr_ratio 1 is a constant learning rate after warm-up; grad_clip 0 turns clipping off;
    pretrain_mix may give one row of 32 to replay, or all rows but one."""
    assert dataclasses.asdict(cls(**kwargs)).items() >= kwargs.items()


@pytest.mark.parametrize("cls, kwargs, words", BROKEN,
                         ids=[f"{c.__name__}-{'-'.join(map(str, k.items()))}" for c, k, _ in BROKEN])
def test_a_broken_rule_names_the_field_the_value_and_what_is_allowed(cls, kwargs, words):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_the_defaults_and_every_preset_are_valid():
    for cls in (ModelConfig, TrainConfig, TokenizerConfig, PipelineConfig):
        cls()
    for name in PRESETS:
        assert preset(name).preset == name


def test_the_scratch_baseline_trains_like_sft_unless_its_own_settings_say_otherwise():
    sft = SFTConfig()
    assert sft.scratch_train() == sft.train
    own = dataclasses.replace(sft, scratch_max_steps=7, scratch_lr=0.5, scratch_optimizer="muon").scratch_train()
    assert own == dataclasses.replace(sft.train, max_steps=7, lr=0.5, optimizer="muon")


@pytest.mark.parametrize("stage", ["mlm", "clm"])
def test_the_tiny_pretraining_curves_have_enough_validation_points_to_read(stage):
    train = getattr(preset("tiny"), stage).train
    assert train.max_steps // train.eval_every >= 8  # issue 25: two points made no curve


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"preset='huge' is unknown: expected one of micro, tiny, small"):
        preset("huge")


@settings(deadline=None)  # a pause of the machine within one example is no failure (see tests/test_suite_setup.py)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_lr_is_accepted_exactly_in_its_range(lr):
    accepted = 0.0 < lr <= 10.0  # the documented rule, stated independently (False for NaN)
    try:
        TrainConfig(lr=lr)
    except ConfigError:
        assert not accepted
    else:
        assert accepted


@settings(deadline=None)
@given(st.integers(1, 512), st.integers(1, 64))
def test_n_head_is_accepted_exactly_when_it_divides_n_embd(n_embd, n_head):
    try:
        ModelConfig(n_embd=n_embd, n_head=n_head)
    except ConfigError as err:
        assert n_embd % n_head != 0
        assert f"n_embd ({n_embd}) must be divisible by n_head" in str(err)
    else:
        assert n_embd % n_head == 0


# --------------------------------------------------------------------------------------------------
# Every range rule, stated again here from the documented ranges (not read from config.py), and probed
# at its two ends and one float step either side: a bound off by one step, or an open end made closed
# (lr=0 accepted: a run that never moves), lets a bad value through to a deep torch error or a silent no-op.

INF = math.inf
# (config, field, lo, hi, lo_open, hi_open, other fields the probe needs to pass the config's other rules)
RANGES = [
    (ModelConfig, "dropout", 0.0, 1.0, False, True, {}),
    (ModelConfig, "layer_norm_eps", 0.0, 1.0, True, False, {}),
    (ModelConfig, "rope_base", 1.0, 1e9, True, False, {}),
    (TrainConfig, "lr", 0.0, 10.0, True, False, {}),
    (TrainConfig, "min_lr_ratio", 0.0, 1.0, False, False, {}),
    (TrainConfig, "weight_decay", 0.0, 10.0, False, False, {}),
    (TrainConfig, "beta1", 0.0, 1.0, False, True, {}),
    (TrainConfig, "beta2", 0.0, 1.0, False, True, {}),
    (TrainConfig, "grad_clip", 0.0, 1e6, False, False, {}),
    (MLMConfig, "mask_prob", 0.0, 1.0, True, False, {}),
    (MLMConfig, "mask_token_prob", 0.0, 1.0, False, False, {"random_token_prob": 0.0}),
    (MLMConfig, "random_token_prob", 0.0, 1.0, False, False, {"mask_token_prob": 0.0}),
    (LoRAConfig, "alpha", 0.0, 1e6, True, False, {}),
    (LoRAConfig, "dropout", 0.0, 1.0, False, True, {}),
    (SFTConfig, "scratch_lr", 0.0, 10.0, False, False, {}),
    (RewardConfig, "sample_temperature", 1e-30, 10.0, False, False, {}),
    (RewardConfig, "annotator_noise", 0.0, 10.0, False, False, {}),
    (RewardConfig, "annotator_tie_margin", 0.0, 10.0, False, False, {}),
    (PPOConfig, "temperature", 1e-30, 10.0, False, False, {}),
    (PPOConfig, "kl_coef", 0.0, 100.0, False, False, {}),
    (PPOConfig, "target_kl", 0.0, 1000.0, True, False, {}),
    (PPOConfig, "clip_range", 0.0, 1.0, True, False, {}),
    (PPOConfig, "clip_range_value", 0.0, 100.0, True, False, {}),
    (PPOConfig, "vf_coef", 0.0, 100.0, False, False, {}),
    (PPOConfig, "gamma", 0.0, 1.0, False, False, {}),
    (PPOConfig, "lam", 0.0, 1.0, False, False, {}),
    (PPOConfig, "no_eos_penalty", -100.0, 100.0, False, False, {}),
    (PPOConfig, "critic_lr", 0.0, 10.0, True, False, {}),
    (GRPOConfig, "temperature", 1e-30, 10.0, False, False, {}),
    (GRPOConfig, "clip_range", 0.0, 1.0, True, False, {}),
    (GRPOConfig, "kl_coef", 0.0, 100.0, False, False, {}),
    (GRPOConfig, "exact_bonus", 0.0, 10.0, False, False, {}),
    (GRPOConfig, "no_eos_penalty", -100.0, 100.0, False, False, {}),
    (DPOConfig, "beta", 0.0, 100.0, True, False, {}),
    (DPOConfig, "nll_coef", 0.0, 100.0, False, False, {}),
    (DPOConfig, "temperature", 1e-30, 10.0, False, False, {}),
    (PipelineConfig, "corpus_mb", 0.0, 1000.0, True, False, {}),
    (PipelineConfig, "val_fraction", 0.0, 0.5, True, False, {}),
]


def _accepts(cls: type, **kwargs) -> bool:
    try:
        cls(**kwargs)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("cls, name, lo, hi, lo_open, hi_open, others", RANGES,
                         ids=[f"{c.__name__}.{n}" for c, n, *_ in RANGES])
def test_each_range_is_accepted_exactly_between_its_documented_ends(cls, name, lo, hi, lo_open, hi_open, others):
    """Each end is in the range unless it is open, the next float past it never is, the next one inside
    always is; a bool (True would read as 1.0) is no number; and the message shows the same interval."""
    probes = {lo: not lo_open, math.nextafter(lo, -INF): False, math.nextafter(lo, INF): True,
              hi: not hi_open, math.nextafter(hi, INF): False, math.nextafter(hi, -INF): True}
    for value, accepted in probes.items():
        assert _accepts(cls, **others, **{name: value}) is accepted, f"{cls.__name__}.{name}={value!r}"
    with pytest.raises(ConfigError) as info:
        cls(**others, **{name: True})
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    assert str(info.value).endswith(f"{cls.__name__}.{name}=True is invalid: expected a number in {interval}")


@pytest.mark.parametrize("cls, name", [(TrainConfig, "seed"), (PipelineConfig, "data_seed")])
def test_a_seed_is_accepted_up_to_the_largest_that_torch_takes(cls, name):
    """A seed is any integer a torch generator takes: the largest, 2**63 - 1, too (torch seeds it as
    given), while 2**63, which does not fit a signed 64-bit integer, is refused."""
    largest = 2**63 - 1
    assert torch.Generator().manual_seed(largest).initial_seed() == largest
    assert _accepts(cls, **{name: largest}) and _accepts(cls, **{name: 0})
    assert not _accepts(cls, **{name: largest + 1}) and not _accepts(cls, **{name: -1})


def test_n_kv_head_is_accepted_exactly_when_it_divides_n_head():
    """Grouped-query attention gives each key/value head the same number of query heads: n_kv_head
    must divide n_head (0 means n_head: one key/value head per query head). 3 of 4 heads would leave a
    head without its group, and attention's reshape would fail deep in torch."""
    for n_head in range(1, 9):
        for n_kv_head in range(0, 10):
            shares_evenly = n_kv_head == 0 or (n_kv_head <= n_head and n_head % n_kv_head == 0)
            assert _accepts(ModelConfig, n_embd=840, n_head=n_head, n_kv_head=n_kv_head) is shares_evenly


@pytest.mark.parametrize("device, ok", [("auto", True), ("cpu", True), ("cuda", True), ("cuda:1", True),
                                        ("mps", True), ("cuda:", False), ("cuda:x", False), ("CPU", False),
                                        ("", False), ("cuda:12", True), ("cuda:00", False), ("cuda:\u0663", False)])
def test_device_names(device, ok):
    """A name the config takes is one torch takes too ("cuda:00" and an Arabic-Indic 3 passed the config,
    and torch refused them with a RuntimeError's traceback, on a machine with a GPU)."""
    if ok:
        assert TrainConfig(device=device).device == device
        assert device == "auto" or torch.device(device).type == device.split(":")[0]
    else:
        with pytest.raises(ConfigError, match="expected auto, cpu, cuda"):
            TrainConfig(device=device)


def test_auto_takes_a_gpu_then_apples_mps_then_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_a_cuda_index_past_the_last_gpu_is_refused_with_the_range(monkeypatch):
    """cuda:1 on a one-GPU machine: a clear error naming the devices there are, not a CUDA error later."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"'cuda:1'.*1 CUDA device.*cuda:0 to cuda:0"):
        resolve_device("cuda:1")


# --------------------------------------------------------------------------------------------------
# Overrides: --set path=value.


def test_overrides_parse_each_type_and_leave_the_original_alone():
    base = preset("micro")
    cfg = apply_overrides(base, ["clm.model.n_layer=3", "clm.train.lr=2e-3", "clm.train.compile=true",
                                 "clm.model.norm=post", "data_seed = 7"])
    expected_clm = dataclasses.replace(
        base.clm, model=dataclasses.replace(base.clm.model, n_layer=3, norm="post"),
        train=dataclasses.replace(base.clm.train, lr=2e-3, compile=True))
    assert cfg == dataclasses.replace(base, clm=expected_clm, data_seed=7)
    assert base == preset("micro")


@pytest.mark.parametrize("text, value", [("true", True), ("1", True), ("yes", True), ("on", True), ("TRUE", True),
                                         ("Yes", True), ("False", False), ("0", False), ("no", False),
                                         ("off", False)])
def test_boolean_overrides(text, value):
    assert apply_overrides(TrainConfig(), [f"compile={text}"]).compile is value


def test_only_the_first_equals_sign_separates_the_path_from_the_value():
    assert apply_overrides(PipelineConfig(), ["sft.single_family=a=b"]).sft.single_family == "a=b"


def test_the_order_of_overrides_does_not_matter():
    """Two fields that must agree can change together: the config is validated once, at the end."""
    orders = (["clm.train.grad_accum_steps=3", "clm.train.batch_size=6"],
              ["clm.train.batch_size=6", "clm.train.grad_accum_steps=3"])
    results = [apply_overrides(PipelineConfig(), order) for order in orders]
    assert results[0] == results[1]
    assert (results[0].clm.train.batch_size, results[0].clm.train.grad_accum_steps) == (6, 3)


@pytest.mark.parametrize("override, message", [
    ("clm.model.n_layers=2", r"ModelConfig has no field 'n_layers'; did you mean 'n_layer'\? its fields are "
                             r"vocab_size, block_size, n_layer"),
    ("clm.train.max_steps=ten", r"--set clm.train.max_steps='ten': expected an integer, e.g. "
                                r"clm.train.max_steps=\d+$"),
    ("clm.train.lr=fast", r"expected a number, e.g. clm.train.lr=[\d.e-]+$"),
    ("clm.train.compile=maybe", r"expected true or false"),
    ("clm.model=3", r"'model' is a group of settings; name one of its fields \(vocab_size, "),
    ("clm.train.lr.peak=1", r"'lr' is a single value, not a group; use --set clm.train.lr=VALUE"),
    ("clm.train.lr.a.b=1", r"'lr' is a single value, not a group; use --set clm.train.lr=VALUE"),
    ("clm.model.n_layer=2.5", r"expected an integer"),
    ("clm.train.max_steps", r"expected the form path=value"),
    ("sft.train.lr=0", r"^sft.train: TrainConfig.lr=0.0 is invalid: expected a number in \(0.0, 10.0\]$"),
    ("clm.model.n_head=3", r"^clm.model: ModelConfig.n_head=3 is invalid"),
    ("ppo.reward=oracle", r"^ppo: PPOConfig.reward='oracle' is invalid: expected one of model, gold"),
])
def test_a_bad_override_says_what_is_wrong_and_where(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(PipelineConfig(), [override])


def test_replace_train_configs_reaches_every_stage_and_nothing_else():
    cfg = replace_train_configs(PipelineConfig(), dtype="bfloat16", detect_anomaly=True)
    for stage in STAGES:
        train = getattr(cfg, stage).train
        assert (train.dtype, train.detect_anomaly) == ("bfloat16", True)
        assert dataclasses.replace(train, dtype="float32", detect_anomaly=False) == getattr(PipelineConfig(),
                                                                                           stage).train
    assert cfg.clm.model == PipelineConfig().clm.model
    # Every TrainConfig in the tree is one of STAGES' (a new stage must be added to that list).
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}

    def count_train_dicts(d: dict) -> int:
        own = int(set(d) == train_fields)
        return own + sum(count_train_dicts(v) for v in d.values() if isinstance(v, dict))

    assert count_train_dicts(to_dict(cfg)) == len(STAGES)


def test_the_small_preset_pretrains_its_bert_by_the_recipe_that_leaves_the_plateau():
    """BERT's own settings kept a small encoder at the unigram guess for all 300 steps of gpu_check's run
    (docs/findings.md, "BERT: the warmup decides whether it leaves the plateau"); tiny's recipe did not."""
    small, tiny = preset("small").mlm, preset("tiny").mlm
    recipe = [(m.model.norm, m.model.position, m.train.warmup_steps, m.train.lr) for m in (small, tiny)]
    assert recipe[0] == recipe[1] == ("pre", "rope", 100, 2e-3)


def test_the_small_preset_puts_every_stage_on_the_gpu_when_there_is_one():
    cfg = preset("small")
    assert cfg.device == "auto"
    assert {getattr(cfg, stage).train.device for stage in STAGES} == {"auto"}


# --------------------------------------------------------------------------------------------------
# to_dict / from_dict / diff_configs.


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_survives_a_round_trip_through_json_text(name):
    cfg = preset(name)
    text = json.dumps(to_dict(cfg))
    assert from_dict(PipelineConfig, json.loads(text)) == cfg


def test_from_dict_refuses_unknown_fields_by_name():
    data = to_dict(ModelConfig())
    data["n_layers"] = 3
    with pytest.raises(ConfigError, match=r"ModelConfig: unknown field\(s\) \['n_layers'\]; known fields are"):
        from_dict(ModelConfig, data)


def test_from_dict_names_where_a_nested_value_is_invalid():
    data = to_dict(PipelineConfig())
    data["reward"]["train"]["batch_size"] = 0
    with pytest.raises(ConfigError, match=r"^reward.train: TrainConfig.batch_size=0 is invalid: expected an "
                                          r"integer >= 1$"):
        from_dict(PipelineConfig, data)
    data = to_dict(PipelineConfig())
    data["sft"]["train"] = [1, 2]
    with pytest.raises(ConfigError, match=r"^sft.train: TrainConfig: expected a JSON object, got list$"):
        from_dict(PipelineConfig, data)


def test_from_dict_fills_missing_fields_with_defaults():
    assert from_dict(ModelConfig, {"n_layer": 2}) == ModelConfig(n_layer=2)


def test_diff_configs_lists_each_changed_leaf_with_its_path():
    saved = to_dict(preset("micro"))
    now = to_dict(apply_overrides(preset("micro"), ["clm.model.n_layer=2", "sft.train.lr=0.01",
                                                    "tokenizer.kind=sentencepiece"]))
    del now["dpo"]["beta"]
    assert diff_configs(saved, now) == [  # sorted by path; values written as JSON
        f"clm.model.n_layer: {saved['clm']['model']['n_layer']} -> 2",
        f'dpo.beta: {saved["dpo"]["beta"]} -> "<missing>"',
        f"sft.train.lr: {saved['sft']['train']['lr']} -> 0.01",
        'tokenizer.kind: "bpe" -> "sentencepiece"',
    ]
    assert diff_configs(saved, saved) == []
    assert diff_configs({"a": 1}, {"a": 1, "b": 2}) == ['b: "<missing>" -> 2']  # a field only now has


def test_a_setting_added_since_a_run_was_made_counts_at_its_default():
    now = to_dict(preset("tiny"))
    before = json.loads(json.dumps(now))  # as an older minillm wrote it: without two fields, with one since removed
    del before["clm"]["model"]["activation"], before["clm"]["model"]["rope_base"]
    before["clm"]["train"]["old_knob"] = 1
    # The tiny preset moved activation from its default (GPT-2's tanh GELU); rope_base is at its default.
    assert changed_settings(before, now) == ['clm.model.activation: "gelu_tanh" -> "gelu"']
    assert changed_settings(now, now) == [] and changed_settings({"clm": now["clm"]}, {"clm": now["clm"]}) == []


def test_first_changes_shows_three_changes_and_says_when_there_are_more():
    changed = ["a: 1 -> 2", "b: true -> false", "c: \"x\" -> \"y\"", "d: 0 -> 1"]
    assert first_changes(changed[:3]) == 'a: 1 -> 2; b: true -> false; c: "x" -> "y"'  # all of them: no "..."
    assert first_changes(changed) == 'a: 1 -> 2; b: true -> false; c: "x" -> "y"; ...'
    assert first_changes(changed, shown=1) == "a: 1 -> 2; ..."


# --------------------------------------------------------------------------------------------------
# Named settings: one list each in config.py, which validation, --help and docs/cli.md all read. A name
# a learner adds to that list alone is refused by its consumer at the start, naming the function to
# extend, never built as another choice. (Each monkeypatched list is the one config.py's checks read.)


@pytest.mark.parametrize("model_cls", [GPT, Bert])
@pytest.mark.parametrize(("names", "field", "value", "where"), [
    ("NORMS", "norm", "sandwich", "is_pre_norm (minillm/model/blocks.py)"),  # was: post-LN
    ("NORM_TYPES", "norm_type", "batchnorm", "make_norm (minillm/model/blocks.py)"),  # was: LayerNorm
    ("MLPS", "mlp", "geglu", "is_gated (minillm/model/blocks.py)"),  # was: the GELU MLP
    ("ATTENTIONS", "attention", "flash", "uses_sdpa (minillm/model/attention.py)"),  # was: manual
    ("ACTIVATIONS", "activation", "relu", "make_activation (minillm/model/blocks.py)"),
    ("POSITIONS", "position", "alibi", "position_table (minillm/model/blocks.py)"),
])
def test_a_model_switch_added_to_its_config_list_alone_is_refused_naming_where_to_build_it(
        monkeypatch, model_cls, names, field, value, where):
    monkeypatch.setattr(config, names, (*getattr(config, names), value))
    model_config = ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16, **{field: value})
    with pytest.raises(ConfigError, match=rf"^{field}={value}: {re.escape(where)} .* there"):
        model_cls(model_config)


@pytest.mark.parametrize(("names", "value", "consume", "where"), [
    # was: a KeyError from autocast at the first step
    ("DTYPES", "float8", lambda v: make_grad_scaler(torch.device("cpu"), TrainConfig(dtype=v).dtype),
     "dtype=float8: torch_dtype (minillm/train/precision.py)"),
    # was: the base defaults, which are no preset, without a word
    ("PRESETS", "medium", lambda v: preset(PipelineConfig(preset=v).preset),
     "preset=medium: preset (minillm/config.py)"),
    # was: scored by the reward model
    ("PPO_REWARDS", "verifiable", lambda v: uses_gold(PPOConfig(reward=v)),
     "ppo.reward=verifiable: uses_gold (minillm/stage3_rlhf/ppo.py)"),
    # was: best_and_worst's pairs
    ("DPO_PAIRS", "adjacent", lambda v: chosen_pairs([0, 1, 2], DPOConfig(pairs=v).pairs),
     "dpo.pairs=adjacent: chosen_pairs (minillm/stage3_rlhf/dpo.py)"),
    ("GRPO_BASELINES", "median", lambda v: group_advantages(torch.zeros(1, 4), GRPOConfig(baseline=v).baseline),
     "grpo.baseline=median: group_advantages (minillm/stage3_rlhf/grpo.py)"),
    # was: "expected one of auto, cpu, cuda, cuda:N, mps" from utils' own list, which lacked it
    ("DEVICES", "xpu", lambda v: resolve_device(TrainConfig(device=v).device),
     "device='xpu': resolve_device (minillm/utils.py)"),
    # was: "expected one of ['bpe', 'sentencepiece']", of a kind the config had just allowed
    ("TOKENIZER_KINDS", "wordpiece", lambda v: train_tokenizer(["a b"], 300, kind=TokenizerConfig(kind=v).kind),
     "kind='wordpiece': train_tokenizer (minillm/tokenizer/__init__.py)"),
])
def test_a_setting_added_to_its_config_list_alone_is_refused_naming_where_to_add_it(
        monkeypatch, names, value, consume, where):
    monkeypatch.setattr(config, names, (*getattr(config, names), value))
    with pytest.raises(MinillmError, match=rf"^{re.escape(where)} .*its branch there"):
        consume(value)


def test_a_ppo_reward_added_to_ppo_rewards_alone_is_refused_naming_rl_rewards(monkeypatch):
    """Every PPO reward is one of RL_REWARDS, whose words report.md says (it was a KeyError there, at the
    journey's end, once uses_gold had its branch)."""
    monkeypatch.setattr(config, "PPO_REWARDS", (*config.PPO_REWARDS, "length"))
    with pytest.raises(ConfigError, match=r"^PPOConfig.reward='length' is invalid: .*RL_REWARDS does not"):
        PPOConfig(reward="length")


def test_grpo_refuses_a_baseline_without_its_branch_before_the_first_rollout(monkeypatch, tmp_path, untrained_runs):
    """(It was refused by the first update, after a rollout of prompts_per_step x group_size answers.)"""
    monkeypatch.setattr(config, "GRPO_BASELINES", (*config.GRPO_BASELINES, "median"))
    monkeypatch.setattr(grpo, "rollout", lambda *args, **kwargs: pytest.fail("a rollout ran"))
    cfg = GRPOConfig(train=TrainConfig(max_steps=1, warmup_steps=0), group_size=2, prompts_per_step=2,
                     minibatch_size=2, max_new_tokens=4, eval_prompts=2, reward="gold", baseline="median")
    records = [{"id": str(i), "prompt": "Say red.", "reference": "red", "split": "train" if i < 4 else "test_seen"}
               for i in range(8)]
    with pytest.raises(ConfigError, match=r"^grpo.baseline=median: group_advantages"):
        grpo.train_grpo(cfg, untrained_runs / "gpt", records, tmp_path / "grpo")


@pytest.mark.parametrize(("names", "setting", "where"), [
    ("NORMS", "clm.model.norm=sandwich", "is_pre_norm"),
    ("DTYPES", "sft.train.dtype=float8", "torch_dtype"),
    ("PPO_REWARDS", "ppo.reward=verifiable", "uses_gold"),
    ("DPO_PAIRS", "dpo.pairs=adjacent", "chosen_pairs"),
    ("GRPO_BASELINES", "grpo_verifiable.baseline=median", "group_advantages"),
])
def test_a_name_without_its_branch_is_refused_before_the_pipelines_first_step(
        monkeypatch, tmp_path, names, setting, where):
    """(It was refused when its step started: after minutes of training the steps before it.)"""
    value = setting.split("=")[1]
    monkeypatch.setattr(config, names, (*getattr(config, names), value))
    with pytest.raises(ConfigError, match=rf"={value}: {where} "):
        pipeline.preflight(Journey(apply_overrides(preset("micro"), [setting]), tmp_path))


def test_a_sentencepiece_model_type_added_to_the_config_alone_trains_and_is_named_in_the_report(monkeypatch):
    """sentencepiece trains every model type itself: SPM_MODEL_TYPES is the one list (it was a second
    copy in spm.py that refused the name, and report.md's names, which failed with a KeyError)."""
    monkeypatch.setitem(config.SPM_MODEL_TYPES, "char", "SentencePiece's characters")
    settings = TokenizerConfig(kind="sentencepiece", spm_model_type="char", vocab_size=280)
    text = ["The river rises at night. A flash flood watch will be in effect all night."] * 20
    tok = train_tokenizer(text, settings.vocab_size, kind=settings.kind, spm_model_type=settings.spm_model_type,
                          progress=False)
    assert tok.decode(tok.encode("a flash flood")) == "a flash flood"
    assert report.tokenizer_name(settings) == "SentencePiece's characters"


def _choices(parser: argparse.ArgumentParser) -> dict[str, list]:
    """Each option's choices, by its name ("--preset"), over every command of `parser`."""
    found: dict[str, list] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for name, choices in _choices(sub).items():
                    found.setdefault(name, []).extend(choices)
        elif action.choices is not None:
            for name in action.option_strings:
                found.setdefault(name, []).append(list(action.choices))
    return found


@pytest.mark.parametrize(("option", "names", "documented"), [
    ("--preset", config.PRESETS, True), ("--dtype", config.DTYPES, True),
    ("--tokenizer", config.TOKENIZER_KINDS, True), ("--kind", config.TOKENIZER_KINDS, False),
    ("--spm-model-type", config.SPM_MODEL_TYPES, False),
])
def test_help_and_docs_list_each_options_names_as_its_config_list_does(option, names, documented):
    assert all(choices == list(names) for choices in _choices(build_parser())[option])
    if documented:
        docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
        assert f"{option} {'|'.join(names)}" in docs


def _helps(parser: argparse.ArgumentParser, option: str) -> list[str]:
    """The help of `option` in every command of `parser` that takes it."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [text for sub in action.choices.values() for text in _helps(sub, option)]
        elif option in action.option_strings:
            found.append(action.help)
    return found


def test_help_and_docs_list_the_devices_as_config_does():
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    assert f"--device {config.device_names('|')}" in docs
    helps = _helps(build_parser(), "--device")
    assert len(helps) > 10 and all(text.startswith(f"{config.device_names(' | ')} (default: ") for text in helps)

"""Settings that work alone and meet in a combination: each case here was found by running a pairwise
covering set of the switches a learner changes (model shape, dtype, optimizer, tokenizer, LoRA, the
RL methods' choices, `pipeline --jobs`, `--detect-anomaly`) through the micro pipeline.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from minillm.config import (
    GRPOConfig,
    ModelConfig,
    PPOConfig,
    RewardConfig,
    SFTConfig,
    TrainConfig,
    apply_overrides,
    preset,
)
from minillm.console import show_warning
from minillm.errors import ConfigError
from minillm.stage2_sft.sft import train_sft
from minillm.stage3_rlhf import grpo, ppo
from minillm.stage3_rlhf.preferences import collect_rankings
from minillm.stage3_rlhf.reward_model import train_reward_model
from minillm.tokenizer import train_tokenizer
from minillm.workers import worker_pool

RECORDS = [{"id": f"c{i}", "prompt": f"Say the colour {c}.", "response": c, "reference": c,
            "split": "train" if i < 12 else "test_seen"} for i, c in enumerate(["red", "blue", "green", "amber"] * 4)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-step SFT run from scratch and a 1-step reward model on its answers: what PPO and GRPO start from."""
    root = tmp_path_factory.mktemp("combinations")
    tok = train_tokenizer([r["prompt"] + " " + r["response"] for r in RECORDS] * 5, vocab_size=280, progress=False)
    model = ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    one_step = {"batch_size": 4, "eval_every": 100, "save_every": 100, "eval_batches": 1, "log_every": 1}
    train_sft(SFTConfig(train=TrainConfig(max_steps=2, **one_step), max_new_tokens=5, eval_per_family=2), RECORDS,
              root / "sft", scratch_model_config=model, tokenizer=tok)
    reward = RewardConfig(train=TrainConfig(max_steps=1, **one_step), n_prompts=6, answers_per_prompt=2,
                          max_new_tokens=5, annotator_tie_margin=0.0)
    collect_rankings(reward, root / "sft", RECORDS, root / "prefs.jsonl")
    train_reward_model(reward, root / "sft", root / "prefs.jsonl", root / "rm", records=RECORDS)
    return {"root": root, "sft": root / "sft", "rm": root / "rm"}


def test_a_worker_warns_in_one_line_as_the_command_does(capfd):
    """`pipeline --jobs 2` runs PPO and GRPO in workers, whose warnings (e.g. that they train in float32
    whatever --dtype says) came in Python's format, with the file, line number and source line."""
    with warnings.catch_warnings():
        warnings.showwarning = show_warning  # as cli.main sets it
        with worker_pool(1) as pool:
            pool.submit(warnings.warn, "PPO trains in float32").result()
    assert capfd.readouterr().err.strip().splitlines() == ["minillm: warning: PPO trains in float32"]


@pytest.mark.parametrize("method", ["ppo", "grpo"])
def test_detect_anomaly_reaches_the_online_rl_updates(runs, monkeypatch, method):
    """--detect-anomaly sets every stage's train.detect_anomaly, and a NaN's message advises it; PPO's
    and GRPO's own loops ran their backward passes without it, so it found nothing there."""
    module, update = (ppo, "ppo_update") if method == "ppo" else (grpo, "grpo_update")
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.is_anomaly_enabled())
        return real(*args, **kwargs)

    real = getattr(module, update)
    monkeypatch.setattr(module, update, spy)
    train = TrainConfig(max_steps=1, lr=1e-4, warmup_steps=0, detect_anomaly=True)
    out = runs["root"] / f"{method}_anomaly"
    if method == "ppo":
        cfg = PPOConfig(train=train, rollout_batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=4,
                        eval_prompts=2)
        ppo.train_ppo(cfg, runs["sft"], runs["rm"], RECORDS, out)
    else:
        cfg = GRPOConfig(train=train, group_size=2, prompts_per_step=1, minibatch_size=2, max_new_tokens=4,
                         eval_prompts=2, reward="verifiable")
        grpo.train_grpo(cfg, runs["sft"], RECORDS, out, pass_at_k=False)
    assert seen == [True]


@pytest.mark.parametrize(("setting", "switch_off", "switch_on"), [
    ("sft.lora.targets=qkv", "sft.lora.rank=0", "sft.lora.rank=8"),  # lesson 11's "try this" 4, typed alone
    ("sft.lora.also_train=tok_emb", "sft.lora.rank=0", "sft.lora.rank=4"),
    ("sft.lora.alpha=4", "sft.lora.rank=0", "sft.lora.rank=2"),
    ("mlm.model.rope_base=500000", "mlm.model.position=learned", "mlm.model.arch=llama"),  # llama sets rope
    ("clm.model.mlp_ratio=2", "clm.model.mlp_hidden=64", "clm.model.mlp_hidden=0"),
    ("sft.replay_length=16", "sft.pretrain_mix=0", "sft.pretrain_mix=0.25"),
    ("ppo.target_kl=2", "ppo.adaptive_kl=false", "ppo.adaptive_kl=true"),
    ("grpo.exact_bonus=0.5", "grpo.reward=model", "grpo.reward=verifiable"),
    ("grpo_verifiable.no_eos_penalty=-2", "grpo_verifiable.reward=verifiable", "grpo_verifiable.reward=model"),
    ("sft.single_family=translate", "sft.single_family_baseline=false", "sft.single_family_baseline=true"),
    ("tokenizer.spm_model_type=unigram", "tokenizer.kind=bpe", "tokenizer.kind=sentencepiece"),
])
def test_a_setting_its_switch_leaves_unread_is_refused_by_name(setting, switch_off, switch_on):
    """Each setting is read only while a switch beside it is on: set alone it was dropped without a word
    (a LoRA target with LoRA off fine-tuned every weight), so the --set is refused naming the switch."""
    name, switch = setting.split("=")[0], switch_off.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(name)}: {re.escape(switch)}=.* leaves ") as refused:
        apply_overrides(preset("micro"), [setting, switch_off])
    advised = re.search(rf"; set ({re.escape(switch)}=[^\s,]+)", str(refused.value))[1]
    apply_overrides(preset("micro"), [setting, advised])  # the switch's value the refusal names reads it
    cfg = apply_overrides(preset("micro"), [setting, switch_on])  # in either order
    assert cfg == apply_overrides(preset("micro"), [switch_on, setting])


@pytest.mark.parametrize(("setting", "instead"), [
    ("ppo.train.batch_size=64", "ppo.rollout_batch_size answers and updates on ppo.minibatch_size"),
    ("grpo.train.eval_every=5", "evaluates once, after its last step, on grpo.eval_prompts"),
    ("grpo_verifiable.train.log_every=1", "logs every step"),
])
def test_a_train_setting_the_online_rl_loops_never_read_is_refused(setting, instead):
    """PPO and GRPO write their own loop, which takes its batches from its own settings, logs every step
    and evaluates at the end: their train.batch_size, eval_every, eval_batches and log_every were dropped
    without a word (a learner's --set ppo.train.batch_size=64 changed nothing)."""
    path = re.escape(setting.split("=")[0])
    with pytest.raises(ConfigError, match=rf"^--set {path}: .* never reads it; .*{instead}"):
        apply_overrides(preset("micro"), [setting])

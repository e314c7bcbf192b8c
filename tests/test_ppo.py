"""Stage 3 end to end on a micro model: rankings -> reward model -> PPO and DPO, resume, bad rewards."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import random
import re
import shutil
import sys
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _plots import legend_colour
from crash_resume import assert_exact_resume

from minillm.config import DPOConfig, GRPOConfig, ModelConfig, PPOConfig, RewardConfig, SFTConfig, TrainConfig
from minillm.datasets.instructions import INSTRUCTIONS, instructions_given
from minillm.datasets.run_data import saved_data
from minillm.errors import CheckpointError, ConfigError, DataError, TrainingError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers, plot_scores
from minillm.stage2_sft.sft import train_sft
from minillm.stage2_sft.template import encode_prompt
from minillm.stage3_rlhf import dpo, grpo, online_rl, ppo, scoreboard
from minillm.stage3_rlhf import reward_model as reward_model_module
from minillm.stage3_rlhf.annotate import annotate
from minillm.stage3_rlhf.annotator import WEIGHTS, best_and_worst, gold_score
from minillm.stage3_rlhf.dpo import train_dpo
from minillm.stage3_rlhf.online_rl import check_rewards, rl_records, summarize_run, warn_float32_eager
from minillm.stage3_rlhf.ppo import (
    Rollout,
    adapt_kl_coef,
    gold_normaliser,
    ppo_update,
    rollout,
    step_metrics,
    train_ppo,
    watched_networks,
)
from minillm.stage3_rlhf.preferences import collect_rankings, compare_answers, compare_policies, read_preferences
from minillm.stage3_rlhf.reward_model import (
    RewardModel,
    best_of_n,
    best_of_n_kl,
    pick_best,
    score_answers,
    train_reward_model,
)
from minillm.stage3_rlhf.scoreboard import (
    catching_up,
    crossing,
    lead,
    pass_at_k_line,
    plot_pass_at_k,
    policy_row,
    render_table,
)
from minillm.stage3_rlhf.sequences import Responses, answers_logprob, last_real_index, masked_mean, sample_responses
from minillm.tokenizer import train_tokenizer
from minillm.train import health, load_checkpoint, load_model, load_model_and_tokenizer, save_checkpoint
from minillm.train.distributed import DistContext
from minillm.train.health import Watched

UNSAVED = watched_networks(Path("never-saved"))  # ppo_update's messages, of a run that saved no checkpoint
COLOURS = ["red", "blue", "green", "amber", "violet", "grey", "black", "white"]
RECORDS = [
    {"id": f"c{i}", "prompt": f"Say the colour {c}.", "response": c, "reference": c,
     "split": "train" if i < 24 else "test_seen"}
    for i, c in enumerate(COLOURS * 4)
]


def micro_ppo_config(steps: int = 2) -> PPOConfig:
    return PPOConfig(train=TrainConfig(max_steps=steps, lr=1e-4, warmup_steps=0, save_every=1, seed=3),
                     rollout_batch_size=4, minibatch_size=2, ppo_epochs=2, max_new_tokens=5, eval_prompts=6)


@pytest.fixture
def runs(stage3_runs) -> dict[str, Path]:
    return stage3_runs  # build_runs, made once for this file and test_grpo.py (tests/conftest.py)


def build_runs(root: Path) -> dict[str, Path]:
    """A micro SFT run (from scratch), rankings of its answers, and a reward model trained on them."""
    tok = train_tokenizer([r["prompt"] + " " + r["response"] for r in RECORDS] * 5, vocab_size=280,
                          progress=False)
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32)
    sft_cfg = SFTConfig(train=TrainConfig(max_steps=15, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=100,
                                          save_every=100, log_every=5), max_new_tokens=8)
    train_sft(sft_cfg, RECORDS, root / "sft", scratch_model_config=model_cfg, tokenizer=tok)
    reward_cfg = RewardConfig(train=TrainConfig(max_steps=4, batch_size=4, eval_every=4, save_every=4,
                                                eval_batches=1, log_every=1),
                              n_prompts=10, answers_per_prompt=4, max_new_tokens=5, annotator_tie_margin=0.0)
    stats = collect_rankings(reward_cfg, root / "sft", RECORDS, root / "prefs.jsonl")
    rm = train_reward_model(reward_cfg, root / "sft", root / "prefs.jsonl", root / "rm", records=RECORDS)
    return {"root": root, "sft": root / "sft", "rm": root / "rm", "prefs": root / "prefs.jsonl",
            "collect": stats, "reward": rm}


def test_rankings_file_and_reward_model_run(runs):
    rankings = read_preferences(runs["prefs"])
    assert len(rankings) == runs["collect"]["n_rankings"] > 0
    assert all(len(set(r["answers"])) == 4 and sorted(r["ranking"]) == [0, 1, 2, 3] for r in rankings)
    assert {r["split"] for r in rankings} == {"train", "test"}
    metrics = runs["reward"]
    for key in ("pairwise_accuracy", "annotator_agreement", "gold_agreement"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # the stored normalisation makes the SFT answers of the training rankings score mean 0
    rm, tok = load_model(runs["rm"], RewardModel)
    assert rm.reward_std.item() > 0 and rm.reward_mean.item() == pytest.approx(metrics["reward_mean"])


def test_every_stage_3_run_given_its_records_in_python_records_them(runs, tmp_path, monkeypatch):
    """A lesson's `train_ppo(cfg, sft_dir, rm_dir, records, folder)` names no file: its run recorded nothing, as
    one made before the records existed, so a resume on other records went on and `compare` named none. SFT, the
    reward model, DPO, PPO and GRPO record them as given in Python (run_data's `data_record`); DPO, PPO and
    GRPO are stopped where they open their run folder with the records, before any training."""
    given = {INSTRUCTIONS: instructions_given(RECORDS)}
    for run in ("sft", "rm"):  # the shared runs: train_sft(cfg, RECORDS, ...), train_reward_model(..., records=)
        assert saved_data(runs[run] / "config.json", INSTRUCTIONS) == given[INSTRUCTIONS], run
    opened = []

    def open_folder(*args: object, **kwargs: object) -> None:  # dpo's check_run_folder, online_rl's open_run
        opened.append(kwargs["read"] if "read" in kwargs else args[5])
        raise InterruptedError

    monkeypatch.setattr(dpo, "check_run_folder", open_folder)
    monkeypatch.setattr(online_rl, "open_run", open_folder)
    grpo_cfg = GRPOConfig(group_size=2, prompts_per_step=2, minibatch_size=2, max_new_tokens=5, eval_prompts=6,
                          reward="verifiable")
    for train in (lambda: train_dpo(DPOConfig(eval_prompts=6, max_new_tokens=5), runs["sft"], runs["prefs"], RECORDS,
                                    tmp_path),
                  lambda: train_ppo(micro_ppo_config(), runs["sft"], runs["rm"], RECORDS, tmp_path),
                  lambda: grpo.train_grpo(grpo_cfg, runs["sft"], RECORDS, tmp_path)):
        with pytest.raises(InterruptedError):
            train()
    assert opened == [given] * 3


def test_rankings_of_your_own_write_their_agreements_as_null_in_strict_json(runs, tmp_path):
    """Rankings whose ids name no instruction record have no gold agreement to measure: it was NaN, which
    reward_metrics.json held as the word NaN, and a strict parser (JavaScript's JSON.parse, jq) refuses
    the file. Not measured is None, written null, and the result returned is the one read back."""
    cfg = RewardConfig(train=TrainConfig(max_steps=1, batch_size=4, eval_batches=1), max_new_tokens=5)
    result = train_reward_model(cfg, runs["sft"], runs["prefs"], tmp_path / "rm")  # no records: yours
    text = (tmp_path / "rm" / "reward_metrics.json").read_text(encoding="utf-8")
    written = json.loads(text, parse_constant=lambda word: pytest.fail(f"{word} is not JSON"))
    assert written["gold_agreement"] is written["annotator_agreement"] is None
    assert {key: result[key] for key in written} == written
    assert saved_data(tmp_path / "rm" / "config.json", INSTRUCTIONS) is None  # no records given: none read


def test_the_reward_model_weights_its_micro_batches_by_their_pairs(runs, tmp_path):
    """One step of train_reward_model on rankings with ties (6, 3 or 4 pairs each), with the batch
    whole and in 4 micro-batches: the same step."""
    ties = [[0, 1, 2, 3], [0, [1, 2, 3]], [[0, 1, 2], 3], [[0, 1], [2, 3]]]  # 6, 3, 3 and 4 pairs
    rankings = [{**r, "ranking": ties[i % 4]} for i, r in enumerate(read_preferences(runs["prefs"]))]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rankings), encoding="utf-8")
    steps = []
    for k in (1, 4):
        cfg = RewardConfig(train=TrainConfig(max_steps=1, batch_size=4, grad_accum_steps=k, eval_every=100,
                                             save_every=100, log_every=1), n_prompts=10, answers_per_prompt=4)
        train_reward_model(cfg, runs["sft"], tmp_path / "prefs.jsonl", tmp_path / str(k), records=RECORDS)
        metrics = (tmp_path / str(k) / "metrics.jsonl").read_text(encoding="utf-8")
        rows = [json.loads(line) for line in metrics.splitlines()]
        steps.append(next(row for row in rows if row.get("split") == "train"))
    assert steps[1]["grad_norm"] == pytest.approx(steps[0]["grad_norm"], rel=1e-4)
    assert steps[1]["loss"] == pytest.approx(steps[0]["loss"], rel=1e-4)


def test_the_reward_model_trains_without_the_sft_model_in_memory(runs, tmp_path, monkeypatch):
    """The reward model trains a copy of the SFT model; the SFT model itself was kept beside it to the end."""
    loaded = []

    def load(*args, **kwargs):
        model, tokenizer = load_model_and_tokenizer(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model, tokenizer

    class Training(Exception):
        pass

    def train(*args, **kwargs):  # the training starts: is the SFT model still in memory?
        raise Training(loaded[0]() is not None)

    monkeypatch.setattr(reward_model_module, "load_model_and_tokenizer", load)
    monkeypatch.setattr(reward_model_module, "train", train)
    with pytest.raises(Training) as started:
        train_reward_model(RewardConfig(), runs["sft"], runs["prefs"], tmp_path / "rm")
    assert started.value.args == (False,)


def test_a_finished_reward_model_resumed_for_more_steps_trains_as_a_straight_run(runs, tmp_path):
    # The finished run's checkpoint holds the normalisation set after training; the resumed steps used to rank
    # scores divided by its std, a loss of another scale. (Warmup past the last step: both schedules agree.)
    def reward_cfg(steps: int) -> RewardConfig:
        return RewardConfig(train=TrainConfig(max_steps=steps, batch_size=4, lr=3e-3, warmup_steps=10,
                                              eval_every=100, save_every=100, log_every=1))

    straight = train_reward_model(reward_cfg(4), runs["sft"], runs["prefs"], tmp_path / "straight")
    train_reward_model(reward_cfg(2), runs["sft"], runs["prefs"], tmp_path / "resumed")
    resumed = train_reward_model(reward_cfg(4), runs["sft"], runs["prefs"], tmp_path / "resumed", resume=True)
    assert logged(resumed["history"], "train", "loss") == pytest.approx(logged(straight["history"], "train", "loss"),
                                                                        abs=1e-6)


def train_and_check_the_reference(monkeypatch, module: ModuleType, sft_dir: Path, run: Callable[[], dict]) -> dict:
    """`run()` (a train_* of `module`), checking that its reference is a frozen copy of the SFT model.

    The reference anchors the KL and is the baseline the policy is compared with at the end. Were it
    the policy itself, the KL would be 0 and the comparison a tie, and nothing would crash: so the
    pair given to `module.compare_policies` is recorded, and after training the reference must still
    equal the SFT checkpoint, parameter for parameter, while the policy has moved.
    """
    seen, compare = {}, module.compare_policies

    def recording_compare(policy, reference, *args, **kwargs):
        seen.update(policy=policy.state_dict(), reference=reference.state_dict())
        return compare(policy, reference, *args, **kwargs)

    monkeypatch.setattr(module, "compare_policies", recording_compare)
    result = run()
    sft = load_model(sft_dir, GPT)[0].state_dict()
    assert all(torch.equal(seen["reference"][key], value) for key, value in sft.items())
    assert not all(torch.equal(seen["policy"][key], value) for key, value in sft.items())
    return result


def with_eos_boost(policy: GPT, eos_id: int, boost: float) -> GPT:
    """`policy` with `boost` added to its <eos> logit: the barely trained micro model never ends an
    answer within 5 tokens by itself, and a rollout test needs answers that end early and answers
    that do not end at all."""
    head, bias = policy.lm_head, torch.zeros(policy.config.vocab_size)
    bias[eos_id] = boost
    policy.lm_head = lambda h: head(h) + bias  # generation and scoring both read the head through this
    return policy


def test_rankings_that_find_no_different_answers_name_the_model_as_a_cause(runs, tmp_path, monkeypatch):
    """An SFT run trained at lr=10 answers every prompt alike: the reward step said only to lower
    reward.answers_per_prompt or raise reward.sample_temperature, never which model, or that its
    training may have gone wrong."""
    monkeypatch.setattr("minillm.stage3_rlhf.preferences.sample_distinct_answers",
                        lambda policy, tokenizer, prompts, *args, **kwargs: [["the same answer"] for _ in prompts])
    sft, log = re.escape(str(runs["sft"])), re.escape(str(runs["sft"] / "metrics.jsonl"))
    with pytest.raises(DataError, match=rf"^no prompt gave 4 different answers from the SFT model {sft}; "
                                        rf".*reward.sample_temperature; or its training went wrong \(see the loss "
                                        rf"in {log}\)"):
        collect_rankings(RewardConfig(n_prompts=5, answers_per_prompt=4, max_new_tokens=8), runs["sft"], RECORDS,
                         tmp_path / "prefs.jsonl")


def test_ppos_networks_in_float32_are_not_told_to_try_float32():
    """PPO (and GRPO) train in float32 always and name no dtype to their Watched: its default must be the
    precision they are in, or a NaN's message advises --dtype float32 to a run already in it."""
    for run in UNSAVED.values():
        message = str(run.stopped(1, "the loss is nan"))
        assert "--dtype" not in message and message.endswith("or --detect-anomaly to find the operation that "
                                                             "produced it"), message


@pytest.mark.parametrize(("network", "parameter", "lr"), [("policy", "ln_f.weight", "ppo.train.lr"),
                                                         ("critic", "head.weight", "ppo.critic_lr")])
def test_a_gradient_that_is_not_finite_stops_the_update_before_its_step(runs, network, parameter, lr):
    """PPO checked only its loss, after the whole update: a NaN gradient under a finite loss (the last
    minibatch's) went through clipping (every gradient times grad_clip / NaN) into every weight, the
    checkpoint saved them, and the next rollout failed in torch with an index error. Each of the two
    networks is checked, as each is clipped, on its own, and the message says which one it was, with the
    setting of its own learning rate."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg, critic, g = micro_ppo_config(), copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    poisoned = {"policy": policy, "critic": critic}[network]
    poisoned.get_parameter(parameter).register_hook(lambda grad: grad * float("nan"))  # the loss stays finite
    optimizer = torch.optim.AdamW([*policy.parameters(), *critic.parameters()], lr=1e-3)
    with pytest.raises(TrainingError, match=rf"^ppo: training stopped at step 3: the {network}'s gradient norm is "
                                            rf"nan, the gradient of parameter '{parameter}'.*--set {lr}=\.\.\."):
        ppo_update(policy, critic, optimizer, ro, cfg, g, step=3, watched=UNSAVED)
    assert all(p.isfinite().all() for p in (*policy.parameters(), *critic.parameters()))


@pytest.mark.parametrize("method", ["ppo", "grpo"])
def test_a_run_whose_gradient_stops_being_finite_stops_at_that_step_with_the_last_good_checkpoint(
        runs, tmp_path, monkeypatch, method):
    """The run tells its update which step it is (ppo_update's and grpo_update's `step`): the message names
    the step the run stopped at, and the checkpoint on disk is the step before's."""
    module, out = {"ppo": ppo, "grpo": grpo}[method], tmp_path / method

    def nan_once_a_step_is_saved(net, grad_clip, step, run, check=True):  # a NaN gradient from step 2 on
        norm = float("nan") if (out / "ckpt.pt").is_file() else 1.0
        health.check_grad_norm(norm, net, step, run)
        return torch.tensor(norm)

    monkeypatch.setattr(module, "clip_gradients", nan_once_a_step_is_saved)
    with pytest.raises(TrainingError, match=rf"^{method}\b.*: training stopped at step 2: the (policy's )?gradient "
                                            rf"norm is nan.* Its last checkpoint, {re.escape(str(out / 'ckpt.pt'))} "
                                            rf"of step 1, is kept\. Try a lower learning rate \(--set {method}\.train"):
        if method == "ppo":
            train_ppo(micro_ppo_config(), runs["sft"], runs["rm"], RECORDS, out)
        else:
            grpo.train_grpo(GRPOConfig(train=TrainConfig(max_steps=2, save_every=1, warmup_steps=0), group_size=2,
                                       prompts_per_step=2, minibatch_size=2, max_new_tokens=5, eval_prompts=6,
                                       reward="verifiable"), runs["sft"], RECORDS, out)
    assert load_checkpoint(out / "ckpt.pt")["step"] == 1


@pytest.mark.parametrize("temperature", [1.0, 0.7])  # 0.7: the update must rescale its logits as sampling did
def test_first_minibatch_ratio_is_one_and_kl_is_zero_against_itself(runs, temperature):
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), temperature=temperature)
    critic, g = copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    # policy == reference: every per-token KL is 0, up to float rounding (the rollout's log-probs come
    # from sampling with the KV cache, the reference's from a full forward pass)
    assert ro.kl.abs().max() < 1e-5
    assert (ro.mask.sum(1) >= 1).all()
    for t in (ro.kl, ro.advantages, ro.returns, ro.values):
        assert (t[~ro.mask] == 0).all()  # padding carries nothing
    optimizer = torch.optim.AdamW([*policy.parameters(), *critic.parameters()], lr=1e-3)
    stats = ppo_update(policy, critic, optimizer, ro, cfg, g, step=1, watched=UNSAVED)
    assert stats[0]["ratio_max_dev"] < 1e-4 and stats[0]["clipfrac"] == 0.0
    assert len(stats) == cfg.ppo_epochs * cfg.rollout_batch_size // cfg.minibatch_size
    assert any(s["ratio_max_dev"] > 0 for s in stats[1:])  # later minibatches see an updated policy


def test_a_rollout_penalises_unfinished_answers_and_whitens_the_advantages(runs):
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = micro_ppo_config()
    policy = with_eos_boost(policy, tok.eos_id, 4.0)
    ro = rollout(policy, policy, rm, copy.deepcopy(rm), tok, RECORDS[:8], cfg, 0.1, torch.Generator().manual_seed(0))
    n = ro.mask.shape[1]
    # has_eos by hand: the answer's last real token is <eos>; some answers end early, some never end
    last_token = ro.ids[:, -n:].gather(1, last_real_index(ro.mask)[:, None]).squeeze(1)  # (B,)
    assert ro.has_eos.tolist() == (last_token == tok.eos_id).tolist()
    assert (ro.has_eos & (ro.mask.sum(dim=1) < n)).any() and not ro.has_eos.all()
    for t in (ro.kl, ro.values, ro.advantages, ro.returns):  # the answers that ended early have pads
        assert (t[~ro.mask] == 0).all()
    # an unfinished answer's score is the penalty; a finished one keeps the reward model's
    assert (ro.score[~ro.has_eos] == cfg.no_eos_penalty).all()
    assert torch.equal(ro.score[ro.has_eos], ro.rm_score[ro.has_eos])
    # the advantages are whitened over the answers' real tokens: mean 0, std 1 there
    assert masked_mean(ro.advantages, ro.mask).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_mean(ro.advantages ** 2, ro.mask).item() == pytest.approx(1.0, abs=1e-3)


def test_without_discount_or_kl_a_tokens_advantage_is_the_score_minus_its_value(runs):
    """gamma = lam = 1 and no KL penalty: the deltas telescope, so each real token's advantage is its
    answer's score minus the critic's value there, and its return is the score. The rollout's
    advantages are those, whitened over the real tokens: a better answer's tokens are pushed up."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), gamma=1.0, lam=1.0)
    policy = with_eos_boost(policy, tok.eos_id, 4.0)
    ro = rollout(policy, policy, rm, copy.deepcopy(rm), tok, RECORDS[:8], cfg, 0.0, torch.Generator().manual_seed(0))
    by_hand = (ro.score[:, None] - ro.values)[ro.mask]  # (real tokens,)
    assert by_hand.std() > 0.1  # answers of different scores: a sign error cannot pass unseen
    torch.testing.assert_close(ro.returns[ro.mask], ro.score[:, None].expand_as(ro.mask)[ro.mask], atol=1e-5, rtol=0)
    whitened = (by_hand - by_hand.mean()) / by_hand.std(unbiased=False)
    torch.testing.assert_close(ro.advantages[ro.mask], whitened, atol=1e-4, rtol=0)


def test_a_rollouts_returns_are_gae_with_its_own_gamma_and_lam(runs):
    """With gamma != lam (0.9 and 0.5) and a KL penalty, each real token's return is its GAE advantage,
    written out as the discounted sum A_t = sum_k (gamma lam)^(k-t) delta_k in float64 loops, plus its
    value. gamma = lam = 1 (the test above) cannot tell gamma from lam: a rollout that passed them to
    `gae` the other way round would discount the bootstrap by lam and pass that test unseen."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    gamma, lam, kl_coef = 0.9, 0.5, 0.1
    cfg = dataclasses.replace(micro_ppo_config(), gamma=gamma, lam=lam)
    policy = with_eos_boost(policy, tok.eos_id, 4.0)
    ro = rollout(policy, nudged(policy), rm, copy.deepcopy(rm), tok, RECORDS[:8], cfg, kl_coef,
                 torch.Generator().manual_seed(0))
    by_hand = torch.zeros(ro.mask.shape, dtype=torch.float64)
    for b in range(len(ro.records)):
        n = int(ro.mask[b].sum())
        rewards = [-kl_coef * float(ro.kl[b, t]) for t in range(n)]
        rewards[-1] += float(ro.score[b])  # the answer's score lands on its last real token
        values = [float(ro.values[b, t]) for t in range(n)] + [0.0]  # V = 0 once the answer has ended
        deltas = [rewards[t] + gamma * values[t + 1] - values[t] for t in range(n)]
        for t in range(n):
            by_hand[b, t] = sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n)) + values[t]
    assert ro.mask.sum(dim=1).min() < ro.mask.sum(dim=1).max()  # answers of several lengths
    torch.testing.assert_close(ro.returns.double(), by_hand, atol=1e-5, rtol=0)


def nudged(model: GPT, seed: int = 0, scale: float = 0.2) -> GPT:
    """A copy of `model` with every weight moved a little: another policy, that answers otherwise."""
    other, g = copy.deepcopy(model), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def log_softmax_alone(model: GPT, ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """(B, N, V) the log-distribution `model` gives each response token of each row, by hand: every row
    run alone with its pads cut away (no attention mask, no KV cache), logits over `temperature`; 0 on
    the pads."""
    out = torch.zeros(*mask.shape, model.config.vocab_size)
    for b in range(len(ids)):
        real = ids[b][attention_mask[b]]  # the prompt's and the answer's tokens, nothing else
        k, length = int(mask[b].sum()), len(real)  # the answer is the last k of them
        with torch.no_grad():
            logp = torch.log_softmax(model(real[None])[0] / temperature, dim=-1)  # (L, V): row t predicts t + 1
        out[b, :k] = logp[length - k - 1:length - 1]
    return out


def logprobs_alone(model: GPT, ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """(B, N) log-probs of each row's response tokens under `model` (`log_softmax_alone`); 0 on the pads."""
    logp = log_softmax_alone(model, ids, attention_mask, mask, temperature)  # (B, N, V)
    return logp.gather(2, ids[:, -mask.shape[1]:, None]).squeeze(2)


def entropy_alone(model: GPT, ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                  temperature: float) -> float:
    """The mean over the answers' real tokens of the entropy -sum_v p log p of `model`'s next-token
    distribution there (`log_softmax_alone`): what the updates log as "entropy", in nats."""
    logp = log_softmax_alone(model, ids, attention_mask, mask, temperature)[mask].double()  # (real tokens, V)
    return -(logp.exp() * logp).sum(dim=-1).mean().item()


def test_the_sampled_log_probs_are_the_policys_own_read_row_by_row(runs):
    """The rollout's "old" log-probs come from sampling (KV cache, left-padded prompts, rows dropping
    out as they say <eos>): each must be log softmax(logits / T)[token] of the policy run on that row's
    prefix alone, and 0 after the answer's <eos>. Prompts of several lengths, answers that end early."""
    policy, tok = load_model(runs["sft"], GPT)
    policy = with_eos_boost(policy, tok.eos_id, 2.0)
    prompts = [r["prompt"] + " Now." * (i % 3) for i, r in enumerate(RECORDS[:6])]  # prompts of several lengths
    resp = sample_responses(policy, tok, prompts, 5, 0.7, torch.Generator().manual_seed(0))
    assert resp.mask.sum(dim=1).min() < resp.mask.sum(dim=1).max() and resp.has_eos.any()
    assert not resp.has_eos.all() and not resp.attention_mask[:, 0].all()  # answers cut at 5 tokens; left pads
    by_hand = logprobs_alone(policy, resp.ids, resp.attention_mask, resp.mask, 0.7)
    torch.testing.assert_close(resp.logprobs * resp.mask, by_hand * resp.mask, atol=1e-5, rtol=0)
    assert (resp.logprobs[~resp.mask] == 0).all()


def test_the_kl_penalty_is_measured_against_the_frozen_reference(runs):
    """The rollout's reference log-probs are the reference's own (not the policy's, which would make
    every KL 0 and cut PPO's leash without a sound), and kl = log pi - log pi_ref on each real token."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    reference = nudged(policy)
    cfg = dataclasses.replace(micro_ppo_config(), temperature=0.7)
    ro = rollout(policy, reference, rm, copy.deepcopy(rm), tok, RECORDS[:4], cfg, 0.1, torch.Generator().manual_seed(0))
    ref_by_hand = logprobs_alone(reference, ro.ids, ro.attention_mask, ro.mask, 0.7)
    policy_by_hand = logprobs_alone(policy, ro.ids, ro.attention_mask, ro.mask, 0.7)
    torch.testing.assert_close(ro.ref_logprobs * ro.mask, ref_by_hand, atol=1e-4, rtol=0)
    torch.testing.assert_close(ro.kl, (policy_by_hand - ref_by_hand) * ro.mask, atol=1e-4, rtol=0)
    assert ro.kl.abs().max() > 0.05  # the two models differ: a KL read off the policy alone would fail


def test_the_critic_is_regressed_from_its_old_values_towards_the_returns(runs):
    """One minibatch holding the whole rollout: before its step the critic still predicts the rollout's
    values, so clipping changes nothing and the value loss is half the mean squared gap between those
    values and the returns (GAE's targets) over the real tokens. The entropy logged with it is the
    policy's own before the step, -sum p log p averaged over the real tokens (a sign slip would log a
    negative entropy, and an entropy collapse would go unseen on the health plot)."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), minibatch_size=4, ppo_epochs=1)
    critic, g = copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    gap = (ro.values - ro.returns)[ro.mask]
    assert gap.abs().max() > 2 * cfg.clip_range_value  # gaps beyond the clip range: the test can fail
    entropy = entropy_alone(policy, ro.ids, ro.attention_mask, ro.mask, cfg.temperature)  # before the step
    optimizer = torch.optim.AdamW([*policy.parameters(), *critic.parameters()], lr=1e-3)
    [stats] = ppo_update(policy, critic, optimizer, ro, cfg, g, step=1, watched=UNSAVED)
    assert stats["vf_loss"] == pytest.approx(0.5 * (gap ** 2).mean().item(), rel=1e-4)
    assert stats["entropy"] == pytest.approx(entropy, rel=1e-4)  # the policy's, in nats, over real tokens


def test_the_ratio_is_taken_against_the_sampling_policy_not_the_reference(runs):
    """PPO's ratio is pi_new / pi_old, pi_old the policy that sampled the rollout: the first minibatch is
    on-policy (ratio 1) even when the frozen reference, which only the KL penalty reads, is far away."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg, critic, g = micro_ppo_config(), copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, nudged(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    assert ro.kl.abs().max() > 0.05  # the reference differs: a ratio against it would be far from 1
    optimizer = torch.optim.AdamW([*policy.parameters(), *critic.parameters()], lr=1e-3)
    stats = ppo_update(policy, critic, optimizer, ro, cfg, g, step=1, watched=UNSAVED)
    assert stats[0]["ratio_max_dev"] < 1e-4 and stats[0]["clipfrac"] == 0.0


def test_the_update_steps_on_the_policy_loss_plus_vf_coef_times_the_value_loss(runs):
    """One plain gradient step (SGD, no gradient clipping) on one minibatch holding the whole rollout:
    the critic moves by lr x vf_coef x the gradient of the value loss written out by hand (half the
    mean squared gap between its values and the returns over the real tokens; unclipped, since the
    critic still predicts the rollout's values). A loss that dropped vf_coef would move it ten times
    as far. (Under AdamW the scale of a network's whole gradient hardly matters: vf_coef weighs the
    critic against the policy only through gradient clipping and Adam's eps.)"""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), minibatch_size=4, ppo_epochs=1, vf_coef=0.1,
                              train=dataclasses.replace(micro_ppo_config().train, grad_clip=0.0))
    critic, g = copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    by_hand = copy.deepcopy(critic).requires_grad_(True)
    values = by_hand.token_scores(ro.ids, ro.attention_mask)[:, -ro.mask.shape[1] - 1:-1]  # before each token
    (0.5 * ((values - ro.returns)[ro.mask] ** 2).mean()).backward()
    before = critic.head.weight.detach().clone()
    lr = 0.5
    ppo_update(policy, critic, torch.optim.SGD([*policy.parameters(), *critic.parameters()], lr=lr), ro, cfg, g,
               step=1, watched=UNSAVED)
    torch.testing.assert_close(critic.head.weight - before, -lr * cfg.vf_coef * by_hand.head.weight.grad,
                               atol=1e-6, rtol=1e-4)


def surrogate_alone(model: GPT, ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                    old_logprobs: torch.Tensor, advantages: torch.Tensor, temperature: float,
                    clip_range: float) -> tuple[torch.Tensor, int]:
    """PPO's clipped surrogate loss written from the paper, as a loop over the rows, each run alone with
    its pads cut away (no attention mask, no KV cache): -(1/M) sum over the M real response tokens of
    min(r A, clip(r, 1 - eps, 1 + eps) A), r = pi(token) / pi_old(token) at `temperature`. `model` may
    be a float64 copy; the result keeps its graph. Also returns how many tokens the clip held."""
    terms, clipped = [], 0
    for b in range(len(ids)):
        real = ids[b][attention_mask[b]]  # the prompt's and the answer's tokens, nothing else
        k, length = int(mask[b].sum()), len(real)  # the answer is the last k of them
        logp = torch.log_softmax(model(real[None])[0] / temperature, dim=-1)  # (L, V): row t predicts t + 1
        for t in range(k):
            ratio = torch.exp(logp[length - k - 1 + t, real[length - k + t]] - float(old_logprobs[b, t]))
            a = float(advantages[b, t])
            plain, capped = ratio * a, torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * a
            terms.append(torch.minimum(plain, capped))
            clipped += bool(capped < plain)
    return -sum(terms) / len(terms), clipped


def test_one_ppo_step_moves_the_policy_by_the_gradient_of_the_surrogate_read_row_by_row(runs):
    """One plain SGD step (no gradient clipping) on one minibatch holding the whole rollout, whose "old"
    log-probs are moved off the policy's so that the clip holds some tokens and not others: every
    policy weight moves by -lr x the gradient of `surrogate_alone`, the paper's objective computed in
    float64 on each row alone. The slicing of response columns, the temperature, the masking and
    averaging and the clip all have to agree for this to pass."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), minibatch_size=4, ppo_epochs=1, temperature=0.7,
                              train=dataclasses.replace(micro_ppo_config().train, grad_clip=0.0))
    critic, g = copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, nudged(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    n = ro.mask.shape[1]
    # answers of several lengths, as if each had ended there: what follows is padding, masked everywhere
    mask = ro.mask & (torch.arange(n)[None, :] < torch.tensor([[n], [2], [4], [1]]))
    assert len(set(mask.sum(dim=1).tolist())) > 1
    attention_mask = torch.cat([ro.attention_mask[:, :-n], mask], dim=1)
    off_policy = ro.logprobs + 0.3 * torch.randn(mask.shape, generator=torch.Generator().manual_seed(1))
    ro = dataclasses.replace(ro, mask=mask, attention_mask=attention_mask, logprobs=off_policy * mask,
                             advantages=ro.advantages * mask, values=ro.values * mask, returns=ro.returns * mask)
    by_hand = copy.deepcopy(policy).double()
    loss, clipped = surrogate_alone(by_hand, ro.ids, ro.attention_mask, ro.mask, ro.logprobs, ro.advantages,
                                    cfg.temperature, cfg.clip_range)
    assert 0 < clipped < int(ro.mask.sum())  # the clip holds some tokens, not all
    names = [name for name, _ in by_hand.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(by_hand.parameters())), strict=True))
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    lr = 0.5
    [stats] = ppo_update(policy, critic, torch.optim.SGD([*policy.parameters(), *critic.parameters()], lr=lr), ro,
                         cfg, g, step=1, watched=UNSAVED)
    assert stats["pg_loss"] == pytest.approx(loss.item(), abs=1e-5)
    for name, p in policy.named_parameters():
        torch.testing.assert_close((p.detach() - before[name]).double(), -lr * grads[name], atol=1e-6, rtol=1e-4)


def test_the_critic_learns_its_value_loss_falls_over_the_epochs(runs):
    """The value loss is part of the loss that steps (with vf_coef): epochs over one rollout, each a
    single minibatch, bring the critic's values closer to the returns every time (value clipping,
    which stops a value 0.2 away from its old one, is set out of the way)."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), minibatch_size=4, ppo_epochs=3, clip_range_value=100.0)
    critic, g = copy.deepcopy(rm), torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), rm, critic, tok, RECORDS[:4], cfg, 0.1, g)
    optimizer = torch.optim.AdamW([*policy.parameters(), *critic.parameters()], lr=1e-2)
    losses = [s["vf_loss"] for s in ppo_update(policy, critic, optimizer, ro, cfg, g, step=1, watched=UNSAVED)]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.9 * losses[0], losses


def test_the_logged_kl_is_per_answer_the_sum_over_its_tokens():
    """Adaptive KL steers this number towards target_kl, a KL per answer in nats: the per-token
    log-ratios summed over each answer's real tokens, then averaged over the answers."""
    mask = torch.tensor([[True, True, False], [True, False, False]])
    kl = torch.tensor([[0.5, -0.1, 0.0], [0.2, 0.0, 0.0]])
    records = [{"reference": "The Mell."}, {"reference": "3"}]
    ro = Rollout(records=records, answers=["The Mell.", "4"], ids=None, attention_mask=None, mask=mask,
                 logprobs=None, ref_logprobs=None, values=None, score=None, rm_score=torch.tensor([1.0, -0.5]),
                 has_eos=torch.tensor([True, False]), kl=kl, advantages=None, returns=None)
    row = step_metrics(ro, [{"pg_loss": 1.0}, {"pg_loss": 3.0}], kl_coef=0.1)
    assert row["kl"] == pytest.approx((0.4 + 0.2) / 2)  # a mean over the 6 entries would say 0.1
    # the perfect answer scores 4, the wrong one 0; 2 and 1 real tokens; one answer of two ended
    assert row["gold"] == 2.0 and row["response_len"] == 1.5 and row["eos_share"] == 0.5
    assert row["rm_score"] == 0.25 and row["pg_loss"] == 2.0 and row["kl_coef"] == 0.1


def test_answers_must_leave_room_for_the_prompt(runs):
    """block_size 32: the prompt's 3 framing tokens and 1 of its own leave at most 28 for the answer."""
    policy, tok = load_model(runs["sft"], GPT)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match=r"max_new_tokens=29 leaves no room for a prompt .* largest allowed is 28; "
                                          r"lower it$"):  # (no other setting: this model's block_size is trained in)
        sample_responses(policy, tok, ["Say the colour red."], 29, 1.0, g)
    resp = sample_responses(policy, tok, ["Say the colour red."], 28, 1.0, g)
    prompt_columns = resp.ids.shape[1] - resp.mask.shape[1]
    assert resp.ids[0, :prompt_columns].tolist() == encode_prompt(tok, "Say the colour red.", max_len=4)


def test_the_gold_reward_scores_answers_by_the_judge_on_the_reward_models_scale(runs):
    """PPO's oracle experiment (reward="gold"): an answer's score is its gold score, less the mean and
    over the spread of the gold scores of the SFT model's own answers."""
    policy, tok = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0]
    cfg = dataclasses.replace(micro_ppo_config(), reward="gold")
    prompts = [r for r in RECORDS if r["split"] == "train"]
    mean, std = gold_normaliser(policy, tok, prompts, cfg)
    assert (mean, std) == gold_normaliser(policy, tok, prompts, cfg)  # its own seed: a resume gets the same
    lowest = sum(w for w in WEIGHTS.values() if w < 0)  # rude and wholly verbose, nothing right
    assert std > 0 and lowest <= mean <= max(gold_score(r, r["reference"]) for r in prompts)
    ro = rollout(policy, copy.deepcopy(policy), rm, copy.deepcopy(rm), tok, RECORDS[:4], cfg, 0.1,
                 torch.Generator().manual_seed(0), (mean, std))
    by_hand = [(gold_score(r, a) - mean) / std for r, a in zip(RECORDS[:4], ro.answers, strict=True)]
    assert ro.rm_score.tolist() == pytest.approx(by_hand)
    # and train_ppo uses it: every step's mean score is its mean gold, normalised the same way
    rows = train_ppo(cfg, runs["sft"], runs["rm"], RECORDS, runs["root"] / "ppo_gold")["history"]
    assert [r["rm_score"] for r in rows] == pytest.approx([(r["gold"] - mean) / std for r in rows])


def test_the_gold_normaliser_is_the_mean_and_sample_std_of_the_gold_scores_of_the_answers_drawn(monkeypatch):
    """gold_normaliser by hand (the test above bounds it only), the SFT model's 256 answers faked: every
    reference is "The Mell.", and the answers alternate "The Mell." (gold 4.0) and "Mell" (3.5), so the
    mean is 3.75 and the sample standard deviation, as the reward model's normalisation takes it,
    sqrt(256 x 0.25^2 / 255)."""
    def sft_answers(policy, tokenizer, prompts, *args, **kwargs) -> list[str]:
        return ["The Mell.", "Mell"] * (len(prompts) // 2)

    monkeypatch.setattr(ppo, "generate_answers", sft_answers)
    prompts = [{"prompt": f"Which river runs through town {i}?", "reference": "The Mell."} for i in range(5)]
    mean, std = gold_normaliser(None, None, prompts, micro_ppo_config())
    assert mean == pytest.approx(3.75) and std == pytest.approx(math.sqrt(256 * 0.25**2 / 255), rel=1e-6)


def test_train_ppo_logs_every_metric_and_compares_with_sft(runs, monkeypatch):
    out = runs["root"] / "ppo"
    result = train_and_check_the_reference(monkeypatch, ppo, runs["sft"],
                                           lambda: train_ppo(micro_ppo_config(), runs["sft"], runs["rm"], RECORDS, out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("rm_score", "gold", "kl", "entropy", "clipfrac", "approx_kl", "ratio", "eos_share", "response_len"):
        assert all(key in r for r in rows), key
    # the schedule (cosine to min_lr_ratio 0.1 over 2 steps) moves the policy's lr and the critic's alike
    assert [r["lr"] for r in rows] == pytest.approx([1e-4, 1e-5])
    lrs = sorted({group["lr"] for group in load_checkpoint(out / "ckpt.pt")["optimizer"]["param_groups"]})
    assert lrs == pytest.approx(sorted([1e-5, micro_ppo_config().critic_lr * 0.1]))
    for key in ("win_rate_vs_sft", "gold_sft", "gold_after", "kl"):
        assert isinstance(result[key], float), key
    assert 0.0 <= result["win_rate_vs_sft"] <= 1.0
    assert (out / "ppo_reward.png").is_file() and load_model(out, GPT)[0] is not None


def test_ppo_s_plots_say_where_an_adaptive_kl_coef_went(runs, tmp_path, drawn_figures):
    """With adaptive_kl the coefficient moves every step, and the plots' titles gave only the one it
    started from ("kl_coef 0.05"), as if it had held."""
    cfg = dataclasses.replace(micro_ppo_config(steps=1), adaptive_kl=True, target_kl=0.5)
    step = train_ppo(cfg, runs["sft"], runs["rm"], RECORDS, tmp_path / "ppo")["history"][-1]
    moved = adapt_kl_coef(step["kl_coef"], step["kl"], cfg.target_kl)  # after the step's update
    assert step["kl_coef"] == cfg.kl_coef != moved
    assert drawn_figures[0].axes[0].get_title() == \
        f"PPO rollouts: scores and KL to SFT (kl_coef 0.05 -> {moved:.3g} adapted towards KL 0.5)"


def test_ppo_and_grpo_say_that_they_ignore_dtype_and_compile(runs, tmp_path):
    cfg = micro_ppo_config(steps=1)
    bf16 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dtype="bfloat16", compile=True))
    with pytest.warns(UserWarning, match=r"PPO trains in float32 without torch.compile; train.dtype=bfloat16"):
        train_ppo(bf16, runs["sft"], runs["rm"], RECORDS, tmp_path / "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_float32_eager(cfg.train, "GRPO")  # float32, eager: nothing to say


def test_a_policy_compared_with_itself_ties_everywhere(runs):
    """Same model, same seed: the same answers, so every prompt of every family is a tie (0.5), with
    no spread; a comparison that drew the two models' samples from different random streams fails."""
    model, tokenizer = load_model(runs["sft"], GPT)
    records = [{**r, "family": "colour" if i % 2 else "hue"} for i, r in enumerate(RECORDS[24:])]
    result = compare_policies(model, model, tokenizer, records, temperature=1.0, max_new_tokens=5, seed=3)
    assert result["answers_policy"] == result["answers_baseline"]
    assert result["wrong_policy"] == result["wrong_baseline"] and 0.0 <= result["wrong_policy"] <= 1.0
    assert result["win_rate"] == 0.5 and result["win_rate_stderr"] == 0.0
    assert result["win_rate_by_family"] == {"colour": 0.5, "hue": 0.5}


def test_best_of_n_kl_bound_by_hand():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(0.693147 - 0.5, abs=1e-6)
    assert best_of_n_kl(4) == pytest.approx(1.386294 - 0.75, abs=1e-6)


def test_crossing_is_the_first_k_where_the_sft_model_reaches_the_policy():
    sft, policy = {"1": 0.2, "2": 0.5, "4": 0.7}, {"1": 0.4, "2": 0.5, "4": 0.6}
    assert crossing(sft, policy) == "2"  # equal counts as reached
    assert crossing(sft, {k: 1.0 for k in sft}) is None


def test_the_pass_at_k_line_says_where_the_sft_model_catches_up_by_the_gains_standard_error():
    sft, policy = {"1": 0.5, "2": 0.64, "4": 0.73}, {"1": 0.53, "2": 0.66, "4": 0.75}

    def line(*gains: tuple[float, float]) -> str:
        gain = {k: {"gain": g, "stderr": e} for k, (g, e) in zip(sft, gains, strict=True)}
        return pass_at_k_line("P", sft, policy, gain)

    # the tiny run's DPO: ahead at k = 1 and 2, then a gain within two standard errors of 0, though above it
    assert line((0.032, 0.011), (0.026, 0.011), (0.016, 0.010)).endswith(
        "; the SFT model catches up at k = 4 (the gain is within two standard errors of 0 there).")
    # the tiny run's GRPO (reward model): +0.029 ± 0.018 is not told apart from none
    assert line((0.029, 0.018), (0.016, 0.017), (0.012, 0.014)).endswith(
        "; the gain is within two standard errors of 0 already at k = 1.")
    assert line((0.035, 0.015), (0.016, 0.015), (-0.032, 0.014)).endswith(  # the tiny run's PPO at k = 1, 2, 16
        "; the SFT model catches up at k = 2 (the gain is within two standard errors of 0 there), and is more "
        "than two standard errors ahead at k = 4.")
    assert line((0.022, 0.014), (-0.009, 0.015), (-0.035, 0.014)).endswith(  # the earlier run's PPO
        "; the gain is within two standard errors of 0 already at k = 1; the SFT model is more than two standard "
        "errors ahead at k = 4.")
    assert line((0.07, 0.012), (0.048, 0.011), (-0.05, 0.01)).endswith(
        "; the SFT model catches up at k = 4 and is more than two standard errors ahead there.")
    assert line((-0.05, 0.01), (-0.05, 0.01), (-0.05, 0.01)).endswith(
        "; the SFT model is more than two standard errors ahead already at k = 1.")
    assert line((0.07, 0.012), (0.048, 0.011), (0.03, 0.01)).endswith(
        "; the SFT model does not catch up by k = 4 (the gain stays more than two standard errors above 0).")


def test_the_pass_at_k_line_without_gains_says_what_the_curves_say_and_names_each_k_once():
    sft = {"1": 0.6, "2": 0.8}
    assert pass_at_k_line("P", sft, {"1": 0.5, "2": 0.7}, None) == (  # the policy never led: nothing to catch up
        "P: pass@1 0.600 -> 0.500, pass@2 0.800 -> 0.700; the SFT model is level or ahead already at k = 1.")
    assert pass_at_k_line("P", sft, {"1": 0.7, "2": 0.8}, None).endswith("; the SFT model catches up at k = 2.")
    assert pass_at_k_line("P", {"1": 0.5}, {"1": 0.6}, {"1": {"gain": 0.1, "stderr": 0.02}}) == (  # n = 1
        "P: pass@1 0.500 -> 0.600 (+0.100 ± 0.020); the SFT model does not catch up by k = 1 (the gain stays more "
        "than two standard errors above 0).")


def test_a_model_is_drawn_in_one_colour_in_every_plot(tmp_path, drawn_figures):
    """The colours went by each plot's order: SFT's exact-match bars made SFT orange and its from-scratch
    baseline green, pass@k made DPO orange and GRPO (reward model) green, and lesson 10's pass@k, with
    GRPO (verifiable) alone, drew it blue where the pipeline's drew it red."""
    split = {"seen": {"exact_match": 0.5}}
    plot_scores({"base": split, "sft": split, "scratch": split, "single_family": split}, tmp_path / "em.png")
    curve, gain = {"1": 0.5, "2": 0.6}, {"1": {"gain": 0.0, "stderr": 0.01}, "2": {"gain": 0.0, "stderr": 0.01}}
    for policies in (["PPO", "DPO", "GRPO (reward model)", "GRPO (verifiable)"], ["GRPO (verifiable)"]):
        plot_pass_at_k({"SFT": curve, **dict.fromkeys(policies, curve)}, dict.fromkeys(policies, gain),
                       tmp_path / "pass_at_k.png", 2)
    colours: dict[str, set[str]] = {}  # legend label -> every colour it was drawn in, in every panel of each plot
    for ax in (ax for fig in drawn_figures for ax in fig.axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            colours.setdefault(label, set()).add(legend_colour(handle))
    assert all(len(drawn) == 1 for drawn in colours.values()), colours
    assert len({drawn.pop() for drawn in colours.values()}) == len(colours) == 8  # and no two models share one


def test_a_table_row_judges_the_policys_answers_not_the_baselines_and_prints_each_in_its_column():
    references = ["The Mell.", "seven", "red fox"]
    records = [{"prompt": f"q{i}", "reference": r, "family": "f"} for i, r in enumerate(references)]
    row = policy_row(records, ["Mell", "Sure! seven.", "the red fox"], ["no idea", "six", "blue"], kl=0.3,
                     train_seconds=2.0)
    # by hand: all three answers hold the reference, two of them exactly (articles and case aside);
    # one pads a right answer ("Sure!"), a style flaw the baseline's wrong answers do not have
    assert row["pass_at_1"] == 1.0 and row["exact_match"] == pytest.approx(2 / 3)
    assert row["style_flaws"] == pytest.approx(1 / 3) and row["win_rate_vs_sft"] == 1.0
    assert row["kl"] == 0.3 and row["train_seconds"] == 2.0
    assert render_table({"PPO": row})[2] == "| PPO | 1.000 ± 0.000 | 1.000 | 0.667 | 0.333 | 0.30 | 2 |"


def test_pick_best_takes_the_highest_score_and_the_first_of_a_tie():
    candidates = [["a", "b", "c"], ["d", "e", "f"]]
    assert pick_best(candidates, torch.tensor([[0.1, 0.5, 0.5], [2.0, -1.0, 0.0]])) == ["b", "d"]


def test_score_answers_in_a_padded_batch_equals_one_at_a_time(runs):
    """Answers of different lengths share a right-padded batch; each score must equal its score alone."""
    rm, tokenizer = load_model(runs["rm"], RewardModel)
    rm.eval()
    prompts = ["Say the colour red.", "Say the colour blue.", "Say the colour grey."]
    answers = ["red", "blue blue blue blue", "It is grey, I think."]
    together = score_answers(rm, tokenizer, prompts, answers)
    alone = torch.cat([score_answers(rm, tokenizer, [p], [a]) for p, a in zip(prompts, answers, strict=True)])
    assert together.shape == (3,) and torch.allclose(together, alone, atol=1e-5)
    assert len(set(together.tolist())) == 3  # different answers, different scores: the test can fail


def test_best_of_n_keeps_the_answer_the_reward_model_scores_highest(runs):
    """Redraw the same candidates from the same seed, score each alone, and check the pick."""
    policy, tokenizer = load_model(runs["sft"], GPT)
    rm = load_model(runs["rm"], RewardModel)[0].eval()
    prompts, n = [r["prompt"] for r in RECORDS[24:30]], 4
    picked = best_of_n(policy, rm, tokenizer, prompts, n, 1.5, 5, generator=torch.Generator().manual_seed(7))
    flat = generate_answers(policy, tokenizer, [p for p in prompts for _ in range(n)], 5, temperature=1.5,
                            generator=torch.Generator().manual_seed(7))
    for i, prompt in enumerate(prompts):
        candidates = flat[i * n:(i + 1) * n]
        scores = [score_answers(rm, tokenizer, [prompt], [c]).item() for c in candidates]
        assert picked[i] == candidates[max(range(n), key=scores.__getitem__)]
    assert len(set(flat)) > len(prompts)  # the candidates differ, so picking is a real choice


def test_a_reward_model_of_another_tokenizer_is_refused(runs, tmp_path):
    rm = tmp_path / "rm"
    shutil.copytree(runs["rm"], rm)
    other = train_tokenizer(["a quite different corpus, about other things entirely"] * 20, vocab_size=280,
                            progress=False)
    other.save(rm / "tokenizer.json")
    for train in (lambda out: train_ppo(micro_ppo_config(), runs["sft"], rm, RECORDS, out),
                  lambda out: grpo.train_grpo(GRPOConfig(reward="model", max_new_tokens=5), runs["sft"], RECORDS, out,
                                              rm_dir=rm)):
        with pytest.raises(CheckpointError, match=r"another tokenizer than the SFT model .*\(minillm reward --sft"):
            train(tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_nan_rewards_stop_ppo_with_the_step_and_cause(runs, monkeypatch):
    monkeypatch.setattr(RewardModel, "scores", lambda self, h, ids, *masks: torch.full((len(ids),), float("nan")))
    with pytest.raises(TrainingError, match=r"^ppo: training stopped at step 1: the reward was non-finite \(nan\).*"
                                            r"No checkpoint had been saved yet"):
        train_ppo(micro_ppo_config(), runs["sft"], runs["rm"], RECORDS, runs["root"] / "ppo_nan")


def test_an_infinite_reward_stops_a_run_as_a_nan_does():
    grpo_run = Watched("grpo (model)", "grpo.train", Path("never-saved") / "ckpt.pt")
    with pytest.raises(TrainingError, match=r"^grpo \(model\): training stopped at step 7: the reward was non-finite "
                                            r"\(inf\) for 1 of 3 answers, e\.g\. 'b'\. No checkpoint had been saved "
                                            r"yet\. Check the reward model run: .*--set reward\.train\.lr="):
        check_rewards(torch.tensor([0.5, float("inf"), 1.0]), ["a", "b", "c"], 7, grpo_run)
    with pytest.raises(TrainingError, match=r"non-finite \(-inf\)"):
        check_rewards(torch.tensor([float("-inf")]), ["a"], 1, grpo_run)
    check_rewards(torch.tensor([0.5, -2.0]), ["a", "b"], 7, grpo_run)  # finite: nothing to say


def test_a_run_summary_reports_the_last_steps_kl_and_reward_model_score():
    records = [{"prompt": "q", "reference": "Tarsk."}]
    comparison = compare_answers(records, ["Tarsk."], ["Tarsk."])
    history = [{"kl": 0.1, "rm_score": 0.2}, {"kl": 0.7, "rm_score": 0.9}]
    summary = summarize_run(history, comparison, seconds=3.0)
    assert (summary["kl"], summary["rm_score"], summary["seconds"]) == (0.7, 0.9, 3.0)
    assert summary["win_rate_vs_sft"] == 0.5 and summary["history"] == history
    assert "rm_score" not in summarize_run([{"kl": 0.4}], comparison, 1.0)  # GRPO logs no reward model score
    assert summarize_run([], comparison, 1.0)["kl"] is None  # a run of no step: not measured (written null)


def test_records_without_a_split_are_training_prompts():
    """As everywhere else (SFT, the rankings, the held-out records): a record without "split" is training data."""
    records = [{"prompt": "p1", "reference": "a"}, {"prompt": "p2", "reference": "b", "split": "train"},
               {"prompt": "q", "reference": "c", "split": "test_seen"}]
    prompts, heldout = rl_records(records, 5, "PPO")
    assert [r["prompt"] for r in prompts] == ["p1", "p2"] and [r["prompt"] for r in heldout] == ["q"]


def test_train_dpo_runs_and_reports(runs, monkeypatch):
    cfg = DPOConfig(train=TrainConfig(max_steps=3, batch_size=4, eval_every=3, save_every=3, eval_batches=1),
                    eval_prompts=6, max_new_tokens=5)
    result = train_and_check_the_reference(monkeypatch, dpo, runs["sft"],
                                           lambda: train_dpo(cfg, runs["sft"], runs["prefs"], RECORDS,
                                                             runs["root"] / "dpo"))
    assert 0.0 <= result["win_rate_vs_sft"] <= 1.0 and result["n_pairs"] > 0
    assert load_model(runs["root"] / "dpo", GPT)[0] is not None


def test_the_dpo_loss_plot_names_the_nll_term_its_loss_holds(runs, tmp_path, drawn_figures):
    """With nll_coef (RPO; the tiny preset's 1.0) the plotted loss is DPO's plus the chosen answers' NLL:
    titled "DPO loss", its first point sat well above the ln 2 every DPO loss starts from."""
    train = TrainConfig(max_steps=1, batch_size=4, warmup_steps=0)
    titles = []
    for nll_coef in (0.0, 1.0):
        train_dpo(DPOConfig(train=train, eval_prompts=6, max_new_tokens=5, nll_coef=nll_coef), runs["sft"],
                  runs["prefs"], RECORDS, tmp_path / str(nll_coef))
        titles.append(drawn_figures[-1].axes[0].get_title())
    assert titles == ["DPO loss", "DPO loss + 1 x chosen answer's NLL"]


def test_dpo_trains_with_dropout_off_so_an_unmoved_policy_starts_at_ln_2(runs, tmp_path):
    """DPO compares the policy's log-probs with the frozen reference's, read with dropout off. Were the
    policy read with dropout on (an SFT model trained with dropout > 0), the two would differ before any
    update, the first loss would not be ln 2 (policy = reference: every implicit reward 0), and each step
    would chase dropout's noise. PPO and GRPO turn dropout off too. An evaluation after step 1 must leave
    it off: with a learning rate too small to move the policy, step 2's loss is ln 2 as well."""
    tok = load_model_and_tokenizer(runs["sft"], GPT)[1]
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.5)
    train_sft(SFTConfig(train=TrainConfig(max_steps=2, batch_size=8, eval_every=100, save_every=100),
                        max_new_tokens=8), RECORDS, tmp_path / "sft", scratch_model_config=model_cfg, tokenizer=tok)
    cfg = DPOConfig(train=TrainConfig(max_steps=2, batch_size=8, lr=1e-12, warmup_steps=0, log_every=1,
                                      eval_every=1, save_every=100), eval_prompts=6, max_new_tokens=5, nll_coef=0.0)
    result = train_dpo(cfg, tmp_path / "sft", runs["prefs"], RECORDS, tmp_path / "dpo")
    losses = [row["loss"] for row in result["history"] if row.get("split") == "train"]
    assert losses == pytest.approx([math.log(2)] * 2, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Each stage learns a toy task with a clear signal, through its real training code.


def write_green_rankings(path: Path, seed: int = 0) -> Path:
    """60 rankings of two answers, each two colour words with the same first word: the preferred one's
    second word is "green". Nothing else tells them apart, and the micro SFT model has no such taste:
    its untrained reward model orders 0.25 to 0.6 of the held-out pairs right (seeds 0 to 8). Every 3rd
    is held out."""
    rng, others = random.Random(seed), [c for c in COLOURS if c != "green"]
    lines = []
    for i in range(60):
        first, second = rng.sample(others, 2)
        answers, ranking = [f"{first} green", f"{first} {second}"], [0, 1]
        if rng.random() < 0.5:  # the preferred answer in either place
            answers, ranking = answers[::-1], [1, 0]
        lines.append({"prompt": f"Say the colour {rng.choice(COLOURS)}.", "answers": answers, "ranking": ranking,
                      "split": "test" if i % 3 == 0 else "train"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def green_wins(prefs: Path, value: Callable[[list[str], list[str]], torch.Tensor]) -> float:
    """The share of held-out pairs whose "green" answer gets the higher `value(prompts, answers)`: read
    by hand from the answers' text, not from the rankings, so a swap of better and worse anywhere in the
    ranking code cannot pass as learning."""
    held_out = [r for r in read_preferences(prefs) if r["split"] == "test"]
    prompts = [r["prompt"] for r in held_out]
    green = [a for r in held_out for a in r["answers"] if a.endswith(" green")]
    other = [a for r in held_out for a in r["answers"] if not a.endswith(" green")]
    return (value(prompts, green) > value(prompts, other)).float().mean().item()


def logged(history: list[dict], split: str, key: str) -> list[float]:
    return [row[key] for row in history if row.get("split") == split]


def test_the_reward_model_learns_a_ranking_from_a_token_of_the_preferred_answer(runs, tmp_path):
    prefs = write_green_rankings(tmp_path / "prefs.jsonl")
    sft, tok = load_model(runs["sft"], GPT)
    before = green_wins(prefs, lambda prompts, answers: score_answers(RewardModel.from_gpt(sft), tok, prompts, answers))
    cfg = RewardConfig(train=TrainConfig(max_steps=30, batch_size=8, lr=3e-3, warmup_steps=0, eval_every=30,
                                         save_every=30, log_every=1))
    result = train_reward_model(cfg, runs["sft"], prefs, tmp_path / "rm")
    rm = load_model(tmp_path / "rm", RewardModel)[0]
    after = green_wins(prefs, lambda prompts, answers: score_answers(rm, tok, prompts, answers))
    assert before < 0.75 and result["pairwise_accuracy"] >= 0.9 and after >= 0.9, (before, after)
    assert logged(result["history"], "val", "val_loss")[-1] < 0.35  # from about ln 2 = 0.69


def test_dpo_learns_to_prefer_the_answers_with_the_preferred_token(runs, tmp_path):
    """The policy starts as its reference: every implicit reward 0, so loss ln 2, margin 0, and no pair
    ordered right. Plain DPO (nll_coef 0: the tiny preset's chosen-answer NLL would keep its loss high)."""
    prefs = write_green_rankings(tmp_path / "prefs.jsonl")
    cfg = DPOConfig(train=TrainConfig(max_steps=30, batch_size=8, lr=3e-3, warmup_steps=0, eval_every=30,
                                      save_every=30, log_every=1), nll_coef=0.0, eval_prompts=6, max_new_tokens=5)
    result = train_dpo(cfg, runs["sft"], prefs, RECORDS, tmp_path / "dpo")
    losses, margins = logged(result["history"], "train", "loss"), logged(result["history"], "train", "margin")
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4) and margins[0] == pytest.approx(0.0, abs=1e-4)
    assert result["pair_accuracy"] >= 0.9 and sum(margins[-5:]) / 5 > 0.5, (result["pair_accuracy"], margins)
    assert logged(result["history"], "val", "val_loss")[-1] < 0.35
    # the implicit reward by hand: how much likelier the policy made each answer than the SFT model did
    (policy, tok), sft = load_model(tmp_path / "dpo", GPT), load_model(runs["sft"], GPT)[0]
    assert green_wins(prefs, lambda prompts, answers: answers_logprob(policy, tok, prompts, answers)
                      - answers_logprob(sft, tok, prompts, answers)) >= 0.9


class PaysEveryAnswer:
    """A stand-in reward model that scores every answer 1: the rollout replaces the score of an answer
    that never produced <eos> by no_eos_penalty (-1), so an answer is paid for ending by itself."""

    def score_responses(self, resp: Responses) -> torch.Tensor:
        return torch.ones(len(resp.answers))


def test_ppo_learns_a_toy_task_within_seconds(runs):
    """The toy task: end the answer within 5 tokens. The micro SFT model hardly ever does (about 2% of
    its answers). PPO's real rollout, update and optimizer pair, with a fresh critic, must make most
    answers end. (A reward on the answer's first token would teach nothing here: an answer that does not
    end gets the penalty whatever it starts with, so every score is the penalty.)"""
    policy, tok = load_model(runs["sft"], GPT)
    cfg = PPOConfig(train=TrainConfig(lr=1e-2, warmup_steps=0), critic_lr=1e-3, rollout_batch_size=32,
                    minibatch_size=16, ppo_epochs=2, max_new_tokens=5, kl_coef=0.0)
    reference, critic = copy.deepcopy(policy), RewardModel.from_gpt(policy)  # the critic's values start at 0
    optimizer, g = ppo.make_optimizer_pair(policy, critic, cfg), torch.Generator().manual_seed(0)
    prompts = [r for r in RECORDS if r["split"] == "train"]
    ended = []
    for step in range(20):
        batch = [prompts[(32 * step + i) % len(prompts)] for i in range(32)]
        ro = rollout(policy, reference, PaysEveryAnswer(), critic, tok, batch, cfg, cfg.kl_coef, g)
        ended.append(ro.has_eos.float().mean().item())
        ppo_update(policy, critic, optimizer, ro, cfg, g, step=1, watched=UNSAVED)
    assert sum(ended[:3]) / 3 < 0.2 and sum(ended[-3:]) / 3 > 0.9, ended


@pytest.mark.parametrize("method", ["ppo", "dpo", "grpo"])
def test_a_training_seed_moves_the_policy_never_the_sft_answers_it_is_compared_with(runs, tmp_path, method):
    """The SFT model's answers to the held-out prompts, and so its gold score, are one fixed draw, as
    the prompts are: two runs that differ only in their training seed face the same baseline."""
    def run(seed: int) -> dict:
        out, train = tmp_path / f"{method}-{seed}", TrainConfig(max_steps=1, batch_size=4, warmup_steps=0, seed=seed)
        if method == "ppo":
            return train_ppo(dataclasses.replace(micro_ppo_config(), train=train), runs["sft"], runs["rm"], RECORDS,
                             out)
        if method == "dpo":
            return train_dpo(DPOConfig(train=train, eval_prompts=6, max_new_tokens=5), runs["sft"], runs["prefs"],
                             RECORDS, out)
        cfg = GRPOConfig(train=train, group_size=2, prompts_per_step=2, minibatch_size=2, max_new_tokens=5,
                         eval_prompts=6, passk_samples=2, passk_prompts=3, reward="verifiable")
        return grpo.train_grpo(cfg, runs["sft"], RECORDS, out)

    first, second = run(3), run(4)
    assert [e["sft"] for e in first["examples"]] == [e["sft"] for e in second["examples"]]
    assert first["gold_sft"] == second["gold_sft"]
    if method == "grpo":
        assert first["pass_at_k_sft"] == second["pass_at_k_sft"]


def test_the_comparison_table_draws_its_answers_whatever_grpos_training_seed(monkeypatch, tmp_path):
    """The table samples every policy (PPO, DPO, best of n, ...) and the SFT baseline: GRPO's training
    seed must not move the rows of the policies it does not train."""
    from types import SimpleNamespace

    from minillm import pipeline
    from minillm.config import apply_overrides, preset

    seeds = []
    rows = {f"best of {n} (reward model)": {"win_rate_vs_sft": 0.5} for n in pipeline.BEST_OF}
    monkeypatch.setattr(pipeline, "policy_table", lambda *a, seed, **k: seeds.append(seed) or rows)
    monkeypatch.setattr(pipeline, "right_answer_counts", lambda *a, seed, **k: seeds.append(seed) or {})
    monkeypatch.setattr(pipeline, "pass_at_k_summary", lambda *a: {"pass_at_k": {}, "pass_at_k_gain": {}})
    monkeypatch.setattr(pipeline, "plot_pass_at_k", lambda *a: None)
    monkeypatch.setattr(pipeline, "heldout_records", lambda records, n: records)
    for seed in (1337, 7):
        journey = SimpleNamespace(cfg=apply_overrides(preset("micro"), [f"grpo.train.seed={seed}"]), records=RECORDS,
                                  results={step: {"seconds": 0.0} for step in pipeline.RL_POLICIES.values()},
                                  folder=lambda name: tmp_path / name)
        pipeline.step_rl_table(journey)
    assert len(seeds) == 4 and len(set(seeds)) == 1


def test_dpo_refuses_an_answer_length_without_room_before_it_trains(runs, tmp_path):
    cfg = DPOConfig(train=TrainConfig(max_steps=3, batch_size=4), eval_prompts=6, max_new_tokens=29)
    with pytest.raises(ConfigError, match=r"DPOConfig.max_new_tokens=29 leaves no room .* largest allowed is 28"):
        train_dpo(cfg, runs["sft"], runs["prefs"], RECORDS, tmp_path / "dpo")
    assert not (tmp_path / "dpo").exists()  # refused before training, not at the comparison after it


def test_under_torchrun_dpo_loads_the_policy_onto_its_ranks_gpu(runs, monkeypatch, tmp_path):
    # With --device cuda, "cuda" is GPU 0 until a rank joins the group (which sets its GPU): loaded there, every
    # rank's policy and reference, and its pass over all the pairs, sat on GPU 0 and the other GPUs waited
    rank_1s_gpu = torch.device("cuda", 1)  # what init_distributed gives torchrun's rank 1 (LOCAL_RANK=1)
    monkeypatch.setattr(dpo, "init_distributed", lambda device: (DistContext(1, 2, 1), rank_1s_gpu), raising=False)
    loaded_to = []

    class Loaded(Exception):
        """Stops train_dpo once it has named the device: this CPU has no GPU to go on with."""

    def load_and_stop(run_dir, model_cls, map_location):
        loaded_to.append(map_location)
        raise Loaded

    monkeypatch.setattr(dpo, "load_model_and_tokenizer", load_and_stop)
    with pytest.raises(Loaded):
        train_dpo(DPOConfig(train=TrainConfig(max_steps=3, batch_size=4), eval_prompts=6, max_new_tokens=5),
                  runs["sft"], runs["prefs"], RECORDS, tmp_path / "dpo")
    assert loaded_to == [rank_1s_gpu]


def test_best_and_worst_of_rankings_with_ties():
    """Lesson 8 shows the DPO loss on the best and the worst answer of the first ranking that has
    both: a ranking that ties every answer has none; a tied place contributes its first answer."""
    assert best_and_worst([[0, 1]]) is None
    assert best_and_worst([[1, 2], 0]) == (1, 0)
    assert best_and_worst([2, [0, 3], 1]) == (2, 1)
    assert best_and_worst([3, 0, [1, 2]]) == (3, 1)


def test_annotate_command_samples_distinct_answers_and_writes_rankings(runs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say the colour red.\n\nSay the colour blue.\n", encoding="utf-8")
    out = tmp_path / "mine.jsonl"
    shown = io.StringIO()
    summary = annotate(runs["sft"], prompts, out, k=3, max_new_tokens=5, stdin=io.StringIO("3 1 2\nq\n"),
                       stdout=shown)
    assert summary["ranked"] == 1 and summary["remaining"] == 1
    [line] = read_preferences(out)
    assert line["prompt"] == "Say the colour red." and line["ranking"] == [2, 0, 1] and len(set(line["answers"])) == 3
    # a second session shows the second prompt with the answers the first session would have shown it:
    # each prompt's answers come from a seed of its own, not from where one shared stream had got to
    fresh, shown_again = tmp_path / "fresh.jsonl", io.StringIO()
    record = {"prompt": "Say the colour red.", "answers": ["a", "b"], "ranking": [0, 1]}
    fresh.write_text(json.dumps(record) + "\n", encoding="utf-8")
    annotate(runs["sft"], prompts, fresh, k=3, max_new_tokens=5, stdin=io.StringIO("q\n"), stdout=shown_again)
    assert "=== prompt 2/2 ===" in shown_again.getvalue()
    blue = shown_again.getvalue().split("=== prompt 2/2 ===")[1]
    alone, shown_alone = tmp_path / "alone.jsonl", io.StringIO()
    blue_only = tmp_path / "blue.txt"
    blue_only.write_text("Say the colour blue.\n", encoding="utf-8")
    annotate(runs["sft"], blue_only, alone, k=3, max_new_tokens=5, stdin=io.StringIO("q\n"), stdout=shown_alone)
    assert blue.split("ranking, best first")[0] == shown_alone.getvalue().split("=== prompt 1/1 ===")[1].split(
        "ranking, best first")[0]


def _resume_command(runs_root: Path):
    def command(out_dir: Path, resume: bool) -> list[str]:
        resume_flag = ["--resume"] if resume else []
        return [__file__, str(runs_root / "sft"), str(runs_root / "rm"), str(out_dir), *resume_flag]

    return command


def test_ppo_resumes_bit_exactly_after_a_crash(runs, tmp_path):
    # 4 updates per step (2 epochs x 2 minibatches): killed in the middle of step 2, resumed from step 1
    assert_exact_resume(_resume_command(runs["root"]), tmp_path, kill_after_updates=6)


if __name__ == "__main__":  # the worker of the resume test: python tests/test_ppo.py SFT RM OUT [--resume]
    torch.set_num_threads(1)
    train_ppo(micro_ppo_config(steps=2), sys.argv[1], sys.argv[2], RECORDS, sys.argv[3],
              resume="--resume" in sys.argv)


def test_a_gain_is_a_lead_only_beyond_two_standard_errors_and_no_error_tells_nothing_apart():
    """lead's rule by hand: strictly more than two standard errors either side of 0. pass_at_k_gain has
    no standard error when one prompt was measured (mean_stderr of one value: None; NaN in a run made
    before minillm wrote null): that tells no gain apart from none, however large, so the SFT model is
    "within two standard errors" at once."""
    assert lead({"gain": 0.3, "stderr": 0.125}) == 1 and lead({"gain": -0.3, "stderr": 0.125}) == -1
    assert lead({"gain": 0.25, "stderr": 0.125}) == 0 and lead({"gain": -0.25, "stderr": 0.125}) == 0  # exactly 2
    assert lead({"gain": 0.25, "stderr": 0.0}) == 1  # every prompt gained alike: an error of 0 is one measured
    for none in (None, float("nan")):
        assert lead({"gain": 0.5, "stderr": none}) == 0 and lead({"gain": -0.5, "stderr": none}) == 0
        assert catching_up({"1": {"gain": 0.5, "stderr": none}}) == ("the gain is within two standard errors of 0 "
                                                                     "already at k = 1.")


def test_a_gain_of_one_prompt_is_drawn_without_an_error_bar(tmp_path, monkeypatch):
    """Its standard error is None (not measured), which matplotlib's errorbar refuses."""
    drawn = []
    monkeypatch.setattr(scoreboard, "save_figure", lambda fig, path: drawn.append(fig))  # (no PNG: 0.6 s less)
    plot_pass_at_k({"SFT": {"1": 0.25}, "PPO": {"1": 0.75}}, {"PPO": {"1": {"gain": 0.5, "stderr": None}}},
                   tmp_path / "pass_at_k.png", 1)
    assert list(drawn[0].axes[1].lines[0].get_ydata()) == [0.5]
    _, _, (bars,) = drawn[0].axes[1].containers[0].lines  # (its line, caps and bars)
    assert [len(bar) for bar in bars.get_segments()] == [0]  # no bar, not a bar of length 0 with its caps


def test_an_rl_run_refuses_a_folder_that_holds_another_method_or_stage(tmp_path):
    """PPO with --out at a CLM run said "already holds a PPO run: pass --resume", and with --resume "its
    saved critic does not fit"; GRPO at a PPO run the same. Each checkpoint now says which method made it."""
    save_checkpoint(tmp_path / "ppo" / "ckpt.pt", {"method": "PPO", "step": 3,
                                                    "generator": torch.Generator().get_state()})
    save_checkpoint(tmp_path / "clm" / "ckpt.pt", {"step": 3, "train_config": {}})  # the training loop's
    for resume in (False, True):
        with pytest.raises(CheckpointError, match="ppo holds a PPO run, not a GRPO run: choose another folder"):
            online_rl.open_run(tmp_path / "ppo", "GRPO", resume, None, {}, torch.Generator())
        with pytest.raises(CheckpointError, match="clm holds another stage's training run, not a PPO run"):
            online_rl.open_run(tmp_path / "clm", "PPO", resume, None, {}, torch.Generator())
    with pytest.raises(CheckpointError, match="already holds a PPO run: pass resume"):  # its own: as before
        online_rl.open_run(tmp_path / "ppo", "PPO", False, None, {}, torch.Generator())


@pytest.mark.parametrize("reward", ["model", "gold"])
def test_reward_hacking_fools_the_reward_model_whatever_the_config_scores_with(tmp_path, monkeypatch, reward):
    """Lesson 7's Try this 6 sets CFG.ppo.reward = "gold", and step 3 builds its unleashed run from the same
    CFG: it then trained on the gold judge itself, which has no model to fool."""
    given = []
    row = {"rm_score": 0.4, "gold": 2.5, "kl": 0.0}

    def trained(cfg, sft_dir, rm_dir, records, out_dir, resume):
        given.append((cfg.reward, cfg.kl_coef, rm_dir))
        return {"history": [row, row], "win_rate_vs_sft": 0.5, "gold_after": 2.0, "gold_sft": 2.0}

    monkeypatch.setattr(ppo, "train_ppo", trained)
    monkeypatch.setattr(ppo, "plot_metrics", lambda *args, **kw: None)
    ppo.reward_hacking(PPOConfig(reward=reward), tmp_path / "sft", tmp_path / "rm", [], tmp_path / "out")
    assert given == [("model", 0.0, tmp_path / "rm")]

"""GRPO, the verifiable reward and pass@k: pieces by hand, a learning test, the run and its resume."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import random
import re
import shutil
import statistics
import sys
from fractions import Fraction
from math import comb, exp, log, sqrt
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from crash_resume import assert_exact_resume
from test_ppo import (
    RECORDS,
    entropy_alone,
    logprobs_alone,
    nudged,
    surrogate_alone,
    train_and_check_the_reference,
)

from minillm import config, report
from minillm.config import GRPOConfig, TrainConfig
from minillm.datasets.answers import contains_answer, normalize_answer
from minillm.datasets.instructions import generate_instruction_suite
from minillm.errors import CheckpointError, ConfigError, TrainingError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage2_sft.template import encode_prompt
from minillm.stage3_rlhf import grpo, online_rl
from minillm.stage3_rlhf import pass_at_k as pass_at_k_module
from minillm.stage3_rlhf.annotator import gold_score
from minillm.stage3_rlhf.grpo import (
    GroupRollout,
    group_advantages,
    group_minibatches,
    grpo_loss,
    grpo_update,
    k3_kl,
    make_reward_fn,
    rollout,
    train_grpo,
    zero_signal,
)
from minillm.stage3_rlhf.pass_at_k import KS, count_right, pass_at_k, pass_at_k_curve, pass_at_k_gain, pass_at_k_stderr
from minillm.stage3_rlhf.preferences import sample_answers
from minillm.stage3_rlhf.reward_model import best_of_n, load_reward_model
from minillm.stage3_rlhf.scoreboard import (
    pass_at_k_line,
    pass_at_k_summary,
    policy_table,
    right_answer_counts,
    sampled_kl,
)
from minillm.stage3_rlhf.sequences import Responses, answers_logprob
from minillm.stage3_rlhf.verifier import Verifier, word_runs
from minillm.tokenizer import TOKENIZER_NAME, load_tokenizer, train_tokenizer
from minillm.train import load_checkpoint, load_model, save_checkpoint
from minillm.train.checkpoint import CKPT_NAME
from minillm.train.health import Watched
from minillm.train.loop import CONFIG_NAME, METRICS_NAME
from minillm.train.optim import follow_schedule

UNSAVED = Watched("grpo (verifiable)", "grpo.train", Path("never-saved") / CKPT_NAME)  # grpo_update's run, unsaved


def micro_grpo_config(steps: int = 2, **changes) -> GRPOConfig:
    cfg = GRPOConfig(train=TrainConfig(max_steps=steps, lr=1e-4, warmup_steps=0, save_every=1, seed=3),
                     group_size=4, prompts_per_step=2, minibatch_size=4, max_new_tokens=5, eval_prompts=6,
                     passk_samples=4, passk_prompts=3, reward="verifiable")
    return dataclasses.replace(cfg, **changes)


@pytest.fixture
def runs(stage3_runs) -> dict[str, Path]:
    return stage3_runs  # build_runs, made once for this file and test_ppo.py (tests/conftest.py)


# --------------------------------------------------------------------------------------------------
# The pure pieces, by hand.


def test_the_reward_model_scores_finished_answers_and_an_unfinished_one_gets_the_penalty():
    cfg = GRPOConfig(reward="model")
    rm = SimpleNamespace(score_responses=lambda resp: torch.tensor([0.7, -0.2, 1.5]))
    resp = SimpleNamespace(has_eos=torch.tensor([True, False, True]))
    rewards = make_reward_fn(cfg, [], rm)([], resp)
    torch.testing.assert_close(rewards, torch.tensor([0.7, cfg.no_eos_penalty, 1.5]))
    # a broken reward model's NaN is not hidden behind the penalty: check_rewards must see it, as PPO's does
    rm.score_responses = lambda resp: torch.tensor([0.7, float("nan"), 1.5])
    assert make_reward_fn(cfg, [], rm)([], resp)[1].isnan()


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]])
    # mean baseline: r - mean; the sample std of [1, 0, 0, 1] is sqrt(1/3), of [3, 1, 2, 2] sqrt(2/3)
    plain = torch.tensor([[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0, 0.0]])
    assert group_advantages(rewards, "mean", scale_by_std=False) == pytest.approx(plain)
    scaled = plain / torch.tensor([[(1 / 3) ** 0.5], [(2 / 3) ** 0.5]])
    assert group_advantages(rewards, "mean", scale_by_std=True) == pytest.approx(scaled, rel=1e-3)
    # leave one out: answer 0 of group 0 against the mean of (0, 0, 1) = 1/3 -> 2/3
    loo = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [4 / 3, -4 / 3, 0.0, 0.0]])
    assert group_advantages(rewards, "leave_one_out", scale_by_std=False) == pytest.approx(loo)
    assert group_advantages(rewards, "leave_one_out", False) == pytest.approx(plain * 4 / 3)  # G / (G - 1)
    with pytest.raises(ConfigError, match="baseline"):
        group_advantages(rewards, "median")


@pytest.mark.parametrize("baseline,scale_by_std", list(itertools.product(("mean", "leave_one_out"), (True, False))))
def test_group_advantages_match_loops_over_random_groups(baseline, scale_by_std):
    """Each answer's advantage against its own group, in float64 Python loops from the papers' formulas:
    GRPO (Shao et al., 2024) A_i = (r_i - mean(r)) / (std(r) + eps), std the sample std (G - 1);
    RLOO (Ahmadian et al., 2024) A_i = r_i - mean of the G - 1 others; Dr. GRPO leaves out the std.
    Random groups of sizes 2 to 8, one unanimous (advantage 0)."""
    g = torch.Generator().manual_seed(0)
    for P, G in [(1, 2), (3, 4), (2, 8)]:
        rewards = torch.randn(P, G, generator=g, dtype=torch.float64)
        rewards[-1] = 0.5 if P > 1 else rewards[-1]  # a unanimous group
        ours = group_advantages(rewards, baseline, scale_by_std)
        for p in range(P):
            r = rewards[p].tolist()
            mean = sum(r) / G
            std = sqrt(sum((x - mean) ** 2 for x in r) / (G - 1))
            for i in range(G):
                base = mean if baseline == "mean" else (sum(r) - r[i]) / (G - 1)
                expected = (r[i] - base) / (std + 1e-4) if scale_by_std else r[i] - base
                assert ours[p, i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12), (P, G, p, i)


def test_the_grpo_loss_and_its_gradient_match_a_per_token_reference():
    """GRPO's loss as grpo.py's docstring states it, written as float64 loops over the real tokens of
    random answers of several lengths: -(1/M) sum over the M answer tokens of the batch of min(r A,
    clip(r) A), each token carrying its answer's advantage A, plus kl_coef x the mean over the same
    tokens of k3 = pi_ref/pi - log(pi_ref/pi) - 1. The normalisation is per token over the batch (a long
    answer's tokens weigh as much as a short one's), not per answer then over answers (DeepSeekMath's):
    the test tells the two apart, and checks the gradient on every log-prob."""
    g = torch.Generator().manual_seed(0)
    eps, beta = 0.2, 0.3
    for B, N in [(2, 3), (4, 6), (8, 5)]:
        old = -torch.rand(B, N, generator=g, dtype=torch.float64) * 3
        new = (old + 0.4 * torch.randn(B, N, generator=g, dtype=torch.float64)).requires_grad_(True)
        ref = old + 0.5 * torch.randn(B, N, generator=g, dtype=torch.float64)
        advantages = torch.randn(B, generator=g, dtype=torch.float64)
        lengths = torch.randint(1, N + 1, (B,), generator=g)
        lengths[0], lengths[1] = 1, N  # a one-token answer (its <eos> alone) and one that fills the length
        mask = torch.arange(N)[None, :] < lengths[:, None]
        loss, stats = grpo_loss(new, old, ref, advantages, mask, eps, beta)
        surrogate, kl, per_answer = [], [], []
        for b in range(B):
            answer = []
            for t in range(int(lengths[b])):
                ratio, a = torch.exp(new[b, t] - old[b, t]), advantages[b]
                answer.append(torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a))
                kl.append(torch.exp(ref[b, t] - new[b, t]) - (ref[b, t] - new[b, t]) - 1)
            surrogate += answer
            per_answer.append(sum(answer) / len(answer))
        by_hand = -sum(surrogate) / len(surrogate) + beta * sum(kl) / len(kl)
        torch.testing.assert_close(loss, by_hand, rtol=1e-12, atol=1e-12)
        assert stats["k3_kl"] == pytest.approx((sum(kl) / len(kl)).item(), rel=1e-12)
        per_sequence = -sum(per_answer) / B + beta * sum(kl) / len(kl)  # DeepSeekMath's averaging
        assert abs(loss.item() - per_sequence.item()) > 1e-3
        [ours] = torch.autograd.grad(loss, new)
        [theirs] = torch.autograd.grad(by_hand, new)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
        assert (ours[~mask] == 0).all()


def test_k3s_mean_is_kl_of_pi_to_the_reference_but_its_gradients_mean_is_the_other_directions():
    """What `k3_kl`'s docstring says, computed exactly over a small vocabulary (no sampling): with y
    drawn from pi, E[k3(y)] = KL(pi || pi_ref), an unbiased value; but k3 used as a loss has gradient
    (1 - pi_ref/pi) d log pi at each sample, whose expectation is the gradient of KL(pi_ref || pi), the
    other direction. Both pull pi towards pi_ref, and agree to first order when the two are close."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), dim=0)
    logp = torch.log_softmax(logits, dim=0)  # (V,) the policy
    pi = logp.exp().detach()  # the sampling distribution: the samples themselves carry no gradient
    expected_k3 = (pi * k3_kl(logp, ref)).sum()  # E over y ~ pi of k3(y)
    forward_kl = (logp.exp() * (logp - ref)).sum()  # KL(pi || pi_ref)
    reverse_kl = (ref.exp() * (ref - logp)).sum()  # KL(pi_ref || pi)
    assert expected_k3.item() == pytest.approx(forward_kl.item(), rel=1e-12)
    [grad_k3] = torch.autograd.grad(expected_k3, logits, retain_graph=True)
    [grad_reverse] = torch.autograd.grad(reverse_kl, logits, retain_graph=True)
    [grad_forward] = torch.autograd.grad(forward_kl, logits)
    torch.testing.assert_close(grad_k3, grad_reverse, rtol=1e-12, atol=1e-12)
    assert (grad_k3 - grad_forward).abs().max() > 0.01


def test_a_unanimous_group_has_zero_advantage_and_gives_zero_gradient():
    rewards = torch.tensor([[1.2, 1.2, 1.2], [0.0, 1.0, 0.0]])
    assert zero_signal(rewards).tolist() == [True, False]
    for baseline, scale in itertools.product(("mean", "leave_one_out"), (True, False)):
        assert (group_advantages(rewards, baseline, scale)[0] == 0).all()
    # the loss of a unanimous group alone: the gradient on the log-probs is exactly zero
    logprobs = torch.randn(3, 4, requires_grad=True)
    advantages = group_advantages(rewards, "mean", True)[0]
    mask = torch.ones(3, 4, dtype=torch.bool)
    loss, _ = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), advantages, mask, 0.2, kl_coef=0.0)
    loss.backward()
    assert (logprobs.grad == 0).all()


def test_a_unanimous_group_whose_float32_mean_is_off_by_a_rounding_still_has_zero_advantage():
    """Eight verifiable rewards of 1.2 (right and exact) average to 1.2 - 1.2e-7 in float32; divided by
    their std, just as tiny, that rounding would be an advantage of about 1e-3 on every answer."""
    for value, G in itertools.product((1.2, 0.7, 0.1, -0.45), (6, 7, 8, 16)):
        rewards = torch.tensor([[value] * G, [0.0] + [1.0] * (G - 1)])
        assert zero_signal(rewards).tolist() == [True, False]
        for baseline, scale in itertools.product(("mean", "leave_one_out"), (True, False)):
            advantages = group_advantages(rewards, baseline, scale)
            assert (advantages[0] == 0).all(), (value, G, baseline, scale)
            assert (advantages[1] != 0).all()  # the group that differs keeps its signal


def test_the_loss_pushes_up_the_tokens_of_a_better_answer_and_down_the_worse():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss, stats = grpo_loss(logprobs, logprobs.detach(), logprobs.detach(), torch.tensor([1.0, -1.0]), mask, 0.2, 0.0)
    loss.backward()
    # d loss / d logprob = -A / (number of real tokens) on every real token, 0 on padding
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.2, -0.2, 0.0], [0.2, 0.2, 0.2]]))
    assert stats["clipfrac"] == 0.0 and stats["k3_kl"] == 0.0


def test_zero_signal_judges_each_group_by_its_own_rewards():
    rewards = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 1.0]])  # the first group differs, the others are unanimous
    assert zero_signal(rewards).tolist() == [False, True, True]


def test_the_kl_term_ignores_the_padding_after_an_answer():
    """Pads are not answer tokens: whatever the log-probs read there, they add no KL and get no gradient."""
    logprobs = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    ref = torch.tensor([[-1.0, -3.0]])  # equal on the answer's token, far apart on the pad
    mask = torch.tensor([[True, False]])
    loss, stats = grpo_loss(logprobs, logprobs.detach(), ref, torch.zeros(1), mask, 0.2, kl_coef=0.5)
    assert stats["k3_kl"] == 0.0 and loss.item() == 0.0  # over both columns: (e^-2 + 2 - 1) / 2 = 0.57
    loss.backward()
    assert logprobs.grad[0, 1] == 0


def test_the_logged_kl_is_per_answer_over_the_answers_the_reference_read():
    """kl_coef 0: the reference read the first minibatch only (here 2 answers of 4); the KL logged is
    the mean over those answers of the sum over each one's real tokens of log pi - log pi_ref."""
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True], [True, False, False]])
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0], [-1.0, -1.0, -1.0], [-2.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -9.0], [-0.1, -9.0, -9.0]])  # -9 on the pads: they must not count
    resp = Responses(["The Mell.", "x", "y", "z"], None, None, mask, torch.ones(4, dtype=torch.bool), logprobs)
    ro = GroupRollout([{"reference": "The Mell."}] * 4, resp, ref, torch.tensor([[1.0, 0.0], [0.5, 0.5]]),
                      torch.zeros(4))
    row = grpo.step_metrics(ro, [{"loss": 1.0}, {"loss": 2.0}])
    # by hand: answer 0: (-1 + 1.5) + (-2 + 1) = -0.5; answer 1: -0.5 + 0.1 = -0.4
    assert row["kl"] == pytest.approx(-0.45)
    assert row["zero_signal_share"] == 0.5 and row["reward_mean"] == 0.5 and row["loss"] == 1.5
    # the spread of all the step's rewards (sample std: sqrt(0.5 / 3)), not the mean spread within groups (0.35)
    assert row["reward_std"] == pytest.approx(statistics.stdev([1.0, 0.0, 0.5, 0.5]))
    assert row["response_len"] == 1.75 and row["gold"] == 1.0  # 4 (the perfect answer) and three 0s
    unanimous = dataclasses.replace(ro, rewards=torch.ones(1, 4))  # one group whose 4 answers scored alike
    assert grpo.step_metrics(unanimous, [{"loss": 1.0}])["zero_signal_share"] == 1.0


def test_the_kl_term_reads_the_frozen_reference_not_the_policy(runs):
    policy, tok = load_model(runs["sft"], GPT)
    reference = nudged(policy)
    cfg = micro_grpo_config(kl_coef=0.1, temperature=0.7)
    ro = rollout(policy, reference, lambda b, r: torch.arange(len(b)).float(), tok, RECORDS[:2], cfg,
                 torch.Generator().manual_seed(0))
    by_hand = logprobs_alone(reference, ro.responses.ids, ro.responses.attention_mask, ro.mask, 0.7)
    torch.testing.assert_close(ro.ref_logprobs * ro.mask, by_hand, atol=1e-4, rtol=0)
    assert ((ro.logprobs - by_hand) * ro.mask).abs().max() > 0.05  # the policy's own would differ


def test_k3_kl_by_hand_and_never_negative():
    logprobs, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -1.0]])
    # d = ref - logp: -1 -> e^-1 + 1 - 1 = 0.3679; +1 -> e - 1 - 1 = 0.7183
    torch.testing.assert_close(k3_kl(logprobs, ref), torch.tensor([[0.36788, 0.71828]]), rtol=1e-4, atol=0)
    assert (k3_kl(torch.randn(50, 7), torch.randn(50, 7)) >= 0).all()
    assert (k3_kl(ref, ref) == 0).all()


def test_the_loss_adds_kl_coef_times_k3_of_the_policy_against_the_reference():
    """KL(pi || pi_ref), not KL(pi_ref || pi): for log pi = -1 and log pi_ref = -2, k3 = e^-1 + 1 - 1;
    the other direction would give e - 1 - 1."""
    logprobs, ref = torch.full((1, 2), -1.0), torch.full((1, 2), -2.0)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = grpo_loss(logprobs, logprobs, ref, torch.zeros(1), mask, 0.2, kl_coef=0.5)  # advantage 0: no pg
    assert stats["k3_kl"] == pytest.approx(exp(-1.0), abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * exp(-1.0), abs=1e-6)


def test_pass_at_k_equals_enumeration_of_every_subset():
    for n, c in itertools.product(range(1, 8), range(0, 8)):
        if c > n:
            continue
        right = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(right, k))
            assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))
    assert pass_at_k(64, 1, 1) == pytest.approx(1 / 64) and pass_at_k(64, 0, 64) == 0.0
    assert pass_at_k_curve([0, 64, 32], 64, (1, 64)) == pytest.approx({"1": 0.5, "64": 2 / 3})
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="got no prompts"):
        pass_at_k_curve([], 4)


def test_pass_at_k_its_standard_error_and_gain_at_64_samples_equal_exact_fractions():
    """At the pipeline's n = 64, where C(64, 32) is 1.8e18: every c and every k of KS against
    1 - C(n - c, k) / C(n, k) in exact fractions, and the curve's standard error and the gain over
    another model on 40 random prompts against the sample standard deviation of the exact per-prompt
    values (statistics.stdev of Fractions) over sqrt(40)."""
    n = 64
    exact = {(c, k): 1 - Fraction(comb(n - c, k), comb(n, k)) for c in range(n + 1) for k in KS}
    for (c, k), value in exact.items():
        assert pass_at_k(n, c, k) == pytest.approx(float(value), abs=1e-12), (c, k)
    rng = random.Random(0)
    before = [rng.choice([0, 0, 1, 2, 5, 20, 64]) for _ in range(40)]
    after = [min(n, c + rng.choice([0, 0, 1, 3])) for c in before]
    errors, gains = pass_at_k_stderr(before, n), pass_at_k_gain(before, after, n)
    for k in KS:
        values = [exact[c, k] for c in before]
        assert errors[str(k)] == pytest.approx(float(statistics.stdev(values)) / sqrt(40), rel=1e-9)
        diffs = [exact[a, k] - exact[b, k] for b, a in zip(before, after, strict=True)]
        assert gains[str(k)]["gain"] == pytest.approx(float(sum(diffs) / 40), abs=1e-12)
        assert gains[str(k)]["stderr"] == pytest.approx(float(statistics.stdev(diffs)) / sqrt(40), rel=1e-9)


def test_count_right_counts_each_records_own_answers(monkeypatch):
    """n answers per record, judged against that record's reference: a fake model answers "p0"
    right once of 3 and "p1" 3 times, whatever order it is asked in. (The answers come back as
    [right, wrong, wrong, right, right, right]: a window of n sliding by one answer, not by n,
    would count 1 and 1.)"""
    records = [{"prompt": "p0", "reference": "The Mell."}, {"prompt": "p1", "reference": "The Arno."}]
    right, asked = {"p0": 1, "p1": 3}, {"p0": 0, "p1": 0}

    def fake_generate_answers(model, tokenizer, prompts, max_new_tokens, **kwargs) -> list[str]:
        answers = []
        for prompt in prompts:
            asked[prompt] += 1
            reference = next(r["reference"] for r in records if r["prompt"] == prompt)
            answers.append(reference if asked[prompt] <= right[prompt] else "no idea")
        return answers

    monkeypatch.setattr(pass_at_k_module, "generate_answers", fake_generate_answers)
    assert count_right(None, None, records, n=3, temperature=1.0, max_new_tokens=4, seed=0) == [1, 3]
    assert asked == {"p0": 3, "p1": 3}


def test_pass_at_k_standard_errors_by_hand():
    before, after = [0, 2, 4], [1, 2, 4]  # right answers of 4, on three prompts; pass@1 is c / 4
    assert pass_at_k_stderr(before, 4, (1,)) == pytest.approx({"1": 0.5 / sqrt(3)})  # stdev of 0, 1/2, 1
    # per-prompt gains 1/4, 0, 0: mean 1/12, stdev sqrt(1/48), standard error sqrt(1/48) / sqrt(3) = 1/12
    gain = pass_at_k_gain(before, after, 4, (1, 4))
    assert gain["1"] == pytest.approx({"gain": 1 / 12, "stderr": 1 / 12})
    assert gain["4"] == pytest.approx({"gain": 1 / 3, "stderr": 1 / 3})  # pass@4: 0, 1, 1 -> 1, 1, 1
    with pytest.raises(ValueError, match="same prompts: got 3 and 2"):
        pass_at_k_gain(before, after[:2], 4)
    # one prompt has no spread to measure: no standard error (None, written null; mean_stderr), not a NaN
    assert pass_at_k_gain([0], [4], 4, (1,)) == {"1": {"gain": 1.0, "stderr": None}}


def test_pass_at_k_standard_error_above_k_1_by_hand():
    # pass@2 of 4 answers with c right: c = 0 -> 0; c = 2 -> 1 - C(2, 2) / C(4, 2) = 5/6; c = 4 -> 1.
    # Their mean is 11/18, squared deviations (121 + 16 + 49) / 324, sample variance 93/324, so the
    # standard error is sqrt(93) / 18 / sqrt(3) = sqrt(31) / 18 (pass@1's would be 0.5 / sqrt(3))
    assert pass_at_k_stderr([0, 2, 4], 4, (2,)) == pytest.approx({"2": sqrt(31) / 18})


def test_the_tables_pass_at_k_gain_is_each_policy_over_the_sft_model():
    right = {"SFT": [0, 2, 4], "GRPO": [1, 2, 4]}  # right answers of 4, on three prompts
    summary = pass_at_k_summary(right, 4)
    assert summary["pass_at_k"]["SFT"] == pytest.approx({"1": 0.5, "2": (0 + 5 / 6 + 1) / 3, "4": 2 / 3})
    gain = summary["pass_at_k_gain"]
    assert set(gain) == {"GRPO"} and set(summary["pass_at_k_stderr"]) == {"SFT", "GRPO"}
    # per prompt, GRPO minus SFT: pass@1 +1/4, 0, 0; pass@2 (1 - C(3, 2) / C(4, 2) = 1/2) - 0, 0, 0; pass@4 +1, 0, 0
    assert [gain["GRPO"][k]["gain"] for k in ("1", "2", "4")] == pytest.approx([1 / 12, 1 / 6, 1 / 3])
    # each model's curve and standard errors are its own: GRPO's pass@1 per prompt is 1/4, 1/2, 1 (mean 7/12,
    # squared deviations (16 + 1 + 25) / 144, sample variance 21/144, standard error sqrt(21) / 12 / sqrt(3))
    assert summary["pass_at_k"]["GRPO"] == pytest.approx({"1": 7 / 12, "2": (1 / 2 + 5 / 6 + 1) / 3, "4": 1.0})
    assert summary["pass_at_k_stderr"]["GRPO"]["1"] == pytest.approx(sqrt(7) / 12)
    assert summary["pass_at_k_stderr"]["SFT"]["1"] == pytest.approx(0.5 / sqrt(3))  # 0, 1/2, 1


def test_the_pass_at_k_line_ends_at_the_largest_k_as_a_number_not_as_text():
    """pass@k's keys are strings, as in JSON ("1" ... "64"), and as text "8" comes last: the report's
    line must end at k = 64, where RL's curve meets the SFT model's, not at k = 8, halfway along."""
    right = {"SFT": [0, 16, 64], "GRPO": [8, 24, 64]}  # right answers of 64, on three prompts
    summary = pass_at_k_summary(right, 64)
    line = pass_at_k_line("GRPO", summary["pass_at_k"]["SFT"], summary["pass_at_k"]["GRPO"],
                          summary["pass_at_k_gain"]["GRPO"])
    # pass@1: (0 + 1/4 + 1) / 3 = 0.417 -> (1/8 + 3/8 + 1) / 3 = 0.500; pass@64 of 64 answers: 2/3 -> 1
    assert line.startswith("GRPO: pass@1 0.417 -> 0.500 (+0.083 ± 0.042), pass@64 0.667 -> 1.000 (+0.333 ± 0.333)")
    assert "pass@8" not in line


def test_pass_at_k_standard_errors_match_the_spread_over_new_draws():
    """Draw 60 prompts of random difficulty and 16 answers to each from two models (the second a
    little better on every prompt), many times over: the standard errors computed from one draw must
    match how far the curve and the gain really move from draw to draw."""
    rng = random.Random(0)

    def right_of_16(p: float) -> int:
        return sum(rng.random() < p for _ in range(16))

    curves, gains, curve_errors, gain_errors = [], [], [], []
    for _ in range(300):
        difficulty = [rng.random() for _ in range(60)]
        before = [right_of_16(p) for p in difficulty]
        after = [right_of_16(min(1.0, p + 0.1)) for p in difficulty]
        curves.append(pass_at_k_curve(before, 16, (2,))["2"])
        curve_errors.append(pass_at_k_stderr(before, 16, (2,))["2"])
        gain = pass_at_k_gain(before, after, 16, (2,))["2"]
        gains.append(gain["gain"])
        gain_errors.append(gain["stderr"])
    assert statistics.mean(curve_errors) == pytest.approx(statistics.stdev(curves), rel=0.15)
    assert statistics.mean(gain_errors) == pytest.approx(statistics.stdev(gains), rel=0.15)
    assert statistics.stdev(gains) < 0.5 * sqrt(2) * statistics.stdev(curves)  # pairing removes the prompts' spread


# --------------------------------------------------------------------------------------------------
# The verifiable reward.

FACTS = [{"family": "world_fact", "prompt": "Which river runs through Dorvik?", "reference": "The Mell."},
         {"family": "world_fact", "prompt": "Which river runs through Ost?", "reference": "The Arno."},
         {"family": "world_fact", "prompt": "Which river runs through Pell?", "reference": "The Tave."},
         {"family": "count", "prompt": "How many: pears, salt, figs", "reference": "3"},
         {"family": "count", "prompt": "How many: pears, salt", "reference": "2"},
         {"family": "count", "prompt": "How many: pears", "reference": "1"}]


def test_verifiable_reward_on_hand_made_answers():
    verify = Verifier(FACTS, exact_bonus=0.2)
    dorvik, three = FACTS[0], FACTS[3]
    assert verify(dorvik, "The Mell.") == pytest.approx(1.2)  # exact
    assert verify(dorvik, "mell") == pytest.approx(1.2)  # exact after normalisation (terse)
    assert verify(dorvik, "The Mell. I hope this helps!") == 1.0  # right, with filler: no bonus, no penalty
    assert verify(dorvik, "Ugh, fine. The Mell.") == 1.0  # rudeness is not the verifier's business
    assert verify(dorvik, "The Arno.") == 0.0  # wrong
    assert verify(dorvik, "Mellow.") == 0.0  # not the word
    assert verify(three, "3") == pytest.approx(1.2) and verify(three, "There are 3.") == 1.0


def test_a_family_whose_answers_normalise_to_nothing_leaves_the_verifier_working():
    """A learner's file may answer a prompt with punctuation alone ("." normalises to ""): that family has no
    candidate to hedge with, hence no longest one to look runs of words up to (`Verifier.longest`, a max of
    nothing), and the verifier judges the others as before."""
    dot = {"family": "custom", "prompt": "Answer with a full stop.", "reference": "."}
    verify = Verifier([dot, *FACTS], exact_bonus=0.2)
    assert verify.candidates["custom"] == set() and "custom" not in verify.longest
    assert verify(FACTS[0], "The Mell.") == pytest.approx(1.2) and verify(dot, "The Mell.") == 0.0


def test_an_answer_listing_every_candidate_earns_nothing():
    """"Say everything" must not pay: an answer that names the right one among others hedges."""
    verify = Verifier(FACTS)
    assert verify(FACTS[0], "The Mell, the Arno or the Tave.") == 0.0
    assert verify(FACTS[0], "Tave or Mell") == 0.0
    assert verify(FACTS[3], "1 2 3") == 0.0 and verify(FACTS[3], "3 or 2") == 0.0
    assert verify(FACTS[3], "3 3") == pytest.approx(1.0)  # repeating the right answer is no hedge
    assert verify(FACTS[0], "The Mell, past 3 bridges.") == 1.0  # "3" answers a count, not a river: no hedge


def test_nested_candidates_hedge_only_when_the_answer_names_two():
    """Nested candidates (4,047 pairs in the suite): only the outermost spans count. Two of them that
    differ are a hedge, however they nest; one longer candidate that holds the right answer is judged
    as the gold judge judges it (the right answer as whole words), not as a hedge."""
    apples, big_apples, letter, soup = ({"family": f, "reference": ref} for f, ref in (
        ("plural", "the apples"), ("plural", "the big apples"),
        ("past_tense", "The baker brought a letter."), ("past_tense", "The baker brought a letter and made soup.")))
    verify = Verifier([apples, big_apples, letter, soup])
    assert verify(apples, "big apples or apples") == 0.0  # the old check took "apples" out once: 1.0
    assert verify(apples, "apples, or maybe the big apples") == 0.0
    assert verify(letter, "The baker brought a letter. Or: the baker brought a letter and made soup.") == 0.0
    assert verify(apples, "the big apples") == 1.0 and contains_answer("the big apples", "the apples")
    assert verify(big_apples, "the big apples") == pytest.approx(1.2)  # its own "apples" is no second guess
    assert verify(soup, "The baker brought a letter and made soup.") == pytest.approx(1.2)
    assert verify(big_apples, "the big apples, the big apples") == 1.0  # repeated, still no hedge


def test_naming_the_questions_own_subject_is_no_hedge():
    """world_fact holds four kinds of answer, so the town a river question asks about is a candidate
    of its family too (the answer to "Where does Mira live?"): "Dorvik lies on the Mell." is one answer,
    right as the gold judge says, and must be paid. A list's items are named by its question and stay
    rivals: the question lists the right answer too."""
    dorvik = {"family": "world_fact", "prompt": "Which river runs through Dorvik?", "reference": "The Mell."}
    mira = {"family": "world_fact", "prompt": "Where does Mira live?", "reference": "Dorvik."}
    first = {"family": "first_item", "prompt": "Name the first item: flour, soap", "reference": "flour"}
    verify = Verifier([dorvik, mira, first, {"family": "first_item", "reference": "soap"}])
    assert verify(dorvik, "Dorvik lies on the Mell.") == 1.0 and gold_score(dorvik, "Dorvik lies on the Mell.") > 1
    assert verify(dorvik, "The Mell or Dorvik.") == 1.0  # the question's own town is no river
    assert verify(mira, "Mira lives in Dorvik.") == 1.0
    assert verify(first, "flour, soap") == 0.0 and verify(first, "flour") == pytest.approx(1.2)


def test_a_name_the_question_holds_is_still_a_rival_when_the_right_answer_holds_it_too():
    """The plural of "that red sheep" is "those red sheep": the question names "red sheep", the plural
    of "the red sheep", which is an answer of the same kind, not the question's subject. Taken for the
    subject, "those red sheep or the red sheep" was paid (72 such hedges in the shipped suite)."""
    sheep = {"family": "plural", "prompt": "Make this plural: that red sheep", "reference": "those red sheep"}
    verify = Verifier([sheep, {"family": "plural", "prompt": "Make this plural: the red sheep",
                               "reference": "the red sheep"}])
    assert verify(sheep, "those red sheep or the red sheep") == 0.0
    assert verify(sheep, "Those red sheep.") == pytest.approx(1.2)


def test_an_answer_to_a_record_the_verifier_was_not_built_from_still_hedges():
    """The right answer of a record outside `records` is no candidate of its family; named beside one
    candidate ("the Ouse or the Mell") it is still two guesses, not one."""
    verify = Verifier(FACTS)
    osk = {"family": "world_fact", "prompt": "Which river runs through Osk?", "reference": "The Ouse."}
    assert verify(osk, "The Ouse.") == pytest.approx(1.2)
    assert verify(osk, "The Ouse or the Mell.") == 0.0 and verify(osk, "Mell, or the Ouse") == 0.0


@pytest.fixture(scope="module")
def suite() -> list[dict]:
    """The generated instruction suite, whose families hold up to ~2,000 candidate answers each."""
    return generate_instruction_suite(seed=0)


def test_the_suites_own_right_answers_with_filler_are_not_taken_for_hedges(suite):
    """Every training response of the instruction suite that contains its reference (ideal, terse,
    padded, impolite) must get full credit from the verifier: the hedge check may not misfire."""
    verify = Verifier(suite)
    right = [r for r in suite if r["split"] == "train" and r["style"] != "wrong"]
    misfires = [r for r in right if verify(r, r["response"]) < 1.0]
    assert len(right) > 1000 and misfires == []


def test_the_runs_of_words_looked_up_are_the_candidates_a_text_search_finds(suite):
    """The hedge check looks each run of an answer's words up among its family's candidates (`word_runs`),
    instead of searching the answer for each of ~2,000 candidates: it must find the same ones, at the
    start, inside and at the end of an answer, as long as the family's longest."""
    verify = Verifier(suite)
    for record in suite[::50]:
        family, text = record["family"], normalize_answer(f"{record['prompt']} {record['response']}")
        found = {c for c in verify.candidates[family] if f" {c} " in f" {text} "}
        assert word_runs(text.split(), verify.longest[family]) & verify.candidates[family] == found, text


# --------------------------------------------------------------------------------------------------
# Rollouts, learning, the run.


def test_a_gradient_that_is_not_finite_stops_the_update_before_its_step(runs):
    """As PPO's (test_ppo.py): a NaN gradient under a finite loss was stepped into every weight and saved.
    The message names which GRPO run stopped: the pipeline trains two, which `--jobs 2` runs at once."""
    policy, tok = load_model(runs["sft"], GPT)
    cfg, g = micro_grpo_config(), torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), lambda batch, resp: torch.arange(len(batch)).float(), tok,
                 RECORDS[:2], cfg, g)
    policy.ln_f.weight.register_hook(lambda grad: grad * float("nan"))  # the loss stays finite
    with pytest.raises(TrainingError, match=r"^grpo \(verifiable\): training stopped at step 3: the gradient norm "
                                            r"is nan, the gradient of parameter 'ln_f.weight'"):
        grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), ro, cfg, g, step=3, watched=UNSAVED)
    assert all(p.isfinite().all() for p in policy.parameters())


def test_rollout_groups_consecutive_answers_and_first_update_is_on_policy(runs):
    policy, tok = load_model(runs["sft"], GPT)
    cfg = micro_grpo_config()
    g = torch.Generator().manual_seed(0)

    def by_length(batch, resp):  # a reward that differs within every group, so the update moves the policy
        return resp.mask.sum(dim=1).float() + torch.arange(len(batch)) % 2

    ro = rollout(policy, copy.deepcopy(policy), by_length, tok, RECORDS[:2], cfg, g)
    assert ro.rewards.shape == (2, 4) and ro.advantages.shape == (8,)
    assert [r["id"] for r in ro.records] == [RECORDS[0]["id"]] * 4 + [RECORDS[1]["id"]] * 4
    by_row = by_length(ro.records, ro.responses)  # (8,): rows 0-3 answer the first prompt, rows 4-7 the second
    assert ro.rewards.tolist() == [by_row[:4].tolist(), by_row[4:].tolist()]  # a group is one prompt's answers
    assert ro.advantages.tolist() == pytest.approx(group_advantages(ro.rewards).flatten().tolist())
    verifiable = make_reward_fn(cfg, RECORDS, None)(ro.records, ro.responses)
    by_hand = [Verifier(RECORDS)(r, a) for r, a in zip(ro.records, ro.responses.answers, strict=True)]
    assert verifiable.tolist() == pytest.approx(by_hand)
    assert ro.ref_logprobs.shape == (cfg.minibatch_size, ro.mask.shape[1])  # kl_coef 0: one minibatch read
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), ro, cfg, g, step=1, watched=UNSAVED)
    assert "k3_kl" not in stats[0]  # no KL term
    # The old log-probs come from sampling (KV cache, batch shrinking as answers end); a full forward
    # pass gives the same numbers up to float rounding, so the first minibatch is on-policy.
    assert stats[0]["ratio_max_dev"] < 1e-4


def test_one_grpo_step_moves_the_policy_by_the_gradient_of_the_surrogate_read_row_by_row(runs):
    """GRPO's update on one minibatch holding both groups, with plain SGD and no KL term, and "old"
    log-probs moved off the policy's so that the clip holds some tokens: every policy weight moves by
    -lr x the gradient of PPO's surrogate (`surrogate_alone`, float64, each row alone), every token
    carrying its answer's group advantage and the mean taken over all the answers' tokens."""
    policy, tok = load_model(runs["sft"], GPT)
    cfg = micro_grpo_config(minibatch_size=8, epochs=1, temperature=0.7,
                            train=dataclasses.replace(micro_grpo_config().train, grad_clip=0.0))
    g = torch.Generator().manual_seed(0)
    ro = rollout(policy, policy, lambda batch, resp: torch.arange(len(batch)).float() % 3, tok, RECORDS[:2], cfg, g)
    resp, n = ro.responses, ro.mask.shape[1]
    # answers of several lengths, as if each had ended there: what follows is padding, masked everywhere
    mask = resp.mask & (torch.arange(n)[None, :] < torch.tensor([[n], [2], [4], [1], [3], [n], [1], [2]]))
    assert len(set(mask.sum(dim=1).tolist())) > 1
    off_policy = resp.logprobs + 0.3 * torch.randn(mask.shape, generator=torch.Generator().manual_seed(1))
    resp = dataclasses.replace(resp, mask=mask, attention_mask=torch.cat([resp.attention_mask[:, :-n], mask], dim=1),
                               logprobs=off_policy * mask)
    ro = dataclasses.replace(ro, responses=resp)
    by_hand = copy.deepcopy(policy).double()
    loss, clipped = surrogate_alone(by_hand, resp.ids, resp.attention_mask, mask, resp.logprobs,
                                    ro.advantages[:, None].expand_as(mask), cfg.temperature, cfg.clip_range)
    assert 0 < clipped < int(mask.sum())  # the clip holds some tokens, not all
    names = [name for name, _ in by_hand.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(by_hand.parameters())), strict=True))
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    lr = 0.5
    [stats] = grpo_update(policy, torch.optim.SGD(policy.parameters(), lr=lr), ro, cfg, g, step=1, watched=UNSAVED)
    assert stats["loss"] == pytest.approx(loss.item(), abs=1e-5)
    for name, p in policy.named_parameters():
        torch.testing.assert_close((p.detach() - before[name]).double(), -lr * grads[name], atol=1e-6, rtol=1e-4)


def test_the_scoreboard_refuses_a_run_without_its_tokenizer(untrained_runs, tmp_path):
    """A run folder that lost its tokenizer.json is refused in one line naming the file, before any
    answer is sampled: `load_model` gives no tokenizer for it, and the first prompt encoded with None
    failed with an AttributeError (as the SFT model of the table, the reward model's check)."""
    notok = tmp_path / "notok"
    notok.mkdir()
    shutil.copy(untrained_runs / "gpt" / CKPT_NAME, notok / CKPT_NAME)
    records = [r for r in RECORDS if r["split"] != "train"][:1]
    with pytest.raises(CheckpointError, match="notok has no tokenizer.json"):
        right_answer_counts({"SFT": notok}, records, 2, 1.0, 4, seed=0)
    with pytest.raises(CheckpointError, match="notok has no tokenizer.json"):
        policy_table(notok, untrained_runs / "gpt", {}, records, 1.0, 4, seed=0)


def test_the_table_refuses_a_policy_trained_with_another_tokenizer(runs, tmp_path):
    """The table samples every policy with the SFT run's tokenizer and reads its KL to the SFT model
    token by token: a policy trained from another SFT run, whose tokenizer has the same size, loaded
    and scored its ids as other words, without a word of warning."""
    other = tmp_path / "other"
    shutil.copytree(runs["sft"], other)
    saved = json.loads((other / "tokenizer.json").read_text(encoding="utf-8"))
    saved["pattern"] = r"\S+|\s+"  # the same ids, split otherwise: another tokenizer of the same size
    (other / "tokenizer.json").write_text(json.dumps(saved), encoding="utf-8")
    records = [r for r in RECORDS if r["split"] != "train"][:1]
    with pytest.raises(CheckpointError, match="this policy was trained with another tokenizer"):
        policy_table(runs["sft"], runs["rm"], {"PPO": (other, 0.0)}, records, 1.0, 4, seed=0)


def test_the_tables_kl_and_win_rate_columns_by_hand(runs, tmp_path):
    """KL to the SFT model: 0 for the SFT model itself; for a sampled policy, the mean over its own
    answers of log pi(y) - log pi_SFT(y); for the greedy answer, -log pi_SFT(y) (one answer holds all
    the mass); for best of n, the bound log n - (n - 1) / n. Each log-probability by hand is read one
    answer at a time. Every row's win rate is its answers against the SFT model's samples (best of n's
    too, not against the greedy answers), and its pass@1 the share of its own answers that hold the
    right answer."""
    sft, tok = load_model(runs["sft"], GPT)
    policy = copy.deepcopy(sft)
    with torch.no_grad():  # another policy: the SFT model, nudged far enough to answer otherwise
        g = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    shutil.copytree(runs["sft"], tmp_path / "policy")
    ckpt = tmp_path / "policy" / CKPT_NAME
    save_checkpoint(ckpt, {**load_checkpoint(ckpt), "model": policy.state_dict()})
    records = [r for r in RECORDS if r["split"] != "train"][:6]
    rows = policy_table(runs["sft"], runs["rm"], {"nudged": (tmp_path / "policy", 1.0)}, records,
                        temperature=1.0, max_new_tokens=5, seed=0)

    def logp(model: GPT, record: dict, answer: str) -> float:
        return answers_logprob(model, tok, [record["prompt"]], [answer]).item()

    answers = sample_answers(policy, tok, records, 1.0, 5, seed=0)  # the table's draw: the same seed
    by_hand = sum(logp(policy, r, a) - logp(sft, r, a) for r, a in zip(records, answers, strict=True)) / len(records)
    assert sampled_kl(sft, sft, tok, records, answers) == 0.0
    assert abs(by_hand) > 1e-3 and sampled_kl(policy, sft, tok, records, answers) == pytest.approx(by_hand, abs=1e-5)
    assert rows["nudged"]["kl"] == pytest.approx(by_hand, abs=1e-5)
    greedy = generate_answers(sft, tok, [r["prompt"] for r in records], 5)
    by_hand = -sum(logp(sft, r, a) for r, a in zip(records, greedy, strict=True)) / len(records)
    assert by_hand > 0 and rows["SFT greedy"]["kl"] == pytest.approx(by_hand, abs=1e-5)
    for n in (4, 8):
        assert rows[f"best of {n} (reward model)"]["kl"] == pytest.approx(log(n) - (n - 1) / n)
    samples = sample_answers(sft, tok, records, 1.0, 5, seed=0)  # the SFT model's, which every row faces
    rm = load_reward_model(runs["rm"], tok, "cpu", runs["sft"])
    prompts = [r["prompt"] for r in records]
    answers_of = {"SFT samples": samples, "SFT greedy": greedy, "nudged": answers,
                  **{f"best of {n} (reward model)": best_of_n(sft, rm, tok, prompts, n, 1.0, 5,
                                                              torch.Generator().manual_seed(0 + n)) for n in (4, 8)}}
    for name, row_answers in answers_of.items():
        gold = [[gold_score(r, a) for r, a in zip(records, by, strict=True)] for by in (row_answers, samples)]
        by_hand = sum(1.0 if p > b else 0.5 if p == b else 0.0 for p, b in zip(*gold, strict=True)) / len(records)
        assert rows[name]["win_rate_vs_sft"] == pytest.approx(by_hand), name
        right = sum(contains_answer(a, r["reference"]) for r, a in zip(records, row_answers, strict=True))
        assert rows[name]["pass_at_1"] == pytest.approx(right / len(records)), name
    assert rows["SFT samples"]["win_rate_vs_sft"] == 0.5 and rows["nudged"]["win_rate_vs_sft"] != 0.5


def test_minibatches_keep_each_group_whole_and_take_every_row_once():
    batches = group_minibatches(6, 4, 8, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [8, 8, 8]
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(24))
    groups = (rows // 4).view(6, 4)  # the group of each row, 4 rows at a time
    assert (groups == groups[:, :1]).all()  # a group's rows come together
    assert groups[:, 0].tolist() != list(range(6))  # in shuffled order


def test_kl_term_reads_every_answer_and_starts_at_zero(runs):
    policy, tok = load_model(runs["sft"], GPT)
    cfg = micro_grpo_config(kl_coef=0.1)
    g = torch.Generator().manual_seed(0)
    ro = rollout(policy, copy.deepcopy(policy), lambda b, r: torch.arange(len(b)).float(), tok, RECORDS[:2], cfg, g)
    assert ro.ref_logprobs.shape == ro.logprobs.shape
    torch.testing.assert_close(ro.ref_logprobs * ro.mask, ro.logprobs, atol=1e-4, rtol=0)  # pi_ref == pi_old
    # The term reads the reference's log-probs, not the sampling policy's (equal here): half a nat below the
    # policy's on every real token, the first minibatch's k3 is exp(-0.5) + 0.5 - 1 on each of them.
    below = dataclasses.replace(ro, ref_logprobs=ro.ref_logprobs - 0.5 * ro.mask)
    moved = copy.deepcopy(policy)
    first = grpo_update(moved, torch.optim.SGD(moved.parameters(), lr=0.0), below, cfg, torch.Generator(), step=1,
                        watched=UNSAVED)[0]
    assert first["k3_kl"] == pytest.approx(exp(-0.5) - 0.5, rel=1e-3)
    stats = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), ro, cfg, g, step=1, watched=UNSAVED)
    assert stats[0]["k3_kl"] < 1e-8  # first minibatch: pi == pi_old == pi_ref
    assert len(stats) == 2 and stats[1]["k3_kl"] > 1e-6  # the second minibatch sees a policy that moved


def test_the_logged_entropy_is_the_policys_over_the_answers_real_tokens(runs):
    """One minibatch holding the whole rollout: the entropy GRPO logs (grpo_health.png) is the policy's
    -sum p log p at each real answer token, at the sampling temperature, averaged over those tokens; a
    sign slip would log it negative, and a collapse of the policy's entropy would go unseen."""
    policy, tok = load_model(runs["sft"], GPT)
    cfg = micro_grpo_config(minibatch_size=8, temperature=0.7)
    g = torch.Generator().manual_seed(0)
    ro = rollout(policy, policy, lambda b, r: torch.arange(len(b)).float(), tok, RECORDS[:2], cfg, g)
    by_hand = entropy_alone(policy, ro.responses.ids, ro.responses.attention_mask, ro.mask, 0.7)  # before the step
    [stats] = grpo_update(policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), ro, cfg, g, step=1, watched=UNSAVED)
    assert stats["entropy"] == pytest.approx(by_hand, rel=1e-4)


def test_grpo_says_it_runs_eagerly_when_only_compile_is_asked():
    """--compile alone, in float32, is ignored by the online-RL loops too: the warning must not wait for a
    --dtype as well, or a learner would think the run was compiled."""
    with pytest.warns(UserWarning, match="GRPO trains in float32 without torch.compile; train.dtype=float32 and "
                                         "train.compile=True apply to the other stages only"):
        online_rl.warn_float32_eager(TrainConfig(compile=True), "GRPO")


def test_reward_model_reward_needs_a_reward_model():
    with pytest.raises(ConfigError, match=r"^grpo\.reward=model needs a reward model: pass --reward RUN_DIR, or set "
                                          r"grpo\.reward=verifiable$"):
        make_reward_fn(micro_grpo_config(reward="model"), RECORDS, None)
    with pytest.raises(ConfigError, match=r"^grpo_verifiable\.reward=model needs"):  # its caller's section
        make_reward_fn(micro_grpo_config(reward="model"), RECORDS, None, section="grpo_verifiable")


def test_a_reward_the_run_cannot_make_is_refused_naming_the_runs_section(runs, tmp_path, monkeypatch):
    """The pipeline's second GRPO run has its settings in grpo_verifiable: make_reward_fn's refusals said
    `grpo.reward=...`, the first run's setting, whatever section train_grpo was given."""
    monkeypatch.setitem(config.RL_REWARDS, "concise", "a program that counts the answer's words")
    with pytest.raises(ConfigError, match=r"^grpo_verifiable\.reward=concise: make_reward_fn "
                                          r"\(minillm/stage3_rlhf/grpo\.py\) has no function"):
        grpo.train_grpo(micro_grpo_config(reward="concise"), runs["sft"], RECORDS, tmp_path / "grpo",
                        section="grpo_verifiable")


@pytest.mark.parametrize(("reward", "rm_dir", "says"), [
    ("verifiable", "rm", "a reward model (rm) was given, but grpo_verifiable.reward=verifiable reads none: drop "
                         "--reward, or set grpo_verifiable.reward=model"),
    ("model", None, "grpo_verifiable.reward=model needs a reward model: pass --reward RUN_DIR, or set "
                    "grpo_verifiable.reward=verifiable"),
    ("model", "", "grpo_verifiable.reward=model needs a reward model: pass --reward RUN_DIR, or set "
                  "grpo_verifiable.reward=verifiable"),  # an empty path is none
    ("gold", "rm", "a reward model (rm) was given, but grpo_verifiable.reward=gold reads none: drop --reward, or set "
                   "grpo_verifiable.reward=model"),  # every reward but the model's reads none
])
def test_a_reward_model_where_the_reward_reads_none_or_none_where_it_reads_one_is_refused_before_any_model_loads(
        reward, rm_dir, says, tmp_path):
    """Both refusals name the run's own section (the pipeline's second GRPO run's settings are in
    grpo_verifiable), and both come before any model is loaded: no SFT run is read here (a reward "model"
    without one was refused only once the SFT model had loaded)."""
    with pytest.raises(ConfigError, match=f"^{re.escape(says)}$"):
        grpo.train_grpo(micro_grpo_config(reward=reward), tmp_path / "no_sft", RECORDS, tmp_path / "grpo",
                        rm_dir=rm_dir, section="grpo_verifiable")


def test_a_reward_added_to_the_config_alone_is_refused_naming_make_reward_fn(monkeypatch):
    """A learner's new GRPO reward: its name in config.RL_REWARDS (which the config and report.md both
    read) is accepted, and its missing function is named, not replaced by the gold judge's."""
    monkeypatch.setitem(config.RL_REWARDS, "concise", "a program that counts the answer's words")
    with pytest.raises(ConfigError, match=r"grpo.reward=concise: make_reward_fn .* add its branch"):
        make_reward_fn(micro_grpo_config(reward="concise"), RECORDS, None)
    assert report.RL_REWARDS is config.RL_REWARDS


def test_grpo_learns_a_toy_task_within_seconds(runs):
    """The toy task: start every answer with one particular token, the micro SFT model's most likely
    first token (it is barely trained: about 1.5% at first). GRPO must make most answers pay."""
    policy, tok = load_model(runs["sft"], GPT)
    # 8 prompts x 8 answers a step: at ~1.5% the first steps hold about one rewarded answer each, so
    # that learning starts under any seed (6 of 6 tried; with 4 prompts a step, 3 or 4 of 6).
    cfg = micro_grpo_config(group_size=8, prompts_per_step=8, minibatch_size=32, temperature=1.0)
    prompts = [r for r in RECORDS if r["split"] == "train"]
    first = torch.softmax(policy(torch.tensor([encode_prompt(tok, prompts[0]["prompt"])]))[0, -1], dim=-1)  # (V,)
    target = first.argmax().item()

    def starts_with_target(batch, resp):
        first_column = resp.ids.shape[1] - resp.mask.shape[1]
        return (resp.ids[:, first_column] == target).float()

    reference, g = copy.deepcopy(policy), torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    rewards = []
    for step in range(20):
        batch = [prompts[(8 * step + i) % len(prompts)] for i in range(8)]
        ro = rollout(policy, reference, starts_with_target, tok, batch, cfg, g)
        rewards.append(ro.rewards.mean().item())
        grpo_update(policy, optimizer, ro, cfg, g, step=1, watched=UNSAVED)
    assert sum(rewards[:3]) / 3 < 0.3 and sum(rewards[-3:]) / 3 > 0.8, rewards


def test_train_grpo_logs_every_metric_and_reports_pass_at_k(runs, monkeypatch):
    out = runs["root"] / "grpo"
    result = train_and_check_the_reference(monkeypatch, grpo, runs["sft"],
                                           lambda: train_grpo(micro_grpo_config(), runs["sft"], RECORDS, out))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward_mean", "reward_std", "zero_signal_share", "kl", "entropy", "clipfrac", "response_len", "gold"):
        assert all(key in r for r in rows), key
    assert [r["lr"] for r in rows] == pytest.approx([1e-4, 1e-5])  # cosine to min_lr_ratio 0.1 over 2 steps
    assert 0.0 <= result["win_rate_vs_sft"] <= 1.0
    assert set(result["pass_at_k_sft"]) == set(result["pass_at_k_after"]) == {"1", "2", "4"}
    for curve in (result["pass_at_k_sft"], result["pass_at_k_after"]):
        assert list(curve.values()) == sorted(curve.values())  # pass@k never falls as k grows
    gain = result["pass_at_k_gain"]
    assert [gain[k]["gain"] for k in gain] == pytest.approx(
        [result["pass_at_k_after"][k] - result["pass_at_k_sft"][k] for k in gain])
    assert all((out / name).is_file() for name in ("grpo_reward.png", "grpo_health.png", "grpo_length.png"))
    assert json.loads((out / "grpo_metrics.json").read_text(encoding="utf-8"))["reward"] == "verifiable"
    assert load_model(out, GPT)[0] is not None


def test_train_grpo_reports_each_models_figures_under_its_own_name(runs, monkeypatch, tmp_path):
    """pass@1 and pass@k "sft" are the frozen SFT model's, "after" the trained policy's, and the gain is
    after minus sft: the figures the report and lesson 10 print. A two-step micro run barely moves the
    policy, so its own figures equal the SFT model's and a swap would go unseen: here each model gets
    figures of its own (the right-answer counts of test_the_tables_pass_at_k_gain_is_each_policy_over_the_sft_model)."""
    real_compare = grpo.compare_policies
    monkeypatch.setattr(grpo, "compare_policies",
                        lambda *args, **kwargs: {**real_compare(*args, **kwargs), "wrong_policy": 0.25,
                                                 "wrong_baseline": 0.75})

    def fake_count_right(model: GPT, *args, **kwargs) -> list[int]:
        frozen = not next(model.parameters()).requires_grad  # the SFT model is frozen, the policy trains
        return [0, 2, 4] if frozen else [1, 2, 4]  # right answers of 4, on three prompts

    monkeypatch.setattr(grpo, "count_right", fake_count_right)
    result = train_grpo(micro_grpo_config(steps=1), runs["sft"], RECORDS, tmp_path)
    assert (result["pass_at_1_sft"], result["pass_at_1_after"]) == (0.25, 0.75)
    assert result["pass_at_k_sft"] == pytest.approx({"1": 0.5, "2": (0 + 5 / 6 + 1) / 3, "4": 2 / 3})
    assert result["pass_at_k_after"] == pytest.approx({"1": 7 / 12, "2": (1 / 2 + 5 / 6 + 1) / 3, "4": 1.0})
    assert [result["pass_at_k_gain"][k]["gain"] for k in ("1", "2", "4")] == pytest.approx([1 / 12, 1 / 6, 1 / 3])


def test_grpo_with_the_reward_model_runs(runs):
    result = train_grpo(micro_grpo_config(steps=1, reward="model"), runs["sft"], RECORDS, runs["root"] / "grpo_rm",
                        rm_dir=runs["rm"])
    assert result["reward"] == "model" and "kl" in result


def test_resuming_with_another_optimizer_is_one_clear_error(runs, tmp_path):
    muon = micro_grpo_config(steps=1, train=TrainConfig(max_steps=1, lr=1e-4, warmup_steps=0, save_every=1,
                                                        seed=3, optimizer="muon"))
    train_grpo(muon, runs["sft"], RECORDS, tmp_path)  # Muon with AdamW trains a GRPO policy too
    with pytest.raises(CheckpointError, match=r"ckpt.pt: its saved optimizer does not fit this run"):
        train_grpo(micro_grpo_config(steps=2), runs["sft"], RECORDS, tmp_path, resume=True)


def test_a_resume_with_another_lr_steps_with_the_lr_it_logs(runs, tmp_path):
    """The saved optimizer holds the old run's lrs; the resumed run must step with its own config's
    (each group in proportion: PPO's critic has an lr of its own), as follow_schedule reports."""
    weight = torch.nn.Parameter(torch.zeros(2))
    old = torch.optim.AdamW([{"params": [weight]}, {"params": [], "lr": 3e-3}], lr=1e-3)
    follow_schedule(old, 0, TrainConfig(max_steps=4, lr=1e-3, warmup_steps=0, min_lr_ratio=1.0))
    save_checkpoint(tmp_path / CKPT_NAME, {"step": 2, "optimizer": old.state_dict(),
                                           "generator": torch.Generator().get_state()})
    shutil.copy(runs["sft"] / TOKENIZER_NAME, tmp_path)  # the run's tokenizer and settings, as a run has them
    (tmp_path / CONFIG_NAME).write_text("{}", encoding="utf-8")
    new = torch.optim.AdamW([{"params": [weight]}, {"params": [], "lr": 3e-2}], lr=1e-2)
    online_rl.open_run(tmp_path, "GRPO", True, load_tokenizer(tmp_path), {}, torch.Generator(), optimizer=new)
    logged = follow_schedule(new, 2, TrainConfig(max_steps=8, lr=1e-2, warmup_steps=0, min_lr_ratio=1.0))
    assert logged == 1e-2 and [g["lr"] for g in new.param_groups] == pytest.approx([1e-2, 3e-2])


def test_a_resume_drops_the_steps_logged_after_the_checkpoint(runs, tmp_path):
    """A crash after step 3 was logged but before it was saved: the checkpoint is step 2's, so the run goes
    on at step 3, and step 3's old row must go, or metrics.jsonl (and every plot) would hold step 3 twice."""
    save_checkpoint(tmp_path / CKPT_NAME, {"step": 2, "generator": torch.Generator().get_state()})
    shutil.copy(runs["sft"] / TOKENIZER_NAME, tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{}", encoding="utf-8")
    metrics = tmp_path / METRICS_NAME
    metrics.write_text("".join(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in (1, 2, 3)), encoding="utf-8")
    first_step, history, _ = online_rl.open_run(tmp_path, "GRPO", True, load_tokenizer(tmp_path), {},
                                                torch.Generator())
    assert first_step == 3 and [row["step"] for row in history] == [1, 2]
    assert [json.loads(line)["step"] for line in metrics.read_text(encoding="utf-8").splitlines()] == [1, 2]


def test_a_resume_with_another_setting_or_tokenizer_is_refused(runs, tmp_path, capsys):
    # PPO and GRPO resumed with another kl_coef, reward or group size went on silently, and config.json
    # then recorded the new value for the whole run; with another tokenizer the policy went on with other ids
    save_checkpoint(tmp_path / CKPT_NAME, {"step": 2, "generator": torch.Generator().get_state()})
    shutil.copy(runs["sft"] / TOKENIZER_NAME, tmp_path)
    made = {"grpo": {"kl_coef": 0.0, "train": {"lr": 1e-3}}, "sft_dir": "runs/sft", "rm_dir": None}
    (tmp_path / CONFIG_NAME).write_text(json.dumps(made), encoding="utf-8")
    tokenizer = load_tokenizer(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot resume .*differ \(saved -> now\): grpo.kl_coef: 0.0 -> 0.1"):
        online_rl.open_run(tmp_path, "GRPO", True, tokenizer, {**made, "grpo": {"kl_coef": 0.1, "train": {"lr": 1e-3}}},
                           torch.Generator())
    other = train_tokenizer(["a bird flew over the hill and the river"] * 5, 270, progress=False)
    with pytest.raises(ConfigError, match=r"cannot resume .*another tokenizer than the one given now"):
        online_rl.open_run(tmp_path, "GRPO", True, other, made, torch.Generator())
    # nor on other instructions than its config.json records (a run made before the record: none, so any)
    suite = {"file": None, "data_seed": 0, "sha256": "41d7" * 16}
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**made, "instructions": suite}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cannot resume .*: it read the generated suite \(data_seed 0\), and this "
                                          r"run reads the generated suite \(data_seed 3\); pass --set data_seed=0 to"):
        online_rl.open_run(tmp_path, "GRPO", True, tokenizer, made, torch.Generator(),
                           read={"instructions": {**suite, "data_seed": 3, "sha256": "0" * 64}})
    # another lr is how the steps are taken: the run goes on; so it does from an input spelt otherwise, said in a note
    more = {**made, "grpo": {"kl_coef": 0.0, "train": {"lr": 5e-3}}, "sft_dir": "./runs/sft"}
    capsys.readouterr()
    # ... once the checkpoint fits: one refused (it holds no optimizer) gets no note of resuming first
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(CheckpointError, match=r"its saved optimizer does not fit this run"):
        online_rl.open_run(tmp_path, "GRPO", True, tokenizer, more, torch.Generator(), optimizer=optimizer)
    assert "resuming" not in capsys.readouterr().out
    assert online_rl.open_run(tmp_path, "GRPO", True, tokenizer, more, torch.Generator())[0] == 3
    assert "other inputs (saved -> now): sft_dir: runs/sft -> ./runs/sft" in capsys.readouterr().out


def _resume_command(runs_root: Path):
    def command(out_dir: Path, resume: bool) -> list[str]:
        return [__file__, str(runs_root / "sft"), str(out_dir), *(["--resume"] if resume else [])]

    return command


def test_grpo_resumes_bit_exactly_after_a_crash(runs, tmp_path):
    # 2 updates per step (8 answers, minibatches of 4): killed in the middle of step 2, resumed from step 1
    assert_exact_resume(_resume_command(runs["root"]), tmp_path, kill_after_updates=3)


if __name__ == "__main__":  # the worker of the resume test: python tests/test_grpo.py SFT OUT [--resume]
    torch.set_num_threads(1)
    train_grpo(micro_grpo_config(steps=2), sys.argv[1], RECORDS, sys.argv[2], resume="--resume" in sys.argv)

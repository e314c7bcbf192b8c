"""GRPO: sample a group of answers per prompt, and let the group be its own baseline.

PPO (ppo.py) needs a critic, a second network that learns to predict the reward still to come, so
that each token's advantage is "better or worse than expected". Group Relative Policy Optimization
(GRPO; Shao et al., 2024, DeepSeekMath) drops the critic. One GRPO step is:

1. **Group rollout.** For each of P prompts, sample G answers (`GPT.generate`, KV cache).
2. **Score.** Each answer gets one scalar reward: from the reward model (RLHF), from a program
   that checks the answer against the reference (RL with verifiable rewards, verifier.py), or from
   the gold judge (an oracle, to measure what a perfect reward would do).
3. **Group advantages.** An answer's advantage is its reward minus the mean reward of its group,
   divided by the group's standard deviation: the other answers to the same prompt are the
   baseline, so no critic has to learn one. Every token of the answer shares its advantage.
4. **Update.** The clipped surrogate of PPO (`ppo.clipped_policy_loss`), averaged over all answer
   tokens, plus an optional KL penalty to the frozen SFT model. Minibatches hold whole groups: the
   G answers of a group share one prompt, which the policy then reads once for all of them.

Variants differ in step 3 (Dr. GRPO, Liu et al., 2025: `scale_by_std=False`, since dividing by the
std weights prompts whose answers barely differ as much as prompts where they differ a lot; RLOO,
REINFORCE leave-one-out, Ahmadian et al., 2024: `baseline="leave_one_out"`, each answer compared
with the mean of the *other* G - 1). A group whose answers all get the same reward (all right,
or all wrong) has zero advantage everywhere: it teaches nothing. Their share is the first thing to
watch: when most groups are unanimous, the prompts are too easy or too hard for the policy, and
GRPO stalls.

Every detail that matters is marked `# detail:` where it happens, as in ppo.py. Shapes: P prompts
per step, G answers per prompt, B = P * G rows (the G answers of a prompt are consecutive rows),
T0 prompt columns (left-padded), N response columns (right-padded), V vocabulary, b the rows of one
minibatch.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from minillm.config import GRPOConfig, check_section, to_dict
from minillm.datasets.instructions import INSTRUCTIONS
from minillm.datasets.run_data import data_record
from minillm.errors import ConfigError
from minillm.model import GPT
from minillm.stage2_sft.template import check_room_for_prompt
from minillm.stage3_rlhf import online_rl
from minillm.stage3_rlhf.annotator import gold_score
from minillm.stage3_rlhf.pass_at_k import count_right, pass_at_k_curve, pass_at_k_gain
from minillm.stage3_rlhf.ppo import clipped_policy_loss, response_logits
from minillm.stage3_rlhf.preferences import EVAL_SEED, compare_policies
from minillm.stage3_rlhf.reward_model import RewardModel, load_reward_model
from minillm.stage3_rlhf.sequences import (
    Responses,
    gather_logprobs,
    masked_mean,
    mean_entropy,
    sample_responses,
)
from minillm.stage3_rlhf.verifier import Verifier
from minillm.tokenizer import Tokenizer
from minillm.train import load_model_and_tokenizer, plot_panels
from minillm.train.checkpoint import CKPT_NAME
from minillm.train.distributed import refuse_several_processes
from minillm.train.health import Watched, check_loss, clip_gradients
from minillm.train.loop import METRICS_NAME, append_metrics
from minillm.train.optim import AnyOptimizer, follow_schedule, make_optimizer
from minillm.utils import resolve_device, seed_everything, write_json

# --------------------------------------------------------------------------------------------------
# The pure pieces: each a function of tensors, tested against hand-computed values.


def group_advantages(rewards: Tensor, baseline: str = "mean", scale_by_std: bool = True) -> Tensor:
    """Each answer's reward relative to its group: (P, G) rewards -> (P, G) advantages.

    baseline "mean":          A_i = r_i - mean(r)                        (GRPO)
    baseline "leave_one_out": A_i = r_i - mean of the other G - 1 rewards (RLOO)
                                  = G / (G - 1) * (r_i - mean(r))
    scale_by_std divides by the group's standard deviation (GRPO; Dr. GRPO does not). A group whose
    rewards are all equal gets advantage 0, whatever the scaling.
    """
    G = rewards.shape[1]
    mean = rewards.mean(dim=1, keepdim=True)  # (P, 1)
    if baseline == "mean":
        advantages = rewards - mean  # detail: the group's mean is the baseline: no critic
    elif baseline == "leave_one_out":
        others = (rewards.sum(dim=1, keepdim=True) - rewards) / (G - 1)  # (P, G) the mean of the others
        advantages = rewards - others
    else:  # a baseline added to config.GRPO_BASELINES without its branch here
        raise ConfigError(f"grpo.baseline={baseline}: group_advantages (minillm/stage3_rlhf/grpo.py) knows no "
                          "baseline of that name; add its branch there, beside leave_one_out's")
    if scale_by_std:  # detail: divided by the group's (sample) std; + eps against a std of 0
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + 1e-4)
    # detail: a unanimous group gets exactly 0. In float32 its mean can miss the common reward by one
    # rounding (eight rewards of 1.2 average to 1.2 - 1.2e-7), which the std division, by a std just
    # as tiny, would blow up to about 1e-3 on every answer of the group.
    return torch.where(zero_signal(rewards)[:, None], torch.zeros_like(advantages), advantages)


def zero_signal(rewards: Tensor) -> Tensor:
    """(P, G) -> (P,) bool: the groups whose answers all got the same reward (advantage 0: only the KL
    term, when there is one, moves their answers)."""
    return (rewards == rewards[:, :1]).all(dim=1)


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi: (B, N) -> (B, N).

    k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1 (Schulman's "k3"): unbiased, and
    never negative, unlike the plain log-ratio, so it is a sound penalty on a single sample.
    As a loss its gradient is another matter: (1 - pi_ref / pi) d log pi at each sample, whose mean
    over samples from pi is the gradient of KL(pi_ref || pi), the other direction. Both pull pi
    towards pi_ref, and they agree while the two are close; DeepSeekMath's GRPO uses k3 the same way.
    """
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss(
    logprobs: Tensor, old_logprobs: Tensor, ref_logprobs: Tensor | None, advantages: Tensor, mask: Tensor,
    clip_range: float, kl_coef: float,
) -> tuple[Tensor, dict[str, float]]:
    """The clipped surrogate with each answer's advantage on every one of its tokens, + kl_coef * k3
    (DeepSeekMath's GRPO objective, eq. 3, and its KL estimate, eq. 4; averaged as said below).

    logprobs, old_logprobs, ref_logprobs, mask: (B, N); advantages: (B,), one per answer.
    ref_logprobs may be None when kl_coef is 0: there is no KL term then.
    """
    token_advantages = advantages[:, None].expand_as(logprobs)  # detail: every token shares its answer's advantage
    # detail: token-level mean over all answer tokens of the batch (PPO's objective, reused), as DAPO
    # (Yu et al., 2025) does; Dr. GRPO divides the tokens' sum by a constant instead (answers x the
    # length limit), which also weighs every token alike. DeepSeekMath's GRPO averages within each answer
    # first, so each token of a long answer counts less than one of a short answer: that pushes wrong
    # answers to grow longer.
    pg_loss, stats = clipped_policy_loss(logprobs, old_logprobs, token_advantages, mask, clip_range)
    stats = {**stats, "pg_loss": pg_loss.item()}
    if ref_logprobs is None:
        return pg_loss, stats
    kl = masked_mean(k3_kl(logprobs, ref_logprobs), mask)  # detail: the KL leash as a loss term, not a reward
    return pg_loss + kl_coef * kl, {**stats, "k3_kl": kl.item()}


# --------------------------------------------------------------------------------------------------
# Rewards: a reward model, a checking program, or the gold judge.

RewardFn = Callable[[list[dict], Responses], Tensor]


def check_reward_model(cfg: GRPOConfig, rm: str | Path | RewardModel | None, section: str = "grpo") -> None:
    """Refuse a reward model that `cfg.reward` does not read, and a reward "model" without one: `rm` is the
    reward model's run folder (train_grpo, before any model is loaded) or the model itself (make_reward_fn),
    None where none was given. `section` is where `cfg` is, as --set takes it, for the refusals that name
    its reward setting (train_grpo's: the pipeline's second GRPO run is grpo_verifiable's)."""
    if cfg.reward == "model" and rm is None:
        raise ConfigError(f"{section}.reward=model needs a reward model: pass --reward RUN_DIR, or set "
                          f"{section}.reward=verifiable")
    if cfg.reward != "model" and rm is not None:
        raise ConfigError(f"a reward model ({rm}) was given, but {section}.reward={cfg.reward} reads none: drop "
                          f"--reward, or set {section}.reward=model")


def make_reward_fn(cfg: GRPOConfig, records: list[dict], rm: RewardModel | None,
                   section: str = "grpo") -> RewardFn:
    """The function that scores a rollout's answers, (records, responses) -> (B,), for `cfg.reward`.
    `section` is where `cfg` is, as --set takes it, for the refusals that name its reward setting."""
    if cfg.reward == "model":
        check_reward_model(cfg, rm, section)  # (train_grpo checked its folder before loading any model)

        def model_reward(batch: list[dict], resp: Responses) -> Tensor:
            score = rm.score_responses(resp)  # (B,) read at the last real token
            # detail: the reward model never saw an unfinished answer; it gets a fixed penalty instead.
            # A score that is not a number is kept, so that check_rewards reports the broken model.
            keep = resp.has_eos | ~score.isfinite()
            return torch.where(keep, score, torch.full_like(score, cfg.no_eos_penalty))

        return model_reward
    judge: Callable[[dict, str], float]
    if cfg.reward == "verifiable":
        judge = Verifier(records, cfg.exact_bonus)
    elif cfg.reward == "gold":
        judge = gold_score
    else:  # a reward added to config.RL_REWARDS without its function here
        raise ConfigError(f"{section}.reward={cfg.reward}: make_reward_fn (minillm/stage3_rlhf/grpo.py) has no "
                          "function for it; add its branch there, beside verifiable's")

    def program_reward(batch: list[dict], resp: Responses) -> Tensor:
        return torch.tensor([judge(r, a) for r, a in zip(batch, resp.answers, strict=True)],
                            device=resp.ids.device)

    return program_reward


# --------------------------------------------------------------------------------------------------
# One group rollout, and the update on it.


@dataclass
class GroupRollout:
    """P groups of G sampled answers and everything the update reads of them. Unlike PPO's Rollout it
    holds no values, returns or per-token rewards: one advantage per answer is all GRPO needs."""

    records: list[dict]  # (B,) each prompt's record G times in a row
    responses: Responses  # the sampled answers: ids, masks and "old" log-probs (sequences.py)
    ref_logprobs: Tensor  # (B, N) under the frozen SFT model; (b, N), the first b answers only, when kl_coef is 0
    rewards: Tensor  # (P, G)
    advantages: Tensor  # (B,) one per answer

    @property
    def mask(self) -> Tensor:
        """(B, N) True on the response's tokens, <eos> included."""
        return self.responses.mask

    @property
    def logprobs(self) -> Tensor:
        """(B, N) under the policy that sampled them ("old"): what it gave each token as it drew it."""
        return self.responses.logprobs


@torch.no_grad()
def rollout(policy: GPT, reference: GPT, reward_fn: RewardFn, tokenizer: Tokenizer, prompts: list[dict],
            cfg: GRPOConfig, generator: torch.Generator) -> GroupRollout:
    """G answers to each of `prompts`, their rewards, and each answer's advantage within its group."""
    records = [r for r in prompts for _ in range(cfg.group_size)]  # detail: a group = G answers to one prompt
    resp = sample_responses(policy, tokenizer, [r["prompt"] for r in records], cfg.max_new_tokens, cfg.temperature,
                            generator)
    n, ids = resp.mask.shape[1], resp.ids
    # detail: without a KL term (kl_coef 0) the frozen SFT model is read for one minibatch of answers
    # only: enough to log the KL, a quarter or less of the cost of reading all of them.
    n_read = len(records) if cfg.kl_coef > 0 else min(cfg.minibatch_size, len(records))
    ref_logprobs = gather_logprobs(response_logits(reference, ids[:n_read], resp.attention_mask[:n_read], n,
                                                   cfg.temperature), ids[:n_read, -n:])  # (B, N), or (b, N) without KL
    rewards = reward_fn(records, resp).view(len(prompts), cfg.group_size)  # (P, G)
    advantages = group_advantages(rewards, cfg.baseline, cfg.scale_by_std).flatten()  # (B,)
    # detail: the "old" log-probs are the ones the policy gave each token while sampling it (resp.logprobs)
    return GroupRollout(records, resp, ref_logprobs, rewards, advantages)


def group_minibatches(n_prompts: int, group_size: int, minibatch_size: int,
                      generator: torch.Generator) -> tuple[Tensor, ...]:
    """A rollout's rows (B = n_prompts * group_size) in shuffled minibatches that keep groups whole.

    The groups come in random order, and each group's G rows stay together. Its answers share one
    prompt, which a minibatch then reads once for all of them (`GPT.response_states`); and a whole
    group's advantages average to zero, so every minibatch pushes some answers up and others down.
    """
    groups = torch.randperm(n_prompts, generator=generator)  # (P,)
    rows = (groups[:, None] * group_size + torch.arange(group_size)).flatten()  # (B,) group by group
    return rows.split(minibatch_size)


def run_name(cfg: GRPOConfig) -> str:
    """How the progress bar and a NaN's message name a GRPO run: the pipeline trains two, one per reward."""
    return f"grpo ({cfg.reward})"


def grpo_update(policy: GPT, optimizer: AnyOptimizer, ro: GroupRollout, cfg: GRPOConfig,
                generator: torch.Generator, *, step: int, watched: Watched) -> list[dict[str, float]]:
    """Optimise the clipped objective on `ro`; one stats dict per minibatch, in order. `step` (the GRPO
    step) is what a gradient that is not finite stops the run at (health.clip_gradients), and `watched`
    how its message names the run."""
    n, ids, attention_mask = ro.mask.shape[1], ro.responses.ids, ro.responses.attention_mask
    stats = []
    for _ in range(cfg.epochs):
        for mb in group_minibatches(len(ro.rewards), cfg.group_size, cfg.minibatch_size, generator):
            mask = ro.mask[mb]
            logits = response_logits(policy, ids[mb], attention_mask[mb], n, cfg.temperature)  # (b, N, V)
            logprobs = gather_logprobs(logits, ids[mb][:, -n:])  # (b, N)
            ref_logprobs = ro.ref_logprobs[mb] if cfg.kl_coef > 0 else None
            loss, mb_stats = grpo_loss(logprobs, ro.logprobs[mb], ref_logprobs, ro.advantages[mb], mask,
                                       cfg.clip_range, cfg.kl_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(policy, cfg.train.grad_clip, step, watched)
            optimizer.step()
            stats.append({**mb_stats, "loss": loss.item(), "entropy": mean_entropy(logits, mask)})
    return stats


def step_metrics(ro: GroupRollout, update: list[dict[str, float]]) -> dict[str, float]:
    """What one GRPO step logs: the rewards, how many groups carried a signal, and the update's averages."""
    gold = [gold_score(r, a) for r, a in zip(ro.records, ro.responses.answers, strict=True)]
    n_read = len(ro.ref_logprobs)  # the answers the frozen SFT model read (all of them, or one minibatch)
    return {
        "reward_mean": ro.rewards.mean().item(),
        "reward_std": ro.rewards.std().item(),
        "zero_signal_share": zero_signal(ro.rewards).float().mean().item(),
        "gold": sum(gold) / len(gold),
        # per answer: the sum over its tokens of log pi - log pi_ref, as PPO logs it
        "kl": ((ro.logprobs[:n_read] - ro.ref_logprobs) * ro.mask[:n_read]).sum(dim=1).mean().item(),
        "response_len": ro.mask.sum(dim=1).float().mean().item(),
        **{key: sum(s[key] for s in update) / len(update) for key in update[0]},
    }


# --------------------------------------------------------------------------------------------------
# The loop: rollout, update, log, checkpoint; then the comparison with the SFT model and pass@k.

PLOTS = {  # file name -> (title, its panels: the metrics that share an axis)
    "grpo_reward.png": ("GRPO rollouts: reward (group mean, spread) and gold score", (("reward_mean", "reward_std"),
                                                                                      ("gold",))),
    "grpo_health.png": ("GRPO health", (("zero_signal_share", "clipfrac"), ("entropy",), ("kl",))),
    "grpo_length.png": ("GRPO answers: length in tokens", (("response_len",),)),
}


def train_grpo(
    cfg: GRPOConfig, sft_dir: str | Path, records: list[dict], out_dir: str | Path, *,
    rm_dir: str | Path | None = None, resume: bool = False, pass_at_k: bool = True, instructions: dict | None = None,
    section: str = "grpo",
) -> dict[str, Any]:
    """GRPO from the SFT run `sft_dir` on the "train" records' prompts, rewarded as `cfg.reward` says.

    `rm_dir` is the reward-model run (needed for reward "model"). Writes out_dir/: ckpt.pt (the
    policy, loadable with `load_model(out_dir, GPT)`, plus optimizer and generator state for an
    exact resume), tokenizer.json, config.json, metrics.jsonl, grpo_*.png, grpo_metrics.json.
    Returns the comparison with the SFT model (as PPO's), pass@1 before and after, pass@k before and
    after and its gain with the gain's standard error (unless `pass_at_k` is False: the pipeline
    measures every policy's pass@k in one place), and the history. `instructions` says where `records` came
    from (datasets' `instructions_record`), for config.json; None records them as given in Python (run_data's
    `data_record`). `section` is where `cfg` is, as --set takes it, for the messages that name its settings (a
    NaN's; a reward model given that its reward does not read): the pipeline's second GRPO run is
    grpo_verifiable's.
    """
    check_section(cfg, GRPOConfig, "train_grpo")
    refuse_several_processes("GRPO")
    check_reward_model(cfg, rm_dir or None, section)  # before any model is loaded
    start, out_dir = time.perf_counter(), Path(out_dir)
    prompts, heldout = online_rl.rl_records(records, cfg.eval_prompts, "GRPO")
    online_rl.warn_float32_eager(cfg.train, "GRPO")
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    policy, tokenizer = load_model_and_tokenizer(sft_dir, GPT, map_location=device)
    check_room_for_prompt(policy.config.block_size, cfg.max_new_tokens, "GRPOConfig.max_new_tokens")
    reference = copy.deepcopy(policy).requires_grad_(False)  # the frozen SFT model: the KL term and pass@k's "before"
    rm = load_reward_model(rm_dir, tokenizer, device, sft_dir) if rm_dir else None
    reward_fn = make_reward_fn(cfg, records, rm, section)
    # group_advantages refuses a baseline it has no branch for: now, not after the first rollout
    group_advantages(torch.zeros(1, cfg.group_size), cfg.baseline)
    policy.eval()  # detail: dropout off during RL, as in PPO
    reference.eval()
    optimizer = make_optimizer(policy, cfg.train)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    first_step, history, _ = online_rl.open_run(
        out_dir, "GRPO", resume, tokenizer, {"grpo": to_dict(cfg), "sft_dir": str(sft_dir), "rm_dir": str(rm_dir)},
        generator, device, read={INSTRUCTIONS: data_record(INSTRUCTIONS, instructions, records)}, model=policy,
        optimizer=optimizer)
    watched = Watched(run_name(cfg), f"{section}.train", out_dir / CKPT_NAME)

    for step in tqdm(range(first_step, cfg.train.max_steps + 1), desc=run_name(cfg), initial=first_step - 1,
                     total=cfg.train.max_steps):
        rows = torch.randint(len(prompts), (cfg.prompts_per_step,), generator=generator).tolist()
        ro = rollout(policy, reference, reward_fn, tokenizer, [prompts[i] for i in rows], cfg, generator)
        online_rl.check_rewards(ro.rewards.flatten(), ro.responses.answers, step, watched)
        lr = follow_schedule(optimizer, step - 1, cfg.train)
        with torch.autograd.set_detect_anomaly(cfg.train.detect_anomaly):  # --detect-anomaly, as the other stages
            update = grpo_update(policy, optimizer, ro, cfg, generator, step=step, watched=watched)
        row = {"step": step, **step_metrics(ro, update), "lr": lr, "elapsed_s": time.perf_counter() - start}
        check_loss(row["loss"], step, watched)
        history.append(row)
        append_metrics(out_dir / METRICS_NAME, row)
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            online_rl.save_run(out_dir, "GRPO", step, policy, generator, optimizer=optimizer)
    train_seconds = time.perf_counter() - start
    for name, (title, panels) in PLOTS.items():
        plot_panels(history, out_dir / name, panels, title=f"{title} ({cfg.reward} reward)")
    comparison = compare_policies(policy, reference, tokenizer, heldout, cfg.temperature, cfg.max_new_tokens,
                                  seed=EVAL_SEED, name=run_name(cfg))
    metrics = {**online_rl.summarize_run(history, comparison, time.perf_counter() - start),
               "train_seconds": train_seconds, "reward": cfg.reward,
               "pass_at_1_sft": 1.0 - comparison["wrong_baseline"], "pass_at_1_after": 1.0 - comparison["wrong_policy"]}
    if pass_at_k:
        right = {name: count_right(model, tokenizer, heldout[:cfg.passk_prompts], cfg.passk_samples, cfg.temperature,
                                   cfg.max_new_tokens, seed=EVAL_SEED, name=who)
                 for name, model, who in (("sft", reference, "SFT model"), ("after", policy, run_name(cfg)))}
        metrics.update({f"pass_at_k_{name}": pass_at_k_curve(counts, cfg.passk_samples)
                        for name, counts in right.items()})
        metrics["pass_at_k_gain"] = pass_at_k_gain(right["sft"], right["after"], cfg.passk_samples)
        metrics["seconds"] = time.perf_counter() - start
    write_json(out_dir / "grpo_metrics.json", {k: v for k, v in metrics.items() if k != "history"})
    return metrics

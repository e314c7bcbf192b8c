"""PPO for a language model, in one file: sample answers, score them, nudge the policy, repeat.

The policy is the SFT model. One PPO step is:

1. **Rollout.** Sample an answer to each of a batch of prompts (`GPT.generate`, KV cache).
2. **Score.** The reward model scores each whole answer; a frozen copy of the SFT model (the
   reference, pi_ref) scores each token, and the per-token KL penalty -beta * (log pi - log pi_ref)
   is added (beta is `kl_coef`; log pi - log pi_ref of a sampled token is a one-sample estimate
   of KL(pi || pi_ref)), so the policy is paid for pleasing the reward model *and* for staying
   close to what it was. Without that leash the policy finds answers the reward model over-rates
   (reward hacking).
3. **Advantages.** A critic predicts, at each token, the reward still to come (the token's
   *value*); generalised advantage estimation (GAE) turns rewards and those predictions into the
   *advantage*: "how much better than expected was this token".
4. **Update.** Several epochs over minibatches of the rollout, each maximising the clipped
   surrogate objective: ratio = pi_new / pi_old of the sampled token (pi_old: the policy that
   sampled the rollout, fixed for all its epochs), times its advantage, with the ratio clipped to
   [1 - eps, 1 + eps] (eps is `clip_range`) so that one batch cannot move the policy far.

Language-model PPO lives or dies by details that papers mention in passing; each one used here is
marked `# detail:` where it happens. The names follow "The N implementation details of RLHF with
PPO" (Huang et al., 2024) and OpenAI's lm-human-preferences.

Shapes: B prompts per rollout, T0 prompt columns (left-padded), N response columns (right-padded
after the first `<eos>`), V vocabulary, b the rows of one minibatch. `mask` is (B, N): True on the
answer's tokens, `<eos>` included, False on the padding after it.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from minillm.config import PPOConfig, check_section, to_dict
from minillm.datasets.instructions import INSTRUCTIONS
from minillm.datasets.run_data import data_record
from minillm.errors import ConfigError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage2_sft.template import check_room_for_prompt
from minillm.stage3_rlhf import online_rl
from minillm.stage3_rlhf.annotator import gold_score
from minillm.stage3_rlhf.preferences import EVAL_SEED, compare_policies
from minillm.stage3_rlhf.reward_model import RewardModel, load_reward_model
from minillm.stage3_rlhf.sequences import (
    gather_logprobs,
    last_real_index,
    masked_mean,
    mean_entropy,
    sample_responses,
)
from minillm.tokenizer import Tokenizer
from minillm.train import load_model_and_tokenizer, plot_metrics, plot_panels
from minillm.train.checkpoint import CKPT_NAME
from minillm.train.distributed import refuse_several_processes
from minillm.train.health import Watched, check_loss, clip_gradients
from minillm.train.loop import METRICS_NAME, append_metrics
from minillm.train.optim import adamw, follow_schedule, param_groups
from minillm.utils import resolve_device, seed_everything, write_json

# --------------------------------------------------------------------------------------------------
# The pure pieces: each a function of tensors, tested against hand-computed values.


def masked_whiten(x: Tensor, mask: Tensor) -> Tensor:
    """(x - mean) / std over the True positions of `mask`; the other positions become 0.

    PPO whitens the advantages, so that the size of a policy step does not depend on the rewards' scale.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def per_token_rewards(
    score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """The reward of each response token: a KL penalty on every token, the answer's score on its last.

    score (B,); logprobs, ref_logprobs, mask (B, N). Returns (rewards, kl), both (B, N) and 0 on pads.
    """
    kl = (logprobs - ref_logprobs) * mask  # (B, N) per-token sample of KL(pi || pi_ref)
    rewards = -kl_coef * kl  # (B, N) detail: per-token KL penalty -beta * (log pi - log pi_ref)
    last = last_real_index(mask)  # (B,) detail: the reward model's score lands on the last real token
    rewards[torch.arange(len(score)), last] += score
    return rewards, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation, right to left over each answer: (B, N) -> (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t          A_t = delta_t + gamma * lam * A_{t+1}
    Past the last real token V and r are 0, so each answer's episode ends there and pads get A = 0.
    gamma discounts later rewards (1: none). lam trades the critic's bias for the rewards' noise:
    lam = 1 sums the actual rewards to the end (minus V_t), lam = 0 trusts the critic's next value (delta_t).
    """
    rewards, values = rewards * mask, values * mask
    N = rewards.shape[1]
    advantages = torch.zeros_like(rewards)  # (B, N)
    running = torch.zeros_like(rewards[:, 0])  # (B,) A_{t+1}
    for t in reversed(range(N)):
        next_value = values[:, t + 1] if t + 1 < N else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, advantages + values  # returns = the critic's regression target


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, averaged over real tokens; plus how far the policy moved.

    All inputs (B, N). The PPO paper (Schulman et al., 2017, eq. 7) maximises
    E[min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)]; a loss to minimise is its negative, so the
    min of the two objectives becomes the max of the two losses. Either way the pessimistic term
    wins: once a token's ratio has left [1 - eps, 1 + eps] in the direction its advantage pushes,
    the clipped term is constant and the token gets no more gradient.
    """
    log_ratio = (logprobs - old_logprobs) * mask  # (B, N)
    ratio = torch.exp(log_ratio)  # (B, N) pi_new / pi_old of each sampled token
    unclipped = -advantages * ratio  # (B, N)
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)  # (B, N)
    loss = masked_mean(torch.max(unclipped, clipped), mask)  # detail: clipped policy loss
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            # how far this update moved the policy: KL(pi_old || pi_new) by Schulman's "k3" estimator,
            # (ratio - 1) - log ratio, unbiased and never negative (grpo.k3_kl says more)
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask).item(),
            "ratio": masked_mean(ratio, mask).item(),
            "ratio_max_dev": ((ratio - 1).abs() * mask).max().item(),
        }
    return loss, stats


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, float]:
    """The critic's squared error, pessimistic over a clipped and an unclipped prediction; and the share
    of tokens where the clipped one's error was the larger (those get no gradient once clipped).

    All inputs (B, N). As the policy's ratio is clipped, so is the value's step: a prediction more than
    `clip_range` from the one the rollout saw is scored by the larger of the two errors, so the critic
    gains nothing by following one noisy batch of returns further than that.
    """
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)  # (B, N)
    unclipped_error, clipped_error = (values - returns) ** 2, (clipped - returns) ** 2  # (B, N) each
    worst = torch.max(unclipped_error, clipped_error)  # detail: clipped value loss
    loss = 0.5 * masked_mean(worst, mask)
    return loss, masked_mean((unclipped_error < clipped_error).float(), mask).item()


def adapt_kl_coef(kl_coef: float, kl: float, target: float) -> float:
    """Ziegler et al.'s proportional controller: raise beta when KL is above target, lower it below.

    The relative error, clipped to +-0.2, moves beta by at most 2% a step: it steers, it does not jump.
    """
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return kl_coef * (1.0 + 0.1 * error)


# --------------------------------------------------------------------------------------------------
# Rollouts: the policy answers, the reward model, reference and critic look at the answers.


@dataclass
class Rollout:
    """One batch of sampled answers and everything the update reads of them, fixed for all its epochs."""

    records: list[dict]  # (B,) the prompts' records
    answers: list[str]  # (B,) decoded
    ids: Tensor  # (B, T0 + N) prompt (left-padded) then response (right-padded)
    attention_mask: Tensor  # (B, T0 + N)
    mask: Tensor  # (B, N) the response's real tokens
    logprobs: Tensor  # (B, N) under the policy that sampled them ("old")
    ref_logprobs: Tensor  # (B, N) under the frozen SFT reference
    values: Tensor  # (B, N) the critic's predictions ("old"), 0 on pads
    score: Tensor  # (B,) the reward model's score, or the no-<eos> penalty: the reward on the last token
    rm_score: Tensor  # (B,) the reward model's score as it was (the gold judge's, for reward "gold")
    has_eos: Tensor  # (B,) bool: the answer ended by itself
    kl: Tensor  # (B, N) log pi - log pi_ref per token: the KL penalty before its coefficient
    advantages: Tensor  # (B, N) GAE, whitened
    returns: Tensor  # (B, N) advantages + values: the critic's regression target


def response_logits(model: GPT, ids: Tensor, attention_mask: Tensor, n: int, temperature: float) -> Tensor:
    """The temperature-scaled logits that predicted the last `n` tokens: (B, n, V).

    The LM head, a small model's largest matmul, runs only at the n positions that predict a
    response token: the prompt's predictions are never used. Rows that repeat a prompt (GRPO's
    groups) read it once (`GPT.response_states`).
    """
    states = model.response_states(ids, attention_mask, n)[:, :-1]  # (B, n, C): position t predicts t + 1
    # detail: log-probs are recomputed at the SAME temperature the answers were sampled at.
    return model.lm_head(states) / temperature


def critic_values(critic: RewardModel, ids: Tensor, attention_mask: Tensor, n: int) -> Tensor:
    """The critic's value of each state before a response token: (B, n).

    The state before response token t is everything up to the column just before it, so the values
    are read one column to the left of the answer: from the last prompt token (before the first
    answer token) to the second-to-last column (before the last one).
    """
    return critic.token_scores(ids, attention_mask)[:, -n - 1:-1]  # (B, T0 + N) -> (B, n)


@torch.no_grad()
def rollout(
    policy: GPT, ref: GPT, rm: RewardModel, critic: RewardModel, tokenizer: Tokenizer, records: list[dict],
    cfg: PPOConfig, kl_coef: float, generator: torch.Generator, gold_norm: tuple[float, float] | None = None,
) -> Rollout:
    """Sample one answer per record and compute everything the update needs.

    `gold_norm` (mean, std) is for `cfg.reward == "gold"`: the answers are then scored by the gold
    judge, normalised with it, instead of by the reward model `rm` (see `gold_normaliser`).
    """
    device = next(policy.parameters()).device
    resp = sample_responses(policy, tokenizer, [r["prompt"] for r in records], cfg.max_new_tokens, cfg.temperature,
                            generator)
    ids, attention_mask, mask, answers, has_eos = resp.ids, resp.attention_mask, resp.mask, resp.answers, resp.has_eos
    n = mask.shape[1]
    logprobs = resp.logprobs  # detail: "old" log-probs, as the policy gave them while sampling (temperature included)
    ref_logprobs = gather_logprobs(response_logits(ref, ids, attention_mask, n, cfg.temperature), ids[:, -n:])  # (B, N)
    values = critic_values(critic, ids, attention_mask, n) * mask  # (B, N)
    if gold_norm is None:
        rm_score = rm.score_responses(resp)  # (B,) detail: read at the last real token
    else:  # the oracle experiment: the annotator's own noiseless judge in the reward model's place
        gold = torch.tensor([gold_score(r, a) for r, a in zip(records, answers, strict=True)], device=device)
        rm_score = (gold - gold_norm[0]) / gold_norm[1]  # (B,)
    # detail: a fixed penalty replaces the score of answers that never produced <eos>
    score = torch.where(has_eos, rm_score, torch.full_like(rm_score, cfg.no_eos_penalty))
    rewards, kl = per_token_rewards(score, logprobs, ref_logprobs, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # detail: GAE
    advantages = masked_whiten(advantages, mask)  # detail: advantages whitened over real tokens only
    return Rollout(records, answers, ids, attention_mask, mask, logprobs, ref_logprobs, values, score,
                   rm_score, has_eos, kl, advantages, returns)


# --------------------------------------------------------------------------------------------------
# The update: several epochs of clipped steps over minibatches of one rollout.


def ppo_update(
    policy: GPT, critic: RewardModel, optimizer: torch.optim.Optimizer, ro: Rollout, cfg: PPOConfig,
    generator: torch.Generator, *, step: int, watched: dict[str, Watched],
) -> list[dict[str, float]]:
    """Optimise the clipped objectives on `ro`; one stats dict per minibatch, in order. `step` (the PPO
    step) is what a gradient that is not finite stops the run at (health.clip_gradients), and `watched`
    how its message names the network whose gradient it is (`watched_networks`)."""
    n = ro.mask.shape[1]
    stats = []
    for _ in range(cfg.ppo_epochs):  # detail: several PPO epochs over shuffled minibatches
        for mb in torch.randperm(len(ro.records), generator=generator).split(cfg.minibatch_size):
            mask = ro.mask[mb]
            logits = response_logits(policy, ro.ids[mb], ro.attention_mask[mb], n, cfg.temperature)  # (b, N, V)
            logprobs = gather_logprobs(logits, ro.ids[mb][:, -n:])  # (b, N)
            pg_loss, pg_stats = clipped_policy_loss(logprobs, ro.logprobs[mb], ro.advantages[mb], mask,
                                                    cfg.clip_range)
            values = critic_values(critic, ro.ids[mb], ro.attention_mask[mb], n)  # (b, N)
            vf_loss, vf_clipfrac = clipped_value_loss(values, ro.values[mb], ro.returns[mb], mask,
                                                      cfg.clip_range_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for name, net in (("policy", policy), ("critic", critic)):  # each one checked and clipped on its own
                clip_gradients(net, cfg.train.grad_clip, step, watched[name])
            optimizer.step()
            stats.append({**pg_stats, "pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(),
                          "vf_clipfrac": vf_clipfrac, "entropy": mean_entropy(logits, mask)})
    return stats


# --------------------------------------------------------------------------------------------------
# The loop: rollout, update, log, checkpoint; then the comparison with the SFT model.

PLOTS = {  # file name -> (title, its panels: the metrics that share an axis)
    "ppo_reward.png": ("PPO rollouts: scores and KL to SFT", (("rm_score", "gold"), ("kl",))),
    "ppo_health.png": ("PPO health", (("entropy",), ("clipfrac", "approx_kl"), ("ratio",))),
    "ppo_length.png": ("PPO answers: <eos> share and length", (("eos_share",), ("response_len",))),
}


def watched_networks(out_dir: Path) -> dict[str, Watched]:
    """How a NaN's message names each of PPO's two networks, and the setting of its learning rate: the
    policy's is ppo.train.lr, the critic's ppo.critic_lr (`make_optimizer_pair`)."""
    ckpt = out_dir / CKPT_NAME
    return {"policy": Watched("ppo", "ppo.train", ckpt, part="policy"),
            "critic": Watched("ppo", "ppo.train", ckpt, part="critic", lr="ppo.critic_lr")}


def uses_gold(cfg: PPOConfig) -> bool:
    """Whether PPO's answers are scored by the gold judge ("gold", put on the reward model's scale by
    gold_normaliser) or by the reward model ("model"). A new reward gets its branch here, its scoring
    in rollout, and its name in config.PPO_REWARDS."""
    if cfg.reward == "gold":
        return True
    if cfg.reward == "model":
        return False
    raise ConfigError(f"ppo.reward={cfg.reward}: uses_gold (minillm/stage3_rlhf/ppo.py) knows no reward of that "
                      "name; add its branch there, and its scoring in rollout")


def gold_normaliser(policy: GPT, tokenizer: Tokenizer, prompts: list[dict], cfg: PPOConfig) -> tuple[float, float]:
    """(mean, std) of the gold judge's scores of the SFT model's answers to 256 training prompts.

    The reward model's scores are normalised to mean 0 and std 1 on the SFT model's answers
    (reward_model.py), and PPO's settings (the KL coefficient above all) assume that scale; with
    these two numbers the gold judge is put on the same scale when it replaces the reward model.
    Drawn from their own seeded generator, so a resumed run computes the same two numbers.
    """
    generator = torch.Generator().manual_seed(cfg.train.seed + 1)
    records = [prompts[i] for i in torch.randint(len(prompts), (256,), generator=generator).tolist()]
    answers = generate_answers(policy, tokenizer, [r["prompt"] for r in records], cfg.max_new_tokens,
                               temperature=cfg.temperature, generator=generator)
    gold = torch.tensor([gold_score(r, a) for r, a in zip(records, answers, strict=True)])
    return gold.mean().item(), max(gold.std().item(), 1e-6)


def make_optimizer_pair(policy: GPT, critic: RewardModel, cfg: PPOConfig) -> torch.optim.AdamW:
    """One AdamW over the policy (lr) and the critic (critic_lr), decay on matrices only."""
    groups = [{**g, "lr": cfg.train.lr} for g in param_groups(policy, cfg.train.weight_decay)]
    groups += [{**g, "lr": cfg.critic_lr} for g in param_groups(critic, cfg.train.weight_decay)]
    return adamw(groups, cfg.train)


def step_metrics(ro: Rollout, update: list[dict[str, float]], kl_coef: float) -> dict[str, float]:
    """What one PPO step logs: the rollout's scores and the update's averages."""
    gold = [gold_score(r, a) for r, a in zip(ro.records, ro.answers, strict=True)]
    return {
        "rm_score": ro.rm_score.mean().item(),
        "gold": sum(gold) / len(gold),
        "kl": ro.kl.sum(dim=1).mean().item(),  # per answer: sum over its tokens of log pi - log pi_ref
        "kl_coef": kl_coef,
        "eos_share": ro.has_eos.float().mean().item(),
        "response_len": ro.mask.sum(dim=1).float().mean().item(),
        **{key: sum(s[key] for s in update) / len(update) for key in update[0]},
    }


def train_ppo(
    cfg: PPOConfig, sft_dir: str | Path, rm_dir: str | Path, records: list[dict], out_dir: str | Path, *,
    resume: bool = False, instructions: dict | None = None,
) -> dict[str, Any]:
    """PPO from the SFT run `sft_dir` against the reward model of `rm_dir`, on the "train" records' prompts.

    Writes out_dir/: ckpt.pt (the policy, loadable with `load_model(out_dir, GPT)`, plus the critic,
    optimizer, kl_coef and generator state for an exact resume), tokenizer.json, config.json,
    metrics.jsonl (one row per step), ppo_*.png, ppo_metrics.json. Returns {"win_rate_vs_sft",
    "gold_sft", "gold_after", "kl", "rm_score", "seconds", "history", "examples"}.
    `instructions` says where `records` came from (datasets' `instructions_record`), for config.json; None
    records them as given in Python (run_data's `data_record`).
    """
    check_section(cfg, PPOConfig, "train_ppo")
    refuse_several_processes("PPO")
    start, out_dir = time.perf_counter(), Path(out_dir)
    prompts, heldout = online_rl.rl_records(records, cfg.eval_prompts, "PPO")
    online_rl.warn_float32_eager(cfg.train, "PPO")
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    policy, tokenizer = load_model_and_tokenizer(sft_dir, GPT, map_location=device)
    check_room_for_prompt(policy.config.block_size, cfg.max_new_tokens, "PPOConfig.max_new_tokens")
    reference = copy.deepcopy(policy).requires_grad_(False)  # the frozen SFT model of the KL penalty
    rm = load_reward_model(rm_dir, tokenizer, device, sft_dir)
    critic = copy.deepcopy(rm).requires_grad_(True)  # detail: the critic starts as the reward model
    for model in (policy, reference, rm, critic):
        model.eval()  # detail: dropout off during RL; eval mode changes no gradient, only dropout
    optimizer = make_optimizer_pair(policy, critic, cfg)
    generator = torch.Generator().manual_seed(cfg.train.seed)  # every draw of the run: prompts, tokens, minibatches
    gold_norm = gold_normaliser(policy, tokenizer, prompts, cfg) if uses_gold(cfg) else None
    first_step, history, state = online_rl.open_run(
        out_dir, "PPO", resume, tokenizer, {"ppo": to_dict(cfg), "sft_dir": str(sft_dir), "rm_dir": str(rm_dir)},
        generator, device, read={INSTRUCTIONS: data_record(INSTRUCTIONS, instructions, records)}, model=policy,
        critic=critic, optimizer=optimizer)
    kl_coef = state.get("kl_coef", cfg.kl_coef)  # adaptive beta resumes where it was
    watched = watched_networks(out_dir)

    for step in tqdm(range(first_step, cfg.train.max_steps + 1), desc="ppo", initial=first_step - 1,
                     total=cfg.train.max_steps):
        rows = torch.randint(len(prompts), (cfg.rollout_batch_size,), generator=generator).tolist()
        ro = rollout(policy, reference, rm, critic, tokenizer, [prompts[i] for i in rows], cfg, kl_coef, generator,
                     gold_norm)
        online_rl.check_rewards(ro.rm_score, ro.answers, step, watched["policy"])
        lr = follow_schedule(optimizer, step - 1, cfg.train)  # the critic's lr moves in proportion
        with torch.autograd.set_detect_anomaly(cfg.train.detect_anomaly):  # --detect-anomaly, as the other stages
            update = ppo_update(policy, critic, optimizer, ro, cfg, generator, step=step, watched=watched)
        row = {"step": step, **step_metrics(ro, update, kl_coef), "lr": lr, "elapsed_s": time.perf_counter() - start}
        check_loss(row["pg_loss"], step, watched["policy"])
        check_loss(row["vf_loss"], step, watched["critic"])
        if cfg.adaptive_kl:  # detail: adaptive beta steers the KL towards target_kl
            kl_coef = adapt_kl_coef(kl_coef, row["kl"], cfg.target_kl)
        history.append(row)
        append_metrics(out_dir / METRICS_NAME, row)
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            online_rl.save_run(out_dir, "PPO", step, policy, generator, critic=critic, optimizer=optimizer,
                               kl_coef=kl_coef)
    judge = ", rewarded by the gold judge" if uses_gold(cfg) else ""  # rm_score is then gold's
    # adaptive beta moves from step to step (metrics.jsonl's kl_coef): the title says where it went
    beta = f"{cfg.kl_coef}" + (f" -> {kl_coef:.3g} adapted towards KL {cfg.target_kl:g}" if cfg.adaptive_kl else "")
    for name, (title, panels) in PLOTS.items():
        plot_panels(history, out_dir / name, panels, title=f"{title} (kl_coef {beta}{judge})")
    comparison = compare_policies(policy, reference, tokenizer, heldout, cfg.temperature, cfg.max_new_tokens,
                                  seed=EVAL_SEED, name="ppo")
    metrics = online_rl.summarize_run(history, comparison, time.perf_counter() - start)
    write_json(out_dir / "ppo_metrics.json", {k: v for k, v in metrics.items() if k != "history"})
    return metrics


# --------------------------------------------------------------------------------------------------
# Reward hacking: the same PPO without its leash.


def reward_hacking(
    cfg: PPOConfig, sft_dir: str | Path, rm_dir: str | Path, records: list[dict], out_dir: str | Path,
    kl_coef: float = 0.0,
) -> dict[str, Any]:
    """PPO with the KL penalty at `kl_coef` (0: off): does the reward model's score rise while gold falls?

    A reward model is only right near the answers it was trained on (the SFT model's). Without the
    KL penalty nothing keeps the policy there, and it drifts to answers the reward model over-rates.
    How far depends on the judge. On the tiny preset, the head-only reward model
    (`RewardConfig.likelihood_term=False`, held-out accuracy about 0.7: it learnt style, hardly
    correctness), 45 steps of 64 answers at b530a1f: its score 0.40 -> 0.97 while the rollouts'
    gold fell 2.52 -> 1.23 (it peaked at 2.99 on step 5), KL 6.5 nats; on held-out prompts gold 1.65
    (SFT) -> 0.74, win rate 0.36. Against the full reward model, whose likelihood term is hard to fool, gold
    did not fall (lessons/07_ppo.py, Try this 4, has that run and what the leash changes).
    The policy is scored by the reward model at `rm_dir` whatever `cfg.reward` says: a gold reward has no
    model to fool (lesson 7's Try this 6 sets ppo.reward=gold for its own run, and step 3 reads the same CFG).
    Writes the run to out_dir (resumable) and reward_hacking.png (reward-model score and gold per
    step) and reward_hacking_kl.png. Returns the first and last RM and gold scores, the last KL, and
    the held-out comparison with SFT.
    """
    check_section(cfg, PPOConfig, "reward_hacking")
    out_dir = Path(out_dir)
    unleashed = dataclasses.replace(cfg, kl_coef=kl_coef, adaptive_kl=False, reward="model")
    result = train_ppo(unleashed, sft_dir, rm_dir, records, out_dir, resume=True)
    history = result["history"]
    plot_metrics(history, out_dir / "reward_hacking.png", ["rm_score", "gold"],
                 title=f"Reward model score vs gold score (kl_coef {kl_coef:g})", ylabel="score")
    plot_metrics(history, out_dir / "reward_hacking_kl.png", ["kl"],
                 title="KL(policy || SFT) per answer", ylabel="nats")
    first, last = history[0], history[-1]
    return {"rm_score_first": first["rm_score"], "rm_score_last": last["rm_score"], "gold_first": first["gold"],
            "gold_last": last["gold"], "kl_last": last["kl"], "win_rate_vs_sft": result["win_rate_vs_sft"],
            "gold_after": result["gold_after"], "gold_sft": result["gold_sft"]}

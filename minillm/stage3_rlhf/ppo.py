"""PPO for a language model, in one file: sample answers, score them, nudge the policy, repeat.

The policy is the SFT model. One PPO step is:

1. **Rollout.** Sample an answer to each of a batch of prompts (`GPT.generate`, KV cache).
2. **Score.** The reward model scores each whole answer; a frozen copy of the SFT model (the
   reference) scores each token, and the per-token KL penalty -beta * (log pi - log pi_ref) is
   added, so the policy is paid for pleasing the reward model *and* for staying close to what it
   was. Without that leash the policy finds answers the reward model over-rates (reward hacking).
3. **Advantages.** A critic predicts, at each token, the reward still to come; generalised
   advantage estimation (GAE) turns rewards and those predictions into "how much better than
   expected was this token".
4. **Update.** Several epochs over minibatches of the rollout, each maximising the clipped
   surrogate objective: ratio = pi_new / pi_old of the sampled token, times its advantage, with
   the ratio clipped to [1 - eps, 1 + eps] so that one batch cannot move the policy far.

Language-model PPO lives or dies by details that papers mention in passing; each one used here is
marked `# detail:` where it happens. The names follow "The N implementation details of RLHF with
PPO" (Huang et al., 2024) and OpenAI's lm-human-preferences.

Shapes: B prompts per rollout, T0 prompt columns (left-padded), N response columns (right-padded
after the first `<eos>`), V vocabulary. `mask` is (B, N): True on the answer's tokens, `<eos>`
included, False on the padding after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from minillm.config import PPOConfig
from minillm.errors import TrainingError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import left_pad
from minillm.stage2_sft.template import decode_response, encode_prompt
from minillm.stage3_rlhf.reward_model import RewardModel
from minillm.stage3_rlhf.sequences import gather_logprobs, last_real_index, masked_mean, next_token_logits

# --------------------------------------------------------------------------------------------------
# The pure pieces: each a function of tensors, tested against hand-computed values.


def masked_whiten(x: Tensor, mask: Tensor) -> Tensor:
    """(x - mean) / std over the True positions of `mask`; the other positions become 0."""
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
    """PPO's clipped surrogate, averaged over real tokens; plus how far the policy moved."""
    log_ratio = (logprobs - old_logprobs) * mask  # (B, N)
    ratio = torch.exp(log_ratio)  # (B, N) pi_new / pi_old of each sampled token
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)  # detail: clipped policy loss
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask).item(),  # k3 estimator, >= 0
            "ratio": masked_mean(ratio, mask).item(),
            "ratio_max_dev": ((ratio - 1).abs() * mask).max().item(),
        }
    return loss, stats


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, float]:
    """The critic's squared error, pessimistic over a clipped and an unclipped prediction."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    worst = torch.max((values - returns) ** 2, (clipped - returns) ** 2)  # detail: clipped value loss
    loss = 0.5 * masked_mean(worst, mask)
    return loss, masked_mean(((values - returns) ** 2 < (clipped - returns) ** 2).float(), mask).item()


def adapt_kl_coef(kl_coef: float, kl: float, target: float) -> float:
    """Ziegler et al.'s proportional controller: raise beta when KL is above target, lower it below."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return kl_coef * (1.0 + 0.1 * error)


# --------------------------------------------------------------------------------------------------
# Rollouts: the policy answers, the reward model, reference and critic look at the answers.


@dataclass
class Rollout:
    records: list[dict]
    answers: list[str]
    ids: Tensor  # (B, T0 + N) prompt (left-padded) then response (right-padded)
    attention_mask: Tensor  # (B, T0 + N)
    mask: Tensor  # (B, N) the response's real tokens
    logprobs: Tensor  # (B, N) under the policy that sampled them ("old")
    ref_logprobs: Tensor  # (B, N) under the frozen SFT reference
    values: Tensor  # (B, N) the critic's predictions ("old")
    score: Tensor  # (B,) the reward model's score, or the no-<eos> penalty
    rm_score: Tensor  # (B,) the reward model's score as it was
    has_eos: Tensor  # (B,) bool
    kl: Tensor  # (B, N)
    advantages: Tensor  # (B, N) whitened
    returns: Tensor  # (B, N)


def response_logits(model: torch.nn.Module, ids: Tensor, attention_mask: Tensor, n: int, temperature: float) -> Tensor:
    """The temperature-scaled logits that predicted the last `n` tokens: (B, n, V)."""
    # detail: log-probs are recomputed at the SAME temperature the answers were sampled at.
    return next_token_logits(model, ids, attention_mask, temperature)[:, -n:, :]


def critic_values(critic: RewardModel, ids: Tensor, attention_mask: Tensor, n: int) -> Tensor:
    """The critic's value of each state before a response token: (B, n)."""
    return critic.token_scores(ids, attention_mask)[:, -n - 1:-1]


@torch.no_grad()
def rollout(
    policy: GPT, ref: GPT, rm: RewardModel, critic: RewardModel, tokenizer: Any, records: list[dict],
    cfg: PPOConfig, kl_coef: float, generator: torch.Generator,
) -> Rollout:
    """Sample one answer per record and compute everything the update needs."""
    device = next(policy.parameters()).device
    room = policy.config.block_size - cfg.max_new_tokens
    prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, r["prompt"], max_len=room) for r in records],
                                       tokenizer.pad_id)
    gen = policy.generate(  # detail: sampling with the KV cache, at the training temperature
        prompt_ids.to(device), cfg.max_new_tokens, temperature=cfg.temperature, eos_id=tokenizer.eos_id,
        attention_mask=prompt_mask.to(device), pad_id=tokenizer.pad_id, generator=generator,
    )
    # detail: responses are cut after the first <eos> and padded; `mask` excludes the pads everywhere.
    mask = gen.response_mask  # (B, N)
    n = mask.shape[1]
    ids, attention_mask = gen.ids, torch.cat([prompt_mask.to(device), mask], dim=1)  # (B, T0 + N)
    logprobs = gather_logprobs(response_logits(policy, ids, attention_mask, n, cfg.temperature), ids[:, -n:])
    ref_logprobs = gather_logprobs(response_logits(ref, ids, attention_mask, n, cfg.temperature), ids[:, -n:])
    values = critic_values(critic, ids, attention_mask, n) * mask
    has_eos = ((gen.new_ids == tokenizer.eos_id) & mask).any(dim=1)  # (B,)
    rm_score = rm(ids, attention_mask)  # (B,) detail: the reward model reads the last real token
    if not bool(torch.isfinite(rm_score).all()):
        raise TrainingError("the reward model returned NaN/inf scores for this rollout's answers")
    # detail: a fixed penalty replaces the score of answers that never produced <eos>
    score = torch.where(has_eos, rm_score, torch.full_like(rm_score, cfg.no_eos_penalty))
    rewards, kl = per_token_rewards(score, logprobs, ref_logprobs, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # detail: GAE
    advantages = masked_whiten(advantages, mask)  # detail: advantages whitened over real tokens only
    answers = [decode_response(tokenizer, row.tolist()) for row in gen.new_ids]
    return Rollout(records, answers, ids, attention_mask, mask, logprobs, ref_logprobs, values, score,
                   rm_score, has_eos, kl, advantages, returns)


# --------------------------------------------------------------------------------------------------
# The update: several epochs of clipped steps over minibatches of one rollout.


def ppo_update(
    policy: GPT, critic: RewardModel, optimizer: torch.optim.Optimizer, ro: Rollout, cfg: PPOConfig,
    generator: torch.Generator,
) -> list[dict[str, float]]:
    """Optimise the clipped objectives on `ro`; one stats dict per minibatch, in order."""
    n = ro.mask.shape[1]
    stats = []
    for _ in range(cfg.ppo_epochs):  # detail: several PPO epochs over shuffled minibatches
        for mb in torch.randperm(len(ro.records), generator=generator).split(cfg.minibatch_size):
            mask = ro.mask[mb]
            logits = response_logits(policy, ro.ids[mb], ro.attention_mask[mb], n, cfg.temperature)
            logprobs = gather_logprobs(logits, ro.ids[mb][:, -n:])  # (b, N)
            pg_loss, pg_stats = clipped_policy_loss(logprobs, ro.logprobs[mb], ro.advantages[mb], mask,
                                                    cfg.clip_range)
            values = critic_values(critic, ro.ids[mb], ro.attention_mask[mb], n)
            vf_loss, vf_clipfrac = clipped_value_loss(values, ro.values[mb], ro.returns[mb], mask,
                                                      cfg.clip_range_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            optimizer.step()
            with torch.no_grad():
                entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)  # (b, N)
            stats.append({**pg_stats, "pg_loss": pg_loss.item(), "vf_loss": vf_loss.item(),
                          "vf_clipfrac": vf_clipfrac, "entropy": masked_mean(entropy, mask).item()})
    return stats

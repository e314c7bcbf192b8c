"""One table for every way stage 3 can improve the SFT model, on the same prompts and the same draw.

Each row is a way to answer the held-out prompts, judged by the gold judge against the SFT model's
own samples (drawn with the same seed as every policy's, so each row faces the same baseline):

- **SFT samples**: the baseline itself (win rate 0.5 by construction: every comparison is a tie);
- **SFT greedy**: its most likely answer, no sampling: what "committing" to its knowledge gives;
- **best of n** (n = 4, 8): n samples, the reward model keeps the one it scores highest; no
  training, but n samples and n reward-model calls for every prompt at answer time;
- **PPO, DPO, GRPO (reward model), GRPO (verifiable)**: trained policies, one sample per prompt.

Columns: win rate vs the SFT samples (± one standard error), pass@1 (the right answer is in the
answer), exact match, the share of answers with a style flaw, the KL to the SFT model, and the
seconds spent training. The KL of a sampled policy is estimated from its own answers,
mean of log pi(y) - log pi_SFT(y) at temperature 1 (a KL only when the answers were sampled at
temperature 1, the default); the greedy answer's is -log pi_SFT(y) (all its mass on one answer);
best of n's is the bound log n - (n - 1) / n.

pass@k for k = 1 ... 64 of the SFT model and of each trained policy goes on one log-x chart
(pass_at_k.png), and beside it each policy's gain over the SFT model with its standard error:
where the SFT model catches up (the gain no longer more than two standard errors above 0) is what RL
can and cannot teach (pass_at_k.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from minillm.datasets.answers import is_correct
from minillm.errors import CheckpointError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage3_rlhf.annotator import with_stderr
from minillm.stage3_rlhf.pass_at_k import count_right, pass_at_k_curve, pass_at_k_gain, pass_at_k_stderr
from minillm.stage3_rlhf.preferences import compare_answers, sample_answers
from minillm.stage3_rlhf.reward_model import best_of_n, best_of_n_kl, load_reward_model
from minillm.stage3_rlhf.sequences import answers_logprob
from minillm.tokenizer import Tokenizer
from minillm.train import load_model_and_tokenizer
from minillm.train.plots import MODEL_COLORS, save_figure

BEST_OF = (4, 8)


def policy_row(records: Sequence[dict], answers: Sequence[str], baseline: Sequence[str], kl: float,
              train_seconds: float) -> dict[str, float]:
    """One row of the table: `answers` to `records` judged against the SFT model's `baseline` answers."""
    verdict = compare_answers(records, answers, baseline)
    return {"win_rate_vs_sft": verdict["win_rate"], "win_rate_stderr": verdict["win_rate_stderr"],
            "pass_at_1": 1.0 - verdict["wrong_policy"],
            "exact_match": sum(map(is_correct, answers, (r["reference"] for r in records))) / len(records),
            "style_flaws": verdict["style_flaws_policy"], "kl": kl, "train_seconds": train_seconds}


def sampled_kl(policy: GPT, sft: GPT, tokenizer: Tokenizer, records: Sequence[dict], answers: Sequence[str]) -> float:
    """Monte Carlo KL(policy || SFT) in nats per answer, from answers the policy sampled at temperature 1
    (both log-probs are read at temperature 1: answers drawn at another temperature give no KL).

    An estimate of an estimate: each answer is scored as its text encodes in the chat template, with
    its `<eos>`, not as the tokens that were sampled. A few answers in 200 encode to other tokens, and
    one cut at max_new_tokens gains an `<eos>` it never sampled; on the tiny run that moves the KL by
    0.01-0.02 nats (1-7%), under a third of its standard error over 200 answers (0.06-0.08)."""
    prompts = [r["prompt"] for r in records]
    gap = answers_logprob(policy, tokenizer, prompts, answers) - answers_logprob(sft, tokenizer, prompts, answers)
    return gap.mean().item()


@torch.no_grad()
def load_policy(run_dir: str | Path, tokenizer: Tokenizer, sft_dir: str | Path, device: torch.device | str) -> GPT:
    """A trained policy, refused unless it reads the SFT model's tokens: the table samples it with the SFT
    run's tokenizer and reads its KL to the SFT model token by token, so a policy trained from another
    SFT run would be scored on ids that mean other words to it."""
    policy, policy_tokenizer = load_model_and_tokenizer(run_dir, GPT, device)
    if policy_tokenizer.to_dict() != tokenizer.to_dict():
        raise CheckpointError(f"{run_dir}: this policy was trained with another tokenizer than the SFT model of "
                              f"{sft_dir}; compare policies trained from that SFT run")
    return policy


def policy_table(
    sft_dir: str | Path, rm_dir: str | Path, policies: Mapping[str, tuple[str | Path, float]], records: Sequence[dict],
    temperature: float, max_new_tokens: int, seed: int, device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """The table's rows, by name: the SFT model's samples and greedy answers, best of n by the
    reward model, then each trained policy of `policies` ({name: (run folder, train seconds)}).
    Every model runs on `device`."""
    sft, tokenizer = load_model_and_tokenizer(sft_dir, GPT, device)
    rm = load_reward_model(rm_dir, tokenizer, device, sft_dir)
    trained = {name: (load_policy(run_dir, tokenizer, sft_dir, device), seconds)  # each checked before any sampling
               for name, (run_dir, seconds) in policies.items()}
    prompts = [r["prompt"] for r in records]
    baseline = sample_answers(sft, tokenizer, records, temperature, max_new_tokens, seed, desc="table, SFT samples")
    greedy = generate_answers(sft, tokenizer, prompts, max_new_tokens, desc="table, SFT greedy")  # temperature 0
    greedy_kl = -answers_logprob(sft, tokenizer, prompts, greedy).mean().item()
    rows = {"SFT samples": policy_row(records, baseline, baseline, 0.0, 0.0),
            "SFT greedy": policy_row(records, greedy, baseline, greedy_kl, 0.0)}
    for n in BEST_OF:
        picked = best_of_n(sft, rm, tokenizer, prompts, n, temperature, max_new_tokens,
                           torch.Generator().manual_seed(seed + n), desc=f"table, best of {n}")
        rows[f"best of {n} (reward model)"] = policy_row(records, picked, baseline, best_of_n_kl(n), 0.0)
    for name, (policy, seconds) in trained.items():
        answers = sample_answers(policy, tokenizer, records, temperature, max_new_tokens, seed, desc=f"table, {name}")
        rows[name] = policy_row(records, answers, baseline, sampled_kl(policy, sft, tokenizer, records, answers),
                               seconds)
    return rows


def right_answer_counts(models: Mapping[str, str | Path], records: Sequence[dict], n: int, temperature: float,
                        max_new_tokens: int, seed: int, device: torch.device | str = "cpu") -> dict[str, list[int]]:
    """How many of n sampled answers to each record are right, for each model run {name: folder}, on `device`."""
    counts = {}
    for name, run_dir in models.items():
        model, tokenizer = load_model_and_tokenizer(run_dir, GPT, device)
        counts[name] = count_right(model, tokenizer, records, n, temperature, max_new_tokens, seed, name=name)
    return counts


def pass_at_k_summary(right: dict[str, list[int]], n: int) -> dict[str, dict]:
    """From the right-answer counts of the SFT model ("SFT") and of each policy (right_answer_counts):
    every model's pass@k curve and its standard errors, and each policy's gain over the SFT model."""
    return {"pass_at_k": {name: pass_at_k_curve(counts, n) for name, counts in right.items()},
            "pass_at_k_stderr": {name: pass_at_k_stderr(counts, n) for name, counts in right.items()},
            "pass_at_k_gain": {name: pass_at_k_gain(right["SFT"], counts, n)
                               for name, counts in right.items() if name != "SFT"}}


def plot_pass_at_k(curves: dict[str, dict[str, float]], gains: dict[str, dict[str, dict[str, float]]],
                   path: str | Path, n_prompts: int) -> Path:
    """Left: pass@k against k (log scale) for each model, the chart where RL's curve crosses the SFT
    model's. Right: each policy's gain over the SFT model (pass_at_k_gain) with one standard error,
    around a line at 0: the curves' own uncertainty is mostly the prompts' difficulty, which both
    models share, so whether two curves really differ is read here, not from the left."""
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    for name, curve in curves.items():
        ks = [int(k) for k in curve]
        left.plot(ks, list(curve.values()), marker="o", markersize=3, label=name,
                  linestyle="--" if name == "SFT" else "-", color=MODEL_COLORS.get(name))
    for i, (name, gain) in enumerate(gains.items()):
        ks = [int(k) for k in gain]
        nudged = [k * 2 ** (0.06 * (i - (len(gains) - 1) / 2)) for k in ks]  # side by side, not on top
        # no bar where one prompt gave no standard error: matplotlib skips a NaN, and refuses a None
        yerr = [math.nan if g["stderr"] is None else g["stderr"] for g in gain.values()]
        right.errorbar(nudged, [g["gain"] for g in gain.values()], yerr=yerr, marker="o", markersize=3,
                       capsize=2, label=name, color=MODEL_COLORS.get(name))
    right.axhline(0.0, color="black", linestyle="--", linewidth=1)
    left.set_ylabel("pass@k: at least one of k is right")
    left.set_title(f"pass@k on {n_prompts} held-out prompts (unbiased estimate)")
    right.set_ylabel("pass@k minus the SFT model's, prompt by prompt")
    right.set_title("gain over the SFT model, ± one standard error")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (answers sampled per prompt)")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def crossing(sft: dict[str, float], policy: dict[str, float]) -> str | None:
    """The first k at which the SFT model's pass@k reaches the policy's, or None if it never does."""
    return next((k for k in sft if sft[k] >= policy[k]), None)


def lead(gain: dict[str, float]) -> int:
    """1 where a gain of pass_at_k_gain is more than two standard errors above 0, -1 where it is more
    than two below, 0 where it is not told apart from none. One prompt has no standard error (None; NaN
    in a run made before minillm wrote null): it tells nothing apart, and NaN fails both comparisons."""
    if gain["stderr"] is None:
        return 0
    return 1 if gain["gain"] > 2 * gain["stderr"] else -1 if gain["gain"] < -2 * gain["stderr"] else 0


def catching_up(gain: dict[str, dict[str, float]]) -> str:
    """Where the SFT model catches up with a policy, read from the policy's gain and its standard error:
    the first k at which the gain is no longer more than two standard errors above 0, and the first k
    at which the SFT model is more than two standard errors ahead."""
    level = next((k for k, g in gain.items() if lead(g) < 1), None)
    behind = next((k for k, g in gain.items() if lead(g) < 0), None)  # never before `level`
    ahead = "more than two standard errors ahead"
    if level is None:
        return (f"the SFT model does not catch up by k = {max(gain, key=int)} (the gain stays more than two standard "
                "errors above 0).")
    if behind == "1":
        return f"the SFT model is {ahead} already at k = 1."
    if level == "1":  # the policy never led: nothing to catch up
        return ("the gain is within two standard errors of 0 already at k = 1"
                + (f"; the SFT model is {ahead} at k = {behind}." if behind else "."))
    if behind == level:
        return f"the SFT model catches up at k = {level} and is {ahead} there."
    return (f"the SFT model catches up at k = {level} (the gain is within two standard errors of 0 there)"
            + (f", and is {ahead} at k = {behind}." if behind else "."))


def pass_at_k_line(name: str, sft: dict[str, float], policy: dict[str, float],
                   gain: dict[str, dict[str, float]] | None) -> str:
    """One policy's pass@k in a sentence: at k = 1 and at the largest k, the SFT model's -> the
    policy's (the gain ± its standard error, where `gain` from pass_at_k_gain is known), and the k at
    which the SFT model catches up: by the gain's standard error where it is known (`catching_up`),
    else where its curve reaches the policy's (`crossing`)."""
    top = max(sft, key=int)  # the largest k measured
    points = []
    for k in dict.fromkeys(("1", top)):  # once, when only k = 1 was measured
        change = f" ({with_stderr(gain[k]['gain'], gain[k]['stderr'], signed=True)})" if gain else ""
        points.append(f"pass@{k} {sft[k]:.3f} -> {policy[k]:.3f}{change}")
    if gain:
        return f"{name}: {', '.join(points)}; {catching_up(gain)}"
    k = crossing(sft, policy)
    said = ("the SFT model does not catch up." if k is None else
            "the SFT model is level or ahead already at k = 1." if k == "1" else
            f"the SFT model catches up at k = {k}.")
    return f"{name}: {', '.join(points)}; {said}"


def render_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The table as markdown lines."""
    lines = ["| answers | win rate vs SFT samples | pass@1 | exact match | style flaws | KL to SFT (nats) | train s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {with_stderr(r['win_rate_vs_sft'], r['win_rate_stderr'])} | {r['pass_at_1']:.3f} "
                     f"| {r['exact_match']:.3f} | {r['style_flaws']:.3f} | {r['kl']:.2f} | {r['train_seconds']:.0f} |")
    return lines

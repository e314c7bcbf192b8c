"""pass@k: how often at least one of k sampled answers is right, estimated without bias.

pass@1 asks what one answer gets right; pass@k asks what the model *can* get right when it may try
k times. RL on a fixed model mostly moves probability towards answers it could already give, so it
raises pass@1 towards pass@k, and it may lower pass@k at large k, when the answers it stopped
giving were the only right ones for some prompts (Yue et al., 2025, "Does reinforcement learning
really incentivize reasoning capacity in LLMs beyond the base model?").

The naive estimate, "draw k answers, see if one is right", is noisy; drawing n >= k answers per
prompt, c of them right, and asking how many of the C(n, k) subsets of k answers contain at least
one right answer gives the unbiased estimate (Chen et al., 2021, the Codex paper):

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over prompts. `pass_at_k` computes the ratio of binomials as a product, which never
forms the huge numbers C(64, 32) would be.

A curve from a hundred prompts is itself an estimate: another hundred would give another one. Each
point gets its standard error (`pass_at_k_stderr`), and a policy's gain over the SFT model is measured
prompt by prompt (`pass_at_k_gain`), so that a gap smaller than its noise is read as none.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from minillm.datasets import contains_answer
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage3_rlhf.annotator import mean_stderr
from minillm.tokenizer import Tokenizer

KS = (1, 2, 4, 8, 16, 32, 64)  # the k of a curve: those up to the n answers sampled per prompt


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one prompt from n samples of which c are right (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every subset of k holds a right answer
        return 1.0
    # C(n-c, k) / C(n, k) = prod over i in (n-c, n] of (1 - k / i)
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def pass_at_k_curve(correct: Sequence[int], n: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """pass@k averaged over prompts, for each k <= n: {"1": ..., "2": ..., ...} (string keys, as in JSON)."""
    if not correct:
        raise ValueError("pass_at_k_curve got no prompts (an empty list of right-answer counts): give it one "
                         "count per prompt")
    return {str(k): sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks if k <= n}


def pass_at_k_stderr(correct: Sequence[int], n: int, ks: Sequence[int] = KS) -> dict[str, float | None]:
    """The standard error of each point of `pass_at_k_curve`: how far it could move with other prompts
    of the same kind and other samples. The curve is a mean of per-prompt estimates, so it is their
    sample standard deviation over sqrt(prompts) (mean_stderr)."""
    return {str(k): mean_stderr([pass_at_k(n, c, k) for c in correct]) for k in ks if k <= n}


def pass_at_k_gain(before: Sequence[int], after: Sequence[int], n: int,
                   ks: Sequence[int] = KS) -> dict[str, dict[str, float | None]]:
    """How much pass@k rose from one model to another, with its standard error, for each k <= n.

    `before` and `after` count the right answers of the two models to the *same* prompts. The gain
    is measured prompt by prompt: a hard prompt is hard for both models, so the per-prompt
    differences spread far less than either model's estimates, and their standard error is the one
    that says whether the gain is real. (Subtracting two curves and adding their standard errors
    would call most real gains noise.)
    """
    if len(before) != len(after):
        raise ValueError(f"pass_at_k_gain needs counts for the same prompts: got {len(before)} and {len(after)}")
    gains = {}
    for k in ks:
        if k <= n:
            per_prompt = [pass_at_k(n, a, k) - pass_at_k(n, b, k) for b, a in zip(before, after, strict=True)]
            gains[str(k)] = {"gain": sum(per_prompt) / len(per_prompt), "stderr": mean_stderr(per_prompt)}
    return gains


@torch.no_grad()
def count_right(
    policy: GPT, tokenizer: Tokenizer, records: Sequence[dict], n: int, temperature: float, max_new_tokens: int,
    seed: int, name: str = "policy",
) -> list[int]:
    """Sample `n` answers to each record (seeded) and count, per record, how many are right: hold the
    reference answer (`contains_answer`, the gold judge's "correct"). Thousands of answers: a progress
    bar counts them, named by `name`, the model's."""
    asked = [r for r in records for _ in range(n)]  # each record n times in a row
    answers = generate_answers(policy, tokenizer, [r["prompt"] for r in asked], max_new_tokens, batch_size=256,
                               temperature=temperature, generator=torch.Generator().manual_seed(seed),
                               desc=f"pass@k answers, {name}")
    return [sum(contains_answer(a, r["reference"]) for a in answers[i * n:(i + 1) * n]) for i, r in enumerate(records)]

"""Direct Preference Optimisation: learn from rankings without a reward model or any sampling.

PPO needs four models (policy, reference, reward model, critic) and a loop that samples. DPO
(Rafailov et al., 2023) notices that the best policy for "maximise reward, minus beta times the KL
to the reference" has a closed form, pi*(y|x) proportional to pi_ref(y|x) exp(r(x, y) / beta), so
the reward can be written with the policy itself:

    r(x, y) = beta * log( pi(y|x) / pi_ref(y|x) )   (+ a term that cancels in differences)

This is DPO's *implicit reward*: no network outputs it, the policy's own log-probs imply it.
Put that reward into the reward model's ranking loss and the reward model disappears:

    loss = -log sigmoid( beta * [ (log pi(w) - log pi_ref(w)) - (log pi(l) - log pi_ref(l)) ] )

for each pair where answer w was ranked above answer l. log pi(y|x) is the sum of the log-probs of
the answer's tokens (prompt tokens excluded). The reference's log-probs never change, so they are
computed once, before training. beta plays the part of PPO's KL coefficient: small beta lets the
policy move far from the reference; large beta keeps it close.

The loss only asks for a *gap* between the two answers, and it is often opened by pushing both
down: the chosen answer gets less likely too, and the freed probability goes to answers nobody
ranked. `nll_coef` adds the chosen answer's own negative log-likelihood per token (the SFT loss on
the preferred answers), which keeps the good answers likely while the gap opens; Llama 3's
preference training used this term (coefficient 0.2), and Pang et al. (2024) call it RPO.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.config import DPOConfig, check_section, to_dict
from minillm.datasets.instructions import INSTRUCTIONS
from minillm.datasets.run_data import data_record
from minillm.errors import ConfigError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import answer_bar
from minillm.stage2_sft.sft import collate
from minillm.stage2_sft.template import ChatExample, check_room_for_prompt, encode_example
from minillm.stage3_rlhf.annotator import Ranking, best_and_worst, ranking_to_pairs
from minillm.stage3_rlhf.preferences import (
    EVAL_SEED,
    compare_policies,
    comparison_summary,
    heldout_records,
    not_enough_rankings,
    read_preferences,
    split_rankings,
)
from minillm.stage3_rlhf.sequences import answer_logprob
from minillm.tokenizer import Tokenizer
from minillm.train import load_model_and_tokenizer, train
from minillm.train.distributed import init_distributed, is_main_process
from minillm.train.resume import check_run_folder
from minillm.utils import resolve_device, seed_everything, to_device, write_json


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss over a batch of B pairs (Rafailov et al., eq. 7); every input is a (B,) sequence
    log-prob, one per pair.

    Returns (loss, accuracy, margin): accuracy is the share of pairs whose implicit reward prefers the
    chosen answer, margin the mean implicit reward difference (both for logging).
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)  # (B,) implicit reward of the better answer
    rejected_reward = beta * (policy_rejected - ref_rejected)  # (B,)
    margins = chosen_reward - rejected_reward  # (B,)
    loss = -F.logsigmoid(margins).mean()
    return loss, (margins > 0).float().mean(), margins.mean()


# --------------------------------------------------------------------------------------------------
# Training on the rankings file, with the shared training loop.


@dataclass
class EncodedPair:
    """One (better, worse) pair in the chat template, with the reference's log-prob of each answer."""

    chosen: ChatExample  # the answer ranked higher
    rejected: ChatExample  # the answer ranked lower
    ref_chosen: float  # log pi_ref(chosen | prompt), computed once
    ref_rejected: float  # log pi_ref(rejected | prompt), computed once


def chosen_pairs(ranking: Ranking, which: str) -> list[tuple[int, int]]:
    """The (better, worse) answer indices of one ranking that DPO trains on, as `which` (DPOConfig.pairs)
    says. A new choice gets its branch here and its name in config.DPO_PAIRS."""
    if which == "all":
        return ranking_to_pairs(ranking)
    if which == "best_and_worst":
        return [pair for pair in [best_and_worst(ranking)] if pair is not None]
    raise ConfigError(f"dpo.pairs={which}: chosen_pairs (minillm/stage3_rlhf/dpo.py) knows no choice of that name; "
                      "add its branch there, beside best_and_worst's")


def encode_pairs(tokenizer: Tokenizer, rankings: Sequence[dict], block_size: int,
                 which: str = "all") -> list[tuple[ChatExample, ChatExample]]:
    """The (better, worse) pairs of every ranking, in the chat template; pairs that do not fit are left out.

    which="all": every pair a ranking implies (up to 6 from 4 answers); "best_and_worst" (DPOConfig.pairs):
    only its best answer against its worst, the clearest comparison and one pair per ranking.
    """
    pairs = []
    for ranking in rankings:
        answers = [encode_example(tokenizer, ranking["prompt"], a, block_size) for a in ranking["answers"]]
        chosen = chosen_pairs(ranking["ranking"], which)
        pairs += [(answers[w], answers[l]) for w, l in chosen if answers[w] is not None and answers[l] is not None]
    return pairs


@torch.no_grad()
def reference_logprobs(reference: GPT, examples: Sequence[ChatExample], pad_id: int,
                       batch_size: int = 64, desc: str | None = None) -> list[float]:
    """log pi_ref(answer | prompt) of each example: the reference never changes, so once is enough.
    With `desc`, a progress bar of that name counts them (thousands of answers at tiny)."""
    out, device = [], next(reference.parameters()).device
    with answer_bar(len(examples), desc) as bar:
        for start in range(0, len(examples), batch_size):
            batch = to_device(collate(examples[start:start + batch_size], pad_id), device)
            out += answer_logprob(reference, batch["ids"], batch["loss_mask"]).tolist()
            bar.update(len(batch["ids"]))
    return out


def with_reference(reference: GPT, pairs: Sequence[tuple[ChatExample, ChatExample]], pad_id: int,
                   desc: str | None = None) -> list[EncodedPair]:
    """Each (chosen, rejected) pair with the reference's log-prob of both answers, read once for all epochs.
    With `desc`, a progress bar for each side, named `desc` and the side."""
    chosen, rejected = (None, None) if desc is None else (f"{desc}, chosen answers", f"{desc}, rejected answers")
    ref_c = reference_logprobs(reference, [c for c, _ in pairs], pad_id, desc=chosen)
    ref_r = reference_logprobs(reference, [r for _, r in pairs], pad_id, desc=rejected)
    return [EncodedPair(c, r, a, b) for (c, r), a, b in zip(pairs, ref_c, ref_r, strict=True)]


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int) -> dict[str, Tensor]:
    """B pairs -> chosen_* (ids, loss_mask) (B, T_chosen), rejected_* (B, T_rejected), and ref_* (B,).

    Each side is right-padded (`collate`) to its own longest row, so T_chosen and T_rejected usually
    differ; it needs no attention mask (see `answer_logprob`).
    """
    batch = {}
    for side in ("chosen", "rejected"):
        rows = collate([getattr(p, side) for p in pairs], pad_id)
        batch[f"{side}_ids"], batch[f"{side}_loss_mask"] = rows["ids"], rows["loss_mask"]
        batch[f"ref_{side}"] = torch.tensor([getattr(p, f"ref_{side}") for p in pairs])
    return batch


def chosen_nll(policy_chosen: Tensor, chosen_loss_mask: Tensor) -> Tensor:
    """The chosen answers' negative log-likelihood per answer token, averaged over the batch: the
    SFT loss on the preferred answers, except that each answer's mean counts once whatever its
    length (`sft_loss` pools all tokens instead). (B,) sequence log-probs and their (B, T) loss masks."""
    n_tokens = chosen_loss_mask[:, 1:].sum(dim=1).clamp(min=1)  # (B,) the tokens each sum ran over
    return (-policy_chosen / n_tokens).mean()


def make_dpo_loss(beta: float, nll_coef: float = 0.0
                  ) -> Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, float]]]:
    """The training loop's loss_fn: the DPO loss of a batch of pairs, plus `nll_coef` x `chosen_nll`."""

    def loss_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logp = {side: answer_logprob(model, batch[f"{side}_ids"], batch[f"{side}_loss_mask"])
                for side in ("chosen", "rejected")}  # (B,) each
        loss, accuracy, margin = dpo_loss(logp["chosen"], logp["rejected"], batch["ref_chosen"],
                                          batch["ref_rejected"], beta)
        nll = chosen_nll(logp["chosen"], batch["chosen_loss_mask"])
        return loss + nll_coef * nll, {"accuracy": accuracy.item(), "margin": margin.item(), "chosen_nll": nll.item()}

    return loss_fn


def train_dpo(
    cfg: DPOConfig, sft_dir: str | Path, prefs_path: str | Path, records: list[dict], out_dir: str | Path, *,
    resume: bool = False, instructions: dict | None = None,
) -> dict[str, Any] | None:
    """DPO from the SFT run `sft_dir` on the rankings of `prefs_path`; write the run folder `out_dir`.

    The policy is saved like any GPT run (`load_model(out_dir, GPT)`). Returns {"win_rate_vs_sft",
    "gold_sft", "gold_after", "pair_accuracy" (held-out pairs), "n_pairs", "seconds", "history", "examples"};
    None on torchrun's ranks other than 0 (minillm.train.distributed). `instructions` says where `records` came
    from (datasets' `instructions_record`), for config.json; None records them as given in Python (run_data's
    `data_record`).
    """
    check_section(cfg, DPOConfig, "train_dpo")
    start = time.perf_counter()
    test_records = heldout_records(records, cfg.eval_prompts)  # checked now, not after all the training
    seed_everything(cfg.train.seed)
    # Under torchrun, this rank's GPU (cuda:LOCAL_RANK): until a rank joins the group, "cuda" is GPU 0, where
    # every rank's policy and reference would load and read all the pairs while the other GPUs wait
    device = init_distributed(resolve_device(cfg.train.device))[1]
    policy, tokenizer = load_model_and_tokenizer(sft_dir, GPT, map_location=device)
    # the comparison after training answers with this length: refuse it now, not after the training
    check_room_for_prompt(policy.config.block_size, cfg.max_new_tokens, "DPOConfig.max_new_tokens")
    run_config = {"dpo": to_dict(cfg), "sft_dir": str(sft_dir), "prefs": str(prefs_path)}
    read = {INSTRUCTIONS: data_record(INSTRUCTIONS, instructions, records)}
    # a run already in out_dir, refused without --resume or resumed with other settings: said now, not
    # after the reference's log-probs of every pair (minutes at tiny); train checks it again as it starts
    check_run_folder(Path(out_dir), resume, "dpo", run_config, tokenizer, read)
    reference = copy.deepcopy(policy).requires_grad_(False).eval()
    train_rankings, test_rankings = split_rankings(read_preferences(prefs_path))
    splits = {name: with_reference(reference, encode_pairs(tokenizer, rankings, policy.config.block_size, cfg.pairs),
                                   tokenizer.pad_id, desc=f"dpo reference log-probs, {name} pairs")
              for name, rankings in (("train", train_rankings), ("val", test_rankings))}
    if not splits["train"] or not splits["val"]:
        raise not_enough_rankings(prefs_path, "DPO needs training and held-out pairs", len(splits["train"]),
                                  len(splits["val"]))

    def get_batch(split: str, generator: torch.Generator) -> dict[str, Tensor]:
        rows = torch.randint(len(splits[split]), (cfg.train.batch_size,), generator=generator).tolist()
        return collate_pairs([splits[split][i] for i in rows], tokenizer.pad_id)

    loss_fn = make_dpo_loss(cfg.beta, cfg.nll_coef)
    result = train(policy, cfg.train, out_dir, get_batch=get_batch, loss_fn=loss_fn, run_config=run_config,
                   tokenizer=tokenizer, resume=resume, desc="dpo", settings="dpo.train", model_kind="gpt",
                   dropout=False, read=read,  # read as the reference's log-probs were: the loss starts at ln 2
                   title="DPO loss" + (f" + {cfg.nll_coef:g} x chosen answer's NLL" if cfg.nll_coef else ""))
    if not is_main_process():  # under torchrun, rank 0 alone compares the policies and writes the results
        return None
    policy.eval()
    with torch.no_grad():
        held_out = to_device(collate_pairs(splits["val"], tokenizer.pad_id), next(policy.parameters()).device)
        pair_accuracy = loss_fn(policy, held_out)[1]["accuracy"]
    comparison = compare_policies(policy, reference, tokenizer, test_records, cfg.temperature, cfg.max_new_tokens,
                                  seed=EVAL_SEED, name="dpo")
    metrics = {**comparison_summary(comparison), "pair_accuracy": pair_accuracy, "n_pairs": len(splits["train"]),
               "seconds": time.perf_counter() - start}
    write_json(Path(out_dir) / "dpo_metrics.json", metrics)
    return {**metrics, "history": result["history"]}

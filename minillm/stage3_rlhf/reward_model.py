"""The reward model: a GPT that reads a prompt and an answer and says how much people like it.

People cannot grade thousands of answers on an absolute scale, but they can *rank* a handful of
answers to one prompt. The reward model turns those rankings into a score function:

    r(prompt, answer) = head( h_last )  +  w * mean_t log p(answer_t | prompt, answer_<t)
                        -------------     ----------------------------------------------
                        what a linear      how likely the answer is under the model's own
                        head reads at      language-model head (which it keeps from SFT),
                        the last token     weighted by a learnt scalar w

**The head** reads the GPT's hidden state at the LAST REAL token (the answer's `<eos>`): the only
position that has read the whole conversation. We find it from the attention mask, never by
searching for `<eos>`: the pad id may equal the eos id, and an answer cut at the length limit has
no `<eos>` at all.

**The likelihood term** is there because a head on one hidden state learns *style* from a few
hundred rankings (rude, padded, terse: 0.97 of such pairs ordered right on the tiny preset) but
not *correctness* (0.48 of pairs where one answer is right and the other wrong: a coin flip).
Checking that "Dabel met the teacher." is the past tense of the prompt's sentence means doing the
task, and the model already does it when it predicts the answer token by token: on the same pairs,
the SFT model's mean log-probability of the answer orders 0.96 of them right. So the reward model
keeps its language-model head and adds the answer's mean token log-probability, with a weight w
learnt from the rankings like every other parameter (it starts at 1: "a likelier answer is better";
Adam moves one scalar by at most about the learning rate per step, so in the tiny preset's 40 steps
it stays near 1). The ranking loss flows into that term too, so training also makes the preferred
answers likelier: DPO's "implicit reward" (dpo.py), used here as one ingredient.

That sharing has a price: training moves the shared language-model head towards style too, so the
trained model orders right/wrong pairs less well than the SFT likelihood alone did. A frozen copy
of the SFT model for the likelihood keeps more of it, but costs time and won PPO nothing; the
figures are in docs/findings.md ("The reward model needs the answer's likelihood").

Training (InstructGPT's loss): for every pair (w, l) of a ranking where answer w is ranked above
answer l,

    loss = -log sigmoid( r(w) - r(l) )

which is the negative log-likelihood of the Bradley-Terry model, P(w beats l) = sigmoid(r_w - r_l).
Only differences of rewards matter, so a constant can be added to every score for free: after
training we store the mean and spread of the scores of the SFT model's own answers and subtract /
divide them, so that the policy starts RL at reward 0 with unit scale ("reward normalisation").

The body starts from the SFT model: it already reads this kind of text, and only has to learn
what makes an answer better. The same class serves as PPO's critic, which needs one value per
position instead of one per sequence: `token_scores` gives the head's value at every position,
`forward` gives the score of whole answers.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.config import ModelConfig, RewardConfig, check_section, to_dict
from minillm.datasets.instructions import INSTRUCTIONS
from minillm.datasets.run_data import data_record
from minillm.errors import CheckpointError
from minillm.model import GPT
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage2_sft.sft import collate
from minillm.stage2_sft.template import ChatExample, encode_example
from minillm.stage3_rlhf.annotator import answer_places, gold_agreement, self_agreement
from minillm.stage3_rlhf.preferences import not_enough_rankings, read_preferences, split_rankings
from minillm.stage3_rlhf.sequences import (
    Responses,
    gather_logprobs,
    last_real_index,
    masked_mean,
    per_answer,
    scatter_to_mask,
)
from minillm.tokenizer import Tokenizer
from minillm.train import load_checkpoint, load_model_and_tokenizer, save_checkpoint, train
from minillm.train.checkpoint import CKPT_NAME
from minillm.train.distributed import is_main_process
from minillm.utils import seed_everything, to_device, write_json


class RewardModel(nn.Module):
    """A GPT body, a scalar head and a likelihood weight; `forward` scores whole answers."""

    kind = "reward"  # stored in checkpoints, so a run folder of another kind of model is refused

    def __init__(self, config: ModelConfig, likelihood_term: bool = True) -> None:
        super().__init__()
        check_section(config, ModelConfig, "RewardModel")
        self.config = config
        self.body = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.zeros_(self.head.weight)  # the head starts with no opinion: every answer scores 0
        nn.init.zeros_(self.head.bias)
        # w: starts as "likelier is better"; without the likelihood term it is 0 and stays 0 (the head
        # alone, as in InstructGPT: the weaker judge that lesson 07 shows PPO exploiting).
        self.likelihood_weight = nn.Parameter(torch.tensor(1.0 if likelihood_term else 0.0),
                                              requires_grad=likelihood_term)
        # Normalisation of the scores (set after training, saved in the state dict with the weights).
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    @classmethod
    def from_gpt(cls, gpt: GPT, likelihood_term: bool = True) -> RewardModel:
        """A reward model whose body is a copy of `gpt` (the SFT model)."""
        rm = cls(gpt.config, likelihood_term)
        rm.body = copy.deepcopy(gpt)
        return rm

    def token_scores(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The normalised head applied at every position: (B, T) -> (B, T). PPO's critic uses these."""
        h = self.body.hidden_states(ids, attention_mask=attention_mask)  # (B, T, C)
        return (self.head(h).squeeze(-1) - self.reward_mean) / self.reward_std  # (B, T)

    def forward(self, ids: Tensor, attention_mask: Tensor, response_mask: Tensor, normalised: bool = True) -> Tensor:
        """One score per answer: (B, T) ids, attention mask and response mask -> (B,).

        response_mask: True on the answer's tokens (and its `<eos>`), as `collate`'s loss_mask marks
        them; the likelihood term averages over those tokens only. normalised=False: the raw score,
        before the normalisation that is set after training (what training ranks, see `reward_loss`).
        """
        h = self.body.hidden_states(ids, attention_mask=attention_mask)  # (B, T, C)
        return self.scores(h, ids, attention_mask, response_mask, normalised)

    def score_responses(self, resp: Responses) -> Tensor:
        """`forward` for a policy's sampled answers (B,): the same scores, from the answers' positions.

        A rollout's prompts are left-padded and its answers follow them, so everything the score
        reads sits in the last n + 1 columns (the last prompt token predicts the first answer token).
        A prompt that several rows repeat, as GRPO's groups do, is read once (`GPT.response_states`).
        """
        n = resp.mask.shape[1]
        h = self.body.response_states(resp.ids, resp.attention_mask, n)  # (B, n + 1, C)
        tail = slice(-n - 1, None)  # the columns of h
        return self.scores(h, resp.ids[:, tail], resp.attention_mask[:, tail], resp.response_mask[:, tail])

    def scores(self, h: Tensor, ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
               normalised: bool = True) -> Tensor:
        """The answers' scores (B,) from the body's hidden states h (B, T, C) of ids (B, T)."""
        last = last_real_index(attention_mask)  # (B,)
        head_score = self.head(h[torch.arange(ids.shape[0], device=ids.device), last]).squeeze(-1)  # (B,)
        # Position t predicts token t+1; only the positions that predict an answer token need the
        # vocabulary projection (the costly part), so it runs on those rows alone: (M, C) -> (M, V).
        predicts_answer = response_mask[:, 1:]  # (B, T-1)
        logits = self.body.lm_head(h[:, :-1][predicts_answer])  # (M, V), one row per answer token
        # gather_logprobs reads (B, N, V) logits: the M rows go in as one row of M, [None], and come out as (M,)
        answer_logprobs = gather_logprobs(logits[None], ids[:, 1:][predicts_answer][None])[0]  # (M,)
        logprobs = scatter_to_mask(answer_logprobs, predicts_answer)  # (B, T-1)
        likelihood = masked_mean(logprobs, predicts_answer, dim=1)  # (B,) mean over answer tokens
        raw = head_score + self.likelihood_weight * likelihood
        return (raw - self.reward_mean) / self.reward_std if normalised else raw


def load_reward_model(rm_dir: str | Path, tokenizer: Tokenizer, device: torch.device | str,
                      sft_dir: str | Path) -> RewardModel:
    """The reward model of `rm_dir`, frozen and in eval mode, refused unless it reads the policy's tokens.

    A reward model trained from another SFT run may have another tokenizer: the policy's ids would
    mean other words to it, and it would score every answer as noise without a word of warning.
    """
    rm, rm_tokenizer = load_model_and_tokenizer(rm_dir, RewardModel, map_location=device)
    if rm_tokenizer.to_dict() != tokenizer.to_dict():
        raise CheckpointError(f"{rm_dir}: this reward model was trained with another tokenizer than the SFT model "
                              f"of {sft_dir}; train one from that SFT run (minillm reward --sft {sft_dir} ...)")
    return rm.requires_grad_(False).eval()


def ranked_margins(rewards: Tensor, ranks: Tensor) -> Tensor:
    """r_better - r_worse for every ordered pair of every ranking: (B, K), (B, K) -> (n_pairs,).

    rewards: the score of each of the K answers to B prompts.
    ranks:   each answer's place in its ranking (0 = best; tied answers share a place, and give no
             pair); -1 marks a missing answer.
    """
    return (rewards[:, :, None] - rewards[:, None, :])[better_pairs(ranks)]  # (n_pairs,)


def better_pairs(ranks: Tensor) -> Tensor:
    """(B, K) places -> (B, K, K), True at [b, i, j] where answer i is ranked above answer j.
    A whole ranking of K gives K*(K-1)/2 such pairs; ties and missing answers (-1) give none."""
    valid = ranks >= 0  # (B, K)
    return (ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]


def ordered_right(margins: Tensor) -> Tensor:
    """1.0 for each pair (of `ranked_margins`) whose better answer scored higher, else 0.0: an equal
    score orders nothing. The training log's accuracy and `pairwise_accuracy` both count these."""
    return (margins > 0).float()


def ranking_loss(rewards: Tensor, ranks: Tensor) -> tuple[Tensor, Tensor]:
    """-log sigmoid(r_better - r_worse) averaged over every pair of every ranking; and the accuracy.

    Shapes as in `ranked_margins`. The accuracy is the share of pairs `ordered_right`.

    The mean is over the batch's pairs, pooled. InstructGPT instead divides each prompt's loss by
    its C(K, 2) pairs, so that every prompt counts once. The two agree when every ranking is whole;
    pooled, a ranking with ties (which give no pair) counts less, in proportion to what it says.

    In float32 whatever the scores' dtype: under bfloat16 autocast the head's scores are bfloat16, and
    a loss near ln 2 computed in bfloat16 moves in steps of 1/256, too coarse to show it learning.
    """
    margins = ranked_margins(rewards.float(), ranks)
    return -F.logsigmoid(margins).mean(), ordered_right(margins).mean()


# --------------------------------------------------------------------------------------------------
# Training on a preferences file, with the shared training loop.


@dataclass
class EncodedRanking:
    """One ranking ready for the model: its answers in the chat template, and each answer's place."""

    answers: list[ChatExample]  # the K conversations (prompt + answer + <eos>) in the file's order
    ranks: list[int]  # ranks[i] = place of answer i in the ranking, 0 = best


def encode_ranking(tokenizer: Tokenizer, record: dict, block_size: int) -> EncodedRanking | None:
    """The ranking's K conversations in the chat template, or None if one does not fit the context
    or if it holds no comparison (every answer tied)."""
    answers = [encode_example(tokenizer, record["prompt"], a, block_size) for a in record["answers"]]
    places = answer_places(record["ranking"])
    if any(a is None for a in answers) or len(set(places.values())) < 2:
        return None
    return EncodedRanking(answers, [places[i] for i in range(len(answers))])


def collate_rankings(rankings: Sequence[EncodedRanking], pad_id: int) -> dict[str, Tensor]:
    """B rankings -> ids, attention_mask, loss_mask (B, K, T) and ranks (B, K); a short ranking gets
    rank -1 slots."""
    K = max(len(r.answers) for r in rankings)
    # a ranking of fewer than K answers fills its row by repeating its last one, whose rank -1 makes no pair
    flat = [r.answers[min(i, len(r.answers) - 1)] for r in rankings for i in range(K)]  # (B*K,)
    batch = collate(flat, pad_id)  # (B*K, T) right-padded
    ranks = torch.tensor([r.ranks + [-1] * (K - len(r.ranks)) for r in rankings])  # (B, K)
    B, T = len(rankings), batch["ids"].shape[1]
    return {**{key: batch[key].view(B, K, T) for key in ("ids", "attention_mask", "loss_mask")}, "ranks": ranks}


def ranking_rewards(model: nn.Module, batch: dict[str, Tensor], normalised: bool = True) -> Tensor:
    """The score of every answer of a batch of rankings: ids (B, K, T) -> (B, K)."""
    B, K, T = batch["ids"].shape
    flat = (batch[key].view(B * K, T) for key in ("ids", "attention_mask", "loss_mask"))  # (B*K, T) each
    return model(*flat, normalised=normalised).view(B, K)


def reward_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """The ranking loss of a batch of rankings (the training loop's loss_fn), on the raw scores: the
    normalisation is set after training (0 and 1 until then), so a finished run resumed for more steps
    would otherwise go on with its scores divided by their std, a loss of another scale."""
    loss, accuracy = ranking_loss(ranking_rewards(model, batch, normalised=False), batch["ranks"])
    return loss, {"accuracy": accuracy.item()}


def count_pairs(batch: dict[str, Tensor]) -> int:
    """How many pairs `reward_loss` averages over. Ties and short rankings make it differ from
    ranking to ranking, so with gradient accumulation the loop weights each micro-batch's mean by
    its share of the pairs (`count_terms`), as one batch would have pooled them."""
    return int(better_pairs(batch["ranks"]).sum())


@torch.no_grad()
def pairwise_accuracy(model: RewardModel, rankings: Sequence[EncodedRanking], pad_id: int,
                      batch_size: int = 32) -> float:
    """The share of all pairs of `rankings` whose better answer the model scores higher."""
    model.eval()
    device = next(model.parameters()).device
    hits, total = 0.0, 0
    for start in range(0, len(rankings), batch_size):
        batch = to_device(collate_rankings(rankings[start:start + batch_size], pad_id), device)
        margins = ranked_margins(ranking_rewards(model, batch), batch["ranks"])
        hits, total = hits + ordered_right(margins).sum().item(), total + margins.numel()
    return hits / max(total, 1)


@torch.no_grad()
def set_normalisation(model: RewardModel, rankings: Sequence[EncodedRanking], pad_id: int,
                      batch_size: int = 64) -> tuple[float, float]:
    """Make the scores of these answers (the SFT model's own samples) mean 0, std 1; return (mean, std)."""
    model.eval()
    device = next(model.parameters()).device
    model.reward_mean.fill_(0.0)
    model.reward_std.fill_(1.0)
    examples = [a for r in rankings for a in r.answers]
    scores = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_id)
        scores.append(model(*(batch[key].to(device) for key in ("ids", "attention_mask", "loss_mask"))))
    raw = torch.cat(scores)
    model.reward_mean.fill_(raw.mean().item())
    model.reward_std.fill_(raw.std().clamp(min=1e-6).item())
    return model.reward_mean.item(), model.reward_std.item()


def train_reward_model(
    cfg: RewardConfig, sft_dir: str | Path, prefs_path: str | Path, out_dir: str | Path, *,
    records: Sequence[dict] | None = None, resume: bool = False, instructions: dict | None = None,
) -> dict[str, Any] | None:
    """Train a reward model from the SFT run `sft_dir` on the rankings of `prefs_path`; write `out_dir`.

    `records` (the instruction records, matched to rankings by "id") is optional: with it, the
    annotator's agreement with itself and with the gold judge is reported next to the accuracy
    (without it both are None: not measured); `instructions` says where they came from (datasets'
    `instructions_record`), for config.json (None records them as given in Python: run_data's `data_record`).
    Returns {"pairwise_accuracy" (held-out rankings), "train_accuracy", "annotator_agreement",
    "gold_agreement", "reward_mean", "reward_std", "n_train", "n_test", "skipped" (too long for the
    context, or every answer tied), "seconds", "history"}; None on torchrun's ranks other than 0.
    """
    check_section(cfg, RewardConfig, "train_reward_model")
    start = time.perf_counter()
    seed_everything(cfg.train.seed)
    sft, tokenizer = load_model_and_tokenizer(sft_dir, GPT)
    rm = RewardModel.from_gpt(sft, cfg.likelihood_term)
    del sft  # the reward model trains a copy of it: the SFT model itself is not kept through the training
    train_recs, test_recs = split_rankings(read_preferences(prefs_path))
    encoded = {name: [encode_ranking(tokenizer, r, rm.config.block_size) for r in recs]
               for name, recs in (("train", train_recs), ("val", test_recs))}
    skipped = sum(e is None for es in encoded.values() for e in es)
    splits = {name: [e for e in es if e is not None] for name, es in encoded.items()}
    if not splits["train"] or not splits["val"]:
        raise not_enough_rankings(prefs_path, "need training AND held-out rankings that compare at least two "
                                  f"answers ({skipped} too long or all tied)", len(splits["train"]), len(splits["val"]))

    def get_batch(split: str, generator: torch.Generator) -> dict[str, Tensor]:
        rows = torch.randint(len(splits[split]), (cfg.train.batch_size,), generator=generator).tolist()
        return collate_rankings([splits[split][i] for i in rows], tokenizer.pad_id)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"pairwise_accuracy": pairwise_accuracy(model, splits["val"], tokenizer.pad_id)}

    result = train(rm, cfg.train, out_dir, get_batch=get_batch, loss_fn=reward_loss, count_terms=count_pairs,
                   evaluate=evaluate,
                   run_config={"reward": to_dict(cfg), "sft_dir": str(sft_dir), "prefs": str(prefs_path)},
                   tokenizer=tokenizer, resume=resume, desc="reward", settings="reward.train", model_kind="reward",
                   read={INSTRUCTIONS: data_record(INSTRUCTIONS, instructions, records)},
                   title="Reward model ranking loss")
    if not is_main_process():  # under torchrun, rank 0 alone normalises, evaluates and writes the results
        return None
    # Reward normalisation: the SFT model's own answers (those in the rankings) score mean 0, std 1.
    # (forward passes over every answer, seconds after the training bar ended: said, not left silent)
    print(f"reward: scoring every answer of the {len(splits['train'])} training and {len(splits['val'])} held-out "
          "rankings (the scores' scale, then the accuracy)")
    mean, std = set_normalisation(rm, splits["train"], tokenizer.pad_id)
    ckpt_path = Path(out_dir) / CKPT_NAME
    save_checkpoint(ckpt_path, {**load_checkpoint(ckpt_path), "model": rm.state_dict()})
    metrics = {
        "pairwise_accuracy": pairwise_accuracy(rm, splits["val"], tokenizer.pad_id),
        "train_accuracy": pairwise_accuracy(rm, splits["train"], tokenizer.pad_id),
        **annotator_ceiling(cfg, test_recs, records),
        "reward_mean": mean, "reward_std": std,
        "n_train": len(splits["train"]), "n_test": len(splits["val"]), "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }
    write_json(Path(out_dir) / "reward_metrics.json", metrics)
    return {**metrics, "history": result["history"]}


def annotator_ceiling(cfg: RewardConfig, rankings: Sequence[dict], records: Sequence[dict] | None
                      ) -> dict[str, float | None]:
    """How often the annotator agrees with itself / with gold on these rankings' answers; None (not
    measured, written null) when no ranking's id names a record with a reference: rankings of your own."""
    by_id = {r["id"]: r for r in records or [] if "id" in r}
    known = [r for r in rankings if r.get("id") in by_id and "reference" in by_id[r["id"]]]
    if not known:
        return {"annotator_agreement": None, "gold_agreement": None}
    recs, answers = [by_id[r["id"]] for r in known], [r["answers"] for r in known]
    return {"annotator_agreement": self_agreement(recs, answers, cfg.annotator_noise, cfg.train.seed,
                                                 cfg.annotator_tie_margin),
            "gold_agreement": gold_agreement(recs, answers, [r["ranking"] for r in known])}


# --------------------------------------------------------------------------------------------------
# Best of n: the reward model used as a policy, with no training at all.
#
# Sample n answers to a prompt and keep the one the reward model scores highest. It is the simplest
# way to turn a reward model into better answers, and the yardstick RL is read against (OpenAI's
# WebGPT and "Scaling laws for reward model overoptimization" compare RL with it): it needs n
# samples and n scores per prompt at answer time, where PPO pays once, in training, and then
# answers with one sample. How far it moves from the policy it samples is bounded:
# KL(best-of-n || policy) <= log n - (n - 1) / n nats.


def best_of_n_kl(n: int) -> float:
    """The bound on KL(best-of-n || the sampled policy), in nats: log n - (n - 1) / n (0 for n = 1)."""
    return math.log(n) - (n - 1) / n


def score_answers(rm: RewardModel, tokenizer: Tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> Tensor:
    """The reward model's score of each (prompt, answer), in the chat template: (P,)."""
    return per_answer(lambda b: rm(b["ids"], b["attention_mask"], b["loss_mask"]), rm, tokenizer, prompts, answers)


def pick_best(candidates: Sequence[Sequence[str]], scores: Tensor) -> list[str]:
    """Per prompt, the candidate with the highest score; scores (P, n). On a tie, the first of them."""
    return [answers[i] for answers, i in zip(candidates, scores.argmax(dim=1).tolist(), strict=True)]


@torch.no_grad()
def best_of_n(policy: GPT, rm: RewardModel, tokenizer: Tokenizer, prompts: Sequence[str], n: int, temperature: float,
              max_new_tokens: int, generator: torch.Generator, desc: str | None = None) -> list[str]:
    """Sample `n` answers to each prompt from `policy` and keep the one `rm` scores highest (`desc`
    names a progress bar of the answers sampled, as in `generate_answers`)."""
    asked = [p for p in prompts for _ in range(n)]  # each prompt n times in a row
    flat = generate_answers(policy, tokenizer, asked, max_new_tokens, temperature=temperature, generator=generator,
                            desc=desc)
    scores = score_answers(rm, tokenizer, asked, flat).view(len(prompts), n)  # (P, n)
    return pick_best([flat[i * n:(i + 1) * n] for i in range(len(prompts))], scores)

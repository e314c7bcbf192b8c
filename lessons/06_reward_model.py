"""Lesson 6: the reward model, from rankings to a score function.

SFT taught the model to answer. Its answers still vary: sometimes right and plain, sometimes
padded with chatter, rude, terse or wrong, because its training data did. People can tell which
answer they prefer far more easily than they can write the perfect one. RLHF starts there: rank a
few answers per prompt, then train a model that predicts those rankings.

What you will see:
1. One prompt, four answers sampled from the SFT model, the simulated annotator's score for each
   (what it rewards: correct, exact, full form, near miss; what it penalises: rude, verbose), and
   its ranking.
2. The ranking turned into its 4*3/2 = 6 pairs, and the ranking loss -log sigmoid(r_w - r_l)
   computed by hand for made-up rewards, next to the library's `ranking_loss`.
3. A reward model trained on a few hundred rankings: the SFT GPT plus one linear head on the last
   real token, plus a learnt weight times the answer's mean token log-probability under the GPT's
   own language-model head (the head sees style; the likelihood sees whether the answer is right).
   Its pairwise accuracy on held-out rankings, next to the ceiling set by the annotator's noise.
4. The trained model's score of one answer written in the five styles of the training data, and
   how much of each score came from the likelihood term.

Run it:  python lessons/06_reward_model.py [SFT_RUN_DIR]    (about 2 minutes on a 2-core CPU)
It uses SFT_RUN_DIR or runs/lessons/05/sft (left by lesson 5). Outputs go to runs/lessons/06/
(prefs.jsonl: the rankings, open it; reward/: the reward model run with loss.png).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from minillm.config import preset
from minillm.datasets.instructions import PADDING_CLOSERS, PADDING_OPENERS, RUDE_OPENERS, read_jsonl, terse
from minillm.model import GPT
from minillm.stage2_sft.sft import collate
from minillm.stage2_sft.template import encode_example
from minillm.stage3_rlhf.annotator import (
    SimulatedAnnotator,
    answer_places,
    gold_score,
    ranking_to_pairs,
    score_parts,
)
from minillm.stage3_rlhf.preferences import collect_rankings, sample_distinct_answers
from minillm.stage3_rlhf.reward_model import RewardModel, ranking_loss, train_reward_model
from minillm.stage3_rlhf.sequences import last_real_index
from minillm.train import load_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "lessons" / "06"
CFG = preset("tiny")


def sft_dir() -> Path:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "lessons" / "05" / "sft"
    if not (path / "ckpt.pt").is_file():
        sys.exit(f"no SFT run at {path}: run `python lessons/05_instruction_tuning.py` first, or pass a folder")
    return path


def step1_one_ranking(policy: GPT, tokenizer, record: dict) -> list[int | list[int]]:
    print("== 1. Four answers to one prompt, scored and ranked by the simulated annotator ==")
    answers = sample_distinct_answers(policy, tokenizer, [record["prompt"]], 4, 1.0, 32,
                                      torch.Generator().manual_seed(0))[0]
    print(f"  prompt:    {record['prompt']}\n  reference: {record['reference']}")
    for i, answer in enumerate(answers):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in score_parts(record, answer).items() if v)
        print(f"  [{i}] gold {gold_score(record, answer):5.2f}  {answer!r}\n        ({parts or 'nothing'})")
    annotator = SimulatedAnnotator(CFG.reward.annotator_noise, seed=0, tie_margin=CFG.reward.annotator_tie_margin)
    ranking = annotator.rank(record, answers)
    print(f"  ranking, best first: {ranking}  (gold score + noise of std {CFG.reward.annotator_noise}; "
          f"answers within {CFG.reward.annotator_tie_margin} of each other tie, written as a list)\n")
    return ranking


def step2_loss_by_hand(ranking: list[int | list[int]]) -> None:
    print("== 2. A ranking of 4 is up to 6 comparisons (a tie gives none); the loss of each is "
          "-log sigmoid(r_better - r_worse) ==")
    places = answer_places(ranking)  # answer -> its place in the ranking (tied answers share one)
    rewards = torch.tensor([0.5, -0.3, 1.2, 0.0])[: len(places)]  # made-up scores of the answers
    by_hand = []
    for better, worse in ranking_to_pairs(ranking):
        margin = (rewards[better] - rewards[worse]).item()
        by_hand.append(math.log(1 + math.exp(-margin)))
        print(f"  answer {better} > answer {worse}: r = {rewards[better]:+.1f} vs {rewards[worse]:+.1f}, "
              f"loss = log(1 + e^-({margin:+.1f})) = {by_hand[-1]:.4f}")
    if not by_hand:
        print("  every answer tied: this ranking teaches nothing (the training skips such rankings)\n")
        return
    ranks = torch.tensor([places[i] for i in range(len(places))])
    loss, accuracy = ranking_loss(rewards[None], ranks[None])
    print(f"  mean by hand {sum(by_hand) / len(by_hand):.4f}; ranking_loss {loss.item():.4f} "
          f"(pairs ordered right: {accuracy.item():.0%}). A pair already ordered right costs little;\n"
          "  one ordered wrong costs a lot, and its gradient pushes the two scores apart.\n")


def step3_train(sft: Path, records: list[dict]) -> Path:
    print("== 3. Collect rankings from the SFT model and train the reward model ==")
    prefs, rm_dir = OUT / "prefs.jsonl", OUT / "reward"
    if not prefs.is_file():
        stats = collect_rankings(CFG.reward, sft, records, prefs)
        print(f"  {stats['n_rankings']} rankings ({stats['n_pairs']} pairs) in {stats['seconds']:.0f} s -> {prefs}")
    result = train_reward_model(CFG.reward, sft, prefs, rm_dir, records=records, resume=True)
    print(f"  held-out pairwise accuracy {result['pairwise_accuracy']:.1%} (training rankings "
          f"{result['train_accuracy']:.1%})\n  the annotator agrees with the gold judge on "
          f"{result['gold_agreement']:.1%} of those pairs and with itself on {result['annotator_agreement']:.1%}:"
          "\n  a perfect reward model could not beat the first number. Loss curve: "
          f"{rm_dir / 'loss.png'}\n")
    return rm_dir


def step4_styles(rm_dir: Path, record: dict) -> None:
    print("== 4. One answer in five styles: what the reward model learnt ==")
    rm, tokenizer = load_model(rm_dir, RewardModel)
    ideal = record["reference"]
    styles = {"ideal": ideal, "terse": terse(ideal), "padded": f"{PADDING_OPENERS[0]} {ideal} {PADDING_CLOSERS[0]}",
              "impolite": f"{RUDE_OPENERS[0]} {ideal}", "wrong": "I do not know."}
    examples = [encode_example(tokenizer, record["prompt"], text, rm.config.block_size) for text in styles.values()]
    batch = collate(examples, tokenizer.pad_id)
    with torch.no_grad():
        scores = rm(batch["ids"], batch["attention_mask"], batch["loss_mask"])  # (5,) head + likelihood
        last = last_real_index(batch["attention_mask"])  # (5,) where the head reads each answer
        head_only = rm.token_scores(batch["ids"], batch["attention_mask"])[torch.arange(len(examples)), last]
    print(f"  (learnt likelihood weight w = {rm.likelihood_weight.item():.2f}; 'from likelihood' is "
          "w * mean log p, normalised)")
    for (style, text), score, head in zip(styles.items(), scores.tolist(), head_only.tolist(), strict=True):
        print(f"  {style:9s} reward model {score:+.2f} (from likelihood {score - head:+.2f})   "
              f"gold {gold_score(record, text):5.2f}   {text!r}")
    print()


def main() -> None:
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    sft = sft_dir()
    records = read_jsonl(ROOT / "data" / "instructions.jsonl")
    policy, tokenizer = load_model(sft, GPT)
    record = next(r for r in records if r["split"] == "test_seen" and r["family"] == "world_fact")
    ranking = step1_one_ranking(policy, tokenizer, record)
    step2_loss_by_hand(ranking)
    rm_dir = step3_train(sft, records)
    step4_styles(rm_dir, record)
    print("""== Try this ==
1. A noisier annotator: `--set reward.annotator_noise=1.0` (CLI) or edit CFG.reward here. The
   ceiling (agreement with gold) falls, and the reward model's accuracy falls with it: a reward
   model cannot be more consistent than its labellers.
2. Fewer answers per ranking: `reward.answers_per_prompt=2` gives 1 pair per prompt instead of 6.
   With the same number of prompts, accuracy drops: rankings of K are cheap extra comparisons.
3. The head alone: `--set reward.likelihood_term=false` (CLI), or set it in CFG.reward here. With
   the tiny preset's SFT model, held-out accuracy fell from 0.85 to 0.71: pairs that differ in style
   stay right (0.92 in an earlier run), but pairs where one answer is right and the other wrong fall
   close to a coin flip (0.58). Lesson 7 shows what PPO makes of such a judge.
4. Read the head somewhere else: in RewardModel.forward, take the head's score at the FIRST token
   instead of the last real one. That position has only seen `<bos>`: the head gives every answer
   the same score, and only the likelihood term is left to tell answers apart.
""")


if __name__ == "__main__":
    main()

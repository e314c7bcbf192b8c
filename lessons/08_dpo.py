"""Lesson 8: DPO, learning from the same rankings with no reward model and no sampling.

PPO needed four models (policy, reference, reward model, critic) and a sampling loop. DPO asks:
if the best policy for "reward minus beta * KL" is known in closed form, why not train the policy
directly on the rankings? Its loss is the reward model's ranking loss, with the reward replaced by
beta * (log pi(answer) - log pi_ref(answer)).

What you will see:
1. The DPO loss of one pair, by hand: at the start the policy IS the reference, so every implicit
   reward is 0 and the loss is log 2; making the better answer likelier lowers it.
2. DPO training on the rankings of lesson 6, with the same training loop as pretraining and SFT.
   The preset adds the chosen answers' own NLL per token (`dpo.nll_coef`, as Llama 3 did): the DPO
   loss only asks for a gap between the two answers, and opens it partly by making the better one
   less likely too; the NLL term keeps it likely. The log shows both parts.
3. PPO vs DPO on the same held-out prompts, judged by the gold function, beside the yardstick
   that needs no training at all: best of 4, four SFT answers per prompt of which the reward
   model keeps the one it scores highest.

Run it:  python lessons/08_dpo.py [SFT_RUN_DIR] [PREFS_FILE] [REWARD_RUN_DIR]    (about 1 minute on
a 2-core CPU). Defaults: runs/lessons/05/sft, runs/lessons/06/prefs.jsonl and runs/lessons/06/reward.
Outputs go to runs/lessons/08/. If lesson 7 left runs/lessons/07/ppo/ppo_metrics.json, the table
shows PPO beside DPO; if there is no reward model, it leaves out best of 4.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from minillm.config import preset
from minillm.datasets.instructions import read_jsonl
from minillm.model import GPT
from minillm.stage2_sft.sft import collate
from minillm.stage2_sft.template import encode_example
from minillm.stage3_rlhf.annotator import ranking_places
from minillm.stage3_rlhf.dpo import dpo_loss, train_dpo
from minillm.stage3_rlhf.preferences import (
    compare_answers,
    comparison_summary,
    heldout_records,
    read_preferences,
    sample_answers,
)
from minillm.stage3_rlhf.reward_model import RewardModel, best_of_n, best_of_n_kl
from minillm.stage3_rlhf.sequences import answer_logprob
from minillm.train import load_model
from minillm.utils import spread_rows

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "lessons" / "08"
PPO_METRICS = ROOT / "runs" / "lessons" / "07" / "ppo" / "ppo_metrics.json"
CFG = preset("tiny")


def inputs() -> tuple[Path, Path, Path | None]:
    """The SFT run, the rankings, and the reward model (None if there is none: no best-of-4 row)."""
    sft = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "lessons" / "05" / "sft"
    prefs = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "runs" / "lessons" / "06" / "prefs.jsonl"
    rm_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else ROOT / "runs" / "lessons" / "06" / "reward"
    if not (sft / "ckpt.pt").is_file() or not prefs.is_file():
        sys.exit(f"need an SFT run ({sft}) and rankings ({prefs}): run lessons 5 and 6 first, or pass them")
    return sft, prefs, rm_dir if (rm_dir / "ckpt.pt").is_file() else None


def step1_one_pair(sft: Path, prefs: Path) -> None:
    print("== 1. The DPO loss of one pair ==")
    policy, tokenizer = load_model(sft, GPT)
    # The first ranking with a best and a worst place (tied answers share a place: a list of indices).
    ranking = next((r for r in read_preferences(prefs) if len(ranking_places(r["ranking"])) > 1), None)
    if ranking is None:
        sys.exit(f"{prefs}: every ranking ties all its answers, so there is no pair to learn from")
    places = ranking_places(ranking["ranking"])
    best, worst = ranking["answers"][places[0][0]], ranking["answers"][places[-1][0]]
    batch = collate([encode_example(tokenizer, ranking["prompt"], a, policy.config.block_size) for a in (best, worst)],
                    tokenizer.pad_id)
    with torch.no_grad():
        logp = answer_logprob(policy, batch["ids"], batch["attention_mask"], batch["loss_mask"])  # (2,)
    beta = CFG.dpo.beta
    print(f"  prompt: {ranking['prompt']}\n  better: {best!r}  log pi = {logp[0]:.2f}\n"
          f"  worse:  {worst!r}  log pi = {logp[1]:.2f}")
    print(f"  policy = reference, so both implicit rewards beta*(log pi - log ref) are 0: loss = log 2 = "
          f"{dpo_loss(logp[:1], logp[1:], logp[:1], logp[1:], beta)[0].item():.4f}")
    moved = logp + torch.tensor([1.0, -1.0])  # the better answer e times likelier, the worse e times less likely
    margin = beta * ((moved[0] - logp[0]) - (moved[1] - logp[1])).item()
    by_hand = math.log1p(math.exp(-margin))
    print(f"  after a step that adds 1 nat to the better answer and removes 1 from the worse: margin "
          f"{beta} * (1 - (-1)) = {margin:.2f},\n  loss = log(1 + e^-{margin:.2f}) = {by_hand:.4f}; "
          f"dpo_loss says {dpo_loss(moved[:1], moved[1:], logp[:1], logp[1:], beta)[0].item():.4f}\n")


def step2_train(sft: Path, prefs: Path, records: list[dict]) -> dict:
    print(f"== 2. DPO, {CFG.dpo.train.max_steps} steps, beta {CFG.dpo.beta}, NLL weight {CFG.dpo.nll_coef} ==")
    result = train_dpo(CFG.dpo, sft, prefs, records, OUT / "dpo", resume=True)
    rows = [r for r in result["history"] if "accuracy" in r]
    for row in spread_rows(rows, 6):
        print(f"  step {row['step']:4d}  loss {row['loss']:.4f}  pairs ordered right {row['accuracy']:.0%}  "
              f"margin {row['margin']:+.3f}  chosen NLL/token {row['chosen_nll']:.3f}")
    print(f"  held-out pairs ordered right: {result['pair_accuracy']:.0%}; loss curve {OUT / 'dpo' / 'loss.png'}\n")
    return result


def best_of(sft: Path, rm_dir: Path, records: list[dict], n: int) -> dict:
    """Best of n by the reward model, compared with the SFT model exactly as DPO was: the same
    held-out prompts, and the same SFT answers (`sample_answers` with the seed `train_dpo` compares with)."""
    started = time.perf_counter()
    policy, tokenizer = load_model(sft, GPT)
    rm = load_model(rm_dir, RewardModel)[0].eval()
    tests = heldout_records(records, CFG.dpo.eval_prompts, 0)
    temperature, max_new = CFG.dpo.temperature, CFG.dpo.max_new_tokens
    sft_answers = sample_answers(policy, tokenizer, tests, temperature, max_new, CFG.dpo.train.seed)
    picked = best_of_n(policy, rm, tokenizer, [r["prompt"] for r in tests], n, temperature, max_new,
                       generator=torch.Generator().manual_seed(CFG.dpo.train.seed + 1))  # other draws than SFT's
    return {**comparison_summary(compare_answers(tests, picked, sft_answers)), "n": n,
            "seconds": time.perf_counter() - started}


def step3_table(dpo: dict, best: dict | None) -> None:
    print("== 3. PPO vs DPO, on held-out prompts judged by gold ==")
    rows = {"DPO": dpo}
    if PPO_METRICS.is_file():
        rows = {"PPO": json.loads(PPO_METRICS.read_text()), **rows}
    if best is not None:
        rows[f"best of {best['n']}"] = best
    print(f"  {'method':9s} {'win rate vs SFT':>16s} {'± s.e.':>7s} {'gold SFT':>9s} {'gold after':>11s} "
          f"{'flawed':>13s} {'wrong':>13s} {'seconds':>8s}")
    for name, m in rows.items():
        shares = [f"{m.get(f'{key}_sft', float('nan')):.2f} -> {m.get(f'{key}_after', float('nan')):.2f}"
                  for key in ("style_flaws", "wrong")]
        print(f"  {name:9s} {m['win_rate_vs_sft']:>16.2f} {m.get('win_rate_stderr', float('nan')):>7.2f} "
              f"{m['gold_sft']:>9.2f} {m['gold_after']:>11.2f} {shares[0]:>13s} {shares[1]:>13s} {m['seconds']:>8.0f}")
    print("  A difference smaller than about two standard errors could be the luck of the prompts drawn.")
    if best is not None:
        n, ppo_kl = best["n"], f"; PPO ended {rows['PPO']['kl']:.2f} nats away" if "PPO" in rows else ""
        print(f"  Best of {n} trains nothing: it samples {n} SFT answers and the reward model keeps one, so it")
        print(f"  stays within {best_of_n_kl(n):.2f} nats of the SFT model (log n - (n-1)/n{ppo_kl}). It needs the")
        print("  reward model at answer time, on every prompt; a trained policy answers alone, from what it")
        print("  learnt on other prompts.")
    print("  Flawed: the right answer wrapped in filler or rudeness, one habit on every prompt, which RL")
    print("  unlearns. Wrong: the right answer is not there; fixing it means knowing a fact or a task.")
    print(f"  A perfect policy would win {dpo['win_rate_ceiling']:.2f} against the same SFT answers (it can only "
          "tie where they are already perfect).")
    print()


def main() -> None:
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    sft, prefs, rm_dir = inputs()
    records = read_jsonl(ROOT / "data" / "instructions.jsonl")
    step1_one_pair(sft, prefs)
    dpo = step2_train(sft, prefs, records)
    step3_table(dpo, best_of(sft, rm_dir, records, n=4) if rm_dir is not None else None)
    print("""== Try this ==
1. beta: CFG.dpo.beta = 0.5 keeps the policy near the reference (small, safe changes); 0.02 lets
   it move far. Watch the win rate, and the answers: too far and they degrade.
2. Only the best and worst answer of each ranking (one pair instead of up to six): edit
   dpo.encode_pairs to pair places[0][0] with places[-1][0], where places = ranking_places(ranking).
   Fewer comparisons, a weaker result.
3. Plain DPO: CFG.dpo.nll_coef = 0. Both forms make the held-out chosen answers *less* likely
   than the SFT model did (mean log-prob -3.22 -> -3.60 nats plain, -3.51 with the term, in our
   runs): DPO only asks that the chosen answer gain on the rejected one. The term keeps the good
   answers a little more likely; the win rate did not tell the two apart here (0.60 plain, 0.59
   with it; with an earlier 4-layer model 0.57 and 0.61).
4. A person's rankings: `minillm annotate --policy runs/lessons/05/sft --prompts data/instructions.jsonl
   --out mine.jsonl`, rank twenty prompts, then run this lesson with mine.jsonl.
5. Best of 8: `best_of(..., n=8)` in main. More samples, more chances that one is right, and a
   larger step away from the SFT model (at most 1.2 nats). In our runs, on 600 held-out prompts
   (other draws than this table's), the reward model's best of 4 / 8 won 0.66 / 0.69, and the
   gold judge's own pick of 4 / 8 won 0.71 / 0.75: even the reward model's pick of eight, at twice
   PPO's KL, stays under 0.7. That is the bar a trained policy, answering with one sample and no
   reward model in sight, would have to clear.
""")


if __name__ == "__main__":
    main()

"""Lesson 9: the whole journey, stage by stage, watching one model change its behaviour.

The previous lessons took the stages one at a time. Here we run them in order, from Python, with
the same functions `minillm pipeline` uses (`minillm.pipeline.run_step`), and after each stage we
ask the newest model the same three requests:

1. a question about a world fact whose answer the SFT data never contained (only the corpus did),
2. a seen task phrased in a way SFT never trained on,
3. a request from a task family SFT never saw at all.

What you will see:
- after CLM pretraining, the GPT *continues* the text instead of answering: it knows the world's
  language and facts, but not that a request wants an answer;
- after SFT, it answers, in the short format of the demonstrations, including requests phrased in
  new ways; whether it solves the unseen family is the open question of instruction tuning;
- after PPO and DPO, the answers move towards what the (simulated) annotators preferred: correct,
  polite, concise; the gold score printed beside each answer is the judge the policy never saw.

Run it:  python lessons/09_end_to_end.py [--preset micro|tiny] [--out runs/lessons/09]
With the tiny preset it takes 6 to 11 minutes on a 2-core CPU; the steps are saved, so a second
run skips what is done and prints the comparison at once (pass --force to start over).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from minillm.config import apply_overrides, preset
from minillm.model import GPT, Bert
from minillm.pipeline import STEP_NAMES, Journey, run_step
from minillm.stage1_pretrain.mlm import fill_mask
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage3_rlhf.annotator import gold_score
from minillm.train import load_model


def pick_requests(records: list[dict]) -> list[dict]:
    """One test record each for: an unseen world fact, an unseen phrasing, an unseen family."""
    wanted = ("test_world_fact", "test_heldout_phrasing", "test_heldout_family")
    return [next(r for r in records if r["split"] == split) for split in wanted]


def show_answers(title: str, run_dir: Path, requests: list[dict]) -> None:
    """Ask the GPT saved in `run_dir` each request (greedy) and print its answer and gold score."""
    model, tokenizer = load_model(run_dir, GPT)
    answers = generate_answers(model, tokenizer, [r["prompt"] for r in requests], max_new_tokens=32)
    print(f"\n--- {title} ---")
    for record, answer in zip(requests, answers, strict=True):
        print(f"  [{record['split']}] {record['prompt']!r}")
        print(f"      -> {answer!r}   (reference {record['reference']!r}, gold {gold_score(record, answer):+.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=("micro", "tiny", "small"))
    parser.add_argument("--out", default="runs/lessons/09")
    parser.add_argument("--force", action="store_true", help="delete earlier steps and start over")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a config value, e.g. --set ppo.kl_coef=0 (use a new --out)")
    args = parser.parse_args()
    out = Path(args.out) / args.preset
    if args.force:
        shutil.rmtree(out, ignore_errors=True)
    journey = Journey(apply_overrides(preset(args.preset), args.set), out)
    requests = pick_requests(journey.records)

    # Stage 0 and 1: the tokenizer, then BERT learns by filling in blanks.
    for name in ("tokenizer", "mlm"):
        journey.results[name] = run_step(journey, name)
    bert, tokenizer = load_model(journey.folder("mlm"), Bert)
    ranking = fill_mask(bert, tokenizer, "A flash flood watch will be in effect all [MASK].", top_k=5)
    print("\nBERT fills 'A flash flood watch will be in effect all [MASK].' with:",
          ", ".join(f"{piece.strip()} ({p:.2f})" for piece, p in ranking))

    # Stage 1 again: GPT learns to continue text. It has no idea yet that a request wants an answer.
    journey.results["clm"] = run_step(journey, "clm")
    show_answers("after CLM pretraining (the base model)", journey.folder("clm"), requests)

    # Stage 2: instruction tuning on demonstrations.
    journey.results["sft"] = run_step(journey, "sft")
    show_answers("after SFT", journey.folder("sft"), requests)

    # Stage 3: rankings -> reward model -> PPO, and DPO straight from the rankings.
    for name in STEP_NAMES[STEP_NAMES.index("reward_model"):]:
        journey.results[name] = run_step(journey, name)
    show_answers("after PPO", journey.folder("ppo"), requests)
    show_answers("after DPO", journey.folder("dpo"), requests)

    r = journey.results
    print("\nThe key numbers (the pipeline's report.json has them all):")
    print(f"  SFT exact match on held-out phrasings: {r['sft']['exact_match']['heldout_phrasings']:.2f} "
          f"(base model {r['sft']['base_exact_match']['heldout_phrasings']:.2f})")
    print(f"  reward model pairwise accuracy: {r['reward_model']['pairwise_accuracy']:.2f}")
    print("  win rate vs SFT by the gold judge (± one standard error): "
          + ", ".join(f"{name.upper()} {r[name]['win_rate_vs_sft']:.2f} ± {r[name]['win_rate_stderr']:.2f}"
                      for name in ("ppo", "dpo")))


if __name__ == "__main__":
    main()

# Try this
# 1. Starve pretraining: `--set clm.train.max_steps=20 --out runs/lessons/09-short`. The world-fact
#    answer after SFT becomes a guess: SFT teaches the format, pretraining supplied the fact.
# 2. Remove the KL leash: `--set ppo.kl_coef=0 --out runs/lessons/09-nokl`. The reward model's score
#    climbs while the gold score after PPO falls: the policy found what the reward model over-rates.
# 3. Swap the tokenizer: `--set tokenizer.kind=sentencepiece --out runs/lessons/09-spm`. Every stage
#    still runs on the other tokenizer; compare the answers and numbers.

# %% [markdown]
# # Lesson 9: the whole journey, stage by stage, watching one model change its behaviour
#
# The previous lessons took the stages one at a time. Here we run them in order, from Python, with
# the same functions `minillm pipeline` uses (`minillm.pipeline.run_step`), and then ask the model
# of every stage the same requests, of three kinds:
#
# 1. a question about a world fact that the SFT data never stated (only the corpus did),
# 2. a seen task phrased in a way SFT never trained on,
# 3. a request from a task family SFT never saw at all.
#
# What you will see:
# - after CLM pretraining, the GPT *continues* the text instead of answering: it knows the world's
#   language and facts, but not that a request wants an answer;
# - after SFT, it answers, in the short format of the demonstrations, including requests phrased in
#   new ways; whether it solves the unseen family is the open question of instruction tuning;
# - after reinforcement learning (PPO and GRPO against the reward model, DPO from the rankings, GRPO
#   against a verifier, a program that checks the answer: lesson 10 takes both up), the answers of
#   the *sampled* policy move towards what the simulated annotators preferred, or towards right
#   answers. Its single most likely (greedy) answer, shown here, often does not change at all: the
#   lesson measures how often it does, and shows the requests where the stages differ most, with the
#   gold score (the judge no policy ever saw).
#
# Run it: `python lessons/09_end_to_end.py [--preset micro|tiny] [--out DIR] [--fresh]`, or step
# through its cells. With the tiny preset it uses the pipeline's folder, runs/tiny: after
# `minillm pipeline --preset tiny --out runs/tiny` every step is done and the lesson takes about 3 s on
# a 2-core CPU; otherwise it trains what is missing there (4 to 10 minutes, as the pipeline).
# `--fresh` runs the whole journey again in runs/lessons/09/tiny. With `--set`, the steps that
# runs/tiny made from the same settings are copied from there, and only the steps the change reaches
# train: an experiment on PPO takes about a minute. The experiments to try are at the end.

# %%
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from minillm.config import PRESETS, apply_overrides, preset
from minillm.lessons import PIPELINE_DIR, ROOT, in_notebook, lesson_parser, pipeline_journey
from minillm.model import GPT, Bert
from minillm.pipeline import STEP_NAMES, Journey, run_step
from minillm.report import RL_POLICIES, write_report
from minillm.run_lock import RUN_MARK_NAME, check_not_foreign, take_folder
from minillm.stage1_pretrain.mlm import FLASH_FLOOD, fill_mask
from minillm.stage2_sft.evaluate import generate_answers
from minillm.stage3_rlhf.annotator import gold_score, win_rate_text
from minillm.train import load_model_and_tokenizer
from minillm.utils import resolve_device

parser = lesson_parser("Lesson 9: the whole journey, stage by stage")
parser.add_argument("--preset", default="tiny", choices=PRESETS)
parser.add_argument("--out", default=None, help="run the journey in OUT/PRESET (default: runs/tiny for the "
                    "tiny preset, where the pipeline writes; runs/lessons/09/PRESET otherwise)")
parser.add_argument("--fresh", action="store_true", help="delete earlier steps in that folder and start over")
parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="override a config value, e.g. --set ppo.kl_coef=0 (with a new --out, to keep both runs)")
ARGS = parser.parse_args([] if in_notebook() else sys.argv[1:])
if ARGS.out is not None:
    out = Path(ARGS.out) / ARGS.preset
elif ARGS.preset == "tiny" and not ARGS.fresh and not ARGS.set:
    out = PIPELINE_DIR  # what `minillm pipeline --preset tiny --out runs/tiny` wrote: nothing to train again
else:
    out = ROOT / "runs" / "lessons" / "09" / ARGS.preset
if ARGS.fresh:  # only a journey's folder (or an empty one) is deleted, never a folder of the reader's own files
    check_not_foreign(out)
    shutil.rmtree(out, ignore_errors=True)
take_folder(out)  # as `minillm pipeline` takes its --out: a file, or a folder of the reader's own files, is refused
(out / RUN_MARK_NAME).touch()  # and marked as a run's folder, so that the next run of the lesson may go on in it
print(f"the journey's folder: {out} (a step that finished there from the same settings is read, not trained again)")
started = time.perf_counter()
if out == PIPELINE_DIR and not ARGS.set:  # runs/tiny as `minillm pipeline` made it, with its own settings
    journey = pipeline_journey()
else:  # steps that runs/tiny made from the same settings are copied from there (`reuse_from`), not trained
    reuse = PIPELINE_DIR if ARGS.preset == "tiny" and not ARGS.fresh else None
    journey = Journey(apply_overrides(preset(ARGS.preset), ARGS.set), out, reuse_from=reuse)
journey.write_config()  # as the pipeline does: what the steps are made with

# %% [markdown]
# ## Stage 0 and 1: the tokenizer, then BERT learns by filling in blanks

# %%
for name in ("tokenizer", "mlm"):
    journey.results[name] = run_step(journey, name)
bert, tokenizer = load_model_and_tokenizer(journey.folder("mlm"), Bert)
ranking = fill_mask(bert, tokenizer, FLASH_FLOOD, top_k=5)
print(f"\nBERT fills {FLASH_FLOOD!r} with:", ", ".join(f"{piece.strip()} ({p:.2f})" for piece, p in ranking))

# %% [markdown]
# ## Stage 1 again: GPT learns to continue text
# It has no idea yet that a request wants an answer.

# %%
journey.results["clm"] = run_step(journey, "clm")

# %% [markdown]
# ## Stage 2: instruction tuning on demonstrations

# %%
journey.results["sft"] = run_step(journey, "sft")

# %% [markdown]
# ## Stage 3: rankings -> reward model -> PPO and GRPO; DPO straight from the rankings; the table

# %%
for name in STEP_NAMES[STEP_NAMES.index("reward_model"):]:  # the policies, then the table comparing them
    journey.results[name] = run_step(journey, name)
write_report(journey, resolve_device(journey.cfg.device).type, time.perf_counter() - started)
print(f"\nreport: {out / 'report.md'}")

# %% [markdown]
# ## The same requests after every stage
# Which requests to show is measured, not picked by hand: every model answers the first 20 test
# requests of each kind (greedily: its most likely answer), and for each kind we show the request on
# which the models after SFT disagree most (most distinct answers, then the widest spread of gold
# scores). When reinforcement learning changed no greedy answer of a kind, the lesson says so. The
# request shown is thus the exception, not the rule: a change there may be for the worse as well as
# for the better, and the line above it counts how many of the 20 changed at all.

# %%
KINDS = {"test_world_fact": "a world fact only the corpus stated",
         "test_heldout_phrasing": "a trained task in words SFT never saw",
         "test_heldout_family": "a task family SFT never saw"}
STAGES = {"clm": "after CLM pretraining (the base model)", "sft": "after SFT",
          **{step: f"after {name}" for name, step in RL_POLICIES.items()}}


def answers_after_each_stage(requests: list[dict]) -> dict[str, list[str]]:
    """stage -> the greedy answer of its model to each request."""
    answers = {}
    for stage in STAGES:
        model, tok = load_model_and_tokenizer(journey.folder(stage), GPT)
        answers[stage] = generate_answers(model, tok, [r["prompt"] for r in requests], max_new_tokens=32)
    return answers


def most_different(rows: list[int], requests: list[dict], answers: dict[str, list[str]]) -> int:
    """The row whose answers after SFT and RL differ most: distinct answers first, then gold spread."""
    def difference(i: int) -> tuple[int, float]:
        later = [answers[stage][i] for stage in STAGES if stage != "clm"]
        golds = [gold_score(requests[i], a) for a in later]
        return len(set(later)), max(golds) - min(golds)
    return max(rows, key=difference)


def show_requests(n_per_kind: int = 20) -> None:
    requests = [r for split in KINDS for r in [r for r in journey.records if r["split"] == split][:n_per_kind]]
    answers = answers_after_each_stage(requests)
    for split, kind in KINDS.items():
        rows = [i for i, r in enumerate(requests) if r["split"] == split]
        changed = {name: sum(answers[step][i] != answers["sft"][i] for i in rows) for name, step in RL_POLICIES.items()}
        print(f"\n--- {kind} ({split}) ---")
        print(f"  of {len(rows)} such requests, the greedy answer after SFT changed after "
              + ", ".join(f"{name} on {n}" for name, n in changed.items()))
        i = most_different(rows, requests, answers)
        record = requests[i]
        print(f"  {record['prompt']!r}  (reference {record['reference']!r})")
        for stage, label in STAGES.items():
            answer = answers[stage][i]
            print(f"    {label:40s} -> {answer!r}  (gold {gold_score(record, answer):+.2f})")
        if not any(changed.values()):
            print("  Reinforcement learning changed none of these greedy answers: what it changed is how often\n"
                  "  the sampled answers carry filler, rudeness or a wrong answer (the win rates below).")


show_requests()

# %% [markdown]
# ## The key numbers
# The pipeline's report.json (and report.md) has them all, each with its baseline.

# %%
r = journey.results
print("\nThe key numbers (the pipeline's report.json has them all):")
print(f"  SFT exact match on held-out phrasings: {r['sft']['exact_match']['heldout_phrasings']:.2f} "
      f"(base model {r['sft']['base_exact_match']['heldout_phrasings']:.2f})")
print(f"  reward model pairwise accuracy: {r['reward_model']['pairwise_accuracy']:.2f}")
print("  win rate vs SFT by the gold judge, sampled answers (± one standard error): "
      + ", ".join(f"{name} {win_rate_text(r[step])}" for name, step in RL_POLICIES.items()))

# %% [markdown]
# ## Try this
# 1. Starve pretraining: `--set clm.train.max_steps=20 --out runs/lessons/09-short`. The world-fact
#    answer after SFT becomes a guess: SFT teaches the format, pretraining supplied the fact.
# 2. Remove the KL leash: `--set ppo.kl_coef=0 --out runs/lessons/09-nokl`. Does the gold score
#    after PPO fall while the reward model's score climbs? With this reward model, which also weighs
#    how likely the SFT model finds the answer, it held in our runs (lesson 07, Try this 4); a
#    head-only reward model is fooled (lesson 07's step 3). `minillm compare runs/tiny
#    runs/lessons/09-nokl/tiny` lists every figure that moved.
# 3. Swap the tokenizer: `--set tokenizer.kind=sentencepiece --out runs/lessons/09-spm`. Every stage
#    still runs on the other tokenizer; compare the answers and numbers.

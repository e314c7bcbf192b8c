# %% [markdown]
# # Lesson 10: GRPO, verifiable rewards, and what RL can and cannot teach
#
# PPO (lesson 7) needs a critic: a second network that guesses, at every token, how much reward is
# still to come. GRPO (DeepSeekMath, 2024) asks the policy for a *group* of G answers to the same
# prompt and uses the group itself as the baseline: an answer's advantage is how much better it
# scored than its siblings, divided by how much they differ. No critic, no value loss, and the
# baseline is measured on this very prompt (from G samples, the answer itself among them: RLOO,
# below, leaves it out). The reward can be the reward model of lesson 6 (RLHF),
# or a *program* that checks the answer against the known right one: RL with verifiable rewards
# (RLVR), what today's reasoning models are trained with.
#
# What you will see:
# 1. One group dissected: G answers to one prompt, their verifiable rewards, the advantages under
#    GRPO, Dr. GRPO (no division by the std) and RLOO (leave-one-out baseline), and which answers'
#    tokens get pushed up or down. Then the verifier on answers built to fool it.
# 2. A GRPO run with the verifiable reward: reward, share of groups that carry no signal, entropy,
#    KL; its win rate against the SFT model and its pass@1 (the share of its answers that are right).
# 3. pass@k of the SFT model and the RL policies, k = 1 ... 64, from 64 samples per prompt (the
#    unbiased estimator of Chen et al., 2021: minillm/stage3_rlhf/pass_at_k.py). RL raises pass@1
#    towards what the SFT model could already do in a few tries; at large k the curves meet or
#    cross: RL sharpened what was there, it taught little new.
# 4. One table of every way stage 3 improves the SFT model, on the same held-out prompts and draw.
#
# Run it: `python lessons/10_grpo_and_verifiable_rewards.py [SFT_RUN_DIR] [REWARD_RUN_DIR] [--fresh]`,
# or step through its cells. It starts from the SFT model and reward model that lesson 7 starts from
# (SFT_RUN_DIR and REWARD_RUN_DIR, lessons 5 and 6's own, else the pipeline's, which its steps train
# first if runs/tiny has none). After the pipeline it reuses the pipeline's GRPO runs and table and
# takes 3-4 s; without them it trains GRPO here (1-3 minutes on a 2-core CPU).

# %%
from __future__ import annotations

import copy
from pathlib import Path

import torch

from minillm.config import preset, to_dict
from minillm.lessons import Run, earlier_run, lesson_args, lesson_dir, own_run, stage3_inputs, use_threads
from minillm.model import GPT
from minillm.stage3_rlhf.annotator import win_rate_text
from minillm.stage3_rlhf.grpo import group_advantages, make_reward_fn, rollout, train_grpo
from minillm.stage3_rlhf.preferences import heldout_records
from minillm.stage3_rlhf.scoreboard import (
    pass_at_k_line,
    pass_at_k_summary,
    plot_pass_at_k,
    render_table,
    right_answer_counts,
)
from minillm.stage3_rlhf.verifier import Verifier
from minillm.train import load_model_and_tokenizer
from minillm.utils import spread_rows

ARGS = lesson_args("Lesson 10: GRPO and verifiable rewards", inputs=["sft_run", "reward_run"])
OUT = lesson_dir(10)
CFG = preset("tiny")
use_threads(2)
records, sft, rm = stage3_inputs(ARGS)

# %% [markdown]
# ## 1. One group, dissected
# Eight answers to one prompt, scored by the verifier (1 if the right answer is in it, +0.2 if it is
# nothing but the answer). The advantage is the reward minus the group's mean; GRPO divides by the
# group's standard deviation, Dr. GRPO does not, RLOO compares each answer with the mean of the
# *other* seven. Every token of an answer with a positive advantage is made more likely, every token
# of one with a negative advantage less likely. A group whose answers all score the same teaches
# nothing: its advantages are all zero. A group is also cheap: its answers share one prompt, which
# the policy reads once for all of them, when it samples and when it trains (`GPT.response_states`).
# `group_advantages` and `rollout` are in minillm/stage3_rlhf/grpo.py, the verifier in verifier.py.

# %%
def step1_one_group(sft_dir: Path, records: list[dict]) -> None:
    print("== 1. One group of answers, dissected ==")
    policy, tokenizer = load_model_and_tokenizer(sft_dir, GPT)
    cfg = CFG.grpo_verifiable
    reward_fn = make_reward_fn(cfg, records, None)
    generator = torch.Generator().manual_seed(3)
    tests = heldout_records(records, 40)
    # the first held-out prompt whose group is not unanimous: one that teaches something
    for record in tests:
        ro = rollout(policy, copy.deepcopy(policy), reward_fn, tokenizer, [record], cfg, generator)
        if ro.rewards.std() > 0:
            break
    rewards = ro.rewards  # (1, G)
    variants = {"GRPO": group_advantages(rewards, "mean", True), "Dr. GRPO": group_advantages(rewards, "mean", False),
                "RLOO": group_advantages(rewards, "leave_one_out", False)}
    print(f"  prompt: {record['prompt']!r}   reference: {record['reference']!r}")
    print(f"  {'answer':42s} reward   GRPO  Dr.GRPO   RLOO   its tokens are pushed")
    for i, answer in enumerate(ro.responses.answers):
        a = variants["GRPO"][0, i].item()
        push = "up" if a > 0 else "down" if a < 0 else "(not at all)"
        print(f"  {answer[:40]!r:42s} {rewards[0, i].item():5.2f} " +
              " ".join(f"{v[0, i].item():+6.2f}" for v in variants.values()) + f"   {push}")
    print("  The group's own mean is the baseline: no critic had to learn what this prompt is worth.\n")

    verify = Verifier(records)
    fact = next(r for r in records if r["family"] == "count" and r["split"] != "train")
    print(f"  The verifier on hand-made answers to {fact['prompt']!r} (reference {fact['reference']!r}):")
    others = list(dict.fromkeys(r["reference"] for r in records  # two different wrong counts
                                if r["family"] == "count" and r["reference"] != fact["reference"]))
    for answer in (fact["reference"], f"There are {fact['reference']}.", f"{fact['reference']}. Hope this helps!",
                   others[0], f"{others[0]}, {fact['reference']} or {others[1]}"):
        print(f"    {answer!r:40s} -> {verify(fact, answer):.1f}")
    print("  Listing several candidates contains the right one, but commits to none: it earns nothing.\n")


step1_one_group(sft.path, records)

# %% [markdown]
# ## 2. A GRPO run with the verifiable reward
# Each step the policy samples a group of answers to each of a batch of training prompts (the
# preset's numbers are printed below). Watch `zero_signal_share`: the share of groups whose answers
# all scored alike, which teach nothing. At first few groups are unanimous (under 1 in 10 in the
# tiny preset's run): the SFT model still varies on most prompts. As training goes on the policy
# commits to its answers, right or wrong, and the share rises (about a third over the last ten steps,
# noisy from one step to the next): the signal narrows to the prompts it still sometimes gets
# wrong. Entropy (how unsure the policy is of its next token, averaged over the answers' tokens)
# falls with it (grpo_health.png).

# %%
def step2_train(sft: Run, records: list[dict]) -> Run:
    print("== 2. GRPO with the verifiable reward ==")
    cfg = CFG.grpo_verifiable
    print(f"  {cfg.group_size} answers to each of {cfg.prompts_per_step} training prompts per step, "
          f"{cfg.train.max_steps} steps")
    run = own_run("grpo_verifiable", OUT / "grpo_verifiable", fresh=ARGS.fresh, inputs=[sft],
                  settings={"grpo_verifiable": to_dict(cfg)},
                  train=lambda here: train_grpo(cfg, sft.path, records, here, pass_at_k=False))
    for row in spread_rows(run.history, 6):
        print(f"  step {row['step']:3d}  reward {row['reward_mean']:.3f} ± {row['reward_std']:.3f}  no-signal groups "
              f"{row['zero_signal_share']:.2f}  entropy {row['entropy']:.3f}  KL {row['kl']:.3f}  "
              f"answer length {row['response_len']:.1f}")
    r = run.result
    print(f"  Held out: win rate vs the SFT model {win_rate_text(r)}; "
          f"pass@1 (the right answer is in it) {r['pass_at_1_sft']:.3f} -> {r['pass_at_1_after']:.3f}")
    print(f"  Plots: {run.path}/grpo_*.png\n")
    return run


grpo_verifiable = step2_train(sft, records)

# %% [markdown]
# ## 3. pass@k: what RL can and cannot teach
# pass@k is the chance that at least one of k sampled answers is right. The SFT model's pass@64 is
# what it *can* answer at all; its pass@1 is what it answers on one try. RL can raise pass@1 towards
# the SFT model's pass@k for small k, by making the model commit to answers it could already give.
# At large k, Yue et al. (2025) found that the base model's curve catches up and then passes the RL
# policy's: answers the policy stopped giving were sometimes the only right ones. Here the gains
# shrink as k grows, and whether the SFT curve then passes the policy's depends on the draw. In the
# tiny run of ca60458 pass@1 rises for every policy, by 2.8 to 5.7 standard errors, and by k = 2 to 4
# no gain is more than two standard errors above 0 (report.md says where each one's lead ends); in
# that of 7b9d2e2 it rises by 0.5 to 4.3, past two only for GRPO on the verifiable reward. At k = 64
# the four gains lie between -0.02 and +0.04 in both, each inside two standard errors of 0: no policy
# answers what the SFT model could not already sample, and none is clearly behind it either. In
# earlier runs every policy fell behind it by k = 4 to 16 (docs/findings.md, "pass@k"). Each gain is
# printed with its standard error, measured prompt by prompt: on 50 or 100 prompts, a gain of a few
# hundredths may be noise.

# %%
def step3_pass_at_k(sft: Run, grpo_verifiable: Run, records: list[dict]) -> None:
    print("== 3. pass@k before and after RL ==")
    table = earlier_run("rl_table", train_missing=False)
    if table is not None and "pass_at_k_gain" in table.result:
        summary = table.result
        print(f"  (the pipeline's: the first {CFG.grpo.passk_prompts} of step 2's held-out prompts, "
              f"{CFG.grpo.passk_samples} samples each, drawn anew: pass@1 here need not be step 2's)")
    else:  # fewer prompts than the pipeline, to keep the lesson short
        tests = heldout_records(records, 50)
        right = right_answer_counts({"SFT": sft.path, "GRPO (verifiable)": grpo_verifiable.path}, tests, 64,
                                    CFG.grpo.temperature, CFG.grpo.max_new_tokens, seed=0)
        summary = pass_at_k_summary(right, 64)
        plot_pass_at_k(summary["pass_at_k"], summary["pass_at_k_gain"], OUT / "pass_at_k.png", len(tests))
        print(f"  (the first 50 of step 2's held-out prompts x 64 samples; chart: {OUT / 'pass_at_k.png'})")
    curves = summary["pass_at_k"]
    ks = list(curves["SFT"])
    print("  " + f"{'k':>22s}" + "".join(f"{k:>7s}" for k in ks))
    for name, curve in curves.items():
        print(f"  {name:>22s}" + "".join(f"{curve[k]:7.3f}" for k in ks))
    for name, gain in summary["pass_at_k_gain"].items():
        print("  " + pass_at_k_line(name, curves["SFT"], curves[name], gain))
    print()


step3_pass_at_k(sft, grpo_verifiable, records)

# %% [markdown]
# ## 4. Every way to improve the SFT model, in one table
# The same held-out prompts, the same sampling seed for every policy, each row judged by gold against
# the SFT model's own samples (the lines under the table name its rows and columns;
# minillm/stage3_rlhf/scoreboard.py says how each is measured). Best of n needs n samples and n
# reward-model calls for every prompt at answer time; the trained policies answer with one sample.
# Set the SFT greedy row beside them: no trained policy has passed it in our runs. RL makes the
# samples commit to answers the SFT model already knew (docs/findings.md, "GRPO: what more compute
# buys, and the ceiling of pass@1"), and greedy decoding commits at once.

# %%
def step4_table() -> None:
    print("== 4. The comparison table ==")
    table = earlier_run("rl_table", train_missing=False)
    if table is None:
        print("  The table needs every stage-3 run: `minillm pipeline --preset tiny --out runs/tiny` makes it\n"
              "  (runs/tiny/10_rl_table/result.json), and this step then prints it.")
        return
    print("\n".join("  " + line for line in render_table(table.result["rows"])))
    print("  SFT samples: the baseline every row is judged against (0.5 by construction). SFT greedy: the SFT\n"
          "  model's most likely answer, no sampling, no training. pass@1: the right answer is in it; exact\n"
          "  match: it is nothing else; style flaws: rudeness or filler; KL in nats; train s: seconds of training.")


step4_table()

# %% [markdown]
# ## Try this
# Each is one change to `CFG.grpo_verifiable` above, or one more `--set` on the command line, where
# `minillm grpo` trains the `grpo` section (the same settings, with the reward model unless told):
# `minillm grpo --sft runs/tiny/04_sft --preset tiny --set grpo.reward=verifiable --set grpo.group_size=16
# --out runs/x`, with your try's setting in place of group_size=16, behind the same `grpo.`
# (`--set grpo.scale_by_std=false`, `--set grpo.train.lr=3e-3`: a bare `train.lr` is refused).
# Compare runs with `minillm compare runs/x runs/y`.
# 1. **Group size**: `group_size=2` vs `16` (a minibatch holds whole groups: the preset's 64 answers
#    fit either). With 2 answers a group is unanimous far more often: at f8e0178
#    `zero_signal_share` averaged 0.59 over the 30 steps, against 0.26 with the preset's 8 (the
#    pipeline's run) and 0.14 with 16, from 64, 256 and 512 answers a step. The pairs moved the
#    policy less (KL over the last five steps 0.28 against 0.46 and 0.48 nats) and taught less:
#    pass@1 by the command's pass@k (64 samples on 100 prompts) rose 0.51 -> 0.54, 0.565 and 0.605
#    (gains ± 0.01 to 0.015), more filler stayed (style flaws 0.04 against 0.015 and 0.025). The win
#    rate could not tell the three apart: 0.60, 0.65 and 0.63 (each ± 0.025; a one-thread rerun of
#    the preset at 899e4ac won 0.63; in earlier tiny runs 0.652, 0.652 and 0.685). Fewer groups
#    teach, and they teach less: one run of each shows it in pass@1 and the KL, not in the win rate.
# 2. **No std scaling** (Dr. GRPO): `scale_by_std=false`. Prompts whose answers barely differ (all
#    right, some with a flourish) no longer get the same push as prompts where half are wrong. At
#    899e4ac neither the gold judge nor the distance told the two apart: win rate 0.62 against the
#    preset's 0.63 (± 0.025), pass@1 0.60 against 0.55, KL over the last five steps 0.44 against
#    0.46 nats (an earlier tiny run had 0.30 against 0.44). Most groups' rewards spread by a std near
#    0.5, so dividing by it doubles every push alike; what changes is only the few groups that
#    nearly agree, and in 30 steps they are too few to show. (The preset's figures are a rerun
#    beside these, one thread each; the pipeline's own run, same settings, won 0.647 with pass@1
#    0.59: that gap is the noise between two runs.)
# 3. **The KL leash**: `kl_coef=1` vs the default 0. The KL curve stays lower, and so does the gain:
#    at 899e4ac the KL of the last five steps was 0.12 against 0.46 nats, the win rate 0.55 against
#    0.63 (± 0.03), and more of the SFT model's filler stayed (style flaws 0.15 against 0.025);
#    pass@1 did not drop (0.575 against 0.55). In the tiny run of 7cb820d, `kl_coef=0.1` (the term
#    is the mean KL per token, a few hundredths of a nat) hardly pulled: KL 0.43 against 0.44, the
#    same win rate.
# 4. **Reward model vs verifier**: `minillm grpo --sft runs/tiny/04_sft --preset tiny --reward
#    runs/tiny/05_reward_model --out runs/x` (reward=model, no `--set`). The reward model also rewards
#    politeness and concision; the verifier pays a right answer, plus a small bonus
#    (grpo.exact_bonus, 0.2) when it is nothing but the answer: filler and rudeness cost that bonus.
#    The pipeline trains both (runs/tiny/08_grpo and 09_grpo_verifiable); at 7b9d2e2 both dropped the
#    filler (style flaws 0.23 -> 0.005 and 0.015) and won 0.618 and 0.647 (± 0.025). Only the
#    verifier pays for the right answer, but 30 steps teach few new facts: pass@1 0.535 -> 0.53 with
#    the reward model, -> 0.59 with the verifier (0.55 in a rerun at 899e4ac: near the noise).
# 5. **A very high learning rate**: `train.lr=3e-3`. The policy breaks. At 899e4ac the first
#    step's update turned the answers to word salad ("In In Kelish, the Kelish In ..."): at step 2
#    97% of the groups were unanimous (all wrong) and from step 3 all of them, the entropy doubled
#    (0.93 -> 1.99) and stayed above 1. A unanimous group's advantages are all 0, so from step 3 no
#    gradient came at all: only Adam's momentum (and weight decay) still moved the weights.
#    pass@k fell at every k (pass@1 0.51 -> 0.0003, pass@64 0.86 -> 0.02), the KL to the SFT model
#    reached 150 nats, the win rate 0.22. (In the tiny run of 7cb820d it broke the other way: every
#    answer became the same 32 tokens, "3 3 3 ...", its entropy near 0. Either way the signal
#    vanished.)

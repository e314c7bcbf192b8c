# %% [markdown]
# # Lesson 7: PPO, the policy learns from the reward model, on a KL leash
#
# The reward model of lesson 6 scores any answer. Now the SFT model (the *policy*) writes answers,
# the reward model scores them, and PPO changes the policy so that better-scored answers become more
# likely. A frozen copy of the SFT model (the *reference*) holds the leash: every token pays
# beta * (log pi - log pi_ref), pi and pi_ref being the probabilities the policy and the reference
# give that token, so the policy only drifts as far as the reward is worth.
#
# What you will see:
# 1. One rollout dissected, token by token: the policy's and the reference's log-probs, the KL
#    penalty, the reward (the penalty everywhere, the reward model's score on the last token), the
#    critic's value, and the advantage GAE makes of them.
# 2. PPO with the tiny preset, its curves (reward-model score, gold score: the annotator's own
#    judgement, which the policy never sees; KL, clip fraction, answer length), its win rate against
#    the SFT model, and a few held-out prompts with the reference and both models' answers.
# 3. Reward hacking: a weaker reward model (the scalar head alone, without the answer's likelihood:
#    it learnt style, hardly correctness) and PPO without the leash (kl_coef = 0). The reward-model
#    score climbs while the gold score falls: the policy finds answers the judge over-rates.
#
# What PPO can and cannot reach here: it drops the filler and the rudeness (one habit on every
# prompt, learnt at once), but hardly makes wrong answers right on prompts it never saw, so it wins
# about 6 comparisons in 10 against the SFT model, not 7 or 8. Not even a perfect reward model
# changes that (Try this 6); docs/findings.md has the measurements.
#
# Run it: `python lessons/07_ppo.py [SFT_RUN_DIR] [REWARD_RUN_DIR] [--fresh]`, or step through its
# cells. It starts from the SFT model and reward model of lessons 5 and 6 when they trained
# their own (--fresh, an edited CFG), else the pipeline's (with none, the pipeline's steps first train them
# into runs/tiny, as in lesson 6). After the pipeline, step 2 shows the pipeline's PPO run
# (runs/tiny/06_ppo), and only step 3's two runs train: 1-2 minutes on a 2-core CPU (62 and 90 s
# measured); a second run reuses them and takes seconds. `--fresh` trains PPO here too, into
# runs/lessons/07/ppo (half a minute to a minute more). The experiments to try are at the end.

# %%
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from minillm.config import preset, to_dict
from minillm.lessons import lesson_args, lesson_dir, own_run, stage3_inputs, use_threads
from minillm.model import GPT
from minillm.stage3_rlhf.annotator import gold_score, win_rate_text
from minillm.stage3_rlhf.ppo import gae, per_token_rewards, reward_hacking, rollout, train_ppo
from minillm.stage3_rlhf.preferences import heldout_records
from minillm.stage3_rlhf.reward_model import load_reward_model, train_reward_model
from minillm.train import load_model_and_tokenizer
from minillm.utils import read_json, spread_rows

ARGS = lesson_args("Lesson 7: PPO", inputs=["sft_run", "reward_run"])
OUT = lesson_dir(7)
CFG = preset("tiny")
use_threads(2)
records, sft, rm = stage3_inputs(ARGS)

# %% [markdown]
# ## 1. One rollout, token by token
# Every token pays -beta * KL (beta is `CFG.ppo.kl_coef`); only the last one also gets the reward
# model's score. The critic (a second network, which starts as a copy of the reward model and trains
# beside the policy) values each position: how much reward is still to come. The advantage is how
# much better than that it went, by GAE (generalised advantage estimation): each token's surprise,
# r_t + gamma * V_t+1 - V_t, plus the later tokens' surprises, discounted by gamma * lambda per token
# (with both 1 it would add up the surprises of the whole rest of the answer). `rollout`,
# `per_token_rewards` and `gae` are in minillm/stage3_rlhf/ppo.py.

# %%
def step1_dissect(sft: Path, rm_dir: Path, records: list[dict]) -> None:
    print("== 1. One rollout, token by token ==")
    policy, tokenizer = load_model_and_tokenizer(sft, GPT)
    rm = load_reward_model(rm_dir, tokenizer, "cpu", sft)
    # A policy that already moved a little (one noisy step away from the reference), so that KL is not 0.
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.01)
    ro = rollout(moved, policy, rm, copy.deepcopy(rm), tokenizer, records[:1], CFG.ppo, CFG.ppo.kl_coef,
                 torch.Generator().manual_seed(1))
    n = int(ro.mask[0].sum())
    print(f"  prompt: {records[0]['prompt']}\n  answer: {ro.answers[0]!r}  (reward model score "
          f"{ro.rm_score[0].item():+.2f}, <eos>: {bool(ro.has_eos[0])})")
    print("  token            log pi  log ref  KL=pi-ref   reward    value  advantage  whitened")
    # the rewards the rollout handed to GAE (it keeps only GAE's output): -beta * KL, + the score on the last token
    rewards, _ = per_token_rewards(ro.score, ro.logprobs, ro.ref_logprobs, ro.mask, CFG.ppo.kl_coef)  # (1, N)
    raw = gae(rewards, ro.values, ro.mask, CFG.ppo.gamma, CFG.ppo.lam)[0][0]  # before whitening
    pieces = [tokenizer.id_to_piece(int(i)) for i in ro.ids[0, -ro.mask.shape[1]:][:n]]  # the answer's tokens
    for t, piece in enumerate(pieces):
        print(f"  {piece!r:15s} {ro.logprobs[0, t]:8.3f} {ro.ref_logprobs[0, t]:8.3f} {ro.kl[0, t]:10.4f} "
              f"{rewards[0, t]:8.3f} {ro.values[0, t]:8.3f} {raw[t]:10.3f} {ro.advantages[0, t]:9.3f}")
    # A token whose advantage changes sign when whitened, if there is one (which way depends on the draw).
    flipped = next((t for t in range(n) if raw[t] * ro.advantages[0, t] < 0), None)
    example = "" if flipped is None else (f": here {pieces[flipped]!r} goes {raw[flipped]:+.3f} -> "
                                          f"{ro.advantages[0, flipped]:+.3f}")
    print("  KL=pi-ref is one token's log-ratio, log pi - log ref: it is below 0 where the policy likes the\n"
          "  token it sampled less than the reference does; averaged over many samples (the KL) it cannot be.\n"
          "  Every token pays -beta * KL; only the last one also gets the score. The critic's values say\n"
          "  how much reward is still to come; the advantage (GAE) is how much better than that it went.\n"
          "  The update uses it whitened (mean 0, std 1) over the rollout's tokens: over this one answer, a\n"
          "  token's sign then says only whether it did better or worse than the answer's average token,\n"
          f"  not than expected{example}.\n")


step1_dissect(sft.path, rm.path, [r for r in records if r["split"] == "train"])

# %% [markdown]
# ## 2. PPO
# Each step samples answers to a batch of prompts (the rollout), scores them, and takes a few
# clipped gradient steps on them. Then the policy and the SFT model answer the same held-out
# prompts, and the gold judge compares each pair. KL is in nats: a difference of natural-log
# probabilities, summed over an answer's tokens.

# %%
def show_examples(result: dict, n: int = 3) -> None:
    """The first held-out prompts of the comparison, with the reference and both answers, scored by gold."""
    tests = heldout_records(records, CFG.ppo.eval_prompts)  # the prompts train_ppo compared on, in order
    for record, example in zip(tests, result["examples"][:n], strict=False):
        print(f"    prompt:    {record['prompt']!r}\n    reference: {record['reference']!r}")
        for name, answer in (("SFT", example["sft"]), ("PPO", example["after"])):
            print(f"    {name}:       {answer!r}  (gold {gold_score(record, answer):.2f})")


def step2_train() -> None:
    print(f"== 2. PPO, {CFG.ppo.train.max_steps} steps of {CFG.ppo.rollout_batch_size} answers ==")
    ppo = own_run("ppo", OUT / "ppo", fresh=ARGS.fresh, inputs=[sft, rm], settings={"ppo": to_dict(CFG.ppo)},
                  train=lambda folder: train_ppo(CFG.ppo, sft.path, rm.path, records, folder))
    result = ppo.result
    print("  step  RM score   gold      KL  clipfrac  ratio  answer length")
    for row in spread_rows(ppo.history, 8):
        print(f"  {row['step']:4d} {row['rm_score']:+8.2f} {row['gold']:6.2f} {row['kl']:7.2f} "
              f"{row['clipfrac']:9.3f} {row['ratio']:6.3f} {row['response_len']:8.1f}")
    print("  (means over the step's answers; KL: nats per answer from the SFT model; ratio: pi_new / pi_old of\n"
          "  the sampled tokens during the update, pi_old being the policy that sampled them, 1 = not moved\n"
          f"  yet; clipfrac: the share of tokens whose ratio passed 1 ± {CFG.ppo.clip_range:g} the way its advantage "
          "pushes, where\n  the clip stops it)")
    print(f"  against the SFT model on {CFG.ppo.eval_prompts} held-out prompts (judged by gold): win rate "
          f"{win_rate_text(result)} (one standard error), "
          f"gold {result['gold_sft']:.2f} -> {result['gold_after']:.2f}")
    print(f"  a perfect policy would win {result['win_rate_ceiling']:.2f}: it can only tie where the SFT "
          "model's answer is already perfect")
    print("  per task family: " + ", ".join(f"{family} {rate:.2f}"
                                            for family, rate in result["win_rate_by_family"].items()))
    show_examples(result)
    print(f"  curves: {ppo.path / 'ppo_reward.png'}, ppo_health.png, ppo_length.png\n")


step2_train()

# %% [markdown]
# ## 3. Reward hacking: the head-only reward model, and no KL penalty
# The same rankings as lesson 6's reward model, learnt by the scalar head alone; then PPO against it
# with the leash off, for 45 steps.

# %%
def step3_reward_hacking() -> None:
    print("== 3. Reward hacking: the head-only reward model, and no KL penalty ==")
    # The same rankings the reward model of lesson 6 learnt from (its run folder records the file).
    prefs = read_json(rm.path / "config.json")["run"]["prefs"]
    head_only_cfg = dataclasses.replace(CFG.reward, likelihood_term=False)
    head_only = own_run("reward_model", OUT / "head_only_reward", fresh=ARGS.fresh, inputs=[sft, rm],
                        from_pipeline=False, settings={"reward": to_dict(head_only_cfg)},
                        train=lambda folder: train_reward_model(head_only_cfg, sft.path, prefs, folder,
                                                                records=records))
    print(f"  head-only reward model: held-out pairwise accuracy {head_only.result['pairwise_accuracy']:.2f}")
    unleashed = dataclasses.replace(CFG.ppo, train=dataclasses.replace(CFG.ppo.train, max_steps=45))
    hacked = own_run("ppo", OUT / "no_kl", fresh=ARGS.fresh, inputs=[sft, head_only], from_pipeline=False,
                     settings={"ppo": to_dict(dataclasses.replace(unleashed, kl_coef=0.0, adaptive_kl=False,
                                                                  reward="model"))},
                     train=lambda folder: reward_hacking(unleashed, sft.path, head_only.path, records, folder))
    result = hacked.result
    print(f"  reward model score {result['rm_score_first']:+.2f} -> {result['rm_score_last']:+.2f}, "
          f"gold {result['gold_first']:.2f} -> {result['gold_last']:.2f}, KL {result['kl_last']:.1f} nats"
          f"\n  on held-out prompts: gold {result['gold_sft']:.2f} (SFT) -> {result['gold_after']:.2f}, win rate "
          f"against SFT {result['win_rate_vs_sft']:.0%}. Plots: {hacked.path / 'reward_hacking.png'}, "
          "reward_hacking_kl.png\n")


step3_reward_hacking()

# %% [markdown]
# ## Try this
# 1. A tighter or looser leash: CFG.ppo.kl_coef = 0.5, then 0.05. KL falls or grows: at 899e4ac,
#    over the last five steps 0.35 and 0.73 nats against the preset's 0.49 (kl_coef 0.2). In 20 steps
#    the gold judge ranks them by the leash but hardly tells them apart: win rates 0.57 and 0.64
#    against 0.62 (each ± 0.03); the tight leash kept more of the SFT model's filler (style flaws
#    0.05 against 0.005). In earlier runs the loose leash drifted to answers the reward model
#    over-rates (docs/findings.md, "What PPO can reach"); in this one it did not yet.
# 2. The adaptive leash: CFG.ppo.adaptive_kl = True with target_kl = 2: beta (kl_coef in
#    metrics.jsonl) rises when KL overshoots the target and falls when it undershoots, by at most
#    2% a step. Our KL stays under 1 nat, so at target 2 beta only falls: 0.2 -> 0.14 in 20 steps,
#    at 899e4ac (0.14 in the tiny run of 7cb820d too). With target_kl = 0.1 it rises instead,
#    0.2 -> 0.28. Neither moved the win rate beyond the noise (0.60 both, against the preset's 0.62,
#    ± 0.03).
# 3. Break a detail: in ppo.response_logits, drop the division by the temperature and sample at
#    CFG.ppo.temperature = 0.7. The update then scores the answers at temperature 1 while the
#    rollout's log-probs came from 0.7: the ratio of the first minibatch is no longer 1. How much
#    that costs depends on how sure the model is. Ours is nearly sure of most tokens, where a
#    temperature changes little, and at 899e4ac the bug hid: against the same run without it
#    (`--set ppo.temperature=0.7`), the clip fraction of the last five steps doubled (0.033 against
#    0.015) and the logged KL nearly did (0.61 against 0.35 nats: the reference is read at
#    temperature 1 too), but the win rate (0.57 against 0.56, ± 0.02) and the held-out gold score
#    (2.59 against 2.57) did not move (7cb820d's tiny run: the same). A bug the win rate does not show
#    is one a test has to catch (tests/test_ppo.py: the first minibatch's ratio is 1, at 0.7 too).
# 4. Hack the full reward model: in step 3, pass `rm.path` instead of `head_only.path` to
#    reward_hacking, and `inputs=[sft, rm]` to its own_run (else the earlier run is reused). Its
#    likelihood term checks the answer the way the SFT model would write it, and it is harder to
#    fool on the prompts PPO trains on: at f8e0178, step 3's 45 steps without the leash raised its
#    score 0.57 -> 0.98 and the rollouts' gold rose with it and stayed up (2.52 at step 1, 2.99
#    over steps 6-10, 2.93 over the last five). The head-only model with the leash on (the preset's
#    kl_coef 0.2: `minillm ppo --sft runs/tiny/04_sft --reward runs/lessons/07/head_only_reward
#    --preset tiny --set ppo.train.max_steps=45 --out X`) was fooled more slowly, but fooled: its
#    rollouts' gold peaked near step 10 (2.96 over steps 6-10) and sagged after (2.67 over the last
#    five) while its score kept rising. On held-out prompts one run of each did not tell the two
#    apart: win rates 0.57 and 0.58 against SFT (each ± 0.03), gold 1.65 -> 1.93 and 2.00, and
#    both wrong more often than the SFT model (0.515 and 0.50 against 0.465), a little below step
#    2's 20 leashed steps (0.62, 0.455 wrong). (In the tiny run of 7cb820d the full model's run won
#    0.61 against step 2's 0.65.) A leash slows hacking down; a better judge keeps the rollouts'
#    gold up, but 45 steps off the leash still drift (KL 0.74 nats at the last) to answers that do
#    no better on prompts PPO never saw.
# 5. Smaller rollouts: CFG.ppo.rollout_batch_size = 32 and 30 steps (`--set ppo.rollout_batch_size=32
#    --set ppo.train.max_steps=30` on the command line). The advantages are whitened over half as
#    many answers and each update is noisier. At f8e0178 this won 0.63 against the preset's 0.62,
#    each ± 0.03: not told apart (in the tiny run of 7cb820d 0.62 against 0.65). With an earlier
#    4-layer SFT model it won 0.615 against 0.65, and with a learning rate of 3e-4 on top the
#    entropy rose and the scores fell.
# 6. A perfect reward model: CFG.ppo.reward = "gold" (`--set ppo.reward=gold`) scores the answers
#    with the gold judge itself. Is the reward model what holds the win rate back? No: at f8e0178
#    the oracle won 0.60 and the reward model's PPO 0.62 (each ± 0.03; in the tiny run of 7cb820d
#    0.64 and 0.65), far from the 0.815 a perfect policy would win there (step 2 prints your run's
#    ceiling). An earlier version, on 600 held-out prompts, gave 0.60 and 0.62, each ± 0.015. Both
#    dropped the filler and the rudeness (in 23% of the SFT answers; 3.5% and 0.5% after); neither
#    made many wrong answers right on prompts it never saw (SFT 46.5% wrong; 44.5% and 45.5% after).

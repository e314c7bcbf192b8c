"""Stage 3, RLHF: answers are ranked, a reward model learns the rankings, the policy learns from it.

Read in this order:
- annotator.py: the simulated annotator (what people prefer, written down, with noise) and the
  noise-free gold judge that evaluates the final policies; rankings and their K-choose-2 pairs;
- preferences.py: K answers sampled from the SFT model per prompt, ranked, stored as JSONL;
  comparing two policies by the gold judge;
- annotate.py: the same rankings made by a person in the terminal (`minillm annotate`);
- sequences.py: prompt + answer batches and their token log-probs (shared by the reward model, PPO,
  DPO and GRPO);
- reward_model.py: a GPT with a scalar head on the last real token plus the answer's likelihood under
  its own language-model head, the ranking loss, normalisation; best of n (the reward model
  picks one of n sampled answers: the yardstick RL is read against);
- ppo.py: rollouts, KL-penalised rewards, GAE, the clipped objectives; reward hacking without KL;
  online_rl.py: what PPO and GRPO share around them (records, run folder, resume, checks);
- dpo.py: the same rankings, optimised directly, with no reward model and no sampling;
- grpo.py: group-relative advantages instead of a critic, rewarded by the reward model or by a
  program (verifier.py: is the reference answer in it?); pass_at_k.py: what RL can and cannot teach;
- scoreboard.py: every policy against the same SFT answers, on the same held-out prompts.
"""

from minillm.stage3_rlhf.annotate import annotate
from minillm.stage3_rlhf.dpo import train_dpo
from minillm.stage3_rlhf.ppo import reward_hacking, train_ppo
from minillm.stage3_rlhf.preferences import collect_rankings, read_preferences
from minillm.stage3_rlhf.reward_model import RewardModel, train_reward_model

__all__ = [
    "RewardModel", "annotate", "collect_rankings", "read_preferences", "reward_hacking", "train_dpo",
    "train_ppo", "train_reward_model",
]

"""Direct Preference Optimisation: learn from rankings without a reward model or any sampling.

PPO needs four models (policy, reference, reward model, critic) and a loop that samples. DPO
(Rafailov et al., 2023) notices that the best policy for "maximise reward, minus beta times the KL
to the reference" has a closed form, pi*(y|x) proportional to pi_ref(y|x) exp(r(x, y) / beta), so
the reward can be written with the policy itself:

    r(x, y) = beta * log( pi(y|x) / pi_ref(y|x) )   (+ a term that cancels in differences)

Put that reward into the reward model's ranking loss and the reward model disappears:

    loss = -log sigmoid( beta * [ (log pi(w) - log pi_ref(w)) - (log pi(l) - log pi_ref(l)) ] )

for each pair where answer w was ranked above answer l. log pi(y|x) is the sum of the log-probs of
the answer's tokens (prompt tokens excluded). The reference's log-probs never change, so they are
computed once, before training. beta plays the part of PPO's KL coefficient: small beta lets the
policy move far from the reference; large beta keeps it close.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss over a batch of pairs; every input is a (P,) sequence log-prob.

    Returns (loss, accuracy, margin): accuracy is the share of pairs whose implicit reward prefers the
    chosen answer, margin the mean implicit reward difference (both for logging).
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)  # (P,) implicit reward of the better answer
    rejected_reward = beta * (policy_rejected - ref_rejected)  # (P,)
    margins = chosen_reward - rejected_reward  # (P,)
    loss = -F.logsigmoid(margins).mean()
    return loss, (margins > 0).float().mean(), margins.mean()

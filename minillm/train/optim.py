"""The optimizer and the learning-rate schedule: AdamW (or Muon) with decay on matrices, warmup then cosine.

Weight decay pulls every weight towards zero a little at each step, a gentle brake on
memorising. It makes sense for the big weight *matrices* (attention and MLP projections,
embedding tables) but not for biases or LayerNorm gains: those are vectors that shift or
scale activations, and shrinking a LayerNorm gain towards 0 would just fight the
normalisation. So the parameters are split by shape: `dim >= 2` decays, the rest does not.

The learning rate follows the recipe of GPT-2 and most LLMs since:
- a linear **warmup** from ~0 to `lr` over `warmup_steps`: at the start Adam's running
  averages of the gradient are estimated from a handful of steps, and big steps taken on such
  noisy estimates can throw the weights far away;
- then a **cosine decay** from `lr` down to `lr * min_lr_ratio` at `max_steps`: large steps
  while far from a minimum, small ones to settle into it.

**Muon** (`train.optimizer=muon`, Keller Jordan 2024, used by Kimi's Moonlight and nanochat) is the
newer choice for the hidden weight matrices of the transformer blocks. It keeps a momentum of the
gradient like SGD, then *orthogonalises* it: every singular value of the update matrix is pushed to
about 1, its singular vectors kept. A raw gradient is dominated by a few directions; the orthogonal
update moves the matrix by the same amount along every direction the gradient names, so the rare
ones learn as fast as the common ones. From random weights the tiny GPT reaches AdamW's perplexity
in half the steps (at a higher lr), and SFT's from-scratch baseline trains with it; lesson 04's
"Try this" 6 shows what those fewer steps do not buy (no better SFT model; at the preset's seed it
translates into Kelish less well, at a second seed as well).
Embeddings, the LM head, biases and norm gains are not matrices that map one hidden vector to
another, and stay with AdamW (`MuonWithAdamW`).

The schedule is a plain function of the step number, so it has no state of its own to save:
the checkpoint's step number is the schedule's whole state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minillm.config import TrainConfig, check_section
from minillm.errors import ConfigError


def decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices (dim >= 2) with weight decay, vectors and scalars without."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """`decay_groups` of the model's trainable parameters (shared, tied ones listed once)."""
    return decay_groups([p for p in model.parameters() if p.requires_grad], weight_decay)


def adamw(groups: list[dict], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over parameter groups (a group's own "lr" wins over cfg.lr), with the betas of `cfg`.

    `fused=True` runs torch's one-kernel AdamW: the same update, computed for every parameter in one
    pass instead of a dozen small tensor operations per parameter tensor. On a small model's CPU step
    that is 1.5 ms instead of 4; the results agree to float rounding (~1e-7), not bit for bit.
    """
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def orthogonalize(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """`update` (m, n) with every singular value moved to about 1 and its singular vectors kept.

    The exact answer is U @ V.T from the SVD update = U S V.T, too slow to take at every step.
    Newton-Schulz gets close with matrix products only: scaled so that every singular value s is
    at most 1, each iteration maps s to a*s + b*s**3 + c*s**5, a polynomial that sends every s in
    (0, 1] towards 1 (Jordan's coefficients push small values up fast, about 3.4x a step, and
    settle every s from about 0.01 up in 0.7-1.2 after 5 steps rather than at exactly 1, which
    trains just as well; a smaller s grows but stays below: 1e-4 ends near 0.05).
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = update.size(0) > update.size(1)
    x = update.T if tall else update  # (m, n) with m <= n, so that the Gram matrix is the small one
    x = x / (x.norm() + 1e-7)  # the Frobenius norm bounds the largest singular value
    for _ in range(steps):
        gram = x @ x.T  # (m, m): its eigenvalues are the squared singular values s**2
        x = a * x + (b * gram + c * gram @ gram) @ x  # s -> a*s + b*s**3 + c*s**5
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum, orthogonalised: the update for a hidden weight matrix (params must all be 2-D).

    The lr means the same as AdamW's: an orthogonal (m, n) update has an RMS of 1/sqrt(max(m, n)),
    so it is scaled by 0.2 * sqrt(max(m, n)) to the RMS of a typical AdamW update, 0.2 (Liu et al.
    2025, "Muon is scalable"). One learning rate and one schedule then serve both optimizers.
    """

    def __init__(self, params: list[nn.Parameter], lr: float, weight_decay: float,
                 momentum: float = 0.95, ns_steps: int = 5) -> None:
        if any(p.dim() != 2 for p in params):
            raise ValueError("Muon updates matrices only; give vectors and embeddings to AdamW")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "ns_steps": ns_steps})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta = group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["momentum"] = torch.zeros_like(param)
                velocity = state["momentum"]
                velocity.lerp_(param.grad, 1 - beta)  # v = beta * v + (1 - beta) * g
                update = param.grad.lerp(velocity, beta)  # Nesterov: look one momentum step ahead
                scale = 0.2 * math.sqrt(max(param.shape))
                param.mul_(1 - group["lr"] * group["weight_decay"])  # decoupled decay, as in AdamW
                param.add_(orthogonalize(update, group["ns_steps"]), alpha=-group["lr"] * scale)


class MuonWithAdamW:
    """Muon for the blocks' weight matrices and AdamW for every other parameter, stepped as one.

    The training loop needs only what is here: `param_groups` (the schedule sets each group's lr),
    `zero_grad`, `step`, and a state dict for checkpoints.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        # looked up each time: loading a state dict gives each optimizer new group dicts
        return self.muon.param_groups + self.adamw.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("this optimizer state was not saved by Muon with AdamW")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


AnyOptimizer = torch.optim.Optimizer | MuonWithAdamW  # what make_optimizer returns, and the loop steps


def is_hidden_matrix(name: str, param: nn.Parameter) -> bool:
    """A weight matrix inside a transformer block (what Muon updates): 2-D and under `blocks.`."""
    return param.dim() == 2 and (name.startswith("blocks.") or ".blocks." in name)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> AnyOptimizer:
    """The optimizer `cfg.optimizer` names over `model`'s trainable parameters, with cfg's lr and decay."""
    check_section(cfg, TrainConfig, "make_optimizer")
    if cfg.optimizer == "adamw":
        return adamw(param_groups(model, cfg.weight_decay), cfg)
    if cfg.optimizer != "muon":  # a name added to config.OPTIMIZERS without its branch here
        raise ConfigError(f"optimizer={cfg.optimizer}: make_optimizer (minillm/train/optim.py) builds no optimizer "
                          "of that name; add its branch there, beside adamw's")
    hidden, rest = [], []
    for name, param in model.named_parameters():  # shared (tied) parameters are listed once
        if param.requires_grad:
            (hidden if is_hidden_matrix(name, param) else rest).append(param)
    if not hidden:  # torch's own error would only say "optimizer got an empty parameter list"
        raise ConfigError("optimizer=muon: no trainable weight matrix inside the transformer blocks for Muon to "
                          "update (LoRA adapters on the LM head only?); use optimizer=adamw")
    return MuonWithAdamW(
        Muon(hidden, lr=cfg.lr, weight_decay=cfg.weight_decay),
        adamw(decay_groups(rest, cfg.weight_decay), cfg),
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate for optimizer step `step` (0 = the first update).

    Warmup: lr * (step + 1) / warmup_steps, so the first update already moves (never lr = 0).
    Cosine: from lr at the end of warmup to lr * min_lr_ratio at the last step.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = cfg.max_steps - 1 - cfg.warmup_steps
    progress = 1.0 if decay_steps <= 0 else min((step - cfg.warmup_steps) / decay_steps, 1.0)  # 0 -> 1
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def follow_schedule(optimizer: AnyOptimizer, step: int, cfg: TrainConfig) -> float:
    """Move each group's lr along the schedule, keeping the ratios between groups; return lr_at(step).

    For optimizers whose groups have lrs of their own (PPO's critic has `critic_lr`): each group's lr
    becomes the lr it was made with ("initial_lr", as torch's schedulers call it) x lr_at(step) / cfg.lr.
    """
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * (lr / cfg.lr)
    return lr


def set_lr(optimizer: AnyOptimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (weight decay differs, the lr does not)."""
    for group in optimizer.param_groups:
        group["lr"] = lr

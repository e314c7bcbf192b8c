"""LoRA: fine-tune a model by training two thin matrices beside each chosen Linear layer.

Fine-tuning changes a pretrained weight W (out, in) by some dW. LoRA (Hu et al., 2021) bets that
the useful dW has a low rank r, and trains it as a product of two thin matrices:

    y = x W^T + (alpha / r) * x A^T B^T        A: (r, in), B: (out, r), r << in, out

W stays frozen; only A and B are trained (and held by the optimizer, with their Adam moments). At
rank 8 on a (384, 128) qkv matrix that is 8 * (128 + 384) = 4096 numbers instead of 49152. B starts
at zero, so at step 0 the adapted model IS the base model; A starts random, so B's first gradient
is not zero. alpha / r scales the update so that changing r does not change the learning rate
that works (alpha is usually left at 16 or 2r).

After training, B A can be added into W once (`merge`): the adapted model then costs nothing extra
at inference. `unmerge` takes it back out. The adapters alone (`lora_state_dict`) are a small file
that turns the base model into the fine-tuned one: keep one base and one file per task.

Which layers get adapters is chosen by name (`targets`): "qkv" adapts every attention's qkv, "proj"
every layer named "proj" (attention's output and the MLP's), "mlp.proj" only the MLP's.

A low-rank update cannot teach a token the model has never read: the chat template's role tokens
appear only in fine-tuning, so pretraining never trained their rows of the token table as inputs
(a tied head only pushed them down, as outputs that never came).
`also_train` names modules that train in full beside the adapters ("tok_emb": the token table),
as PEFT's `modules_to_save` does for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minillm.errors import CheckpointError, ConfigError


class LoRALinear(nn.Linear):
    """A frozen Linear plus a trainable low-rank update: x W^T + b + scale * dropout(x) A^T B^T.

    It keeps the wrapped layer's own `weight` and `bias` (the same tensors, under the same names),
    so the model's state dict still has every key of the base model, plus `lora_A` and `lora_B`.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: the weights are the base's, not new ones
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        # On the base's device and in its dtype: a float32 adapter cannot multiply a bfloat16 input.
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **like))  # (r, in)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as a fresh nn.Linear's weight
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **like))  # (out, r)
        self.scale = alpha / rank
        self.drop = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., out): the frozen layer
        if self.merged:  # the update already sits inside self.weight
            return out
        return out + self.scale * (self.drop(x) @ self.lora_A.T @ self.lora_B.T)  # (..., in) -> (..., r) -> (..., out)

    def delta(self) -> Tensor:
        """The weight update this adapter stands for: scale * B A, (out, in)."""
        return self.scale * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + scale * B A: inference then runs one matmul, as the base model does."""
        if not self.merged:
            self.weight += self.delta()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scale * B A: back to the frozen base weight (up to float rounding) and a separate adapter."""
        if self.merged:
            self.weight -= self.delta()
            self.merged = False


def parse_targets(targets: str | Sequence[str]) -> list[str]:
    """"qkv,proj" -> ["qkv", "proj"] (a list passes through)."""
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    return [name.strip() for name in names if name.strip()]


def names_layer(target: str, name: str) -> bool:
    """Whether `target` names the Linear layer called `name`: its whole dotted name, or its end
    ("proj" names "blocks.0.attn.proj" and "blocks.0.mlp.proj", "mlp.proj" only the second)."""
    return name == target or name.endswith("." + target)


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: str | Sequence[str],
             also_train: str | Sequence[str] = (), named: str = "") -> list[str]:
    """Freeze every parameter of `model` and give each Linear named by `targets` a LoRA adapter.

    A target matches every Linear whose dotted name ends with it (`names_layer`). The modules named
    exactly in `also_train` (e.g. "tok_emb") stay trainable in full. Returns the names of the adapted
    layers. A target that matches nothing raises ConfigError, listing the layers there are.
    `named` is how the caller's user spells these settings (SFT: "--set sft.lora."): the error's examples
    put it before `targets` and `also_train`, and with it given, its hint to untie the LM head is a
    command-line setting too.
    """
    wanted, in_full = parse_targets(targets), parse_targets(also_train)
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    check_lora_request(model, linears, wanted, in_full, named)
    model.requires_grad_(False)  # the base is frozen: only the adapters below will train
    for name in in_full:
        model.get_submodule(name).requires_grad_(True)
    chosen = sorted(name for name in linears if any(names_layer(t, name) for t in wanted))
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return chosen


def check_lora_request(model: nn.Module, linears: Mapping[str, nn.Linear], wanted: list[str],
                       in_full: list[str], named: str = "") -> None:
    """Raise ConfigError, naming the fix (its settings after `named`, as add_lora's), unless `add_lora` can do
    what it is asked: the model has no adapters yet, every target names one of its `linears` at least, and
    `in_full` names its modules."""
    if any(isinstance(module, LoRALinear) for module in linears.values()):
        raise ConfigError("add_lora: this model already has LoRA adapters; add them once")
    unmatched = [t for t in wanted if not any(names_layer(t, name) for name in linears)]
    if unmatched or not wanted:
        kinds = sorted({name.rsplit(".", 1)[-1] for name in linears})
        # a tied LM head is no Linear of its own but the token table (blocks.output_table); its own Linear
        # comes of pretraining with the model setting tie_embeddings=false (on the command line, clm's)
        untie = "--set clm.model.tie_embeddings=false in the pretraining command" if named else "tie_embeddings=false"
        tied = ("; the LM head is the token table (tie_embeddings=true), no Linear: pretrain with "
                f"{untie} to adapt it, or train the table in full with {named}also_train=tok_emb"
                ) if "head" in unmatched else ""
        raise ConfigError(f"lora targets {unmatched or wanted} match no Linear layer of the model; its Linear "
                          f"layers end in {kinds} (e.g. {named}targets=qkv,proj){tied}")
    modules = dict(model.named_modules())
    unknown = [name for name in in_full if name not in modules]
    if unknown:
        raise ConfigError(f"lora also_train {unknown} names no module of the model; e.g. {named}also_train=tok_emb "
                          "(the token table)")


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every adapted layer of `model`, by its dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Add every adapter into its frozen weight (`LoRALinear.merge`): inference as fast as the base's."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take every merged adapter back out of its weight, to train or save it on its own again."""
    for layer in lora_layers(model).values():
        layer.unmerge()


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """What fine-tuning changed: every trainable parameter, i.e. each "<layer>.lora_A" and
    "<layer>.lora_B" and the modules of `also_train`; the frozen base weights are not in it."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_lora_state_dict(model: nn.Module, adapters: Mapping[str, Tensor]) -> None:
    """Put saved adapters into a model that `add_lora` has prepared the same way (rank, targets, also_train)."""
    own = dict(model.named_parameters())
    trainable = {name for name, p in own.items() if p.requires_grad}
    if trainable != adapters.keys() or any(own[k].shape != adapters[k].shape for k in trainable):
        raise CheckpointError(f"the saved adapters {sorted(adapters)[:4]}... do not fit this model's "
                              f"{sorted(trainable)[:4]}...; add_lora with the rank, targets and also_train they were "
                              "trained with")
    with torch.no_grad():
        for name, tensor in adapters.items():
            own[name].copy_(tensor)


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of the plain model the adapted one computes: every W + scale * B A, no adapter keys.

    It loads into a model built without LoRA, so later stages need not know that LoRA was used.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if not k.endswith((".lora_A", ".lora_B"))}
    for name, layer in lora_layers(model).items():
        if not layer.merged:
            state[f"{name}.weight"] += layer.delta().detach()
    return state


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """How many numbers the model has (shared tensors once), or only those the optimizer would train."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

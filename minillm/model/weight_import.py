"""Importing weights saved by other implementations (GPT-2, Llama, BERT) into our GPT and Bert.

Every implementation names and shapes the same parts differently: GPT-2 calls the qkv projection
"h.0.attn.c_attn" and stores it transposed, Llama and BERT keep q, k and v as three matrices. An
import is therefore a *plan*: for each of our parameters, the source keys it is built from and how
to combine them (as they are, transposed, or stacked). `load_converted` checks the whole plan
against the state dict first, so a wrong file is refused with every problem listed at once.

The model's size is read from the tensors' shapes by `GPT.from_gpt2_state_dict`,
`GPT.from_llama_state_dict` and `Bert.from_bert_state_dict`; this file holds what they share and
the three plans, one below the other, so that the three naming schemes can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from minillm.config import ModelConfig
from minillm.errors import CheckpointError

# How to build one of our parameters: the source keys it is made from, and how to combine them.
Conversion = tuple[list[str], Callable[[list[Tensor]], Tensor]]


def as_is(tensors: list[Tensor]) -> Tensor:
    """The one source tensor, unchanged (its name and shape are already ours)."""
    return tensors[0]


def stack_rows(tensors: list[Tensor]) -> Tensor:
    """Source matrices stacked along the output rows (q, k, v -> our qkv); a single one is itself."""
    return torch.cat(tensors, dim=0)


def transposed(tensors: list[Tensor]) -> Tensor:
    """GPT-2's Conv1D keeps its weight as (in, out); our nn.Linear keeps (out, in)."""
    return tensors[0].T


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop `prefix` (e.g. 'transformer.') from the keys that have it; keep the other keys as they are."""
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def sized_source(state_dict: Mapping[str, Tensor], prefix: str, needed: list[str], source: str) -> dict[str, Tensor]:
    """The state dict without `prefix`, refused at once if a key the model's size is read from is missing."""
    sd = strip_prefix(state_dict, prefix)
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CheckpointError(f"not a {source} state dict: missing {missing} (needed to infer the model's size)")
    return sd


def mlp_size(hidden: int, n_embd: int) -> dict[str, int]:
    """The ModelConfig field that gives a plain MLP of hidden width `hidden` (read from a weight's shape).

    mlp_ratio when the width is a whole multiple of n_embd (GPT-2's and BERT's 4 * n_embd), so that
    such a model's config reads as theirs do; mlp_hidden otherwise. Hugging Face lets any width be
    chosen (GPT2Config.n_inner, BertConfig.intermediate_size): hidden // n_embd would round 3.5 * C
    down to 3 * C (every MLP tensor refused as mis-shaped) and a width below C down to 0.
    """
    return {"mlp_ratio": hidden // n_embd} if hidden % n_embd == 0 else {"mlp_hidden": hidden}


def count_layers(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """How many layers the keys "{prefix}{i}.…" number: 1 + the largest i."""
    return 1 + max(int(k.removeprefix(prefix).split(".")[0]) for k in state_dict if k.startswith(prefix))


def load_converted(
    model: nn.Module, state_dict: Mapping[str, Tensor], plan: dict[str, Conversion],
    ignored: Callable[[str], bool], source: str,
) -> None:
    """Fill `model` from `state_dict` following `plan` (our key -> conversion of source keys).

    Raises CheckpointError listing every missing, unexpected (extra) and mis-shaped key, so a user
    sees all that is wrong in one go. `ignored(key)` marks source keys we knowingly drop (buffers,
    heads we do not have, tied copies).
    """
    used = {key for sources, _ in plan.values() for key in sources}
    missing = sorted(used - state_dict.keys())
    extra = sorted(k for k in state_dict if k not in used and not ignored(k))
    if missing or extra:
        raise CheckpointError(
            f"this does not look like a {source} state dict: missing keys {missing or 'none'}; "
            f"unexpected keys {extra or 'none'}. Pass the model's own state_dict() (e.g. from "
            f"torch.load of its pytorch_model.bin) without renaming its keys"
        )
    own = model.state_dict()
    converted, misshaped = {}, []
    for ours, (sources, combine) in plan.items():
        try:
            tensor = combine([state_dict[k] for k in sources])
        except RuntimeError:  # e.g. q, k, v of different widths cannot be stacked
            tensor = None
        if tensor is None or tensor.shape != own[ours].shape:
            got = [tuple(state_dict[k].shape) for k in sources]
            misshaped.append(f"{'+'.join(sources)} has shape {got}, expected {tuple(own[ours].shape)}")
        converted[ours] = tensor
    if misshaped:
        raise CheckpointError(
            f"{source} state dict has mis-shaped tensors (the model's shape was inferred from the "
            f"embeddings and the first layer): {'; '.join(misshaped)}"
        )
    model.load_state_dict(converted, strict=True)


# --------------------------------------------------------------------------------------------------
# GPT-2 (Hugging Face's GPT2LMHeadModel) and Llama (LlamaForCausalLM) -> GPT.

# (our module, GPT-2's module) in each block.
GPT2_LAYER = (
    ("ln_1", "ln_1"), ("ln_2", "ln_2"), ("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
    ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj"),
)


def gpt2_plan(n_layer: int) -> dict[str, Conversion]:
    """Our parameter name -> the GPT-2 key it comes from (Conv1D weights transposed)."""
    plan: dict[str, Conversion] = {
        "tok_emb.weight": (["wte.weight"], as_is), "pos_emb.weight": (["wpe.weight"], as_is),
        "ln_f.weight": (["ln_f.weight"], as_is), "ln_f.bias": (["ln_f.bias"], as_is),
    }
    for i in range(n_layer):
        for ours, theirs in GPT2_LAYER:
            weight = as_is if ours.startswith("ln") else transposed
            plan[f"blocks.{i}.{ours}.weight"] = ([f"h.{i}.{theirs}.weight"], weight)
            plan[f"blocks.{i}.{ours}.bias"] = ([f"h.{i}.{theirs}.bias"], as_is)
    return plan


def gpt2_ignored(key: str) -> bool:
    """GPT-2 keys we knowingly skip: the tied LM head (GPT.from_gpt2_state_dict checks that it equals
    wte) and old causal-mask buffers."""
    return key == "lm_head.weight" or key.endswith((".attn.bias", ".attn.masked_bias"))


# (our module, Llama's module(s)) in each block; several sources are stacked along the output rows.
LLAMA_LAYER = (
    ("ln_1", ["input_layernorm"]), ("ln_2", ["post_attention_layernorm"]),
    ("attn.qkv", ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]), ("attn.proj", ["self_attn.o_proj"]),
    ("mlp.fc", ["mlp.gate_proj", "mlp.up_proj"]), ("mlp.proj", ["mlp.down_proj"]),
)


def llama_plan(config: ModelConfig) -> dict[str, Conversion]:
    """Our parameter name -> the Llama key(s) it comes from."""
    plan: dict[str, Conversion] = {
        "tok_emb.weight": (["embed_tokens.weight"], as_is), "ln_f.weight": (["norm.weight"], as_is),
    }
    if not config.tie_embeddings:
        plan["head.weight"] = (["lm_head.weight"], as_is)
    for i in range(config.n_layer):
        for ours, theirs in LLAMA_LAYER:
            plan[f"blocks.{i}.{ours}.weight"] = ([f"layers.{i}.{t}.weight" for t in theirs], stack_rows)
    return plan


def llama_ignored(config: ModelConfig) -> Callable[[str], bool]:
    """Llama keys we knowingly skip: a tied LM head (a copy of the embeddings) and RoPE frequency buffers."""
    return lambda key: (key == "lm_head.weight" and config.tie_embeddings) or key.endswith("rotary_emb.inv_freq")


# --------------------------------------------------------------------------------------------------
# BERT (Hugging Face's BertForMaskedLM) -> Bert.

# (our module, BERT's module) pairs whose weight and bias are copied as they are.
BERT_OUTSIDE_LAYERS = (
    ("emb_ln", "embeddings.LayerNorm"),
    ("head_dense", "cls.predictions.transform.dense"),
    ("head_ln", "cls.predictions.transform.LayerNorm"),
)
BERT_LAYER = (
    ("attn.proj", "attention.output.dense"),
    ("ln_1", "attention.output.LayerNorm"),
    ("mlp.fc", "intermediate.dense"),
    ("mlp.proj", "output.dense"),
    ("ln_2", "output.LayerNorm"),
)


def bert_plan(config: ModelConfig) -> dict[str, Conversion]:
    """Our parameter name -> the BERT key(s) it comes from (q, k, v stacked into qkv)."""
    plan: dict[str, Conversion] = {
        "tok_emb.weight": (["embeddings.word_embeddings.weight"], as_is),
        "pos_emb.weight": (["embeddings.position_embeddings.weight"], as_is),
        "head_bias": (["cls.predictions.bias"], as_is),
    }
    if config.type_vocab_size:
        plan["seg_emb.weight"] = (["embeddings.token_type_embeddings.weight"], as_is)
    for ours, theirs in BERT_OUTSIDE_LAYERS:
        for p in ("weight", "bias"):
            plan[f"{ours}.{p}"] = ([f"{theirs}.{p}"], as_is)
    for i in range(config.n_layer):
        layer = f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            plan[f"blocks.{i}.attn.qkv.{p}"] = (
                [f"{layer}attention.self.{name}.{p}" for name in ("query", "key", "value")], stack_rows)
            for ours, theirs in BERT_LAYER:
                plan[f"blocks.{i}.{ours}.{p}"] = ([f"{layer}{theirs}.{p}"], as_is)
    return plan


def bert_ignored(key: str) -> bool:
    """BERT keys we knowingly skip: pooler, next-sentence head, tied decoder copies, position buffer."""
    return key.startswith(("pooler.", "cls.seq_relationship.")) or key in (
        "cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "embeddings.position_ids")

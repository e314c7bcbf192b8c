"""The pieces BERT and GPT share: the MLP and norms, one transformer block, positions, the LM
head's table, and the checks on model inputs.

A transformer is a stack of identical blocks around a *residual stream*: a (B, T, C) tensor that
every block reads from and adds to. Each block has two sub-layers:
- attention: tokens exchange information with each other (minillm/model/attention.py);
- the MLP: each token, on its own, goes through a wider hidden layer (4x) and back.

Where the LayerNorm sits is the main difference between the 2018 BERT and the 2019 GPT-2:
- **post-LN** (BERT, the original Transformer): x = LN(x + sublayer(x)). The normalisation sits on
  the residual path itself, so gradients must pass through every LayerNorm on the way down; deep
  post-LN stacks need learning-rate warm-up to train at all.
- **pre-LN** (GPT-2): x = x + sublayer(LN(x)). The residual path is a clean sum from input to
  output, which keeps gradients healthy; the stack then needs one final LayerNorm at the top.
`ModelConfig.norm` switches between them (lesson 03's Try this 3 trains both and compares).

Llama (2023) and the models after it changed two more pieces, each a switch here:
- **RMSNorm** (`norm_type="rmsnorm"`): divide by the root mean square of the channels, without
  subtracting their mean and without a bias. One statistic instead of two, and it trains as well.
- **SwiGLU** (`mlp="swiglu"`): the MLP's hidden layer is a product of two projections, one passed
  through SiLU (a smooth gate between 0 and 1 times its input) and one left linear:
  proj(SiLU(x W_gate) * (x W_up)). Three matrices instead of two, so the hidden width shrinks to
  2/3 to keep the parameter count (`mlp_width`).

Dropout sits where the originals put it: on the attention weights, and on each sub-layer's output
before it is added to the residual stream (plus on the embeddings, in the models).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from minillm.config import ModelConfig
from minillm.errors import ConfigError, ModelInputError
from minillm.model.attention import KVCache, MultiHeadAttention, rotary_angles

# --------------------------------------------------------------------------------------------------
# The MLP: each token on its own through a wider hidden layer and back.

# Llama rounds SwiGLU's hidden width up to a multiple of 256, a size GPU kernels like (2% of
# Llama-7B's 11008). At our widths 256 would be most of the layer; we round to a multiple of 32.
SWIGLU_MULTIPLE_OF = 32


def is_gated(config: ModelConfig) -> bool:
    """Whether `config.mlp` names the gated MLP ("swiglu") or the plain one ("gelu"). A new MLP gets
    its branch here (and in MLP and mlp_width) and its name in config.MLPS."""
    if config.mlp == "swiglu":
        return True
    if config.mlp == "gelu":
        return False
    raise ConfigError(f"mlp={config.mlp}: is_gated (minillm/model/blocks.py) knows no MLP of that name; add its "
                      "branch there, and build it in MLP")


def mlp_width(config: ModelConfig) -> int:
    """The MLP's hidden width d_ff: mlp_hidden if set, else mlp_ratio * C, and for SwiGLU 2/3 of that.

    (Not H, which counts attention heads.) A GELU MLP has two C x d_ff matrices; SwiGLU has three.
    Llama takes d_ff = 2/3 * 4C, rounded up, so that both MLPs hold about the same number of
    parameters: for C = 128, 352 against 512.
    """
    if config.mlp_hidden:
        return config.mlp_hidden
    width = config.mlp_ratio * config.n_embd
    if is_gated(config):  # SwiGLU: 2/3 of the width
        return SWIGLU_MULTIPLE_OF * math.ceil(int(2 * width / 3) / SWIGLU_MULTIPLE_OF)
    return width


def make_activation(config: ModelConfig) -> nn.Module:
    """The plain MLP's activation `config.activation` names (BERT's MLM head uses it too): GELU, as
    GPT-2's tanh approximation (cheaper in 2019) or BERT's exact erf form. A new activation goes here
    and in config.ACTIVATIONS."""
    if config.activation == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if config.activation == "gelu":
        return nn.GELU(approximate="none")
    raise ConfigError(f"activation={config.activation}: make_activation (minillm/model/blocks.py) builds no "
                      "activation of that name; add its branch there, beside gelu's")


class MLP(nn.Module):
    """Per-token feed-forward: C -> d_ff -> GELU -> C, or with SwiGLU C -> (gate, up) -> SiLU(gate) * up -> C."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_width(config)
        self.gated = is_gated(config)
        # SwiGLU's gate and up projections are made by one matmul, as qkv makes q, k and v.
        self.fc = nn.Linear(config.n_embd, 2 * hidden if self.gated else hidden, bias=config.bias)
        self.act = nn.SiLU() if self.gated else make_activation(config)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)  # (B, T, d_ff), or (B, T, 2 * d_ff) with SwiGLU
        if self.gated:
            gate, up = h.chunk(2, dim=-1)  # (B, T, d_ff) each
            return self.proj(self.act(gate) * up)  # (B, T, C)
        return self.proj(self.act(h))  # (B, T, d_ff) -> (B, T, C)


# --------------------------------------------------------------------------------------------------
# Norms, dropout, and the block that puts them around attention and the MLP.


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * gain, over the channels: LayerNorm without centring or bias.

    Computed in float32 whatever the input's dtype, as Llama does: a mean of squares in bfloat16
    loses too many digits.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # (B, T, C), float64 stays float64
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def make_norm(config: ModelConfig) -> nn.Module:
    """The normalisation layer `config.norm_type` names: LayerNorm (GPT-2, BERT) or RMSNorm (Llama).
    A new one goes here and in config.NORM_TYPES."""
    if config.norm_type == "rmsnorm":
        return RMSNorm(config.n_embd, config.layer_norm_eps)
    if config.norm_type == "layernorm":
        return nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
    raise ConfigError(f"norm_type={config.norm_type}: make_norm (minillm/model/blocks.py) builds no norm of that "
                      "name; add its branch there, beside rmsnorm's")


def make_dropout(p: float) -> nn.Module:
    """nn.Dropout(p), or nn.Identity() when p is 0. A dropout of 0 changes nothing but still costs a
    call per sub-layer, 3-4 us each (by the CPU): 3-5% of a small model's step when it generates."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def is_pre_norm(config: ModelConfig) -> bool:
    """Whether `config.norm` puts the norm before each sub-layer ("pre", GPT-2) or after the residual
    ("post", BERT). A new placement gets its branch here (and in Block.forward) and its name in config.NORMS."""
    if config.norm == "pre":
        return True
    if config.norm == "post":
        return False
    raise ConfigError(f"norm={config.norm}: is_pre_norm (minillm/model/blocks.py) knows no placement of that name; "
                      "add its branch there, and its order in Block.forward")


class Block(nn.Module):
    """One transformer block: attention then MLP, each wrapped in a residual connection and a norm
    (LayerNorm or RMSNorm), placed before the sub-layer (pre-LN) or after the sum (post-LN)."""

    def __init__(self, config: ModelConfig, layer: int = 0, causal: bool = False) -> None:
        super().__init__()
        self.pre_norm = is_pre_norm(config)
        self.ln_1 = make_norm(config)
        self.attn = MultiHeadAttention(config, layer, causal)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)
        self.drop = make_dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None,
                rotary: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C). mask: bool, True = may attend, e.g. padding (B, 1, 1, T_key).
        rotary: RoPE's (cos, signed sin) for these tokens, or None with a learned position table."""
        if self.pre_norm:  # GPT-2: normalise the sub-layer's input; the residual path stays a plain sum
            x = x + self.drop(self.attn(self.ln_1(x), mask, cache, rotary))
            x = x + self.drop(self.mlp(self.ln_2(x)))
        else:  # BERT: normalise after adding the sub-layer's output to the residual
            x = self.ln_1(x + self.drop(self.attn(x, mask, cache, rotary)))
            x = self.ln_2(x + self.drop(self.mlp(x)))
        return x


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2/BERT initialisation: weights ~ N(0, 0.02), biases 0, LayerNorm (1, 0), RMSNorm 1.

    As in GPT-2 (BERT did not do this; here both models do), the projections that write into the
    residual stream (attn.proj, mlp.proj) are scaled down by 1/sqrt(2 * n_layer): the stream sums
    2 * n_layer of them, and this keeps its variance at initialisation independent of depth.
    """
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj", "mlp.proj")) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)


# --------------------------------------------------------------------------------------------------
# The model's two ends: where each token is (positions) and which token comes next (the LM head's table).


def position_table(config: ModelConfig) -> nn.Embedding | None:
    """The learned table of one vector per position, or None when positions are RoPE's rotations."""
    if config.position == "learned":
        return nn.Embedding(config.block_size, config.n_embd)
    if config.position == "rope":
        return None
    raise ConfigError(f"position={config.position}: position_table (minillm/model/blocks.py) knows no scheme of "
                      "that name; give it its table (or None) there, and its branch in add_positions")


def add_positions(
    x: Tensor, table: nn.Embedding | None, position_ids: Tensor, config: ModelConfig
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """Tell the model where each token is, as `config.position` says: (x + its position vector from
    `table`, None) when "learned", or (x unchanged, RoPE's (cos, sin) for every attention to turn
    queries and keys by) when "rope". A new scheme gets its branch here, its table (if any) in
    `position_table`, and its name in config.POSITIONS.

    x (B, T, C); position_ids (B or 1, T).
    """
    if config.position == "rope":
        return x, rotary_angles(position_ids, config.head_dim, config.rope_base)  # each (B or 1, 1, T, D)
    return x + table(position_ids), None  # (B, T, C)


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids (B, T) that count only real tokens: cumsum(mask) - 1, clamped at 0.

    With left padding ("<pad> <pad> The cat") the first real token gets position 0, exactly as if
    the row were not padded, and the pads in front get 0. Pads after the text (right padding) repeat
    the last real token's position. Either way no real token reads a pad, and pad outputs are unused.
    """
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def output_table(config: ModelConfig) -> nn.Linear | None:
    """The LM head's own (V, C) table, or None when it reuses the token embeddings (tied, GPT-2, BERT).

    Tying makes "which vector stands for token v" and "which vector predicts token v" the same
    table: fewer parameters, and every gradient on one improves the other. Llama unties them.
    """
    return None if config.tie_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)


def read_out(h: Tensor, tok_emb: nn.Embedding, table: nn.Linear | None) -> Tensor:
    """Hidden states (..., C) -> logits (..., V): `table`, or the token table read backwards (the logit
    of token v is h's dot product with v's embedding: how much h points the way v's vector does).

    `table` is called, not its weight read: a LoRA adapter on the head (lora.py) lives in its forward.
    """
    return h @ tok_emb.weight.T if table is None else table(h)


# --------------------------------------------------------------------------------------------------
# What a caller passes in, checked before any tensor work.


def check_model_inputs(
    ids: Tensor, attention_mask: Tensor | None, config: ModelConfig, device: torch.device,
    cache: KVCache | None = None,
) -> None:
    """Raise ModelInputError, naming the fix, when ids, mask or KV cache do not fit the model.

    `device` is where the model's weights are: inputs left on the CPU after `model.to("cuda")`
    would otherwise stop torch deep inside nn.Embedding. It runs at every decoding step, so it
    only compares sizes and devices: no pass over the cached tensors.
    """
    if not isinstance(ids, Tensor):
        raise ModelInputError(f"ids must be a (batch, time) tensor of int64 token ids, got a {type(ids).__name__}; "
                              "use torch.tensor([ids])")
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise ModelInputError(
            f"ids must be a (batch, time) tensor of int64 token ids, got shape {tuple(ids.shape)} and "
            f"dtype {ids.dtype}; add a batch dimension with ids[None] and use torch.long"
        )
    for name, tensor, verb in (("ids", ids, "are"), ("attention_mask", attention_mask, "is")):
        if tensor is not None and tensor.device != device:
            raise ModelInputError(f"{name} {verb} on {tensor.device} but the model's weights are on {device}; move "
                                  f"the inputs to the model's device first: {name}.to({str(device)!r})")
    if not torch.compiler.is_compiling():  # reading values back would break a compiled graph in two
        lowest, highest = (int(v) for v in torch.aminmax(ids)) if ids.numel() else (0, 0)
        if lowest < 0 or highest >= config.vocab_size:
            raise ModelInputError(
                f"token ids must be in [0, {config.vocab_size}) (the model's vocab_size), got min "
                f"{lowest} and max {highest}; was the model built for a different tokenizer?"
            )
    if cache is not None and (len(cache.keys) != config.n_layer or cache.batch not in (None, ids.shape[0])):
        raise ModelInputError(
            f"this KVCache has {len(cache.keys)} layers and holds a batch of {cache.batch}, but the model has "
            f"n_layer={config.n_layer} and ids a batch of {ids.shape[0]}; a KVCache belongs to one model and "
            "one batch: make a new one with KVCache(model.config.n_layer) for every batch"
        )
    past_length = 0 if cache is None else cache.length
    total = past_length + ids.shape[1]
    if total > config.block_size:
        parts = "" if cache is None else f" ({past_length} cached + {ids.shape[1]} new)"  # no cache: no split to name
        raise ModelInputError(
            f"sequence of {total} tokens{parts} is longer than the "
            f"context block_size={config.block_size}; truncate the input or train with a larger block_size"
        )
    if attention_mask is not None and attention_mask.shape != ids.shape:
        raise ModelInputError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but ids have {tuple(ids.shape)}; "
            "the mask needs one True/False per token (True = real token, False = padding)"
        )

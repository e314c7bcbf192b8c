"""BERT: a bidirectional encoder trained to fill in masked words (stage 1, masked language modelling).

Unlike GPT, every token may attend to every other real token, left AND right: there is no causal
mask, only the padding mask. That is why BERT cannot generate text left to right, and why it is
good at understanding a word from both sides of its context ("a flash flood watch ... all [MASK].").

Follow a batch through `Bert.hidden_states`:

    ids (B, T) -> token embedding + position embedding + segment embedding (sentence A or B)
      -> LayerNorm -> dropout (B, T, C)
      -> n_layer encoder blocks with the padding mask (post-LN as in BERT, MLMConfig's default;
         norm="pre", ModelConfig's default and the tiny and small presets', adds a final LayerNorm `ln_f`)
      -> (B, T, C)

and the MLM head in `Bert.forward`:

    (B, T, C) -> dense -> GELU -> LayerNorm -> decoder tied to the token embeddings (+ its own bias)
      -> logits (B, T, V)

("decoder" is BERT's name for that last read-out into the vocabulary, not GPT's kind of decoder.)

The loss, on the masked positions only, is computed by stage 1 (stage1_pretrain/mlm.py).
`Bert.from_bert_state_dict` loads the weights of Google's BERT (HuggingFace layout, a state dict you
already have), which this architecture follows exactly (exact GELU, eps 1e-12, post-LN, tying).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from minillm.config import ModelConfig, check_section
from minillm.errors import CheckpointError, ModelInputError
from minillm.model.attention import padding_mask
from minillm.model.blocks import (
    Block,
    add_positions,
    check_model_inputs,
    init_weights,
    is_pre_norm,
    make_activation,
    make_dropout,
    make_norm,
    output_table,
    position_table,
    positions_from_mask,
    read_out,
)
from minillm.model.weight_import import bert_ignored, bert_plan, count_layers, load_converted, mlp_size, sized_source


class Bert(nn.Module):
    """A BERT-style encoder with its masked-language-model head."""

    kind = "bert"  # stored in checkpoints, so a run folder of another kind of model is refused

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_section(config, ModelConfig, "Bert")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = position_table(config)  # None with RoPE: positions turn queries and keys instead
        # Segment embeddings tell sentence A from sentence B (type_vocab_size=0: none at all).
        self.seg_emb = nn.Embedding(config.type_vocab_size, config.n_embd) if config.type_vocab_size else None
        self.emb_ln = make_norm(config)
        self.drop = make_dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        # A post-LN block already ends in a LayerNorm; a pre-LN stack needs one more at the top.
        self.ln_f = make_norm(config) if is_pre_norm(config) else None
        # The MLM head: one more transformation of each token's vector before reading out words.
        self.head_dense = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.head_act = make_activation(config)
        self.head_ln = make_norm(config)
        self.head = output_table(config)  # None: the decoder is the token table (tied)
        self.head_bias = nn.Parameter(torch.zeros(config.vocab_size))  # the decoder's own bias
        init_weights(self, config.n_layer)

    def hidden_states(
        self, ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """ids (B, T) -> (B, T, C). attention_mask (B, T): True = real token. token_type_ids (B, T): the
        segment of each token, in [0, type_vocab_size) (0/1 = sentence A/B)."""
        check_model_inputs(ids, attention_mask, self.config, self.tok_emb.weight.device)
        self._check_segments(ids, token_type_ids)
        if attention_mask is None:
            positions = torch.arange(ids.shape[1], device=ids.device)[None]  # (1, T)
        else:
            positions = positions_from_mask(attention_mask)  # (B, T): pads do not shift positions
        x, rotary = add_positions(self.tok_emb(ids), self.pos_emb, positions, self.config)  # (B, T, C)
        if self.seg_emb is not None:
            segments = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
            x = x + self.seg_emb(segments)
        x = self.drop(self.emb_ln(x))  # (B, T, C)
        # Only padding is hidden: no causal part, every token sees both sides.
        mask = None if attention_mask is None else padding_mask(attention_mask)  # (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, mask, rotary=rotary)  # (B, T, C)
        return x if self.ln_f is None else self.ln_f(x)

    def forward(
        self, ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        """ids (B, T) -> logits (B, T, V) over the vocabulary at every position.

        logits_at (B, T) bool: the positions whose predictions are needed (in MLM training, the ~15%
        that were masked); the logits come back as (M, V), one row per True (M of them) in row-major
        order. The head and the vocabulary projection then run on those rows only, a third of a small
        encoder's training compute saved.
        """
        h = self.hidden_states(ids, attention_mask, token_type_ids)  # (B, T, C)
        if logits_at is not None:
            h = h[logits_at]  # (M, C)
        h = self.head_ln(self.head_act(self.head_dense(h)))  # (B, T, C) or (M, C)
        return read_out(h, self.tok_emb, self.head) + self.head_bias  # (B, T, V) or (M, V)

    def _check_segments(self, ids: Tensor, token_type_ids: Tensor | None) -> None:
        """Raise ModelInputError unless token_type_ids gives each token of ids (B, T) a segment in
        [0, type_vocab_size): an id past the table would stop torch deep inside nn.Embedding."""
        if token_type_ids is None:
            return
        n = self.config.type_vocab_size
        if token_type_ids.shape != ids.shape:
            raise ModelInputError(f"token_type_ids has shape {tuple(token_type_ids.shape)} but ids have "
                                  f"{tuple(ids.shape)}; give one segment id per token")
        if token_type_ids.numel() and (int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= n):
            raise ModelInputError(f"token_type_ids must be in [0, {n}) (type_vocab_size), got values "
                                  f"from {int(token_type_ids.min())} to {int(token_type_ids.max())}")

    @classmethod
    def from_bert_state_dict(
        cls, state_dict: Mapping[str, Tensor], n_head: int | None = None, attention: str = "manual"
    ) -> Bert:
        """Build a Bert holding the weights of a BERT state dict (HuggingFace layout, e.g. BertForMaskedLM).

        Sizes are read from the tensors' shapes; n_head defaults to n_embd // 64 (true for BERT base
        and large, and the small official BERTs). BERT keeps separate query/key/value matrices; we
        stack them into our single qkv projection. The pooler and next-sentence head, which this
        model does not have, are skipped.
        """
        emb = "embeddings."
        needed = [emb + "word_embeddings.weight", emb + "position_embeddings.weight",
                  "encoder.layer.0.intermediate.dense.weight"]
        sd = sized_source(state_dict, "bert.", needed, "BERT")
        vocab_size, n_embd = sd[emb + "word_embeddings.weight"].shape
        n_layer = count_layers(sd, "encoder.layer.")
        segments = sd.get(emb + "token_type_embeddings.weight")
        config = ModelConfig(
            vocab_size=vocab_size, block_size=sd[emb + "position_embeddings.weight"].shape[0],
            n_embd=n_embd, n_layer=n_layer,
            n_head=n_head if n_head is not None else max(1, n_embd // 64),
            **mlp_size(sd["encoder.layer.0.intermediate.dense.weight"].shape[0], n_embd),  # (d_ff, C)
            norm="post", activation="gelu", layer_norm_eps=1e-12, attention=attention,
            type_vocab_size=0 if segments is None else segments.shape[0],
        )
        for tied, original in (("cls.predictions.decoder.weight", emb + "word_embeddings.weight"),
                               ("cls.predictions.decoder.bias", "cls.predictions.bias")):
            if tied in sd and original in sd and not torch.equal(sd[tied], sd[original]):
                raise CheckpointError(f"{tied} differs from {original}: BERT ties them, and so does this "
                                      "Bert; an untied decoder cannot be loaded")
        model = cls(config)
        load_converted(model, sd, bert_plan(config), bert_ignored, "BERT")
        return model

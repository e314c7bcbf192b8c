"""The networks: attention and its masks, the shared transformer block, BERT (encoder) and GPT (decoder).

Read in this order: attention.py (masks, multi-head attention, KV cache) -> blocks.py (MLP, one
block, pre-LN vs post-LN) -> bert.py and gpt.py (the two models built from those blocks) -> lora.py
(low-rank adapters for fine-tuning any of their Linear layers). weight_import.py, for later: how GPT-2's,
Llama's and BERT's published weights are loaded into these models.

The letters of the shape comments, here and in the training stages:
    B     rows of a batch
    T     tokens per row; Tq and Tk (queries, keys) differ with a KV cache, T_past = tokens cached
    C     channels of the residual stream, n_embd
    V     vocabulary size, vocab_size
    H     attention heads, n_head; Hkv = n_kv_head key/value heads (= H without GQA)
    D     channels per head, head_dim = C / H
    d_ff  the MLP's hidden width (blocks.mlp_width)
    T0    prompt columns; N generated (response) columns after them
    M     how many entries of a bool mask are True: h[mask] keeps M rows (`logits_at` -> (M, V))
    P     prompts (in gpt.py: the distinct prompts among the rows)
    W     windows cut from a token stream (stage 1)
    b     a subset of the B rows: those still generating (gpt.py), or one minibatch (ppo.py, grpo.py)
"""

from minillm.model.attention import (
    KVCache,
    MultiHeadAttention,
    attend,
    causal_mask,
    combine_masks,
    padding_mask,
)
from minillm.model.bert import Bert
from minillm.model.blocks import MLP, Block
from minillm.model.gpt import GPT, Generation

__all__ = [
    "GPT", "MLP", "Bert", "Block", "Generation", "KVCache", "MultiHeadAttention", "attend", "causal_mask",
    "combine_masks", "padding_mask",
]

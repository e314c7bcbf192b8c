"""The networks: attention and its masks, the shared transformer block, BERT (encoder) and GPT (decoder).

Read in this order: attention.py (masks, multi-head attention, KV cache) -> blocks.py (MLP, one
block, pre-LN vs post-LN) -> bert.py and gpt.py (the two models built from those blocks) -> lora.py
(low-rank adapters for fine-tuning any of their Linear layers).
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

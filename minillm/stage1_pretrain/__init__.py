"""Stage 1, self-supervised pretraining: a model learns from raw text by predicting what was hidden.

Read in this order:
- data.py: documents -> one packed token stream (`<bos> doc <eos> ...`) -> windows; the unigram
  counts behind the baselines;
- masking.py: BERT's recipe (15% of tokens chosen; 80% <mask>, 10% random, 10% kept);
- mlm.py: masked language modelling with a BERT encoder, its loss on the chosen positions,
  masked accuracy against the unigram baseline, and `fill_mask`;
- clm.py: next-token prediction with a GPT decoder, perplexity against a unigram model, and
  `generate_text`. Its model is where stages 2 and 3 start.
"""

from minillm.stage1_pretrain.clm import clm_loss, generate_text, perplexity, train_clm, unigram_perplexity
from minillm.stage1_pretrain.masking import IGNORE_INDEX, MaskedBatch, mask_tokens
from minillm.stage1_pretrain.mlm import FLASH_FLOOD, fill_mask, mlm_loss, plot_fill_mask, train_mlm

__all__ = [
    "FLASH_FLOOD", "IGNORE_INDEX", "MaskedBatch", "clm_loss", "fill_mask", "generate_text", "mask_tokens",
    "mlm_loss", "perplexity", "plot_fill_mask", "train_clm", "train_mlm", "unigram_perplexity",
]

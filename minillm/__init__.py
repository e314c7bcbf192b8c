"""minillm: the three stages of training an LLM, written out in PyTorch to be read and run.

Read the package top to bottom: tokenizer/ -> model/ -> train/ -> stage1_pretrain/ ->
stage2_sft/ -> stage3_rlhf/ -> pipeline.py (and its reuse.py and report.py). The lessons/ folder walks
through the same order.
"""

__version__ = "0.1.0"

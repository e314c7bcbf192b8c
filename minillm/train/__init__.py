"""The shared training machinery: the explicit loop, checkpoints, schedules, plots, several GPUs.

Read in this order: optim.py (AdamW groups, warmup + cosine), precision.py (autocast, grad
scaler), health.py (NaN checks), rng.py, checkpoint.py and resume.py (exact, safe resume),
distributed.py (torchrun + DDP), plots.py, then loop.py, which puts them together.
"""

from minillm.train.checkpoint import load_checkpoint, load_model, load_model_and_tokenizer, save_checkpoint
from minillm.train.loop import train
from minillm.train.optim import lr_at, make_optimizer
from minillm.train.plots import plot_metrics, plot_panels

__all__ = [
    "load_checkpoint", "load_model", "load_model_and_tokenizer", "lr_at", "make_optimizer", "plot_metrics",
    "plot_panels", "save_checkpoint", "train",
]

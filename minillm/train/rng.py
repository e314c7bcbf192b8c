"""Random-number-generator states: what a checkpoint must carry for a resume to be *exact*.

A training run draws random numbers from several independent generators: Python's `random`,
NumPy's global generator, torch's CPU generator (dropout, sampling), one generator per CUDA
device (or Apple's MPS one), and the loop's own data generator (which rows go in the next
batch: an object of the loop's, not a global one, so resume.py saves its state beside these).
Saving the model and optimizer alone is not enough to continue where a run stopped: after a
resume, dropout would drop different units and the batches would come in another order, so the
loss curve would drift away from the one of an uninterrupted run.

The states are stored as plain lists and tensors (never NumPy arrays or other objects) so that
the checkpoint can be read with `torch.load(weights_only=True)`, which refuses anything else.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from minillm.utils import mps_available


def capture_rng_state() -> dict[str, Any]:
    """The state of every global generator of this process, as checkpoint-safe values."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if mps_available():  # dropout on an Apple GPU draws from this one
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every global generator back in the state `capture_rng_state` saw."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np.array(np_state["keys"], dtype=np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving process saw. Where fewer are visible now (another machine,
        # CUDA_VISIBLE_DEVICES), only theirs are put back: torch would index a GPU that is not there.
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])
    if "mps" in state and mps_available():
        torch.mps.set_rng_state(state["mps"])

"""Curves from metrics.jsonl rows: the one plotting function every stage reuses.

Each run logs its numbers as rows (`{"step": 10, "loss": 3.2, "lr": 0.001, ...}`), train and
evaluation rows mixed. `plot_metrics` draws chosen keys against the step, each key from the rows
that have it, and saves a PNG. We build a matplotlib `Figure` directly instead of going through
`pyplot`: a bare Figure renders to files with the "Agg" backend, needs no display (servers, CI),
and leaves pyplot's global state alone for whoever else uses it in the same process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure


def plot_metrics(rows: Sequence[dict], path: str | os.PathLike, keys: Sequence[str] = ("loss", "val_loss"),
                 *, title: str = "", x: str = "step", ylabel: str = "", log_y: bool = False) -> Path:
    """Plot `keys` against `x` from the rows that hold them; save a PNG at `path` and return it.

    A key no row holds is left out of the legend; rows whose value is not a finite number are skipped.
    """
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for key in keys:
        points = [(row[x], row[key]) for row in rows
                  if x in row and isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=key)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or ", ".join(keys))
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Lay out `fig` and write it as a PNG at `path` (folders created); return the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path

"""Curves from metrics.jsonl rows: the one plotting function every stage reuses.

Each run logs its numbers as rows (`{"step": 10, "loss": 3.2, "lr": 0.001, ...}`), train and
evaluation rows mixed. `plot_metrics` draws chosen keys against the step, each key from the rows
that have it, and saves a PNG. We build a matplotlib `Figure` directly instead of going through
`pyplot`: a bare Figure renders to files with the "Agg" backend, needs no display (servers, CI),
and leaves pyplot's global state alone for whoever else uses it in the same process.

Numbers of very different sizes (a probability ratio near 1.0 and a clip fraction near 0.02) do
not share an axis: `plot_panels` gives each group of keys its own panel, one above the other.

A long title (a fill-mask sentence, a run's settings) wraps onto more lines instead of running off the
figure's edges, and an axis says the unit of what it shows (`UNITS`: KL and entropy in nats).

Text in Korean, Chinese or Japanese (a corpus of your own, its tokens in a fill-mask chart) needs
a font that has those glyphs; matplotlib's default has none and draws boxes. `text_fonts` looks
for an installed one and uses it as a fallback.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import LogFormatter, MaxNLocator

from minillm.utils import atomic_write_bytes

# Families with Hangul, Han and Kana glyphs, as their names start (the first one found is used).
CJK_FONTS = ("Noto Sans CJK", "Noto Serif CJK", "Noto Sans KR", "Noto Sans JP", "Noto Sans SC", "NanumGothic",
             "NanumBarunGothic", "Nanum", "Source Han Sans", "Malgun Gothic", "Apple SD Gothic Neo", "AppleGothic",
             "UnDotum", "Baekmuk", "WenQuanYi", "Droid Sans Fallback", "Unifont")
CJK_RANGES = ((0x1100, 0x11FF), (0x2E80, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
              (0xFF00, 0xFFEF))  # Hangul Jamo, CJK scripts and symbols, Hangul syllables, full-width forms
_warned_no_cjk_font = False
# The unit of a logged metric, where it has one (KL and entropy use the natural log). A "loss" has none
# here: the training loop's are cross-entropies in nats (its plot says so), GRPO's is a clipped objective.
UNITS = {"kl": "nats", "approx_kl": "nats", "entropy": "nats", "response_len": "tokens"}
# One colour per model, in every plot that shows several (SFT's exact match, pass@k): a colour names the same
# model in each. The SFT model, what every comparison of stage 3 is against, is black.
MODEL_COLORS = {"SFT": "black", "PPO": "C0", "DPO": "C1", "GRPO (reward model)": "C2", "GRPO (verifiable)": "C3",
                "base (no SFT)": "C7", "SFT from scratch": "C4", "SFT, one family": "C5"}


def has_cjk(texts: Iterable[str]) -> bool:
    """True when any of `texts` holds a Korean, Chinese or Japanese character."""
    return any(lo <= ord(ch) <= hi for text in texts for ch in text for lo, hi in CJK_RANGES)


def find_cjk_font(installed: Iterable[str] | None = None) -> str | None:
    """The name of an installed font family with CJK glyphs (None if there is none)."""
    names = sorted(set(installed if installed is not None else (f.name for f in font_manager.fontManager.ttflist)))
    return next((name for prefix in CJK_FONTS for name in names if name.startswith(prefix)), None)


@contextmanager
def text_fonts(texts: Iterable[str]) -> Iterator[None]:
    """Draw a figure whose `texts` may hold CJK characters: with a CJK font as the fallback when one is
    installed; otherwise one warning that says which package to install (not one per missing glyph)."""
    global _warned_no_cjk_font
    if not has_cjk(texts):
        yield
        return
    font = find_cjk_font()
    with warnings.catch_warnings(), matplotlib.rc_context(
            {"font.family": [matplotlib.rcParams["font.family"][0], font]} if font else {}):
        # "Glyph 48708 (...) missing from font(s) DejaVu Sans." (matplotlib 3.7: "... from current font.")
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        if font is None and not _warned_no_cjk_font:
            _warned_no_cjk_font = True
            warnings.warn("no font with Korean/Chinese/Japanese glyphs is installed, so plots show boxes for "
                          "them; install one (e.g. `apt install fonts-noto-cjk` or `fonts-nanum`, or "
                          "Noto Sans CJK from fonts.google.com) and remove matplotlib's font cache "
                          "(~/.cache/matplotlib)", stacklevel=3)
        yield


def plot_metrics(rows: Sequence[dict], path: str | os.PathLike, keys: Sequence[str] = ("loss", "val_loss"),
                 *, title: str = "", ylabel: str = "", log_y: bool = False,
                 reference: tuple[str, float] | None = None) -> Path:
    """Plot `keys` against the step from the rows that hold them, on one axis; save a PNG at `path`
    and return it. A key no row holds is left out of the legend."""
    return plot_panels(rows, path, [keys], title=title, ylabels=[ylabel], log_y=log_y, reference=reference)


def plot_panels(rows: Sequence[dict], path: str | os.PathLike, panels: Sequence[Sequence[str]], *,
                title: str = "", ylabels: Sequence[str] = (), log_y: bool = False,
                reference: tuple[str, float] | None = None) -> Path:
    """One panel per group of keys, stacked with a shared step axis (numbers of different scales apart).

    `log_y` puts every panel on a log scale (a loss that flattens out keeps showing its progress).
    `reference` (label, value) is a dashed horizontal line on the first panel: a baseline the curves are
    read against (the MLM loss of guessing from token frequencies alone). Steps are whole numbers, and so
    are the axis's ticks.
    """
    with text_fonts([title, *(key for keys in panels for key in keys), *ylabels]):
        fig = Figure(figsize=(7, 2.2 + 1.8 * len(panels)) if len(panels) > 1 else (7, 4))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for i, (ax, keys) in enumerate(zip(axes, panels, strict=True)):
            for key in keys:
                plot_curve(ax, rows, key, label=key)
            if reference is not None and i == 0:
                ax.axhline(reference[1], color="gray", linestyle="--", linewidth=1, label=reference[0])
            ax.set_ylabel((ylabels[i] if i < len(ylabels) else "") or axis_label(keys))
            if log_y and ax.lines and all(y > 0 for line in ax.lines for y in line.get_ydata()):
                log_y_axis(ax)
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        step_axis(axes[-1])
        axes[0].set_title(title, wrap=True)  # a long one wraps at the figure's edge
        return save_figure(fig, path)


def log_y_axis(ax: Axes) -> None:
    """Put `ax`'s y axis on a log scale labelled with plain numbers (`PlainLogFormatter`)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter())


class PlainLogFormatter(LogFormatter):
    """A log axis's tick labels as plain numbers ("3", "0.5"), on the ticks matplotlib chooses to label.

    matplotlib's own labels read "3×10^0" between two powers of 10 (its minor ticks), and a loss falling
    from 6 to 2.5 spans less than one power: every label of its axis would read so. A tick matplotlib
    leaves unlabelled, where they would crowd, stays unlabelled ("")."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def step_axis(ax: Axes) -> None:
    """Label `ax`'s x axis as the step, with whole-number ticks (there is no step 2.5).

    `integer=True` alone keeps to whole numbers only where the axis shows two of them at least: a run of
    one logged step (its axis 0.945 to 1.055) was labelled 0.945, 0.96, ... `min_n_ticks=1` makes one
    whole step enough, and changes no axis that shows two or more."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("step")


def axis_label(keys: Sequence[str]) -> str:
    """The keys an axis shows, with their unit when they share one: "kl, approx_kl (nats)"."""
    units = {UNITS.get(key) for key in keys}
    unit = units.pop() if len(units) == 1 else None
    return ", ".join(keys) + (f" ({unit})" if unit else "")


def plot_curve(ax: Axes, rows: Sequence[dict], key: str, label: str, linestyle: str | tuple = "-") -> None:
    """Draw `key` against the step (`curve_points`); a key no row holds draws nothing."""
    points = curve_points(rows, key)
    if points:
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, linestyle=linestyle, marker="o" if len(points) < 30 else None, markersize=3,
                label=label)


def curve_points(rows: Sequence[dict], key: str) -> list[tuple[float, float]]:
    """The (step, value) points of `key` in the rows that hold it; a row whose value is not a finite
    number (a null, as minillm writes one: utils.json_text; a NaN of a run made before; a missing
    evaluation) is skipped."""
    return [(row["step"], row[key]) for row in rows
            if "step" in row and isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Lay out `fig` and write it as a PNG at `path` (folders created); return the path.

    A figure with a title that wraps (`wrap=True`) is laid out twice: the title is cut to the width its
    axes leave it where they stand, and the first layout moves them; the second makes room for the lines
    it then has. Any other figure's second layout would change nothing, and is skipped.

    The figure gets its PNG canvas (Agg) first, so that the layouts measure every text with the renderer
    that then draws it, and find each size measured already. A bare Figure made a renderer of its own for
    each layout and another for the PNG: each measured all its texts again, most of a small plot's time."""
    FigureCanvasAgg(fig)
    fig.tight_layout()
    if any(text.get_wrap() for text in fig.findobj(Text)):
        fig.tight_layout()
    png = io.BytesIO()  # drawn in memory, then written whole: a full disk keeps the previous plot intact
    fig.savefig(png, format="png", dpi=dpi)
    path = Path(path)
    atomic_write_bytes(path, png.getvalue())
    return path

"""What the plot tests check on a drawn figure (the `drawn_figures` fixture, conftest.py, catches them)."""

from __future__ import annotations

from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text


def inside_its_figure(fig: Figure, text: Text) -> bool:
    """True when the drawn `text` (a title, a label) lies within the figure's edges, not cut off by them."""
    box, edges = text.get_window_extent(), fig.bbox
    return box.x0 >= edges.x0 and box.x1 <= edges.x1 and box.y0 >= edges.y0 and box.y1 <= edges.y1


def legend_colour(handle: object) -> str:
    """The colour a legend entry was drawn in, as "#rrggbb": its bars' face, its line's (an error bar's line)."""
    if isinstance(handle, BarContainer):
        return to_hex(handle.patches[0].get_facecolor())
    return to_hex((handle.lines[0] if isinstance(handle, ErrorbarContainer) else handle).get_color())

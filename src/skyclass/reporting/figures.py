"""Save a matplotlib figure: to PNG bytes (embedded in HTML) or atomically to a file.

matplotlib is imported when a figure is saved, never at import, and always with the Agg backend.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

DPI = 110


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (tight layout); closes it."""
    plt = pyplot()
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def draw_png(
    draw: Callable[[Any, Any], None], figsize: tuple[float, float] = (7, 4.2), dpi: int = 100
) -> bytes:
    """PNG bytes of one new figure with one axes that ``draw(fig, ax)`` fills; closes it."""
    fig, ax = pyplot().subplots(figsize=figsize, dpi=dpi)
    try:
        draw(fig, ax)
    except BaseException:
        pyplot().close(fig)
        raise
    return figure_png(fig, dpi)


def save_figure(fig: Any, path: Path, dpi: int = DPI) -> Path:
    """savefig to a temporary file, then ``os.replace``; closes the figure."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.tight_layout()
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path

"""The volume-curve figure of a read-out (``<name>_volumes.png``), and the figure conventions every PNG
figure shares (evaluation's too: :mod:`pipeline.evaluation.figures`).

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never through
pyplot, so nothing opens a window or touches global backend state; each PNG is written to a temporary
sibling and renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

from pipeline.vocabulary import VENTRICLES

#: One colour per structure; ground truth solid, prediction dashed (as in the paper's Fig. 3).
COLOURS = {"LV": "tab:red", "MYO": "tab:green", "RV": "tab:blue"}
GT_STYLE: Final = "solid"
PRED_STYLE: Final = "dashed"


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path | str) -> Path:
    """Write ``fig`` as a PNG to ``path`` (through a temporary sibling, renamed into place); returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def volume_curve_figure(
    curves_pred: Mapping[str, ArrayLike],
    curves_gt: Mapping[str, ArrayLike] | None,
    markers: Mapping[str, int] | None,
    path: Path | str,
    title: str = "",
) -> Path:
    """LV and RV volume (ml) over the cardiac cycle, predicted (dashed) and, if given, true (solid).

    Args:
        curves_pred, curves_gt: ``{"LV": (T,), "RV": (T,)}`` volumes in ml (see ``volume_curves``).
        markers: label -> 0-based frame index drawn as a vertical line, e.g. ``{"ED": 0, "ES": 11}``.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    for name in VENTRICLES:
        for curves, style, kind in ((curves_gt, GT_STYLE, "truth"), (curves_pred, PRED_STYLE, "pred")):
            if curves is not None and name in curves:
                values = np.asarray(curves[name], dtype=np.float64)
                ax.plot(
                    np.arange(values.size),
                    values,
                    color=COLOURS[name],
                    linestyle=style,
                    marker=".",
                    label=f"{name} {kind}",
                )
    for i, (label, frame) in enumerate((markers or {}).items()):
        ax.axvline(int(frame), color="0.4", linestyle=(0, (1, 2 + i)), linewidth=1)
        ax.annotate(
            label, (int(frame), 1.0), xycoords=("data", "axes fraction"), fontsize=8, ha="center", va="bottom"
        )
    ax.set_xlabel("frame (0-based)")
    ax.set_ylabel("volume (ml)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10, pad=14)
    return save_png(fig, path)

"""Evaluation figures as PNG files: contour overlays and Bland-Altman plots.

They follow the conventions of :mod:`pipeline.clinical.curve_figure` (the volume-curve figure, which the
predict CLI draws too): the Agg canvas without pyplot, one colour per structure, truth solid and prediction
dashed, each PNG written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from pipeline.clinical.curve_figure import COLOURS, GT_STYLE, PRED_STYLE, new_figure, save_png
from pipeline.evaluation.agreement import agreement
from pipeline.vocabulary import STRUCTURES


def overlay_figure(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    slices: Sequence[int],
    path: Path | str,
    title: str = "",
    spacing: Sequence[float] | None = None,
    panel_titles: Sequence[str] | None = None,
) -> Path:
    """Contours of the true (solid) and predicted (dashed) LV, MYO and RV on a few short-axis slices.

    Args:
        image: (Z, Y, X) intensities; gt, pred: (Z, Y, X) labels (0 bg, 1 RV, 2 MYO, 3 LV).
        slices: indices along Z to draw, one panel each.
        path: PNG file to write.
        title: figure title.
        spacing: optional (z, y, x) voxel size in mm, to draw pixels with their true aspect ratio.
        panel_titles: one title per panel (default ``slice <z>``).

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D

    image, gt, pred = np.asarray(image), np.asarray(gt), np.asarray(pred)
    if image.ndim != 3 or image.shape != gt.shape or image.shape != pred.shape:
        raise ValueError(
            f"image, gt, pred must share one (Z, Y, X) shape, got {image.shape}, {gt.shape}, {pred.shape}"
        )
    slices = [int(z) for z in slices]
    if not slices or any(not 0 <= z < image.shape[0] for z in slices):
        raise ValueError(
            f"slices must be a non-empty list of indices in 0..{image.shape[0] - 1}, got {slices}"
        )
    aspect = float(spacing[1]) / float(spacing[2]) if spacing is not None else 1.0
    fig = new_figure(3.0 * len(slices), 3.4)
    axes = fig.subplots(1, len(slices), squeeze=False)[0]
    titles = list(panel_titles) if panel_titles is not None else [f"slice {z}" for z in slices]
    if len(titles) != len(slices):
        raise ValueError(f"give one panel title per slice, got {len(titles)} for {len(slices)}")
    for ax, z, panel in zip(axes, slices, titles, strict=True):
        ax.imshow(image[z], cmap="gray", aspect=aspect, interpolation="nearest")
        for name, value in STRUCTURES.items():
            for volume, style in ((gt, GT_STYLE), (pred, PRED_STYLE)):
                mask = volume[z] == value
                if mask.any() and not mask.all():
                    ax.contour(
                        mask.astype(np.float32),
                        levels=[0.5],
                        colors=COLOURS[name],
                        linestyles=style,
                        linewidths=1.2,
                    )
        ax.set_title(panel, fontsize=9)
        ax.set_axis_off()
    handles = [Line2D([], [], color=COLOURS[n], linestyle=GT_STYLE, label=f"{n} truth") for n in COLOURS]
    handles += [Line2D([], [], color=COLOURS[n], linestyle=PRED_STYLE, label=f"{n} pred") for n in COLOURS]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def bland_altman_figure(pred: ArrayLike, ref: ArrayLike, name: str, unit: str, path: Path | str) -> Path:
    """Bland-Altman plot of ``pred - ref`` against their mean, with bias and 95% limits of agreement.

    Args:
        pred, ref: (N,) values of one clinical index (e.g. LV EF) in ``unit``; NaN pairs are dropped and
            counted in the title (see :func:`pipeline.evaluation.agreement.agreement`).
        name, unit: index name and unit for the labels.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    stats = agreement(p, r)
    keep = np.isfinite(p) & np.isfinite(r)
    mean, diff = (p[keep] + r[keep]) / 2, p[keep] - r[keep]
    fig = new_figure(5.0, 3.8)
    ax = fig.subplots()
    ax.scatter(mean, diff, s=14, color="tab:blue", alpha=0.8)
    ax.axhline(stats["bias"], color="k", label=f"bias {stats['bias']:.2f} {unit}")
    for key in ("loa_low", "loa_high"):
        ax.axhline(stats[key], color="tab:red", linestyle="dashed")
    ax.plot(
        [],
        [],
        color="tab:red",
        linestyle="dashed",
        label=f"LoA [{stats['loa_low']:.2f}, {stats['loa_high']:.2f}] {unit}",
    )
    ax.set_xlabel(f"mean of predicted and reference {name} ({unit})")
    ax.set_ylabel(f"predicted - reference ({unit})")
    ax.set_title(
        f"{name}: r = {stats['pearson_r']:.3f}, n = {stats['n']} ({stats['n_dropped']} dropped)", fontsize=10
    )
    ax.legend(fontsize=8)
    return save_png(fig, path)

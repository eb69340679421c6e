"""Locate the heart in a field of view larger than training's, so the network sees the framing it learnt.

A model trained on heart-centred crops (acdc-roi: ~150 mm around the heart) learns both a scale and a
framing. Handed a full field of view (256 x 216 px at 1.4 mm, 512 x 512 at 0.7 mm), geometry ``resize``
shrinks the heart to a few pixels and geometry ``spacing`` crops the image centre, which need not hold the
heart. Rather than teach the network every framing, inference restores the one it knows:

1. a coarse pass slides windows of the training field of view (mm, so the same number of millimetres
   whatever the input's spacing) over the slice with half a window of overlap, on a few frames, and
   averages the foreground probability each pixel gets;
2. the 3D connected component of the LV cavity best ringed by myocardium, then the foreground within a
   window around it, place one window of the training field of view, clamped inside the image
   (:func:`heart_centre`);
3. the normal path (every frame, test-time augmentation, post-processing) runs on that window, and the
   result is pasted back into the full grid, background outside.

Every window, coarse or final, goes through the same geometry and intensity normalisation as a training
image did (normalised on its own, as preprocessing normalised each training crop: percentiles of a whole
full field of view, mostly lung and body, would scale the heart differently), so the framing is kept
whatever the geometry mode. The price is one coarse pass of (windows x LOCATE_FRAMES) clips through the
plain models, e.g. 9 x 2 at twice the field of view, against every frame times every test-time view of
the final pass. The training checkpoint records the field of view (pipeline.checkpoint.view.View); an
input within its LOCATE_FACTOR of it, one without a spacing, or a checkpoint without a view takes the plain path
unchanged, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.vocabulary import STRUCTURES

#: ``Segmenter(locate=...)``: "auto" locates the heart when the input's field of view is larger than
#: training's by more than LOCATE_FACTOR in an axis; "off" always maps the whole slice (the old behaviour).
LOCATE_MODES = ("auto", "off")
#: Frames of the coarse pass, evenly spaced over the cycle: the heart does not move between frames, so
#: a few suffice to find it, and the pass costs a fraction of the full one.
LOCATE_FRAMES = 2
#: Mean probability above which a pixel of the coarse map counts as heart (foreground) or LV cavity.
FOREGROUND = 0.5

LV, MYO = STRUCTURES["LV"], STRUCTURES["MYO"]
_CUBE = np.ones((3, 3, 3), bool)  # 26-connectivity in 3D
_DISC = np.ones((1, 5, 5), bool)  # 2 pixels around, in-plane

#: A (rows, columns) window of a slice.
Box = tuple[slice, slice]


def window_starts(n: int, w: int) -> list[int]:
    """Starts of windows of ``w`` pixels covering ``0..n`` with half a window of overlap (steps of at most
    ``ceil(w / 2)``): the first at 0, the last at ``n - w``, evenly spaced between."""
    if w >= n:
        return [0]
    intervals = math.ceil((n - w) / ((w + 1) // 2))
    return [i * (n - w) // intervals for i in range(intervals + 1)]


def sliding_boxes(shape: tuple[int, int], window: tuple[int, int]) -> list[Box]:
    """The windows of the coarse pass over a slice of ``shape``, row by row."""
    (ny, nx), (wy, wx) = shape, window
    return [
        (slice(y, y + wy), slice(x, x + wx)) for y in window_starts(ny, wy) for x in window_starts(nx, wx)
    ]


def centred_box(centre: tuple[float, float], window: tuple[int, int], shape: tuple[int, int]) -> Box:
    """A ``window`` centred on ``centre`` (pixel indices), shifted to lie inside ``shape``."""
    box = []
    for c, w, n in zip(centre, window, shape, strict=True):
        start = min(max(round(c - (w - 1) / 2), 0), n - w)
        box.append(slice(start, start + w))
    return box[0], box[1]


def frames_to_locate(n_frames: int, count: int = LOCATE_FRAMES) -> list[int]:
    """``count`` frames evenly spaced over the cycle, from frame 0 (ED in ACDC's convention)."""
    return sorted({int(i * n_frames // count) for i in range(min(count, n_frames))})


def locate_maps(probabilities: np.ndarray) -> np.ndarray:
    """(B, C, Y, X) class probabilities -> (B, 3, Y, X): foreground (1 - background), the myocardium and
    the LV cavity: the coarse pass's maps that :func:`heart_centre` reads."""
    return np.stack((1.0 - probabilities[:, 0], probabilities[:, MYO], probabilities[:, LV]), axis=1)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 3D connected component (26 neighbours, as the ``lcc`` post-processing) of (Z, Y, X)
    ``mask``, or None when it is empty."""
    from scipy import ndimage  # here, not at import: see pipeline.evaluation.metrics' _CROSS

    components, n = ndimage.label(mask, structure=_CUBE)
    if n == 0:
        return None
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def _ringed_lv(lv: np.ndarray, myo: np.ndarray) -> np.ndarray | None:
    """Of the 3D connected components of (Z, Y, X) ``lv``, the one best ringed by ``myo``: the most ring
    pixels (2 px around it, in-plane) that are myocardium, times the share of its ring they make; None
    without any component."""
    from scipy import ndimage

    components, _ = ndimage.label(lv, structure=_CUBE)
    best, best_score = None, -1.0
    for i, box in enumerate(ndimage.find_objects(components), start=1):
        box = (box[0], *(slice(max(b.start - 2, 0), b.stop + 2) for b in box[1:]))
        own = components[box] == i
        ring = ndimage.binary_dilation(own, structure=_DISC) & ~own
        ringed = float((ring & myo[box]).sum())
        score = ringed * ringed / max(float(ring.sum()), 1.0)
        if score > best_score:
            best, best_score = (box, own), score
    if best is None:
        return None
    out = np.zeros_like(lv)
    out[best[0]] = best[1]
    return out


def _centre(mask: np.ndarray) -> tuple[float, float]:
    _, ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


def heart_centre(maps: np.ndarray, window: tuple[int, int]) -> tuple[float, float] | None:
    """(y, x) centre of the heart in the coarse pass's maps, or None when it found nothing.

    Args:
        maps: (Z, 3, Y, X) mean probabilities of the coarse pass (:func:`locate_maps`): foreground
            (RV + MYO + LV), myocardium, LV cavity.
        window: (h, w) pixels of the training field of view: the window that will be placed.

    The LV cavity ringed by myocardium anchors the search: of the 3D connected components of
    ``LV > FOREGROUND``, the one with the most myocardium (``MYO > FOREGROUND``) in a 2-pixel ring around it,
    weighted by the share of the ring that is myocardium (a cavity enclosed through the stack, which
    nothing else in a chest mimics for long); then the centre of the foreground within one ``window``
    around it, so the window frames the LV, myocardium and RV together. Without any LV, the largest 3D
    foreground component. The foreground alone was the rule before: its false positives at the edges of a
    large field of view (body wall, arms; basal and apical slices) join through the stack into a component
    larger than the heart, which placed the window in a corner on 20 of 158 acdc-fullfov volumes
    (docs/experiments.md).
    """
    foreground = maps[:, 0] > FOREGROUND
    lv = _ringed_lv(maps[:, 2] > FOREGROUND, maps[:, 1] > FOREGROUND)
    if lv is None:
        largest = _largest_component(foreground)
        return None if largest is None else _centre(largest)
    shape = (int(maps.shape[-2]), int(maps.shape[-1]))
    ys, xs = centred_box(_centre(lv), window, shape)
    around = np.zeros_like(foreground)
    around[:, ys, xs] = foreground[:, ys, xs]
    return _centre(around | lv)


def paste(part: np.ndarray, box: Box, shape: tuple[int, int], background: np.ndarray) -> np.ndarray:
    """``part`` (..., h, w), the result on window ``box``, on the full (..., *shape) grid.

    ``background`` fills the rest, broadcast over the leading axes (labels: 0; probabilities: one-hot
    of class 0 along the class axis, shape (C, 1, 1)).
    """
    out = np.empty((*part.shape[:-2], *shape), dtype=part.dtype)
    out[...] = background
    out[..., box[0], box[1]] = part
    return out

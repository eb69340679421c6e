"""Device-resident inference: the Segmenter's whole path as torch ops on a torch network's device.

The numpy path of :class:`~pipeline.inference.predict.Segmenter` hands the network host arrays and takes
host probabilities back. On a GPU that left ~90 % of a predict on the host: a 30 x 10 x 256 x 256 cine
took 1.7 s of which the network needed 0.25 s (argmax 0.62 s, copying float probabilities 0.32 s,
np.partition for the percentiles 0.30 s, the TTA average 0.12 s). Here each step runs where the network
runs, as the twin of its numpy step:

    intensity.normalise          order statistics (kthvalue; a sort on CUDA) interpolated as np.percentile
                                 does, clip, z-score with the clipped mean and std
    Geometry.images_to_network   F.interpolate(bilinear, antialias) + centred crop/pad with the fill
    clips.clip_frames            gathers of the resampled frames, wrapping around the cycle
    tta.tta_transforms           torch.flip / torch.rot90 and their inverses, summed in the same order
    Geometry.probabilities_back  un-crop/pad (background: class 0 = 1) + F.interpolate(bilinear)
    locate (coarse pass)         on the device; only its small (Z, Y, X) map goes to scipy on the host

Each batch's probabilities are reduced as soon as they are mapped back (argmax to uint8 labels), so a cine
never holds the float probabilities of all its frames; the labels stay on the device and cross to the host
once. Only :meth:`Segmenter.probabilities`, which returns them, copies float probabilities (batch by batch).
Post-processing (scipy) stays on the host, on the uint8 labels.

On a CPU the images are resampled in float64 as Geometry.images_to_network does, so the network gets the
numpy path's inputs up to the last bit of float32 and both paths give the same labels
(tests/inference/test_resident.py); on CUDA in float32. Only torch is imported here, never at the top of
pipeline.inference.predict, so the torch-free CLI (ONNX Runtime) keeps the numpy path without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import RequestError
from pipeline.inference.batches import run_batches
from pipeline.inference.locate import (
    LV,
    MYO,
    Box,
    centred_box,
    frames_to_locate,
    heart_centre,
    paste,
    sliding_boxes,
)
from pipeline.inference.tta import AXES, views
from pipeline.preprocessing.clips import clip_frames
from pipeline.preprocessing.geometry import Geometry

if TYPE_CHECKING:
    from pipeline.inference.predict import Segmenter

Transform = Callable[[torch.Tensor], torch.Tensor]
Reduce = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- intensity


def order_statistics(values: torch.Tensor, ranks: Sequence[int]) -> list[float]:
    """The ``ranks``-th smallest (0-based) of the flat ``values``, exactly, as Python floats.

    torch.quantile refuses inputs over 16M elements (a 30 x 10 x 256 x 256 cine has 19.7M); kthvalue is a
    selection on a CPU, but on CUDA it runs one thread block per row, so one sort is faster there.
    """
    flat = values.reshape(-1)
    if flat.is_cuda:
        return flat.sort().values[torch.as_tensor(list(ranks), device=flat.device)].tolist()
    return [float(flat.kthvalue(k + 1).values) for k in ranks]


def percentiles(values: torch.Tensor, q: tuple[float, float]) -> tuple[float, float]:
    """``np.percentile(values, q)`` (method "linear") of a float32 tensor, bit for bit.

    The two neighbours of the virtual index ``(n - 1) * q / 100`` come from the device; they are
    interpolated here with numpy's own ``_lerp`` arithmetic (float32 difference, float64 weight, the
    form from the upper neighbour when the weight is >= 0.5).

    Raises:
        RequestError: ``values`` is empty.
    """
    n = values.numel()
    if n == 0:
        raise RequestError(f"cannot normalise an empty cine (shape {tuple(values.shape)})")
    virtual = (n - 1) * (np.asarray(q, np.float64) / 100)
    below = np.minimum(np.floor(virtual), n - 1).astype(np.int64)
    above = np.minimum(below + 1, n - 1)  # numpy takes the last value for both at or past the end
    ranks = sorted({*below.tolist(), *above.tolist()})
    value = dict(zip(ranks, order_statistics(values, ranks), strict=True))
    a = np.array([value[k] for k in below.tolist()], np.float32)
    b = np.array([value[k] for k in above.tolist()], np.float32)
    gamma = virtual - np.floor(virtual)
    diff = b - a
    result = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return float(result[0]), float(result[1])


def normalise(cine: torch.Tensor, q: tuple[float, float]) -> torch.Tensor:
    """:func:`pipeline.preprocessing.intensity.normalise` of a float32 tensor (the normalised cine only).

    The mean and std (ddof 0) of the clipped cine are taken in float64: numpy's float32 pairwise sums
    cannot be replayed in torch anyway, and both are within a float32 rounding of the exact value.
    """
    low, high = percentiles(cine, q)
    clipped = cine.clamp(low, high)
    var, mean = (float(v) for v in torch.var_mean(clipped.double(), correction=0))
    std = var**0.5
    std = std if std > 1e-6 else 1.0  # a constant image stays finite, as in numpy
    return (clipped - mean) / std


# ---------------------------------------------------------------- geometry


def _place(geometry: Geometry, resampled: torch.Tensor, fill: float) -> torch.Tensor:
    """(..., Y', X') -> (..., size, size), centre-cropped/padded with ``fill`` (Geometry._place)."""
    s = geometry.size
    if tuple(resampled.shape[-2:]) == (s, s):
        return resampled
    out = resampled.new_full((*resampled.shape[:-2], s, s), fill)
    (ny, nx), (sy, sx) = geometry._windows((resampled.shape[-2], resampled.shape[-1]))
    out[..., ny, nx] = resampled[..., sy, sx]
    return out


def images_to_network(geometry: Geometry, images: torch.Tensor, spacing_yx: tuple[float, float] | None,
                      fill: float) -> torch.Tensor:  # fmt: skip
    """:meth:`Geometry.images_to_network`: (N, Y, X) -> (N, size, size) float32, padded with ``fill``.

    Resampled in float64 on a CPU (as the numpy path, whose weights are torch's: the same inputs up to
    the last float32 bit), in float32 on CUDA (float64 is slower there and the labels do not need it).
    """
    dtype = torch.float64 if images.device.type == "cpu" else torch.float32
    y, x = images.shape[-2:]
    shape = geometry.resampled_shape((y, x), spacing_yx)
    work = images.to(dtype)
    if (y, x) != shape:  # numpy's resample returns an image of the same shape untouched
        work = F.interpolate(work[None], size=shape, mode="bilinear", align_corners=False, antialias=True)[0]
    return _place(geometry, work, fill).float()


def probabilities_back(geometry: Geometry, probs: torch.Tensor, shape: tuple[int, int],
                       spacing_yx: tuple[float, float] | None) -> torch.Tensor:  # fmt: skip
    """:meth:`Geometry.probabilities_back`: (B, C, size, size) -> (B, C, Y, X), same dtype: the crop's
    lost border becomes background (class 0 probability 1), the padding is dropped, bilinear to ``shape``."""
    resampled = geometry.resampled_shape(shape, spacing_yx)
    if resampled != (geometry.size, geometry.size):
        full = probs.new_zeros((*probs.shape[:2], *resampled))
        full[:, 0] = 1.0
        (ny, nx), (sy, sx) = geometry._windows(resampled)
        full[..., sy, sx] = probs[..., ny, nx]
        probs = full
    if tuple(probs.shape[-2:]) == tuple(shape):
        return probs
    return F.interpolate(probs, size=shape, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- test-time augmentation


def tta_views(mode: str) -> list[tuple[Transform, Transform]]:
    """:func:`pipeline.inference.tta.tta_transforms` on tensors, the views in the same order."""
    return views(mode, lambda t, dims: t.flip(dims), lambda t, k: torch.rot90(t, k, AXES))


def average(seg: Segmenter, clips: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, 2r+1, S, S) -> (B, C, S, S) probabilities averaged over the models and the views of ``mode``,
    summed in the numpy path's order (Segmenter._average) so the float32 sums are the same."""
    views = tta_views(mode)
    total: torch.Tensor | None = None
    for model in seg.models:
        for forward, inverse in views:
            probs = inverse(model.probabilities(forward(clips)))  # type: ignore[attr-defined]
            total = probs if total is None else total + probs
    assert total is not None
    return total / (len(seg.models) * len(views))


# ---------------------------------------------------------------- the Segmenter's path


def _slices(seg: Segmenter, cine: torch.Tensor, frames: Sequence[int], spacing_yx: tuple[float, float] | None,
            reduce: Reduce, tta: str, stats_from_clips: bool = False) -> torch.Tensor:  # fmt: skip
    """Segmenter._slices on the device: ``reduce`` of the (B, C, Y, X) probabilities of every
    (frame, slice) of ``cine`` (T, Z, Y, X) float32, as (F, Z, ...) on the device ``reduce`` leaves them."""
    t, z, y, x = cine.shape
    clips_of = {f: clip_frames(f, t, seg.radius) for f in frames}
    needed = np.unique(np.concatenate(list(clips_of.values())))
    row = np.zeros(t, np.int64)
    row[needed] = np.arange(len(needed))
    device = cine.device
    source = cine[torch.from_numpy(needed).to(device)] if stats_from_clips else cine
    norm = normalise(source, seg.percentiles)
    images = norm if stats_from_clips else norm[torch.from_numpy(needed).to(device)]
    net = images_to_network(seg.geometry, images.reshape(-1, y, x), spacing_yx, float(norm.min()))
    resized = net.reshape(len(needed), z, seg.size, seg.size)
    keys = [(f, s) for f in frames for s in range(z)]
    # (K, 2r+1) rows of `resized` and (K, 1) slices of every clip, on the device once
    rows = torch.from_numpy(np.stack([row[clips_of[f]] for f, _ in keys])).to(device)
    slices = torch.tensor([[s] for _, s in keys], device=device)

    def batch(span: range) -> torch.Tensor:
        clips = resized[rows[span.start : span.stop], slices[span.start : span.stop]]  # (B, 2r+1, S, S)
        return reduce(probabilities_back(seg.geometry, average(seg, clips, tta), (y, x), spacing_yx))

    spans = [range(i, min(i + seg.batch_size, len(keys))) for i in range(0, len(keys), seg.batch_size)]
    parts = run_batches(batch, spans, seg.batch_workers(len(spans)))
    out = torch.cat(parts)
    return out.reshape(len(frames), z, *out.shape[1:])


def _locate_maps(p: torch.Tensor) -> torch.Tensor:
    """:func:`pipeline.inference.locate.locate_maps` of a tensor."""
    return torch.stack((1.0 - p[:, 0], p[:, MYO], p[:, LV]), dim=1)


def heart_window(seg: Segmenter, cine: torch.Tensor, spacing: Sequence[float] | None) -> Box | None:
    """Segmenter.heart_window of a (T, Z, Y, X) float32 tensor: the coarse pass on the device, the
    (Z, 3, Y, X) foreground, MYO and LV maps to the host for :func:`heart_centre` (scipy)."""
    t, z, y, x = cine.shape
    located = seg.locate_window((y, x), spacing)
    if located is None:
        return None
    window, spacing_yx = located
    frames = frames_to_locate(t)
    total = torch.zeros((z, 3, y, x), dtype=torch.float32, device=cine.device)
    count = torch.zeros((y, x), dtype=torch.float32, device=cine.device)
    for ys, xs in sliding_boxes((y, x), window):
        maps = _slices(
            seg, cine[..., ys, xs], frames, spacing_yx, _locate_maps, "none", stats_from_clips=True
        )
        total[..., ys, xs] += maps.mean(0)
        count[ys, xs] += 1.0
    centre = heart_centre((total / count).cpu().numpy(), window)
    return centred_box(centre or ((y - 1) / 2, (x - 1) / 2), window, (y, x))


def to_device(seg: Segmenter, cine: np.ndarray) -> torch.Tensor:
    """The (T, Z, Y, X) cine as float32 on the models' device (one copy to the device, the only one)."""
    device = seg.models[0].tensor_device  # the Segmenter checked that all share it
    assert device is not None
    return torch.from_numpy(np.ascontiguousarray(cine, dtype=np.float32)).to(device)


def segment(seg: Segmenter, cine: np.ndarray, frames: Sequence[int] | None, spacing: Sequence[float] | None,
            labels: bool) -> np.ndarray:  # fmt: skip
    """Segmenter._segment on the device: uint8 labels (F, Z, Y, X) when ``labels``, else the float32
    probabilities (F, Z, C, Y, X), on the cine's grid, as numpy (background outside the heart window)."""
    tensor = to_device(seg, cine)
    box = heart_window(seg, tensor, spacing)
    frames = list(range(cine.shape[0])) if frames is None else [int(f) for f in frames]
    spacing_yx = None if spacing is None else (float(spacing[-2]), float(spacing[-1]))
    window = tensor if box is None else tensor[..., box[0], box[1]]
    if labels:  # reduced per batch on the device; one copy of uint8 labels at the end
        out = _slices(seg, window, frames, spacing_yx, lambda p: p.argmax(1).to(torch.uint8), seg.tta)
        background = np.zeros((), np.uint8)
    else:  # returned as float anyway: to the host batch by batch rather than all held on the device
        out = _slices(seg, window, frames, spacing_yx, lambda p: p.cpu(), seg.tta)
        background = np.eye(seg.num_classes, dtype=np.float32)[0][:, None, None]
    part = out.cpu().numpy()
    return part if box is None else paste(part, box, cine.shape[-2:], background)

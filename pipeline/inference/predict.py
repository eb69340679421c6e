"""Segment a cine (T, Z, Y, X) with a trained model or a fold ensemble: the one inference path.

The preprocessing of training (intensity normalisation and the recorded in-plane geometry), clips around
every requested frame (wrapping around the cycle), batched inference with optional test-time augmentation,
probabilities averaged over the ensemble's models and the augmentations, the mapping back to the original
grid and post-processing, all in numpy: only the network itself runs in torch or, for an ONNX export, in
ONNX Runtime (pipeline.inference.network), so the two differ only in the network's arithmetic. A torch
network on a GPU instead runs the same steps as torch ops on its device (pipeline.inference.resident,
the ``resident`` option): only uint8 labels cross to the host there. A field
of view much larger than training's is first searched for the heart and cropped to training's framing
(pipeline.inference.locate). evaluate, ``deunet predict`` and the served model all call
:class:`Segmenter`, so a user gets exactly the labels evaluate scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.checkpoint.preprocess import checkpoint_preprocess
from pipeline.checkpoint.view import View, checkpoint_view
from pipeline.errors import ConfigError, DataError, RequestError
from pipeline.inference.batches import run_batches
from pipeline.inference.locate import (
    LOCATE_MODES,
    Box,
    centred_box,
    frames_to_locate,
    heart_centre,
    locate_maps,
    paste,
    sliding_boxes,
)
from pipeline.inference.network import Network
from pipeline.inference.onnx_network import OnnxNetwork, is_export
from pipeline.inference.postprocess import POSTPROCESS_MODES, postprocess
from pipeline.inference.tta import TTA_MODES, tta_transforms
from pipeline.preprocessing.clips import clip_frames
from pipeline.preprocessing.geometry import Geometry
from pipeline.preprocessing.intensity import normalise

if TYPE_CHECKING:
    from pipeline.models import SegmentationModel


#: The checkpoint's preprocessing keys an ensemble's members must share (clip length is checked apart).
SHARED_PREPROCESS = ("size", "percentiles", "geometry", "spacing_mm")


class Segmenter:
    """Trained model(s) plus the preprocessing they were trained with.

    Args:
        model: a model from the registry, or several (a fold ensemble: probabilities are averaged); all
            must share the temporal radius r and the number of classes. A torch model is run by
            :class:`~pipeline.inference.torch_network.TorchNetwork` on ``device`` with ``bf16``; a
            :class:`~pipeline.inference.network.Network` (an ONNX model) runs as it is.
        size: in-plane input size used in training (preprocess.size), for geometry "resize" when
            ``geometry`` is not given.
        percentiles: intensity clipping percentiles used in training.
        device: where a torch model runs ("cpu", "cuda[:N]").
        bf16: bf16 autocast of a torch model; None (the default): on CUDA only. True also runs it on a CPU
            with native bf16 (AVX512-BF16/AMX; elsewhere it would be emulated and slower, so fp32 stays):
            faster, but the labels differ slightly from fp32, so it is opt-in (docs/experiments.md); False:
            fp32 everywhere.
        batch_size: clips per forward pass; None: 16 when every network computes on the CPU (faster than
            32 in every run of ``benchmarks.predict_bench --batching``), else 32 (a GPU: DeU-Net 0.36 ->
            0.23 s per 30 x 10 x 256 x 256 cine on an H200, docs/experiments.md).
        cpu_workers: on a CPU, how many batches run at once (threads; each op of a batch still uses the
            runtime's intra-op threads). These networks are too small at 64-96 px for two cores to share
            one op well: on 2 cores two at once took torch's forward passes from 1.49 to 1.03 s and ONNX
            Runtime's from 1.86 to 0.87 s (benchmarks/onnx_probe.py), a whole torch predict 5-13 % less in
            3 of 5 runs (docs/experiments.md). The labels are the same.
        geometry: the in-plane map of training (:class:`Geometry`); default: resize to ``size``.
        tta: test-time augmentation, "none", "flips" (4 mirrorings) or "dihedral" (8: flips and rot90);
            softmax probabilities are averaged over them.
        postprocess: the default post-processing of :meth:`predict` (see pipeline.inference.postprocess).
        view: the field of view of training (:class:`View`, from the checkpoint); None: unknown, the whole
            slice is always mapped to the network.
        locate: "auto": a slice spanning more than LOCATE_FACTOR x the training field of view (in mm, so
            only when ``spacing`` is given) is first searched for the heart, and only a window of training's
            field of view around it is segmented (pipeline.inference.locate); "off": never.
        resident: run normalisation, geometry, clips, TTA, the map back and the argmax as torch ops on the
            torch networks' device, only uint8 labels crossing to the host (pipeline.inference.resident);
            False: the numpy path; None (auto): on CUDA only, since on a CPU it was not faster
            (docs/experiments.md, "Device-resident inference"). True needs torch networks on one device.
            The labels are the same as the numpy path's on a CPU.
    """

    def __init__(self, model: SegmentationModel | Network | Sequence[SegmentationModel | Network],
                 size: int | None = None, percentiles: Sequence[float] = (0.5, 99.5), device: str = "cpu",
                 batch_size: int | None = None, bf16: bool | None = None, geometry: Geometry | None = None,
                 tta: str = "none", postprocess: str = "raw", view: View | None = None,
                 locate: str = "auto", cpu_workers: int = 2, resident: bool | None = None) -> None:  # fmt: skip
        models = list(model) if isinstance(model, Sequence) else [model]
        if not models:
            raise ConfigError("Segmenter needs at least one model")
        if geometry is None:
            if size is None:
                raise ConfigError("Segmenter needs the training size or geometry")
            geometry = Geometry("resize", int(size))
        if tta not in TTA_MODES:
            raise ConfigError(f"tta must be one of {list(TTA_MODES)}, got {tta!r}")
        if postprocess not in POSTPROCESS_MODES:
            raise ConfigError(f"postprocess must be one of {list(POSTPROCESS_MODES)}, got {postprocess!r}")
        if locate not in LOCATE_MODES:
            raise ConfigError(f"locate must be one of {list(LOCATE_MODES)}, got {locate!r}")
        if cpu_workers < 1:
            raise ConfigError(f"cpu_workers must be >= 1, got {cpu_workers}")
        self.models: list[Network] = [m if isinstance(m, Network) else _torch_network(m, device, bf16)
                                      for m in models]  # fmt: skip
        radii = {m.radius for m in self.models}
        classes = {m.num_classes for m in self.models}
        if len(radii) > 1 or len(classes) > 1:
            raise ConfigError(
                f"ensemble members differ in radius {sorted(radii)} or classes {sorted(classes)}"
            )
        self.radius, self.num_classes = radii.pop(), classes.pop()
        self.geometry, self.size = geometry, geometry.size
        if batch_size is None:
            batch_size = 16 if all(m.on_cpu for m in self.models) else 32
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.tta, self.postprocess = int(batch_size), tta, postprocess
        self.percentiles = (float(percentiles[0]), float(percentiles[1]))
        self.view, self.locate = view, locate
        self.cpu_workers = int(cpu_workers)
        self.resident = _choose_resident(self.models, resident)

    @property
    def model(self) -> Network:
        """The first (or only) model's network."""
        return self.models[0]

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any] | Sequence[dict[str, Any]], names: Sequence[str] | None = None,
                        networks: Sequence[Network | None] | None = None, **kwargs: Any) -> Segmenter:  # fmt: skip
        """A Segmenter of one checkpoint or of an ensemble (``names`` label them in errors, e.g. files).

        ``networks``: the member's network when it is not the torch model its checkpoint holds (an ONNX
        model, whose ``checkpoint`` is its metadata); None entries rebuild the checkpoint's model.
        The field of view is the first member's: the folds of one store differ only in which patients
        their medians are taken over, and the view only sizes a window, so members are not compared.

        Raises:
            DataError: a checkpoint lacks its preprocessing, or ensemble members differ in preprocessing,
                temporal radius or classes (the message names the member and the difference), or the first
                records a malformed view.
        """
        ckpts = [ckpt] if isinstance(ckpt, dict) else list(ckpt)
        labels = list(names) if names is not None else [f"checkpoint {i}" for i in range(len(ckpts))]
        pres = [checkpoint_preprocess(ck, name) for ck, name in zip(ckpts, labels, strict=True)]
        for ck, pre, name in zip(ckpts, pres, labels, strict=True):
            diff = [f"{k}: {getattr(pre, k)!r} vs {getattr(pres[0], k)!r} in {labels[0]}" for k in SHARED_PREPROCESS
                    if getattr(pre, k) != getattr(pres[0], k)]  # fmt: skip
            cfg, cfg0 = ck.get("model_config", {}), ckpts[0].get("model_config", {})
            for key in ("radius", "num_classes"):
                if cfg.get(key) != cfg0.get(key):
                    diff.append(f"{key}: {cfg.get(key)!r} vs {cfg0.get(key)!r} in {labels[0]}")
            if diff:
                raise DataError(name, f"cannot join the ensemble: {'; '.join(diff)}")
        nets = list(networks) if networks is not None else [None] * len(ckpts)
        if any(net is None for net in nets):
            from pipeline.checkpoint.io import model_from_checkpoint
        models: list[SegmentationModel | Network] = [
            model_from_checkpoint(ck) if net is None else net for ck, net in zip(ckpts, nets, strict=True)
        ]
        return cls(models, geometry=pres[0].network_geometry(), percentiles=pres[0].percentiles,
                   view=checkpoint_view(ckpts[0], labels[0]), **kwargs)  # fmt: skip

    @classmethod
    def from_files(cls, paths: Sequence[Path | str], **kwargs: Any) -> Segmenter:
        """A Segmenter of the model files ``paths`` (several: a fold ensemble): checkpoints (``.pt``) or
        their ONNX exports (``.onnx``, run by ONNX Runtime on the CPU, without torch)."""
        files = [Path(p) for p in paths]
        ckpts: list[dict[str, Any]] = []
        networks: list[Network | None] = []
        for path in files:
            if is_export(path):
                onnx = OnnxNetwork(path)
                ckpts.append(onnx.checkpoint)
                networks.append(onnx)
            else:
                from pipeline.checkpoint.io import load_checkpoint

                ckpts.append(load_checkpoint(path))
                networks.append(None)
        return cls.from_checkpoint(ckpts, names=[str(p) for p in files], networks=networks, **kwargs)

    def _forward(self, clips: np.ndarray) -> np.ndarray:
        """(B, 2r+1, S, S) -> (B, C, S, S) softmax probabilities averaged over models and augmentations."""
        return self._average(clips, self.tta)

    def _average(self, clips: np.ndarray, tta: str) -> np.ndarray:
        """:meth:`_forward` with the augmentations of ``tta``."""
        total = None
        transforms = tta_transforms(tta)
        for model in self.models:
            for forward, inverse in transforms:
                probs = inverse(model(forward(clips)))
                total = probs if total is None else total + probs
        assert total is not None
        return total / (len(self.models) * len(transforms))

    def _slices(self, cine: np.ndarray, frames: Sequence[int], spacing_yx: tuple[float, float] | None,
                reduce: Callable[[np.ndarray], np.ndarray], forward: Callable[[np.ndarray], np.ndarray],
                stats_from_clips: bool = False) -> np.ndarray:  # fmt: skip
        """``reduce`` of the (B, C, Y, X) probabilities of every (frame, slice), as (F, Z, ...) numpy.

        The whole slice of ``cine`` is the network's view, normalised over the whole cine as preprocessing
        normalised each training image (``stats_from_clips``: over the frames the clips use only, for the
        coarse pass: a few frames of a stack have the cycle's statistics, at a fraction of the cost), then
        mapped by the geometry. Only the frames the clips of ``frames`` use are resampled.
        """
        t, z, y, x = cine.shape
        clips_of = {f: clip_frames(f, t, self.radius) for f in frames}
        needed = np.unique(np.concatenate(list(clips_of.values())))
        row = np.zeros(t, np.int64)
        row[needed] = np.arange(len(needed))
        source = cine[needed] if stats_from_clips else cine
        norm, _ = normalise(source.astype(np.float32, copy=False), self.percentiles)
        images = norm if stats_from_clips else norm[needed]
        net = self.geometry.images_to_network(images.reshape(-1, y, x), spacing_yx, fill=float(norm.min()))
        resized = net.reshape(len(needed), z, self.size, self.size)
        keys = [(f, s) for f in frames for s in range(z)]

        def batch(chunk: list[tuple[int, int]]) -> np.ndarray:
            clips = np.stack([resized[row[clips_of[f]], s] for f, s in chunk])
            return reduce(self.geometry.probabilities_back(forward(clips), (y, x), spacing_yx))

        chunks = [keys[i : i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        out = np.concatenate(run_batches(batch, chunks, self.batch_workers(len(chunks))))
        return out.reshape(len(frames), z, *out.shape[1:])

    def batch_workers(self, n_batches: int) -> int:
        """How many of ``n_batches`` batches run at once: ``cpu_workers`` on a CPU, else one."""
        on_cpu = all(m.on_cpu for m in self.models)
        return max(1, min(self.cpu_workers if on_cpu else 1, n_batches))

    def locate_window(self, shape: tuple[int, int], spacing: Sequence[float] | None,
                      ) -> tuple[tuple[int, int], tuple[float, float]] | None:  # fmt: skip
        """The (h, w) window of the coarse pass over a (Y, X) ``shape`` slice and the in-plane spacing, or
        None when :meth:`heart_window` does not locate (see there)."""
        if self.locate == "off" or self.view is None or spacing is None:
            return None
        spacing_yx = _inplane(spacing)
        if not self.view.exceeded_by(shape, spacing_yx):
            return None
        return self.view.window(shape, spacing_yx), spacing_yx

    def heart_window(self, cine: np.ndarray, spacing: Sequence[float] | None = None) -> Box | None:
        """The (rows, columns) window of the cine that :meth:`predict` and :meth:`probabilities` segment:
        training's field of view around the heart; None: the whole slice (the plain path).

        None unless ``locate`` is "auto", the view and the ``spacing`` (z, y, x) mm are known and the slice
        spans more than LOCATE_FACTOR x the training field of view. The coarse pass runs training-sized
        windows with half a window of overlap on LOCATE_FRAMES frames, without test-time augmentation (a
        centre needs no such precision), through the per-window path of the final one; pixels covered by
        several windows average their foreground, MYO and LV probabilities (:func:`heart_centre`). With no foreground anywhere the image
        centre is taken: a centred window of the training field of view is what a heart-centred
        acquisition shows.
        """
        t, z, y, x = _check_cine(cine).shape
        if self.resident:
            from pipeline.inference import resident

            return resident.heart_window(self, resident.to_device(self, cine), spacing)
        located = self.locate_window((y, x), spacing)
        if located is None:
            return None
        window, spacing_yx = located
        frames = frames_to_locate(t)
        total, count = np.zeros((z, 3, y, x), np.float32), np.zeros((y, x), np.float32)
        for ys, xs in sliding_boxes((y, x), window):
            maps = self._slices(cine[..., ys, xs], frames, spacing_yx, locate_maps,
                                lambda c: self._average(c, "none"), stats_from_clips=True)  # fmt: skip
            total[..., ys, xs] += maps.mean(0)
            count[ys, xs] += 1.0
        centre = heart_centre(total / count, window)
        return centred_box(centre or ((y - 1) / 2, (x - 1) / 2), window, (y, x))

    def _segment(self, cine: np.ndarray, frames: Sequence[int] | None, spacing: Sequence[float] | None,
                 reduce: Callable[[np.ndarray], np.ndarray], background: np.ndarray) -> np.ndarray:  # fmt: skip
        """``reduce`` of the probabilities of ``frames`` (all when None) on the cine's grid, (F, Z, ..., Y, X).

        On :meth:`heart_window` when there is one (``background`` outside it), else on the whole slice:
        the plain path, exactly as without a view.
        """
        box = self.heart_window(cine, spacing)
        frames = list(range(cine.shape[0])) if frames is None else [int(f) for f in frames]
        spacing_yx = None if spacing is None else _inplane(spacing)
        if box is None:
            return self._slices(cine, frames, spacing_yx, reduce, self._forward)
        part = self._slices(cine[..., box[0], box[1]], frames, spacing_yx, reduce, self._forward)
        return paste(part, box, cine.shape[-2:], background)

    def probabilities(self, cine: np.ndarray, frames: Sequence[int] | None = None,
                      spacing: Sequence[float] | None = None) -> np.ndarray:  # fmt: skip
        """Class probabilities (len(frames), Z, C, Y, X) float32 on the cine's own grid.

        Args:
            cine: (T, Z, Y, X) intensities.
            frames: 0-based frames to segment (all when None).
            spacing: (z, y, x) voxel spacing in mm; required by geometry "spacing" and by ``locate``.
        """
        if self.resident:
            from pipeline.inference import resident

            return resident.segment(self, _check_cine(cine), frames, spacing, labels=False)
        background = np.eye(self.num_classes, dtype=np.float32)[0][:, None, None]  # class 0 = 1 outside
        return self._segment(cine, frames, spacing, lambda p: p, background)

    def predict(self, cine: np.ndarray, frames: Sequence[int] | None = None,
                spacing: Sequence[float] | None = None, postprocess: str | None = None) -> np.ndarray:  # fmt: skip
        """Labels (len(frames), Z, Y, X) uint8 for the 0-based ``frames`` of ``cine`` (all when None).

        ``spacing`` (z, y, x) mm is required by geometry "spacing" and by ``locate``. ``postprocess``
        overrides the Segmenter's default mode; it is applied to each frame's (Z, Y, X) volume.
        """
        mode = self.postprocess if postprocess is None else postprocess
        if self.resident:
            from pipeline.inference import resident

            labels = resident.segment(self, _check_cine(cine), frames, spacing, labels=True)
        else:
            background = np.zeros((), np.uint8)
            labels = self._segment(cine, frames, spacing, lambda p: p.argmax(1).astype(np.uint8), background)
        if mode != "raw":
            labels = np.stack([postprocess_volume(v, mode) for v in labels])
        return labels


def _choose_resident(models: Sequence[Network], resident: bool | None) -> bool:
    """Segmenter's ``resident`` resolved: None (auto) is the device path for torch networks on CUDA only
    (on a CPU it was not faster: docs/experiments.md, "Device-resident inference"). Imports nothing.

    Raises:
        ConfigError: ``resident`` is True but a model is not a torch network (an ONNX export runs in ONNX
            Runtime on the host) or they compute on different devices.
    """
    devices = {m.tensor_device for m in models}
    device = devices.pop() if len(devices) == 1 else None
    if resident is None:
        return device is not None and device.startswith("cuda")
    if resident and device is None:
        raise ConfigError(
            "resident=True needs torch networks on one device, got "
            + ", ".join(sorted(str(m.tensor_device or f"{type(m).__name__} (not torch)") for m in models))
        )
    return bool(resident)


def _torch_network(model: SegmentationModel, device: str, bf16: bool | None) -> Network:
    """``model`` behind the Network interface (imports torch: only a torch model gets here)."""
    from pipeline.inference.torch_network import TorchNetwork

    return TorchNetwork(model, device, bf16)


def _check_cine(cine: np.ndarray) -> np.ndarray:
    """``cine`` if it is (T, Z, Y, X); a RequestError (a caller's bad input) otherwise."""
    if cine.ndim != 4:
        raise RequestError(f"expected a cine (T, Z, Y, X), got shape {cine.shape}")
    return cine


def _inplane(spacing: Sequence[float]) -> tuple[float, float]:
    """The in-plane (y, x) of a (z, y, x) spacing."""
    return float(spacing[-2]), float(spacing[-1])


def postprocess_volume(labels: np.ndarray, mode: str) -> np.ndarray:
    """:func:`pipeline.inference.postprocess.postprocess` as uint8 (one frame's (Z, Y, X) volume)."""
    return postprocess(labels, mode).astype(np.uint8, copy=False)

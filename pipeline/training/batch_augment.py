"""pipeline.training.augment.apply for a whole batch on the device: one sampling grid per sample.

``apply`` mirrors, flips and turns a clip by multiples of 90 degrees, then rotates and zooms it with
``affine_grid`` / ``grid_sample`` (align_corners=False, images filled with each frame's minimum, labels
nearest), scales and shifts the intensities, and cuts the crop window. On square images every step of
the geometry is a linear map of the normalised output coordinates u = (x, y) to input coordinates, so
the whole chain is one 2 x 2 matrix per sample:

    sample the original at  T u,   T = Mx^mirror @ Fy^flip @ R^k90 @ A(angle, zoom)
    Mx = diag(-1, 1), Fy = diag(1, -1), R = [[0, -1], [1, 0]] (torch.rot90 over (H, W)),
    A = [[cos a, -sin a], [sin a, cos a]] / zoom  (apply's theta)

and a batch is one grid (B, c, c, 2), built only for each sample's crop window (c = crop, or S), and one
``grid_sample`` of the images and one of the labels. Samples without rotation or zoom are pure pixel
permutations: their grid points fall on pixel centres, and nearest sampling there copies pixels exactly,
so they equal ``apply`` bit for bit. Rotated or zoomed samples are sampled bilinearly as in ``apply``;
they differ from it only by float rounding of the grid (labels may flip on exact nearest-sampling ties).

The per-sample parameters are drawn on the host once per epoch for the whole fold (:func:`epoch_table`),
vectorised: one generator seeded by (seed, epoch) draws each parameter for every store sample at once,
and sample ``i`` takes row ``i``, so a run replays exactly, independently of batch composition, order
and sharding. They have ClipDataset's distributions (pipeline.training.augment.sample_params) but not its
per-sample streams: creating a generator per sample, as ClipDataset does, cost ~30 ms per 856-sample
epoch here, a fifth of a U-Net epoch at 96 px on an H200. The table is uploaded in one transfer; a batch
only gathers rows of it on the device. The host keeps which samples are warped, so the choice between
bilinear and nearest sampling never waits for the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.training.augment import AugmentConfig, AugmentParams

_MIRROR = np.array([[-1.0, 0.0], [0.0, 1.0]])
_FLIP = np.array([[1.0, 0.0], [0.0, -1.0]])
_ROT90 = np.array([[0.0, -1.0], [1.0, 0.0]])  # out(x, y) = in(-y, x): torch.rot90(k=1, dims=(H, W))


@dataclass(frozen=True)
class ParamTable:
    """Transforms of N samples, on the device (row i: sample position i).

    theta (N, 2, 2) float32: T above; gain, offset (N,) float32; corner (N, 2) int64: the crop window's
    (y0, x0); warp (N,) bool: rotated or zoomed (bilinear sampling), with its host copy ``warp_host``;
    size: the images' S; window: the output side c (the crop, or S).
    """

    theta: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor
    corner: torch.Tensor
    warp: torch.Tensor
    warp_host: np.ndarray
    size: int
    window: int

    def take(self, pos: torch.Tensor, pos_host: np.ndarray) -> ParamTable:
        """The rows of positions ``pos`` (B,) on the device; ``pos_host`` is the same positions on the host."""
        return ParamTable(self.theta[pos], self.gain[pos], self.offset[pos], self.corner[pos], self.warp[pos],
                          self.warp_host[pos_host], self.size, self.window)  # fmt: skip


def _matrix(p: AugmentParams) -> np.ndarray:
    """T of one sample in float64; a signed permutation of apply's theta entries, so exact in float32."""
    t = np.eye(2)
    if p.mirror:
        t = t @ _MIRROR
    if p.flip:
        t = t @ _FLIP
    t = t @ np.linalg.matrix_power(_ROT90, p.k90 % 4)
    if p.angle_deg or p.zoom != 1.0:
        a, z = math.radians(p.angle_deg), p.zoom  # as apply computes them
        t = t @ np.array([[math.cos(a) / z, -math.sin(a) / z], [math.sin(a) / z, math.cos(a) / z]])
    return t


def _table(theta: np.ndarray, gain: np.ndarray, offset: np.ndarray, crop_at: np.ndarray, warp: np.ndarray,
           size: int, crop: int, device: torch.device) -> ParamTable:  # fmt: skip
    """Upload per-sample arrays (theta (N, 2, 2), gain, offset, crop_at (N, 2), warp) as a :class:`ParamTable`."""
    if crop > size:
        raise ValueError(f"crop {crop} is larger than the images ({size} x {size})")
    free = size - (crop or size) + 1  # apply: int(f * (max(h - crop, 0) + 1)); 0 with crop off
    corner = (crop_at * free).astype(np.int64) if crop else np.zeros((len(theta), 2), np.int64)

    def upload(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(values)).to(device=device, dtype=dtype)

    return ParamTable(theta=upload(theta.reshape(-1, 2, 2), torch.float32), gain=upload(gain, torch.float32),
                      offset=upload(offset, torch.float32), corner=upload(corner.reshape(-1, 2), torch.int64),
                      warp=upload(warp, torch.bool), warp_host=warp.astype(bool), size=size,
                      window=crop or size)  # fmt: skip


def param_table(params: list[AugmentParams], size: int, crop: int, device: torch.device) -> ParamTable:
    """The table of ``params`` for S x S images (``crop`` 0: whole images), uploaded to ``device``."""
    theta = np.stack([_matrix(p) for p in params]) if params else np.zeros((0, 2, 2))
    return _table(theta, np.array([p.gain for p in params], np.float64),
                  np.array([p.offset for p in params], np.float64),
                  np.array([p.crop_at for p in params], np.float64).reshape(-1, 2),
                  np.array([bool(p.angle_deg or p.zoom != 1.0) for p in params], bool), size, crop, device)  # fmt: skip


def _draw(n: int, seed: int, epoch: int, cfg: AugmentConfig) -> dict[str, np.ndarray]:
    """Every parameter of ``n`` samples (rows 0..n-1) in ``epoch``, from one generator seeded by (seed,
    epoch), with sample_params' distributions; a disabled parameter draws nothing (its neutral value)."""
    rng = np.random.default_rng([seed, epoch])
    bound = math.log1p(cfg.scale)
    return {
        "mirror": rng.random(n) < cfg.mirror,
        "flip": rng.random(n) < cfg.flip,
        "k90": rng.integers(4, size=n) if cfg.rotate90 else np.zeros(n, np.int64),
        "angle_deg": rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, n) if cfg.rotate_deg else np.zeros(n),
        "gain": rng.uniform(1 - cfg.intensity, 1 + cfg.intensity, n),
        "offset": rng.uniform(-cfg.intensity, cfg.intensity, n),
        "zoom": np.exp(rng.uniform(-bound, bound, n)) if cfg.scale else np.ones(n),
        "crop_at": rng.random((n, 2)) if cfg.crop else np.full((n, 2), 0.5),
    }


def epoch_params(indices: np.ndarray, seed: int, epoch: int, cfg: AugmentConfig) -> list[AugmentParams]:
    """The transforms :func:`epoch_table` gives store samples ``indices`` in ``epoch``, one by one (for
    ``apply``: tests and inspection)."""
    d = _draw(int(np.max(indices, initial=-1)) + 1, seed, epoch, cfg)
    return [AugmentParams(bool(d["mirror"][i]), bool(d["flip"][i]), int(d["k90"][i]), float(d["angle_deg"][i]),
                          float(d["gain"][i]), float(d["offset"][i]), float(d["zoom"][i]),
                          (float(d["crop_at"][i, 0]), float(d["crop_at"][i, 1])))
            for i in np.asarray(indices, np.int64)]  # fmt: skip


def epoch_table(indices: np.ndarray, seed: int, epoch: int, cfg: AugmentConfig, size: int,
                device: torch.device) -> ParamTable:  # fmt: skip
    """The transforms of store samples ``indices`` in ``epoch`` (see the module doc), on ``device``."""
    idx = np.asarray(indices, np.int64)
    d = {k: v[idx] for k, v in _draw(int(np.max(idx, initial=-1)) + 1, seed, epoch, cfg).items()}
    # T = diag(+-1, +-1) @ R^k90 @ A (see the module doc), for every sample at once, in float64
    signs = np.stack([np.where(d["mirror"], -1.0, 1.0), np.where(d["flip"], -1.0, 1.0)], axis=-1)
    quarter = np.stack([np.linalg.matrix_power(_ROT90, k) for k in range(4)])[d["k90"] % 4]
    a = np.radians(d["angle_deg"])
    cos, sin = np.cos(a) / d["zoom"], np.sin(a) / d["zoom"]
    turn = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    theta = signs[:, :, None] * (quarter @ turn)
    warp = (d["angle_deg"] != 0) | (d["zoom"] != 1.0)
    return _table(theta, d["gain"], d["offset"], d["crop_at"], warp, size, cfg.crop, device)


def _grid(t: ParamTable, device: torch.device) -> torch.Tensor:
    """(B, c, c, 2) sampling grid (x, y) of each sample's crop window, in normalised input coordinates."""
    s, c = t.size, t.window
    # affine_grid's base coordinates (align_corners=False): pixel centres (2i + 1) / S - 1
    base = torch.linspace(-1.0, 1.0, s, device=device) * ((s - 1) / s)
    steps = torch.arange(c, device=device)
    y = base[t.corner[:, 0, None] + steps][:, :, None]  # (B, c, 1): rows of the window
    x = base[t.corner[:, 1, None] + steps][:, None, :]  # (B, 1, c): columns
    th = t.theta[:, :, :, None, None]  # (B, 2, 2, 1, 1)
    return torch.stack([th[:, 0, 0] * x + th[:, 0, 1] * y, th[:, 1, 0] * x + th[:, 1, 1] * y], dim=-1)


def augment_batch(
    clip: torch.Tensor, label: torch.Tensor, t: ParamTable
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the transforms ``t`` (B rows) to clips (B, F, S, S) float32 and labels (B, S, S) int64.

    Returns (B, F, c, c) float32 clips and (B, c, c) int64 labels, c = the crop window (or S).
    """
    if clip.shape[-2:] != (t.size, t.size):
        raise ValueError(f"clips of {tuple(clip.shape[-2:])} px, the table was made for {t.size} x {t.size}")
    grid = _grid(t, clip.device)
    labels = label[:, None].to(clip.dtype)  # (B, 1, S, S): grid_sample samples floats
    label = F.grid_sample(labels, grid, mode="nearest", align_corners=False)[:, 0].long()
    n_warp = int(t.warp_host.sum())  # decided on the host: no wait for the device
    parts: list[torch.Tensor] = []  # [bilinear] and/or [nearest], in this order
    if n_warp:  # rotated or zoomed: bilinear, outside the image each frame's minimum, as apply fills it
        background = clip.amin(dim=(-2, -1), keepdim=True)
        parts.append(
            F.grid_sample(clip - background, grid, mode="bilinear", align_corners=False) + background
        )
    if n_warp < len(t.warp_host):  # pixel permutations: nearest at pixel centres copies them exactly
        parts.append(F.grid_sample(clip, grid, mode="nearest", align_corners=False))
    out = torch.where(t.warp[:, None, None, None], parts[0], parts[1]) if len(parts) == 2 else parts[0]
    return out * t.gain[:, None, None, None] + t.offset[:, None, None, None], label

"""Synthetic short-axis cine phantom written in the ACDC layout (the embedded default dataset).

Each patient is a stack of short-axis slices (base at z = 0, apex at z = Z-1) over one cardiac cycle:
an LV cavity, a myocardial ring of constant area per slice (so the wall thickens as the cavity
contracts) and an RV crescent wrapped around the septum that vanishes in the apical slices. Every shape
is star-shaped around the LV centre, ``r < R(theta)``, so its area is an exact polar integral and the
LV and RV areas of every slice follow one smooth volume curve from ED (frame 1) to ES and back. The
group (NOR, DCM, HCM, MINF, RV) sets size, wall thickness and ejection fractions; MINF has an akinetic,
thinned sector. The anatomy is rotated in-plane by a random angle and the affine by a random 3D rotation.

Images: partial volume (analytic in-plane occupancy from the radial distance to each boundary, averaged
over ``supersample`` sub-slices through the slice thickness), a smooth multiplicative bias field fixed
over time, and Rician noise drawn independently for every frame. Labels (0 bg, 1 RV, 2 MYO, 3 LV) are
sampled at voxel centres for every frame and written as ``patientNNN_4d_gt.nii.gz`` beside the ACDC files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.acdc import GROUPS, PatientInfo, PatientRecord, affine_from_spacing, write_patient
from pipeline.vocabulary import STRUCTURES, voxel_volume_ml

# group -> LV EF, RV EF, basal ED endocardial LV radius (mm), LV wall (mm), RV crescent depth (mm)
_GROUP_PARAMS: dict[str, tuple[tuple[float, float], ...]] = {
    "NOR": ((0.55, 0.70), (0.45, 0.65), (23.0, 27.0), (8.0, 10.5), (18.0, 24.0)),
    "DCM": ((0.10, 0.35), (0.30, 0.55), (30.0, 35.0), (7.0, 9.0), (16.0, 22.0)),
    "HCM": ((0.65, 0.85), (0.45, 0.65), (20.0, 24.0), (13.0, 18.0), (15.0, 20.0)),
    "MINF": ((0.20, 0.45), (0.35, 0.55), (26.0, 31.0), (7.5, 9.5), (16.0, 22.0)),
    "RV": ((0.50, 0.65), (0.20, 0.40), (21.0, 25.0), (8.0, 10.0), (30.0, 38.0)),
}


class _Exact:
    """Transcendental functions evaluated in float64 and returned in the input's float type.

    numpy's float32 sin/cos/exp/hypot/power take different SIMD code paths on different CPUs (AVX2 vs
    AVX-512), whose results differ in the last bits; after rounding to int16 a few hundred voxels of a
    cine then differ, and so do the file hashes DVC records. float64 results agree far below float32's
    precision, so the phantom is byte-identical on any x86-64 machine (tests pin its hashes).
    """

    @staticmethod
    def _call(fn: np.ufunc, *args: np.ndarray | float) -> np.ndarray:
        out = fn(*(np.asarray(a, dtype=np.float64) for a in args))
        kinds = [np.asarray(a).dtype for a in args if np.asarray(a).dtype.kind == "f"]
        target = np.result_type(*kinds) if kinds else np.float64
        return out.astype(target) if out.dtype != target else out

    def cos(self, x):
        return self._call(np.cos, x)

    def sin(self, x):
        return self._call(np.sin, x)

    def exp(self, x):
        return self._call(np.exp, x)

    def hypot(self, x, y):
        return self._call(np.hypot, x, y)

    def arctan2(self, y, x):
        return self._call(np.arctan2, y, x)

    def power(self, x, p):
        return self._call(np.power, x, np.asarray(p, dtype=np.asarray(x).dtype))


_exact = _Exact()
_THETA = np.linspace(-np.pi, np.pi, 720, endpoint=False)  # angular samples for the area integrals


@dataclass(frozen=True)
class PhantomConfig:
    """Settings of the synthetic dataset; each ``(low, high)`` range is drawn uniformly per patient.

    ``matrix`` is the in-plane (Y, X) size in voxels (a crop around the heart); ``noise_sigma`` is the
    Rician sigma as a fraction of the blood intensity; ``bias_strength`` the peak log-amplitude of the
    bias field; ``supersample`` the number of sub-slices averaged through the slice thickness.
    """

    n_patients: int = 20
    seed: int = 0
    matrix: tuple[int, int] = (96, 96)
    n_frames: tuple[int, int] = (12, 20)
    n_slices: tuple[int, int] = (6, 10)
    inplane_spacing_mm: tuple[float, float] = (1.2, 1.9)
    slice_thickness_mm: tuple[float, float] = (5.0, 10.0)
    noise_sigma: tuple[float, float] = (0.04, 0.08)
    bias_strength: float = 0.2
    supersample: int = 3

    def __post_init__(self) -> None:
        """The ranges' rules only: types and list -> tuple coercion of params.yaml values are
        pipeline.config.from_dict's job (the download section is read through it)."""

        def fail(name: str, rule: str) -> None:
            raise ValueError(f"PhantomConfig.{name} {rule}, got {getattr(self, name)!r}")

        def check_range(name: str, low: float, high: float, integer: bool = False) -> None:
            value = getattr(self, name)
            kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
            if not (isinstance(value, tuple | list) and len(value) == 2):
                fail(name, "must be a pair (low, high)")
            if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
                fail(name, f"must hold {'integers' if integer else 'numbers'}")
            if not low <= value[0] <= value[1] <= high:
                fail(name, f"must satisfy {low} <= low <= high <= {high}")

        for name, low, high in (("n_patients", 1, 10_000), ("seed", 0, 2**63), ("supersample", 1, 8)):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or not low <= value <= high:
                fail(name, f"must be an integer in [{low}, {high}]")
        check_range("matrix", 48, 1024, integer=True)
        check_range("n_frames", 4, 100, integer=True)
        check_range("n_slices", 4, 40, integer=True)
        check_range("inplane_spacing_mm", 0.5, 4.0)
        check_range("slice_thickness_mm", 1.0, 20.0)
        check_range("noise_sigma", 0.0, 0.5)
        if not isinstance(self.bias_strength, int | float) or not 0.0 <= self.bias_strength <= 1.0:
            fail("bias_strength", "must be a number in [0, 1]")


@dataclass(frozen=True)
class _Heart:
    """Geometry of one heart; lengths in mm, angles in rad in the anatomical frame (RV centred at 0)."""

    n_slices: int
    n_no_rv: int  # apical slices without RV
    apex: float  # LV radius shrinks by this fraction from base to apex
    radius: float  # basal ED endocardial radius
    wall: float  # basal ED wall thickness
    depth: float  # basal ED RV crescent depth
    rv_wall: float  # RV free wall thickness (drawn as muscle, labelled background as in ACDC)
    span: float  # angular width of the RV crescent
    ellipticity: float
    ellipse_angle: float
    infarct_angle: float
    infarct_half: float  # 0: no akinetic sector
    thinning: float  # relative wall thinning in the sector
    fat: float  # peak thickness of the epicardial fat layer (bright, labelled background)
    fat_angle: float

    def profiles(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-angle factors: ellipse radius factor, akinetic weight in [0, 1], RV depth profile in [0, 1]."""
        a, b = 1.0 + self.ellipticity, 1.0 / (1.0 + self.ellipticity)
        phi = theta - self.ellipse_angle
        ellipse = 1.0 / np.sqrt((_exact.cos(phi) / a) ** 2 + (_exact.sin(phi) / b) ** 2)
        akinetic = np.zeros_like(theta)
        if self.infarct_half > 0:
            edge = _exact.cos(self.infarct_half)
            akinetic = np.clip((_exact.cos(theta - self.infarct_angle) - edge) / (1.0 - edge) * 4.0, 0.0, 1.0)
        rv = _exact.power(np.clip(_exact.cos(np.pi * theta / self.span), 0.0, None), 0.6) * (
            np.abs(theta) < self.span / 2
        )
        return ellipse, akinetic, rv

    def static(self, zeta: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        """Time-invariant parts, each (n, *theta.shape), at slice positions ``zeta`` (n,) (0 = basal centre).

        With motion factor q (1 at ED) and RV factor g: endocardial radius = fixed + moving * q,
        epicardial radius**2 = endo**2 + ring (constant myocardial area), RV depth = g * depth; the
        fifth part, (1, *theta.shape), is the fat thickness outside the heart.
        """
        ellipse, akinetic, rv = self.profiles(theta)
        shape, dtype = (-1,) + (1,) * theta.ndim, theta.dtype  # float32 on pixel grids
        zeta = np.asarray(zeta, dtype=np.float64)
        size = (1.0 - self.apex * ((zeta + 0.5) / self.n_slices) ** 2).reshape(shape).astype(dtype)
        rv_z = np.clip(1.0 - ((zeta + 0.5) / (self.n_slices - self.n_no_rv)) ** 2, 0.0, 1.0)
        rv_z = np.sqrt(rv_z).reshape(shape).astype(dtype)
        endo_ed = self.radius * size * ellipse
        epi_ed = endo_ed + self.wall * (0.75 + 0.25 * size) * (1.0 - self.thinning * akinetic) * ellipse
        fat = (self.fat * (0.5 + 0.5 * _exact.cos(2.0 * (theta - self.fat_angle))) ** 2)[None]
        moving, ring = endo_ed * (1.0 - akinetic), epi_ed**2 - endo_ed**2
        return endo_ed * akinetic, moving, ring, self.depth * rv_z * rv, fat


def _radii(parts: tuple[np.ndarray, ...], q: float, g: np.ndarray, rv_wall: float) -> tuple[np.ndarray, ...]:
    """Radii (mm) of LV endocardium, epicardium, RV cavity, RV free wall and fat from :meth:`_Heart.static`."""
    fixed, moving, ring, depth, fat = parts
    endo = fixed + moving * q
    epi = np.sqrt(endo * endo + ring)
    h = g.reshape((-1,) + (1,) * (depth.ndim - 1)).astype(depth.dtype) * depth
    rv_out = epi + h
    rv_edge = rv_out + np.minimum(h, rv_wall)
    return endo, epi, rv_out, rv_edge, rv_edge + fat


def _rv_scale(grid_parts: tuple[np.ndarray, ...], q: float, k_rv: float) -> np.ndarray:
    """(n,) RV depth factor g giving each slice ``k_rv`` times its ED RV area (parts on the grid ``_THETA``)."""
    fixed, moving, ring, depth, _ = grid_parts
    epi_ed = np.sqrt((fixed + moving) ** 2 + ring)
    epi = np.sqrt((fixed + moving * q) ** 2 + ring)
    lin, quad = (epi * depth).mean(-1), 0.5 * (depth**2).mean(-1)  # area(g) = g * lin + g**2 * quad
    target = k_rv * ((epi_ed * depth).mean(-1) + quad)
    safe = np.maximum(quad, 1e-12)
    return np.where(quad > 0, (np.sqrt(lin**2 + 4 * safe * target) - lin) / (2 * safe), 0.0)


def _motion_factor(heart: _Heart, area_ratio: np.ndarray) -> np.ndarray:
    """Endocardial factor q per frame giving cavity area ratio ``area_ratio`` with a static akinetic sector."""
    ellipse, akinetic, _ = heart.profiles(_THETA)
    m = ellipse**2 / np.mean(ellipse**2)
    a, b = np.mean(m * (1 - akinetic) ** 2), 2 * np.mean(m * akinetic * (1 - akinetic))
    c = np.mean(m * akinetic**2)
    return (np.sqrt(b**2 + 4 * a * (area_ratio - c)) - b) / (2 * a)


def _cycle(n_frames: int, es_index: int) -> np.ndarray:
    """(T,) smooth periodic curve: 1 at frame 0 (ED), 0 at ``es_index`` (ES), monotone in between."""
    t = np.arange(n_frames, dtype=np.float64)
    down = 0.5 * (1.0 + _exact.cos(np.pi * t / es_index))
    up = 0.5 * (1.0 - _exact.cos(np.pi * (t - es_index) / (n_frames - es_index)))
    return np.where(t <= es_index, down, up)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, signs fixed, det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else q * np.array([1.0, 1.0, -1.0])


def _bias_field(shape: tuple[int, int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """(Z, Y, X) float32 smooth multiplicative field exp(strength * p), p a random quadratic in [-1, 1]."""
    zn, yn, xn = np.ogrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j, -1 : 1 : shape[2] * 1j]
    terms = [xn, yn, zn, xn * xn, xn * yn, yn * yn, xn * zn, yn * zn]
    poly = np.broadcast_to(sum(c * t for c, t in zip(rng.normal(size=len(terms)), terms, strict=True)), shape)
    return _exact.exp(strength * poly / max(float(np.abs(poly).max()), 1e-9)).astype(np.float32)


@dataclass(frozen=True)
class _Scan:
    """Acquisition of one patient: frames, the ES frame (0-based), slice thickness and pixel size (mm),
    slices, and the sub-slices averaged through each slice's thickness."""

    n_frames: int
    es_index: int
    thickness: float
    pixel: float
    n_slices: int
    supersample: int

    @property
    def z_centre(self) -> np.ndarray:
        """(Z,) slice centres, in slices from the base."""
        return np.arange(self.n_slices, dtype=np.float64)

    @property
    def z_sub(self) -> np.ndarray:
        """(Z * supersample,) sub-slice positions, each slice's together."""
        s = self.supersample
        return (self.z_centre[:, None] + (np.arange(s) + 0.5) / s - 0.5).ravel()


@dataclass(frozen=True)
class _View:
    """The heart placed in the (Y, X) image: pixel coordinates (mm) in the anatomical frame (LV centre at
    0, RV towards theta = 0), and the (Z, Y, X) crop ``box`` holding the heart with the polar coordinates
    ``r`` (mm) and ``theta`` of its pixels, float32."""

    u: np.ndarray
    v: np.ndarray
    box: tuple[slice, slice, slice]
    r: np.ndarray
    theta: np.ndarray


@dataclass(frozen=True)
class _Contrast:
    """Intensities: blood, myocardium, RV blood and fat; the (Y, X) tissue-and-lung background, the
    (Z, Y, X) bias field and the Rician noise sigma."""

    blood: float
    myo: float
    rv_blood: float
    fat: float
    background: np.ndarray
    bias: np.ndarray
    sigma: np.float32


def _draw_scan(cfg: PhantomConfig, rng: np.random.Generator) -> _Scan:
    n_frames = int(rng.integers(cfg.n_frames[0], cfg.n_frames[1] + 1))
    es_index = int(np.clip(round(rng.uniform(0.35, 0.45) * n_frames), 1, n_frames - 1))
    thickness = float(np.float32(round(_uniform(rng, cfg.slice_thickness_mm), 2)))
    pixel = float(np.float32(round(_uniform(rng, cfg.inplane_spacing_mm), 3)))
    n_slices = int(np.clip(round(rng.uniform(70.0, 100.0) / thickness), *cfg.n_slices))
    return _Scan(n_frames, es_index, thickness, pixel, n_slices, cfg.supersample)


def _draw_heart(group: str, n_slices: int, radius: float, wall: float, depth: float,
                rng: np.random.Generator) -> _Heart:  # fmt: skip
    minf = group == "MINF"
    return _Heart(
        n_slices=n_slices,
        n_no_rv=min(int(rng.integers(1, 4)), n_slices - 3),
        apex=_uniform(rng, (0.5, 0.65)),
        radius=radius,
        wall=wall,
        depth=depth,
        rv_wall=_uniform(rng, (2.0, 3.5)),
        span=_uniform(rng, (2.6, 3.2) if group != "RV" else (3.2, 3.7)),
        ellipticity=_uniform(rng, (0.0, 0.12)),
        ellipse_angle=_uniform(rng, (-np.pi, np.pi)),
        infarct_angle=_uniform(rng, (np.pi / 2, 3 * np.pi / 2)) if minf else 0.0,
        infarct_half=_uniform(rng, (0.4, 0.7)) if minf else 0.0,
        thinning=_uniform(rng, (0.35, 0.5)) if minf else 0.0,
        fat=_uniform(rng, (1.0, 4.0)),
        fat_angle=_uniform(rng, (-np.pi, np.pi)),
    )


def _fit_in_view(heart: _Heart, scan: _Scan, q_t: np.ndarray, k_rv: np.ndarray,
                 matrix: tuple[int, int]) -> tuple[_Heart, np.ndarray, np.ndarray]:  # fmt: skip
    """The heart, shrunk if its outer outline over all slices and frames (plus jitter) overflows the view;
    that outline's radius per angle of ``_THETA`` (mm) and its centre (x, y) (mm)."""
    grid = heart.static(np.concatenate([scan.z_sub, scan.z_centre]), _THETA)
    outer = np.max(
        [_radii(grid, q, _rv_scale(grid, q, k), heart.rv_wall)[4] for q, k in zip(q_t, k_rv, strict=True)],
        axis=(0, 1),
    )
    pts = np.stack([outer * _exact.cos(_THETA), outer * _exact.sin(_THETA)])
    centre = (pts.max(1) + pts.min(1)) / 2
    need = np.max(np.linalg.norm(pts - centre[:, None], axis=0))
    room = min(matrix) * scan.pixel / 2 - 3.0 - 2 * scan.pixel
    if need > room:  # every length scales by f, so the area ratios (EF, q, g) are unchanged
        f = room / need
        lengths = ("radius", "wall", "depth", "rv_wall", "fat")
        heart = dataclasses.replace(heart, **{n: getattr(heart, n) * f for n in lengths})
        outer, centre = outer * f, centre * f
    return heart, outer, centre


def _place_in_view(outer: np.ndarray, centre: np.ndarray, pixel: float, matrix: tuple[int, int],
                   rng: np.random.Generator) -> _View:  # fmt: skip
    """Rotate the anatomy by a random angle and shift it by a random jitter in the (Y, X) image."""
    ny, nx = matrix
    alpha = _uniform(rng, (-np.pi, np.pi))
    rot = np.array([[_exact.cos(alpha), -_exact.sin(alpha)], [_exact.sin(alpha), _exact.cos(alpha)]])
    lv_xy = -rot @ centre + rng.uniform(-3.0, 3.0, size=2)
    gy, gx = (np.indices((ny, nx)) - np.array([ny - 1, nx - 1]).reshape(2, 1, 1) / 2) * pixel
    u = rot[0, 0] * (gx - lv_xy[0]) + rot[1, 0] * (gy - lv_xy[1])
    v = rot[0, 1] * (gx - lv_xy[0]) + rot[1, 1] * (gy - lv_xy[1])
    r, theta = _exact.hypot(u, v), _exact.arctan2(v, u)
    inside = r < np.interp(theta, _THETA, outer, period=2 * np.pi) + 2 * pixel  # the heart's pixels
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # (Z, Y, X) crop
    return _View(u, v, box, r[box[1:]].astype(np.float32), theta[box[1:]].astype(np.float32))


def _draw_contrast(heart: _Heart, view: _View, n_slices: int, cfg: PhantomConfig,
                   rng: np.random.Generator) -> _Contrast:  # fmt: skip
    """Tissue intensities, a lung on the side opposite the RV, the bias field and the noise level."""
    u, v = view.u, view.v
    blood, myo = _uniform(rng, (300.0, 600.0)), _uniform(rng, (100.0, 200.0))
    rv_blood = blood * _uniform(rng, (0.9, 1.0))
    tissue, lung = _uniform(rng, (70.0, 150.0)), _uniform(rng, (10.0, 40.0))
    fat = blood * _uniform(rng, (0.6, 0.9))
    lung_a, lung_b = _uniform(rng, (25.0, 40.0)), _uniform(rng, (45.0, 70.0))
    lung_u = -(heart.radius + heart.wall + lung_a + _uniform(rng, (3.0, 12.0)))
    lung_d = (_exact.hypot((u - lung_u) / lung_a, (v - _uniform(rng, (-15.0, 15.0))) / lung_b) - 1.0) * lung_a
    f_lung = np.clip(0.5 - lung_d / 3.0, 0.0, 1.0)
    background = (tissue * (1.0 - f_lung) + lung * f_lung).astype(np.float32)
    bias = _bias_field((n_slices, *u.shape), cfg.bias_strength, rng)
    sigma = np.float32(_uniform(rng, cfg.noise_sigma) * blood)
    return _Contrast(blood, myo, rv_blood, fat, background, bias, sigma)


def _render(heart: _Heart, view: _View, c: _Contrast, scan: _Scan, q_t: np.ndarray, k_rv: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The cine (T, Z, Y, X) float32 (partial volume, bias, Rician noise drawn per frame) and the labels
    (T, Z, Y, X) uint8 of every frame."""
    s, pixel, r_in = scan.supersample, scan.pixel, view.r
    pix_sub, pix_centre = heart.static(scan.z_sub, view.theta), heart.static(scan.z_centre, view.theta)
    grid_sub, grid_centre = heart.static(scan.z_sub, _THETA), heart.static(scan.z_centre, _THETA)
    bg_in = c.background[view.box[1:]]
    ramp = np.float32(0.5) - r_in / np.float32(pixel)  # occupancy = clip(ramp + R / pixel, 0, 1)
    shape = (scan.n_frames, scan.n_slices, *c.background.shape)
    cine = np.empty(shape, np.float32)
    cine_labels = np.zeros(shape, np.uint8)
    for t in range(scan.n_frames):
        q, k = float(q_t[t]), float(k_rv[t])
        bounds = _radii(pix_sub, q, _rv_scale(grid_sub, q, k), heart.rv_wall)
        f_lv, f_epi, f_rv, f_wall, f_fat = (np.clip(b / np.float32(pixel) + ramp, 0.0, 1.0) for b in bounds)
        heart_img = f_lv * (c.blood - c.myo) + f_epi * (c.myo - c.rv_blood) + f_rv * (c.rv_blood - c.myo)
        heart_img += f_wall * (c.myo - c.fat) + f_fat * (c.fat - bg_in) + bg_in
        frame = np.repeat(c.background[None], scan.n_slices, axis=0)
        frame[view.box] = heart_img.reshape(scan.n_slices, s, *r_in.shape).mean(1)
        clean = frame * c.bias
        noise = rng.standard_normal(size=(2, *clean.shape), dtype=np.float32) * c.sigma
        cine[t] = _exact.hypot(clean + noise[0], noise[1])
        endo, epi, rv_out, _, _ = _radii(pix_centre, q, _rv_scale(grid_centre, q, k), heart.rv_wall)
        # nested regions (endo <= epi <= rv_out): the count of boundaries enclosing a voxel is its label
        cine_labels[t][view.box] = sum((r_in < b).view(np.uint8) for b in (endo, epi, rv_out))
    return cine, cine_labels


def make_patient(index: int, group: str, cfg: PhantomConfig, rng: np.random.Generator) -> PatientRecord:
    """Build patient ``index`` (0-based; id ``patient{index+1:03d}``) of ``group`` from ``rng``.

    Returns a record with cine (T, Z, Y, X) float32, cine_labels (T, Z, Y, X) uint8 for every frame,
    labels of ED (frame 1) and ES, spacing (z, y, x) in mm and an affine with a random 3D rotation.
    A heart too large for ``cfg.matrix`` at the drawn pixel size is shrunk to fit.
    """
    if group not in _GROUP_PARAMS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    # The steps draw from ``rng`` in this order, which fixes the phantom byte for byte (tests pin it).
    ef_lv, ef_rv, radius, wall, depth = (_uniform(rng, r) for r in _GROUP_PARAMS[group])
    scan = _draw_scan(cfg, rng)
    heart = _draw_heart(group, scan.n_slices, radius, wall, depth, rng)
    cycle = _cycle(scan.n_frames, scan.es_index)
    q_t, k_rv = _motion_factor(heart, 1.0 - ef_lv * (1.0 - cycle)), 1.0 - ef_rv * (1.0 - cycle)
    heart, outer, centre = _fit_in_view(heart, scan, q_t, k_rv, cfg.matrix)
    view = _place_in_view(outer, centre, scan.pixel, cfg.matrix, rng)
    contrast = _draw_contrast(heart, view, scan.n_slices, cfg, rng)
    cine, cine_labels = _render(heart, view, contrast, scan, q_t, k_rv, rng)

    height = round(_uniform(rng, (150.0, 195.0)), 1)
    weight = round(_uniform(rng, (19.0, 32.0)) * (height / 100) ** 2, 1)
    info = PatientInfo(ed=1, es=scan.es_index + 1, nb_frames=scan.n_frames, group=group, height_cm=height,
                       weight_kg=weight)  # fmt: skip
    spacing = (scan.thickness, scan.pixel, scan.pixel)
    return PatientRecord(
        patient_id=f"patient{index + 1:03d}",
        cine=cine,
        spacing=spacing,
        affine=affine_from_spacing(spacing, _random_rotation(rng)),
        info=info,
        labels={"ED": cine_labels[0].copy(), "ES": cine_labels[scan.es_index].copy()},
        cine_labels=cine_labels,
    )


def iter_records(cfg: PhantomConfig) -> Iterator[PatientRecord]:
    """Patients 0..n_patients-1 in memory; patient k uses the k-th child seed, whatever n_patients is.

    Groups are assigned round-robin over ``GROUPS`` so any N is balanced.
    """
    for k, child in enumerate(np.random.SeedSequence(cfg.seed).spawn(cfg.n_patients)):
        yield make_patient(k, GROUPS[k % len(GROUPS)], cfg, np.random.default_rng(child))


def generate_dataset(root: Path | str, cfg: PhantomConfig) -> list[Path]:
    """Write ``cfg.n_patients`` patients under ``root`` in the ACDC layout; returns their folders."""
    return [write_patient(record, root) for record in iter_records(cfg)]


def ground_truth_volumes(record: PatientRecord) -> dict[str, np.ndarray]:
    """(T,) volumes in ml of 'LV', 'MYO' and 'RV' over the cycle, from ``record.cine_labels``."""
    if record.cine_labels is None:
        raise ValueError(f"{record.patient_id} has no cine_labels (labels of every frame)")
    voxel_ml = voxel_volume_ml(record.spacing)
    flat = record.cine_labels.reshape(record.n_frames, -1)
    return {name: (flat == label).sum(1) * voxel_ml for name, label in STRUCTURES.items()}

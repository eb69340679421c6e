"""The in-plane geometry: resize (the paper) and spacing (resample + crop/pad), and their exact inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.preprocessing.geometry import Geometry, resample


def _onehot(labels: np.ndarray) -> np.ndarray:
    return (labels[:, None] == np.arange(4).reshape(1, -1, 1, 1)).astype(np.float32)


def _labels(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Blobs (an LV disc, a MYO ring, an RV crescent-ish box) on a (2, Y, X) grid."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(y - shape[0] / 2, x - shape[1] / 2)
    lab = np.zeros(shape, np.uint8)
    lab[r < shape[0] / 4] = 2
    lab[r < shape[0] / 6] = 3
    lab[(r >= shape[0] / 4) & (r < shape[0] / 3) & (x < shape[1] / 2)] = 1
    return np.stack([lab, np.roll(lab, seed + 1, axis=1)])


@pytest.mark.parametrize("geometry", [Geometry("resize", 32), Geometry("spacing", 48, 1.5)])
def test_round_trip_is_exact_when_no_resampling_is_needed(geometry: Geometry) -> None:
    # resize at the native size, or spacing at the native spacing with padding: the map is a pure shift
    shape = (32, 32) if geometry.mode == "resize" else (40, 37)
    labels = _labels(shape)
    net = geometry.labels_to_network(labels, (1.5, 1.5))
    assert net.shape == (2, geometry.size, geometry.size)
    back = geometry.probabilities_back(_onehot(net), shape, (1.5, 1.5)).argmax(1)
    np.testing.assert_array_equal(back, labels)


def test_spacing_keeps_millimetres() -> None:
    g = Geometry("spacing", 64, 1.0)
    # a 40-pixel field at 2 mm is 80 mm: 80 pixels at 1 mm, centre-cropped to 64
    assert g.resampled_shape((40, 30), (2.0, 2.0)) == (80, 60)
    images = np.zeros((1, 40, 30), np.float32)
    images[0, 10:30, 5:25] = 1.0  # 20 px = 40 mm square
    net = g.images_to_network(images, (2.0, 2.0), fill=-1.0)
    inside = net[0] > 0.5
    assert abs(inside.sum(0).max() - 40) <= 1 and abs(inside.sum(1).max() - 40) <= 1
    assert net[0, 0, 0] == -1.0  # the padded columns (60 -> 64) carry the fill value


def test_cropped_border_comes_back_as_background_and_the_rest_matches() -> None:
    g = Geometry("spacing", 32, 1.0)
    labels = np.zeros((1, 40, 40), np.uint8)
    labels[0, 10:30, 10:30] = 3
    labels[0, 0:3, 0:3] = 1  # outside the centred 32 x 32 window
    back = g.probabilities_back(_onehot(g.labels_to_network(labels, (1.0, 1.0))), (40, 40), (1.0, 1.0))
    out = back.argmax(1)
    assert (out[0, 0:3, 0:3] == 0).all()
    np.testing.assert_array_equal(out[0, 4:36, 4:36], labels[0, 4:36, 4:36])


@pytest.mark.parametrize("geometry", [Geometry("resize", 64), Geometry("spacing", 96, 1.5625)])
def test_resampled_round_trip_keeps_the_structures(geometry: Geometry) -> None:
    labels = _labels((100, 95))
    spacing = (1.9, 1.9)
    back = geometry.probabilities_back(
        _onehot(geometry.labels_to_network(labels, spacing)), (100, 95), spacing
    )
    out = back.argmax(1)
    for c in (1, 2, 3):
        dice = 2 * ((out == c) & (labels == c)).sum() / ((out == c).sum() + (labels == c).sum())
        assert dice > 0.95, (c, dice)


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="geometry must be one of"):
        Geometry("crop", 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spacing_mm must be > 0"):
        Geometry("spacing", 32, 0.0)


#: (source, target) shapes: shrinking, enlarging, both at once, and degenerate sizes.
SHAPES = [((95, 100), (64, 64)), ((100, 95), (96, 96)), ((64, 64), (95, 100)), ((512, 512), (240, 236)),
          ((256, 216), (183, 154)), ((7, 3), (2, 5)), ((1, 5), (3, 1))]  # fmt: skip


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize(("source", "target"), SHAPES)
def test_resampling_has_torchs_bilinear_weights(source: tuple[int, int], target: tuple[int, int],
                                                antialias: bool) -> None:  # fmt: skip
    # the numpy matrices reproduce F.interpolate (align_corners=False) with and without antialiasing, so
    # a torch-free predict maps images as training's preprocessing did
    images = np.random.default_rng(0).standard_normal((2, 3, *source))
    expected = F.interpolate(torch.from_numpy(images), size=target, mode="bilinear", align_corners=False,
                             antialias=antialias).numpy()  # fmt: skip
    np.testing.assert_allclose(resample(images, target, antialias), expected, rtol=0, atol=1e-12)
    single = resample(images.astype(np.float32), target, antialias)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-5)

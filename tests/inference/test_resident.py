"""The device-resident path (pipeline.inference.resident) against the numpy path on the CPU: the same labels
in every TTA mode and geometry, with and without locating the heart, the probabilities within float32
rounding; its percentiles bit for bit np.percentile's; the option and the inputs it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.checkpoint.view import View
from pipeline.errors import ConfigError, RequestError
from pipeline.inference import resident
from pipeline.inference.network import Network
from pipeline.inference.predict import Segmenter
from pipeline.models import build_model
from pipeline.preprocessing.geometry import Geometry
from pipeline.preprocessing.intensity import normalise
from tests.conftest import make_record

torch.set_num_threads(1)


class _Steep(nn.Module):
    """Ordinal classes of a feature f, with steep logits: class c wins where f passes c (c = 1, 2, 3).

    f is the middle frame, 1 added, plus a small asymmetric 3x3 neighbourhood and the change between the
    neighbouring frames, so flips and rotations change the output (test-time augmentation matters). The
    logits are steep (gain 10), so away from a class edge the classes are far from ties and the two
    paths' float32 rounding cannot change the argmax.
    """

    radius, num_classes = 1, 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        kernel = torch.zeros(3, 3, 3)
        kernel[1, 1, 1] = 1.0
        kernel[1, 0, 0], kernel[1, 0, 2], kernel[1, 2, 1] = 0.15, -0.1, 0.05  # asymmetric
        kernel[0, 1, 1], kernel[2, 1, 1] = -0.1, 0.1
        with torch.no_grad():
            self.conv.weight.copy_(kernel[None])

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        f = self.conv(clip) + 1.0
        return 10.0 * torch.cat([torch.zeros_like(f), f - 1.0, 2.0 * f - 3.0, 3.0 * f - 6.0], dim=1)


def _cine(seed: int = 0) -> np.ndarray:
    """(6, 3, 20, 24) float32 phantom: LV, MYO and RV on every slice, noise sd 5 on levels 100-400."""
    return make_record(seed=seed).cine.astype(np.float32)


SPACING = (8.0, 1.5, 1.25)
GEOMETRIES = {"resize": Geometry("resize", 32), "spacing": Geometry("spacing", 32, 1.0)}


def _pair(**kwargs: object) -> tuple[Segmenter, Segmenter]:
    """The numpy path and the resident path of one model and options."""
    model = _Steep()
    return Segmenter(model, resident=False, **kwargs), Segmenter(model, resident=True, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("tta", ["none", "flips", "dihedral"])
def test_both_paths_give_the_same_labels_and_probabilities(geometry: str, tta: str) -> None:
    numpy_path, device_path = _pair(geometry=GEOMETRIES[geometry], tta=tta, batch_size=5)
    assert not numpy_path.resident and device_path.resident
    cine = _cine()
    labels = numpy_path.predict(cine, spacing=SPACING)
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # every class, so every edge is compared
    np.testing.assert_array_equal(device_path.predict(cine, spacing=SPACING), labels)
    for mode in ("lcc_fill",):  # post-processing runs on the host on either path's labels
        np.testing.assert_array_equal(
            device_path.predict(cine, spacing=SPACING, postprocess=mode),
            numpy_path.predict(cine, spacing=SPACING, postprocess=mode),
        )
    probs = numpy_path.probabilities(cine, frames=[4, 0], spacing=SPACING)
    other = device_path.probabilities(cine, frames=[4, 0], spacing=SPACING)
    assert other.dtype == np.float32 and other.shape == probs.shape == (2, 3, 4, 20, 24)
    np.testing.assert_allclose(other, probs, atol=1e-5)


def _large_view_cine() -> np.ndarray:
    """The phantom pasted off-centre into a 70 x 80 field of view of background (105 x 100 mm at
    SPACING; training's view is 30 x 30 mm below, so the heart is located first)."""
    rng = np.random.default_rng(1)
    cine = (100.0 + rng.normal(0.0, 5.0, (6, 3, 70, 80))).astype(np.float32)
    cine[..., 12:32, 44:68] = _cine()
    return cine


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("tta", ["none", "dihedral"])
def test_both_paths_locate_the_heart_alike(geometry: str, tta: str) -> None:
    view = View((30.0, 30.0), (1.5, 1.25))
    numpy_path, device_path = _pair(geometry=GEOMETRIES[geometry], tta=tta, view=view, batch_size=7)
    cine = _large_view_cine()
    box = numpy_path.heart_window(cine, SPACING)
    assert box is not None and box != (slice(0, 70), slice(0, 80))
    assert device_path.heart_window(cine, SPACING) == box
    labels = numpy_path.predict(cine, spacing=SPACING)
    assert (labels[..., box[0], box[1]] == 3).any()
    np.testing.assert_array_equal(device_path.predict(cine, spacing=SPACING), labels)
    probs = numpy_path.probabilities(cine, frames=[1], spacing=SPACING)
    np.testing.assert_allclose(device_path.probabilities(cine, frames=[1], spacing=SPACING), probs, atol=1e-5)


def test_a_trained_like_network_gives_the_same_labels_too() -> None:
    """A real registry model (DeU-Net, offsets drawn as after training), on the phantom: no near-ties
    in this cine, so the labels are equal; the probabilities within float32 rounding."""
    torch.manual_seed(4)
    model = build_model("deunet", radius=1, base_channels=4, depth=2, offset_depth=2)
    for name, p in model.named_parameters():
        if "offset" in name:
            nn.init.normal_(p, 0.0, 0.2)
    kwargs = {"size": 32, "tta": "flips", "batch_size": 8}
    cine = _cine(3)
    numpy_path = Segmenter(model, resident=False, **kwargs)  # type: ignore[arg-type]
    device_path = Segmenter(model, resident=True, **kwargs)  # type: ignore[arg-type]
    np.testing.assert_allclose(device_path.probabilities(cine), numpy_path.probabilities(cine), atol=1e-5)
    np.testing.assert_array_equal(device_path.predict(cine), numpy_path.predict(cine))


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4099])
def test_percentiles_are_np_percentile_bit_for_bit(n: int) -> None:
    values = (np.random.default_rng(n).normal(size=n) * 300 + 50).astype(np.float32)
    for q in ((0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (50.0, 50.0), (33.3, 66.7)):
        expected = tuple(float(v) for v in np.percentile(values, q))
        assert resident.percentiles(torch.from_numpy(values), q) == expected


def test_normalisation_matches_numpy_within_float32_rounding() -> None:
    cine = _cine()
    expected, stats = normalise(cine, (0.5, 99.5))
    got = resident.normalise(torch.from_numpy(cine), (0.5, 99.5)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    flat = np.full((2, 1, 4, 4), 7.0, np.float32)  # a constant image: std 1, as numpy
    np.testing.assert_array_equal(resident.normalise(torch.from_numpy(flat), (0.5, 99.5)).numpy(), 0.0)
    assert stats["std"] > 0


class _FakeNetwork(Network):
    """A Network that only claims a device (never run)."""

    radius, num_classes, on_cpu = 1, 4, False

    def __init__(self, device: str | None) -> None:
        self.tensor_device = device


def test_the_option_defaults_to_cuda_only_and_refuses_what_it_cannot_run() -> None:
    unet = build_model("unet", radius=1, base_channels=4, depth=2)
    assert not Segmenter(unet, size=32).resident  # auto on a CPU: the numpy path
    assert Segmenter(_FakeNetwork("cuda"), size=32).resident  # auto on CUDA: the device path
    assert not Segmenter(_FakeNetwork(None), size=32).resident  # ONNX Runtime: numpy
    assert not Segmenter([_FakeNetwork("cuda:0"), _FakeNetwork("cuda:1")], size=32).resident
    assert not Segmenter(_FakeNetwork("cuda"), size=32, resident=False).resident
    for models, says in (
        (
            [_FakeNetwork(None)],
            r"resident=True needs torch networks on one device, got _FakeNetwork \(not torch\)",
        ),
        ([_FakeNetwork("cuda:0"), _FakeNetwork("cuda:1")], "got cuda:0, cuda:1"),
    ):
        with pytest.raises(ConfigError, match=says):
            Segmenter(models, size=32, resident=True)


def test_the_resident_path_refuses_bad_inputs_as_the_numpy_path() -> None:
    seg = Segmenter(_Steep(), size=32, resident=True)
    with pytest.raises(RequestError, match=r"expected a cine \(T, Z, Y, X\), got shape \(3, 20, 24\)"):
        seg.predict(_cine()[0])
    with pytest.raises(RequestError, match="cannot normalise an empty cine"):
        seg.predict(np.zeros((2, 0, 20, 24), np.float32))
    with pytest.raises(ValueError, match="needs the in-plane spacing"):
        Segmenter(_Steep(), geometry=GEOMETRIES["spacing"], resident=True).predict(_cine())
    with pytest.raises(ValueError, match=r"t0 must be in 0\.\.5"):
        seg.predict(_cine(), frames=[6])
    with pytest.raises(ValueError, match="tta must be one of"):
        resident.tta_views("sideways")

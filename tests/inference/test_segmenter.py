"""Segmenter: test-time augmentation, fold ensembles, post-processing, the recorded preprocessing, frames and
batches, and the options and inputs it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.checkpoint.io import save_checkpoint
from pipeline.checkpoint.preprocess import checkpoint_preprocess
from pipeline.errors import ConfigError, DataError, RequestError
from pipeline.inference.postprocess import fill_holes, postprocess
from pipeline.inference.predict import Segmenter
from pipeline.inference.tta import tta_transforms
from pipeline.models import build_model
from pipeline.preprocessing.geometry import Geometry

torch.set_num_threads(1)


class _Pointwise(nn.Module):
    """Logits from each pixel of the middle frame alone (a 1x1 convolution): commutes with flips and rot90."""

    def __init__(self, radius: int = 1) -> None:
        super().__init__()
        self.radius, self.num_classes = radius, 4
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.conv(clip[:, self.radius : self.radius + 1])


def _cine(seed: int = 0, shape: tuple[int, ...] = (5, 3, 28, 25)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_every_tta_view_is_inverted_exactly() -> None:
    x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
    for mode, n in (("none", 1), ("flips", 4), ("dihedral", 8)):
        views = tta_transforms(mode)
        assert len(views) == n
        assert len({tuple(f(x).flatten().tolist()) for f, _ in views}) == n  # all views differ
        for forward, inverse in views:
            np.testing.assert_array_equal(inverse(forward(x)), x)


@pytest.mark.parametrize("tta", ["flips", "dihedral"])
def test_tta_of_a_model_that_commutes_with_flips_equals_the_plain_prediction(tta: str) -> None:
    cine = _cine()
    plain = Segmenter(_Pointwise(), size=32, tta="none")
    augmented = Segmenter(_Pointwise(), size=32, tta=tta)
    np.testing.assert_allclose(augmented.probabilities(cine), plain.probabilities(cine), atol=1e-6)
    np.testing.assert_array_equal(augmented.predict(cine), plain.predict(cine))


def test_tta_changes_the_output_of_a_model_that_does_not_commute() -> None:
    torch.manual_seed(0)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    cine = _cine()
    plain = Segmenter(model, size=32).probabilities(cine)
    flipped = Segmenter(model, size=32, tta="flips").probabilities(cine)
    assert np.abs(plain - flipped).max() > 1e-4
    np.testing.assert_allclose(flipped.sum(2), 1.0, atol=1e-5)


def _checkpoint(path: Path, model: nn.Module, **preprocess: object) -> Path:
    pre = {"size": 32, "percentiles": [0.5, 99.5], "geometry": "resize", "spacing_mm": 1.5, **preprocess}
    save_checkpoint(path, model, None, preprocess=pre)  # type: ignore[arg-type]
    return path


def test_an_ensemble_of_two_identical_checkpoints_equals_one(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    a = _checkpoint(tmp_path / "a.pt", model)
    b = _checkpoint(tmp_path / "b.pt", model)
    cine = _cine(2)
    one = Segmenter.from_files([a])
    two = Segmenter.from_files([a, b])
    assert len(two.models) == 2
    np.testing.assert_allclose(two.probabilities(cine), one.probabilities(cine), atol=1e-6)
    np.testing.assert_array_equal(two.predict(cine), one.predict(cine))


def test_an_ensemble_of_different_models_averages_them(tmp_path: Path) -> None:
    torch.manual_seed(1)
    m1, m2 = (build_model("unet", radius=1, base_channels=4, depth=2) for _ in range(2))
    files = [_checkpoint(tmp_path / "a.pt", m1), _checkpoint(tmp_path / "b.pt", m2)]
    cine = _cine(3)
    mean = (
        Segmenter.from_files(files[:1]).probabilities(cine)
        + Segmenter.from_files(files[1:]).probabilities(cine)
    ) / 2
    np.testing.assert_allclose(Segmenter.from_files(files).probabilities(cine), mean, atol=1e-5)


@pytest.mark.parametrize(
    ("other", "says"),
    [
        ({"size": 48}, "size: 48 vs 32"),
        ({"geometry": "spacing"}, "geometry: 'spacing' vs 'resize'"),
        ({"percentiles": [1.0, 99.0]}, "percentiles"),
    ],
)
def test_an_ensemble_with_other_preprocessing_is_refused_naming_the_file(
    tmp_path: Path, other: dict, says: str
) -> None:
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    good = _checkpoint(tmp_path / "fold0.pt", model)
    bad = _checkpoint(tmp_path / "fold1.pt", model, **other)
    with pytest.raises(DataError, match=r"fold1\.pt.*cannot join the ensemble") as info:
        Segmenter.from_files([good, bad])
    assert says in str(info.value)


def test_recorded_preprocessing_is_typed_and_a_checkpoint_without_geometry_means_resize() -> None:
    old = checkpoint_preprocess({"preprocess": {"size": 48, "percentiles": [1.0, 99.0]}}, "old.pt")
    assert old.percentiles == (1.0, 99.0) and old.network_geometry() == Geometry("resize", 48)
    new = checkpoint_preprocess(
        {"preprocess": {"size": 32, "percentiles": [0.5, 99.5], "geometry": "spacing", "spacing_mm": 1.2}},
        "new.pt",
    )
    assert new.network_geometry() == Geometry("spacing", 32, 1.2)
    for pre, says in (
        (None, "does not record its preprocessing"),
        ({"size": 32}, "does not record its preprocessing"),
        ({"size": 60, "percentiles": [0.5, 99.5]}, "invalid preprocessing.*size must be a multiple of 8"),
        (
            {"size": 32, "percentiles": [0.5, 99.5], "sise": 3},
            r"invalid preprocessing.*preprocess\.sise: unknown",
        ),
    ):
        with pytest.raises(DataError, match=rf"fold3\.pt: checkpoint .*{says}"):
            checkpoint_preprocess({"preprocess": pre}, "fold3.pt")


def test_an_ensemble_with_another_radius_is_refused(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path / "fold0.pt", build_model("unet", radius=1, base_channels=4, depth=2))
    bad = _checkpoint(tmp_path / "fold1.pt", build_model("unet", radius=2, base_channels=4, depth=2))
    with pytest.raises(DataError, match=r"fold1\.pt: cannot join the ensemble: radius: 2 vs 1"):
        Segmenter.from_files([good, bad])


def test_spacing_geometry_needs_the_spacing() -> None:
    seg = Segmenter(_Pointwise(), geometry=Geometry("spacing", 32, 1.5))
    with pytest.raises(ValueError, match="needs the in-plane spacing"):
        seg.predict(_cine())
    assert seg.predict(_cine(), spacing=(8.0, 1.2, 1.7)).shape == (5, 3, 28, 25)


def test_a_checkpoint_replays_its_geometry_and_intensity_clipping(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    path = _checkpoint(tmp_path / "a.pt", model, geometry="spacing", spacing_mm=1.2, percentiles=[1.0, 99.0])
    seg = Segmenter.from_files([path], tta="flips", postprocess="lcc", batch_size=4)
    assert seg.geometry == Geometry("spacing", 32, 1.2) and seg.percentiles == (1.0, 99.0)
    assert (seg.tta, seg.postprocess, seg.batch_size) == ("flips", "lcc", 4)
    direct = Segmenter(model, geometry=Geometry("spacing", 32, 1.2), percentiles=(1.0, 99.0), tta="flips",
                       postprocess="lcc", batch_size=4)  # fmt: skip
    cine, spacing = _cine(6), (8.0, 1.2, 1.7)
    np.testing.assert_array_equal(seg.predict(cine, spacing=spacing), direct.predict(cine, spacing=spacing))


def test_frames_and_batches_select_and_split_the_work_without_changing_it() -> None:
    torch.manual_seed(3)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    cine = _cine(7)
    whole = Segmenter(model, size=32, batch_size=32).probabilities(cine)
    assert whole.shape == (5, 3, 4, 28, 25) and whole.dtype == np.float32  # (frames, Z, C, Y, X)
    np.testing.assert_allclose(whole.sum(2), 1.0, atol=1e-5)
    small = Segmenter(model, size=32, batch_size=2)  # 6 clips in 3 batches
    some = small.probabilities(cine, frames=[4, 0])
    np.testing.assert_allclose(some, whole[[4, 0]], atol=1e-5)
    labels = small.predict(cine, frames=[4, 0])
    assert labels.dtype == np.uint8 and labels.shape == (2, 3, 28, 25)
    np.testing.assert_array_equal(labels, some.argmax(2))


def test_batches_run_at_once_on_the_cpu_give_the_labels_of_one_after_another() -> None:
    torch.manual_seed(4)
    model = build_model("deunet", radius=1, base_channels=4, depth=2, offset_depth=2)
    for name, p in model.named_parameters():  # trained-like offsets: the offset heads start at zero
        if "offset" in name:
            nn.init.normal_(p, 0.0, 0.2)
    cine = _cine(8, (6, 4, 30, 27))  # 24 clips
    one = Segmenter(model, size=32, batch_size=5, cpu_workers=1)
    two = Segmenter(model, size=32, batch_size=5, cpu_workers=2)  # 5 batches over 2 threads
    np.testing.assert_array_equal(two.probabilities(cine), one.probabilities(cine))
    assert not (one.predict(cine) == 0).all()
    np.testing.assert_array_equal(
        two.predict(cine, postprocess="lcc_fill"), one.predict(cine, postprocess="lcc_fill")
    )


def test_bad_segmenter_options_and_inputs_are_refused() -> None:
    unet = build_model("unet", radius=1, base_channels=4, depth=2)
    other_r = build_model("unet", radius=2, base_channels=4, depth=2)
    other_c = build_model("unet", radius=1, num_classes=3, base_channels=4, depth=2)
    for kwargs, says in (
        ({"model": []}, "needs at least one model"),
        ({"model": unet, "size": None}, "needs the training size or geometry"),
        ({"model": unet, "tta": "sideways"}, "tta must be one of"),
        ({"model": unet, "postprocess": "largest"}, "postprocess must be one of"),
        ({"model": unet, "cpu_workers": 0}, "cpu_workers must be >= 1, got 0"),
        ({"model": [unet, other_r]}, r"ensemble members differ in radius \[1, 2\]"),
        ({"model": [unet, other_c]}, r"ensemble members differ in radius \[1\] or classes \[3, 4\]"),
    ):
        with pytest.raises(ConfigError, match=says):
            Segmenter(**{"size": 32, **kwargs})
    with pytest.raises(RequestError, match=r"expected a cine \(T, Z, Y, X\), got shape \(3, 28, 25\)"):
        Segmenter(unet, size=32).predict(_cine()[0])


def test_predict_applies_its_post_processing_per_frame() -> None:
    seg = Segmenter(build_model("unet", radius=1, base_channels=4, depth=2), size=32, postprocess="lcc_fill")
    cine = _cine(4)
    raw = seg.predict(cine, postprocess="raw")
    np.testing.assert_array_equal(seg.predict(cine), np.stack([postprocess(v, "lcc_fill") for v in raw]))


def test_lcc_removes_a_planted_stray_blob_and_keeps_the_main_component() -> None:
    labels = np.zeros((4, 40, 40), np.uint8)
    labels[:, 10:22, 10:22] = 3  # the LV
    labels[:, 8:24, 8:10] = 2  # a piece of myocardium beside it
    labels[1:3, 34:37, 34:37] = 3  # a stray LV blob 17 voxels away
    out = postprocess(labels, "lcc")
    assert not (out[1:3, 34:37, 34:37]).any()
    np.testing.assert_array_equal(out[:, :30, :30], labels[:, :30, :30])
    np.testing.assert_array_equal(postprocess(labels, "raw"), labels)


def test_fill_holes_fills_background_inside_a_structure_and_overwrites_nothing_else() -> None:
    labels = np.zeros((2, 20, 20), np.uint8)
    labels[:, 4:16, 4:16] = 2  # myocardial ring ...
    labels[:, 7:13, 7:13] = 3  # ... around the LV cavity
    labels[0, 9, 9] = 0  # a background speck inside the LV
    labels[1, 5, 5] = 0  # and one inside the myocardium
    out = fill_holes(labels)
    assert out[0, 9, 9] == 3 and out[1, 5, 5] == 2
    assert (out[labels != 0] == labels[labels != 0]).all()
    assert (out[:, :4] == 0).all()
    with pytest.raises(ValueError, match="postprocess must be one of"):
        postprocess(labels, "largest")


def test_bf16_on_the_cpu_is_opt_in() -> None:
    """Default (None) and False are the same fp32 path on the CPU; True runs bf16 autocast there when the
    CPU has native bf16 (probabilities differ a little: bf16 keeps ~3 significant digits), else stays fp32."""
    from pipeline.models.precision import cpu_has_native_bf16

    torch.manual_seed(4)
    model = build_model("unet", radius=1, base_channels=4, depth=2)
    cine = _cine(9)
    default = Segmenter(model, size=32).probabilities(cine)
    np.testing.assert_array_equal(default, Segmenter(model, size=32, bf16=False).probabilities(cine))
    bf16 = Segmenter(model, size=32, bf16=True).probabilities(cine)
    if cpu_has_native_bf16():
        assert not np.array_equal(bf16, default)
        np.testing.assert_allclose(bf16, default, atol=0.05)
    else:
        np.testing.assert_array_equal(bf16, default)

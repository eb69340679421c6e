"""ONNX exports: the same probabilities and labels as the checkpoint, a predict that never imports torch,
and clear errors for files that are not exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.checkpoint.io import save_checkpoint
from pipeline.checkpoint.view import View
from pipeline.data import imageio
from pipeline.errors import DataError
from pipeline.inference import onnx_export, onnx_network, predict_cli
from pipeline.inference.predict import Segmenter
from pipeline.models import available_models, build_model
from tests.conftest import make_record

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small DeU-Net checkpoint (batch norm, deformable offsets made non-zero, a recorded view) and
    its export written by the ``deunet export-onnx`` command."""
    torch.manual_seed(0)
    model = build_model("deunet", radius=1, base_channels=4, depth=2, norm="batch")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "offset" in name:  # zero-initialised: every deformable sample would sit on the grid
                p.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = folder / "fold0.pt"
    save_checkpoint(checkpoint, model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=0,
                    view=View((30.0, 30.0), (1.5, 1.25)).as_record(), val_dice=float("nan"))  # fmt: skip
    out = folder / "fold0.onnx"
    assert onnx_export.main(["--model", str(checkpoint), "--out", str(out)]) == 0
    return checkpoint, out


def _cine() -> tuple[np.ndarray, tuple[float, float, float]]:
    record = make_record(t=6, z=3, y=20, x=24)
    return record.cine.astype(np.float32), record.spacing


def test_the_export_gives_the_checkpoints_probabilities_and_labels(exported: tuple[Path, Path]) -> None:
    checkpoint, onnx = exported
    cine, spacing = _cine()
    for tta in ("none", "flips"):
        torch_seg = Segmenter.from_files([checkpoint], tta=tta, postprocess="lcc_fill")
        onnx_seg = Segmenter.from_files([onnx], tta=tta, postprocess="lcc_fill")
        assert type(onnx_seg.model).__name__ == "OnnxNetwork"
        np.testing.assert_allclose(onnx_seg.probabilities(cine, spacing=spacing),
                                   torch_seg.probabilities(cine, spacing=spacing), rtol=0, atol=1e-5)  # fmt: skip
        agree = (onnx_seg.predict(cine, spacing=spacing) == torch_seg.predict(cine, spacing=spacing)).mean()
        assert agree > 0.999, (tta, agree)
    # what predict needs from the checkpoint travels in the export; weights and NaN scores do not
    meta = onnx_seg.model.checkpoint  # type: ignore[attr-defined]
    assert meta["preprocess"]["size"] == 32 and meta["fold"] == 0 and meta["view"]["fov_mm"] == [30.0, 30.0]
    assert "state_dict" not in meta and "val_dice" not in meta


def test_predict_with_an_export_never_imports_torch_and_writes_the_same_labels(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, onnx = exported
    source = tmp_path / "cine.nii.gz"
    imageio.save_nifti(_cine()[0], make_record().affine, source)
    code = (
        "import sys\n"
        "from pipeline.inference.predict_cli import main\n"
        f"code = main(['--model', {str(onnx)!r}, '--input', {str(source)!r}, '--out', {str(tmp_path / 'onnx')!r}])\n"
        "print(code, 'torch' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-3:] == ["0", "False", "True"], run.stdout
    assert predict_cli.main(["--model", str(checkpoint), "--input", str(source), "--out", str(tmp_path / "pt"),
                             "--device", "cpu"]) == 0  # fmt: skip
    labels = {k: np.asarray(nib.load(tmp_path / k / "cine_labels.nii.gz").dataobj) for k in ("onnx", "pt")}
    assert (labels["onnx"] == labels["pt"]).mean() > 0.999
    indices = {k: json.loads((tmp_path / k / "cine_indices.json").read_text()) for k in ("onnx", "pt")}
    assert indices["onnx"] == indices["pt"]


def test_files_that_are_not_exports_are_refused_naming_the_file(exported: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:  # fmt: skip
    import onnx

    not_onnx = tmp_path / "garbage.onnx"
    not_onnx.write_bytes(b"not a protobuf at all")
    with pytest.raises(DataError, match=r"garbage\.onnx.*cannot read the ONNX model"):
        Segmenter.from_files([not_onnx])
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(exported[1]))
    del proto.metadata_props[:]
    onnx.save(proto, str(foreign))
    with pytest.raises(DataError, match=r"foreign\.onnx.*not a deunet export"):
        Segmenter.from_files([foreign])
    with pytest.raises(DataError, match=r"missing\.onnx.*missing"):
        Segmenter.from_files([tmp_path / "missing.onnx"])


def test_predict_refuses_an_export_on_a_gpu_and_a_mix_with_checkpoints(exported: tuple[Path, Path],
                                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    checkpoint, onnx = exported
    source = tmp_path / "cine.nii.gz"
    imageio.save_nifti(_cine()[0], make_record().affine, source)
    base = ["--input", str(source), "--out", str(tmp_path / "out")]
    assert predict_cli.main(["--model", str(onnx), "--device", "cuda", *base]) == 1
    assert "run on the CPU" in capsys.readouterr().err
    assert predict_cli.main(["--model", str(checkpoint), str(onnx), *base]) == 1
    assert "cannot mix ONNX exports and checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_export_that_disagrees_with_torch_or_a_bad_checkpoint_writes_nothing(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "model.onnx"
    monkeypatch.setattr(onnx_export, "EXPORT_TOLERANCE", -1.0)  # no difference can pass
    with pytest.raises(DataError, match="disagrees with torch"):
        onnx_export.export_onnx(exported[0], out)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 10)
    assert onnx_export.main(["--model", str(tmp_path / "broken.pt"), "--out", str(out)]) == 1
    assert "broken.pt" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("name", available_models())
def test_every_registry_model_exports_and_runs_like_torch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(name, radius=1, base_channels=4, depth=2)
    save_checkpoint(tmp_path / "m.pt", model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]})
    assert onnx_export.export_onnx(tmp_path / "m.pt", tmp_path / "m.onnx") <= onnx_export.EXPORT_TOLERANCE
    clips = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)  # a fourth batch size
    with torch.no_grad():
        expected = torch.softmax(model.eval()(torch.from_numpy(clips)), dim=1).numpy()
    np.testing.assert_allclose(
        onnx_network.OnnxNetwork(tmp_path / "m.onnx")(clips), expected, rtol=0, atol=1e-5
    )

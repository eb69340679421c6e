"""Shipped models: packaged whole with checksums, listed, picked by name, used by predict without --model,
refused with one clear error when a file is damaged, and registered in MLflow to serve without training."""

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
from pipeline.data.image_bytes import encode_cine
from pipeline.errors import DataError
from pipeline.inference import predict_cli, pretrained
from pipeline.inference.predict import Segmenter
from pipeline.models import build_model
from pipeline.serving import shipped
from tests.conftest import make_record

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny packaged models (a 2-member U-Net ensemble, the default, and one DeU-Net) in a fresh root."""
    folder = tmp_path_factory.mktemp("pretrained")
    ckpts = []
    for i, name in enumerate(("unet", "unet", "deunet")):
        torch.manual_seed(i)
        model = build_model(name, radius=1, base_channels=4, depth=2, norm="batch")
        path = folder / f"{name}{i}.pt"
        save_checkpoint(path, model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=i,
                        view=View((30.0, 30.0), (1.5, 1.25)).as_record(), history=[{"epoch": 1}])  # fmt: skip
        ckpts.append(path)
    root = folder / "root"
    pretrained.package("tiny-unet", ckpts[:2], root, summary="a tiny U-Net pair", card="# Tiny\n",
                       default=True, settings={"tta": "flips", "postprocess": "lcc_fill"},
                       cross_validation={"mean_dice": 0.5, "mean_hd_mm": 20.0})  # fmt: skip
    pretrained.package("tiny-deunet", ckpts[2:], root, summary="a tiny DeU-Net", card="# Tiny DeU-Net\n",
                       settings={"tta": "dihedral", "postprocess": "raw"})  # fmt: skip
    return root


def test_package_writes_a_whole_folder_with_checksums(shipped_root: Path) -> None:
    models = pretrained.shipped_models(shipped_root)
    assert [m.name for m in models] == ["tiny-unet", "tiny-deunet"]  # the default first
    unet = models[0]
    names = sorted(f["path"] for f in unet.manifest["files"])
    assert names == ["MODEL_CARD.md", "member0.onnx", "member0.pt", "member1.onnx", "member1.pt"]
    assert unet.manifest["architecture"] == {"model": "unet", "members": 2,
                                             "model_config": unet.manifest["architecture"]["model_config"]}  # fmt: skip
    for entry in unet.manifest["files"]:
        assert pretrained.sha256(unet.folder / entry["path"]) == entry["sha256"]
    # no training state travels: no optimizer moments, generator state or history
    ckpt = torch.load(unet.folder / "member0.pt", weights_only=True)
    assert ckpt["optimizer"] is None and "torch_rng" not in ckpt and "history" not in ckpt
    assert not list(shipped_root.glob(".*"))  # nothing half-built left beside the models
    # the ONNX export and the checkpoint are the same network
    cine = make_record(t=4, z=2, y=20, x=24)
    a = Segmenter.from_files(unet.files("onnx")).probabilities(
        cine.cine.astype(np.float32), spacing=cine.spacing
    )
    b = Segmenter.from_files(unet.files("torch")).probabilities(
        cine.cine.astype(np.float32), spacing=cine.spacing
    )
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_pick_by_name_default_and_unknown(shipped_root: Path) -> None:
    assert pretrained.shipped_model(None, shipped_root).name == "tiny-unet"
    assert pretrained.shipped_model("shipped:tiny-deunet", shipped_root).name == "tiny-deunet"
    with pytest.raises(DataError, match="no shipped model of this name; shipped: tiny-unet, tiny-deunet"):
        pretrained.shipped_model("shipped:nope", shipped_root)
    with pytest.raises(DataError, match="no shipped models"):
        pretrained.shipped_model(None, shipped_root / "empty")


def test_a_damaged_file_is_one_error_naming_it(shipped_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "root"
    shutil.copytree(shipped_root, root)
    victim = root / "tiny-unet" / "member1.onnx"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    model = pretrained.shipped_model("tiny-unet", root)
    with pytest.raises(DataError, match=r"member1\.onnx.*checksum mismatch") as err:
        model.files("onnx")
    assert "reinstall" in str(err.value)
    model.files("torch")  # the other files are fine
    (root / "tiny-unet" / "member0.pt").unlink()
    with pytest.raises(DataError, match=r"member0\.pt.*lacks this file"):
        model.files("torch")


def test_predict_takes_a_shipped_models_own_settings_unless_told(shipped_root: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(pretrained.shipped_model, "__defaults__", (None, shipped_root))
    assert predict_cli.shipped_settings(["shipped:tiny-deunet"], None, None) == ("dihedral", "raw")
    assert predict_cli.shipped_settings(["shipped:tiny-deunet"], "none", None) == ("none", "raw")
    assert predict_cli.shipped_settings(["shipped:tiny-unet"], None, "raw") == ("flips", "raw")
    assert predict_cli.shipped_settings(["fold0.pt"], None, None) == (
        predict_cli.DEFAULT_TTA,
        predict_cli.DEFAULT_POSTPROCESS,
    )


def test_predict_without_model_uses_the_default_shipped_model(shipped_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    record = make_record(t=5, z=3, y=20, x=24)
    source = tmp_path / "cine.nii.gz"
    source.write_bytes(encode_cine(record.cine.astype(np.float32), record.affine))
    monkeypatch.setattr(pretrained, "ROOT", shipped_root)
    monkeypatch.setattr(pretrained.shipped_models, "__defaults__", (shipped_root,))
    monkeypatch.setattr(pretrained.shipped_model, "__defaults__", (None, shipped_root))
    assert predict_cli.main(["--input", str(source), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "no --model: using the shipped model tiny-unet (a tiny U-Net pair" in err
    labels = nib.load(tmp_path / "a" / "cine_labels.nii.gz").get_fdata()
    assert labels.shape[-1] == 5
    # picked by name, the same files as given by path
    assert (
        predict_cli.main(
            ["--model", "shipped:tiny-unet", "--input", str(source), "--out", str(tmp_path / "b")]
        )
        == 0
    )
    files = [str(p) for p in pretrained.shipped_model("tiny-unet", shipped_root).files("onnx")]
    assert predict_cli.main(["--model", *files, "--input", str(source), "--out", str(tmp_path / "c")]) == 0
    for out in ("b", "c"):
        np.testing.assert_array_equal(nib.load(tmp_path / out / "cine_labels.nii.gz").get_fdata(), labels)
    assert (
        predict_cli.main(["--model", "shipped:nope", "--input", str(source), "--out", str(tmp_path / "d")])
        == 1
    )
    assert "no shipped model of this name" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_models_command_lists_the_repository_models() -> None:
    """`deunet models` in a fresh process: every shipped model of the repository, its checksums intact."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "models"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    models = pretrained.shipped_models()
    assert models, "the repository ships at least one model"
    for model in models:
        assert model.describe() in proc.stdout
        for kind in ("onnx", "torch"):
            assert model.files(kind)  # checksums verified
        total = sum(f["bytes"] for f in model.manifest["files"])
        assert (model.folder / pretrained.CARD).is_file()
        card = (model.folder / pretrained.CARD).read_text()
        assert "CC BY-NC-SA 4.0" in card and "not for clinical decisions" in card.lower()
        assert total > 0
    all_bytes = sum(p.stat().st_size for p in pretrained.ROOT.rglob("*") if p.is_file())
    assert all_bytes <= 12 * 2**20, f"shipped weights {all_bytes / 2**20:.1f} MiB > 12 MiB"
    assert json.loads((models[0].folder / pretrained.MANIFEST).read_text())["default"] is True


def test_register_a_shipped_model_to_serve_it(shipped_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Into a real SQLite registry, then loaded back as the served pyfunc and run on a cine."""
    import base64

    import mlflow
    import pandas as pd

    from pipeline.data.image_bytes import decode_nifti

    monkeypatch.setattr(pretrained.shipped_model, "__defaults__", (None, shipped_root))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # artifacts under ./mlruns of the test
    try:
        uri = shipped.register("tiny-unet", "deunet-cardiac", "shipped")
        assert uri.startswith("models:/deunet-cardiac@shipped (version 1")
        model = mlflow.pyfunc.load_model("models:/deunet-cardiac@shipped")
        record = make_record(t=4, z=2, y=20, x=24)
        data = encode_cine(record.cine.astype(np.float32), record.affine)
        row = model.predict(pd.DataFrame({"nifti": [base64.b64encode(data).decode("ascii")]})).iloc[0]
        assert len(json.loads(row["lv_volume_ml"])) == 4  # a volume per frame
        labels, _, _ = decode_nifti(base64.b64decode(row["labels_nifti"]))
        assert labels.shape == record.cine.shape and set(np.unique(labels)) <= {0, 1, 2, 3}
        # the served model applies the shipped settings: the same labels as the shipped files in a Segmenter
        seg = Segmenter.from_files(pretrained.shipped_model("tiny-unet", shipped_root).files("torch"),
                                   tta="flips", postprocess="lcc_fill")  # fmt: skip
        np.testing.assert_array_equal(
            labels, seg.predict(record.cine.astype(np.float32), spacing=record.spacing)
        )
        version = mlflow.MlflowClient().get_model_version_by_alias("deunet-cardiac", "shipped")
        assert version.tags["shipped_model"] == "tiny-unet"
        code = Path(mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/model/code"))
        assert (code / "pipeline" / "inference" / "pretrained.py").is_file()
        assert not (code / "pipeline" / "pretrained").exists()  # the shipped weights are not copied along
    finally:
        mlflow.set_tracking_uri(None)

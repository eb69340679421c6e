"""The logged pyfunc behind the REAL ``mlflow models serve`` (SQLite registry, alias champion), and the
local ``predict`` CLI. The server starts once per module (it takes ~10-30 s here)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import requests
import torch
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from pipeline.checkpoint.io import load_checkpoint, save_checkpoint
from pipeline.clinical.indices import clinical_indices, phases_from_curves, volume_curves
from pipeline.data.image_bytes import decode_dicom_zip, decode_nifti, encode_cine
from pipeline.inference import predict_cli
from pipeline.inference.predict import Segmenter
from pipeline.models import build_model
from pipeline.serving.model_logging import log_pyfunc_model
from tests.conftest import make_record

pytestmark = pytest.mark.slow

MAX_REQUEST_BYTES = 200_000
MAX_ZIP_MEMBERS = 100
MODEL_NAME = "cine-seg-test"
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120
# uvicorn answers 503 beyond this many concurrent requests (README: UVICORN_LIMIT_CONCURRENCY), which
# together with the request size limit bounds the server's memory.
LIMIT_CONCURRENCY = 4
# The served model's options: the pipeline's defaults (evaluate.tta, evaluate.postprocess)
TTA, POSTPROCESS = "flips", "lcc_fill"


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    checkpoint: Path  # fold 0 of the served two-fold ensemble
    checkpoints: list[Path]
    model_uri: str  # models:/<name>@champion
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    old_uri, old_env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_uri)  # type: ignore[arg-type]
        if old_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
        else:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def cine_b64(cine: np.ndarray, affine: np.ndarray) -> str:
    return base64.b64encode(encode_cine(cine, affine)).decode("ascii")


def invoke(url: str, values: list, timeout: float = 60) -> requests.Response:
    body = {"dataframe_split": {"columns": ["nifti"], "data": [[v] for v in values]}}
    return requests.post(f"{url}/invocations", json=body, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serving")
    torch.manual_seed(0)
    checkpoints = [tmp / "fold0.pt", tmp / "fold1.pt"]
    for fold, path in enumerate(checkpoints):  # a two-fold ensemble of different weights
        model = build_model("unet", radius=1, base_channels=4, depth=2)
        save_checkpoint(path, model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=fold)
    checkpoint = checkpoints[0]
    uri = f"sqlite:///{tmp}/mlflow.db"
    with tracking_uri(uri), torch_threads(1):
        experiment = mlflow.create_experiment("serving", artifact_location=(tmp / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_pyfunc_model(
                checkpoints,
                max_request_bytes=MAX_REQUEST_BYTES,
                max_zip_members=MAX_ZIP_MEMBERS,
                tta=TTA,
                postprocess=POSTPROCESS,
            )
        version = mlflow.register_model(info.model_uri, MODEL_NAME)
        MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version.version)
        model_uri = f"models:/{MODEL_NAME}@champion"

        port, log = free_port(), tmp / "server.log"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "1", "UVICORN_LIMIT_CONCURRENCY": str(LIMIT_CONCURRENCY)}  # fmt: skip
        cmd = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
        with log.open("wb") as sink:
            proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp,
                                    start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"server not up after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            yield Served(url, proc, checkpoint, checkpoints, model_uri, log)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


def local_segmenter(checkpoints: list[Path]) -> Segmenter:
    ckpts = [load_checkpoint(p) for p in checkpoints]
    return Segmenter.from_checkpoint(ckpts, device="cpu", tta=TTA, postprocess=POSTPROCESS)


def local_labels(checkpoints: list[Path], cine: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    with torch_threads(1):
        return local_segmenter(checkpoints).predict(cine, spacing=spacing)


def test_server_answers_like_the_local_prediction(served: Served) -> None:
    record = make_record()
    start = time.perf_counter()
    response = invoke(served.url, [cine_b64(record.cine, record.affine)])
    latency = time.perf_counter() - start
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]

    labels_http, spacing, affine = decode_nifti(base64.b64decode(row["labels_nifti"]))
    expected = local_labels(served.checkpoints, record.cine, record.spacing)
    np.testing.assert_array_equal(labels_http.astype(np.uint8), expected)
    np.testing.assert_allclose(affine, record.affine)
    assert spacing == pytest.approx(record.spacing)

    curves = volume_curves(expected, record.spacing)
    for name, column in (("LV", "lv_volume_ml"), ("RV", "rv_volume_ml"), ("MYO", "myo_volume_ml")):
        np.testing.assert_allclose(json.loads(row[column]), curves[name], atol=1e-6)
    if row["status"] == "ok":
        ed, es = phases_from_curves(curves)
        assert (row["ed_frame"], row["es_frame"]) == (ed, es)
        indices = clinical_indices(expected[ed], expected[es], record.spacing)
        for key in ("LV_EDV", "LV_ESV", "RV_EDV", "RV_ESV", "MYO_mass", "LV_EF", "RV_EF"):
            assert row[key] == pytest.approx(indices[key], nan_ok=True), key
    else:
        assert row["status"] == "no_lv"
    # quality control answers with every case: the same verdict as on the local labels and probabilities
    from pipeline.clinical.readout import segmented_readout
    from pipeline.clinical.report import case_quality

    with torch_threads(1):
        local = segmented_readout(local_segmenter(served.checkpoints), record.cine, expected, record.spacing)
    phases = {"ED", "ES"} if local.status == "ok" else {"ED"}
    suffixes = ("_basal", "_slice")  # where a ventricle is labelled
    always = {k.removesuffix("_structure") for k in local.consistency if not k.endswith(suffixes)}
    assert always == phases
    assert {k for k in local.consistency if k.endswith("_structure")} == {p + "_structure" for p in phases}
    assert {k.rsplit("_", 1)[0] for k in local.consistency if k.endswith(suffixes)} <= phases
    assert all(0.0 <= v <= 1.0 for v in local.consistency.values())
    quality = case_quality(expected, local)
    assert (row["qc_ok"], row["qc_flags"].split()) == (quality.ok, list(quality.flags))
    assert row["qc_score"] == pytest.approx(quality.score, abs=1e-4)
    print(f"request latency {latency * 1000:.0f} ms for a {record.cine.shape} cine")


def test_3d_request_is_one_frame_with_nan_indices(served: Served) -> None:
    record = make_record()
    response = invoke(served.url, [cine_b64(record.cine[0], record.affine)])
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert row["status"] == "single_frame" and row["ed_frame"] == row["es_frame"] == 0
    assert all(math.isnan(row[k]) for k in ("LV_EF", "LV_EDV", "RV_EF", "MYO_mass"))
    assert len(json.loads(row["lv_volume_ml"])) == 1


def _bad_requests() -> dict[str, object]:
    small_2d = nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)).to_bytes()
    five_d = nib.Nifti1Image(np.ones((8, 8, 2, 3, 2), np.float32), np.eye(4)).to_bytes()
    complex_cine = nib.Nifti1Image(np.ones((8, 8, 2, 3), np.complex64), np.eye(4)).to_bytes()
    nan_cine = np.ones((3, 2, 8, 8), np.float32)
    nan_cine[0, 0, 0, 0] = np.nan
    big = np.random.default_rng(0).normal(size=(8, 4, 48, 48)).astype(np.float32)  # ~270 KB gzip > limit
    return {
        "not-base64": "this is *not* base64!",
        "server-path": "/etc/passwd",
        "base64-junk": base64.b64encode(b"hello, I am not an image" * 10).decode(),
        "2d-nifti": base64.b64encode(small_2d).decode(),
        "5d-nifti": base64.b64encode(five_d).decode(),
        "complex-dtype": base64.b64encode(complex_cine).decode(),
        "nan-voxels": cine_b64(nan_cine, np.eye(4)),
        "over-limit": cine_b64(big, np.eye(4)),
        "gzip-bomb": base64.b64encode(gzip.compress(b"\0" * 20_000_000)).decode(),
        "number": 42,
    }


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_requests_get_4xx_with_a_message(served: Served, case: str) -> None:
    response = invoke(served.url, [_bad_requests()[case]])
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    body = response.json()
    assert body.get("message"), body
    assert "row 0: " in body["message"]  # our sentence, not MLflow's generic "unexpected error"
    assert requests.get(f"{served.url}/ping", timeout=5).status_code == 200
    print(f"{case}: {response.status_code} {body['error_code']} {body['message'][-200:]!r}")


def invoke_zip(url: str, data: bytes) -> requests.Response:
    body = {"dataframe_split": {"columns": ["dicom_zip"], "data": [[base64.b64encode(data).decode("ascii")]]}}
    return requests.post(f"{url}/invocations", json=body, timeout=60)


def test_zipped_dicom_series_gets_the_labels_of_the_same_cine(served: Served, tmp_path: Path) -> None:
    from tests.data.test_image_bytes import dicom_zip

    record = make_record(seed=5)
    data = dicom_zip(tmp_path, record)
    response = invoke_zip(served.url, data)
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    labels, _, affine = decode_nifti(base64.b64decode(row["labels_nifti"]))
    cine, dicom_spacing, dicom_affine = decode_dicom_zip(data)  # what the server read from the zip
    np.testing.assert_array_equal(
        labels.astype(np.uint8), local_labels(served.checkpoints, cine, dicom_spacing)
    )
    np.testing.assert_allclose(affine, record.affine, atol=1e-5)
    nifti_row = invoke(served.url, [cine_b64(cine, dicom_affine)]).json()["predictions"][0]
    assert {k: row[k] for k in row if k != "labels_nifti"} == {
        k: nifti_row[k] for k in nifti_row if k != "labels_nifti"
    }


@pytest.mark.parametrize("case", ["zip-slip", "too-many-members", "zip-bomb", "not-a-zip", "over-limit"])
def test_bad_dicom_zips_get_400(served: Served, tmp_path: Path, case: str) -> None:
    import io
    import zipfile

    from tests.data.test_image_bytes import dicom_zip

    if case == "zip-slip":
        data = dicom_zip(tmp_path, extra={"../../../tmp/owned.dcm": b"x"})
    elif case == "too-many-members":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for i in range(MAX_ZIP_MEMBERS + 1):
                zf.writestr(f"m{i}", b"")
        data = buffer.getvalue()
    elif case == "zip-bomb":
        data = dicom_zip(tmp_path, extra={"bomb.dcm": b"\0" * 100_000_000})
    elif case == "not-a-zip":
        data = b"PK\x03\x04 truncated"
    else:
        data = dicom_zip(tmp_path, extra={"big.bin": np.random.default_rng(0).bytes(MAX_REQUEST_BYTES)})
    response = invoke_zip(served.url, data)
    assert response.status_code == 400, (response.status_code, response.text[:500])
    message = response.json()["message"]
    assert "row 0: " in message
    reason = {"zip-slip": "(zip-slip)", "too-many-members": f"members, more than the limit of {MAX_ZIP_MEMBERS}",
              "zip-bomb": "(a zip bomb?)", "not-a-zip": "not a zip archive", "over-limit": "larger than the limit"}  # fmt: skip
    assert reason[case] in message, message  # refused for its own reason, not a later one
    print(f"{case}: {message[-160:]!r}")
    assert not Path("/tmp/owned.dcm").exists()


def test_not_json_and_wrong_column_get_4xx(served: Served) -> None:
    response = requests.post(f"{served.url}/invocations", data=b"\x00\x01", timeout=30,
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert 400 <= response.status_code < 500
    print(f"not-json: {response.status_code} {response.text[:300]!r}")
    response = requests.post(f"{served.url}/invocations", timeout=30,
                             json={"dataframe_split": {"columns": ["path"], "data": [["/etc/passwd"]]}})  # fmt: skip
    assert 400 <= response.status_code < 500
    print(f"wrong-column: {response.status_code} {response.text[:300]!r}")
    assert requests.get(f"{served.url}/ping", timeout=5).status_code == 200


def _server_rss_mb(proc: subprocess.Popen) -> float:
    import psutil

    root = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def test_a_burst_of_concurrent_requests_succeeds_or_gets_503_and_memory_stays_bounded(served: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    record = make_record(t=6, z=3, y=40, x=40)
    payload = cine_b64(record.cine, record.affine)
    assert invoke(served.url, [payload]).status_code == 200  # warm: the model is loaded
    before = _server_rss_mb(served.proc)
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda _: invoke(served.url, [payload], timeout=120).status_code, range(32)))
    after = _server_rss_mb(served.proc)
    print(
        f"burst of 32 (16 at a time, limit {LIMIT_CONCURRENCY}): {sorted(codes)}; RSS {before:.0f} -> {after:.0f} MB"
    )
    assert set(codes) <= {200, 503}, codes  # every request is answered or cleanly refused
    assert codes.count(200) >= 1 and codes.count(503) >= 1  # the limit is real and service continues
    assert after - before < 300, (before, after)  # bounded: at most LIMIT_CONCURRENCY requests in memory
    assert invoke(served.url, [payload]).status_code == 200  # and it keeps serving afterwards


def test_server_listens_on_loopback_only(served: Served) -> None:
    import psutil

    root = psutil.Process(served.proc.pid)
    listening = [c.laddr for p in [root, *root.children(recursive=True)] for c in p.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]  # fmt: skip
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, listening


def test_predict_cli_with_checkpoint_and_registry(served: Served, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    record = make_record()
    source = tmp_path / "cine.nii.gz"
    source.write_bytes(encode_cine(record.cine, record.affine, dtype=np.int16))
    expected = local_labels(served.checkpoints, record.cine, record.spacing)

    with torch_threads(1):
        assert predict_cli.main(["--model", *map(str, served.checkpoints), "--input", str(source), "--out",
                                 str(tmp_path / "ckpt"), "--device", "cpu", "--tta", TTA,
                                 "--postprocess", POSTPROCESS]) == 0  # fmt: skip
    assert "cine.nii.gz: 6 frame(s)" in capsys.readouterr().out
    out = tmp_path / "ckpt"
    img = nib.Nifti1Image.from_filename(out / "cine_labels.nii.gz")
    assert img.shape == (24, 20, 3, 6)
    np.testing.assert_allclose(img.affine, record.affine)
    np.testing.assert_array_equal(np.transpose(np.asarray(img.dataobj), (3, 2, 1, 0)), expected)
    table = pd.read_csv(out / "cine_volumes.csv")
    assert list(table.columns) == ["frame", "LV_ml", "RV_ml", "MYO_ml"] and len(table) == 6
    np.testing.assert_allclose(table["LV_ml"], volume_curves(expected, record.spacing)["LV"], atol=1e-5)
    assert (out / "cine_volumes.png").stat().st_size > 1000
    indices = json.loads((out / "cine_indices.json").read_text())
    assert {"ed_frame", "es_frame", "LV_EF", "MYO_mass", "status"} <= set(indices)

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    with tracking_uri(f"sqlite:///{served.checkpoint.parent}/mlflow.db"), torch_threads(1):
        assert predict_cli.main(["--model", served.model_uri, "--input", str(source),
                                 "--out", str(tmp_path / "uri"), "--device", "cpu"]) == 0  # fmt: skip
    assert os.environ.get("MLFLOW_TRACKING_URI") == uri
    assert (tmp_path / "uri" / "cine_labels.nii.gz").read_bytes() == (out / "cine_labels.nii.gz").read_bytes()
    assert (tmp_path / "uri" / "cine_indices.json").read_text() == (out / "cine_indices.json").read_text()


def test_predict_cli_bad_input_names_the_file(served: Served, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    code = predict_cli.main(["--model", str(served.checkpoint), "--input", str(bad), "--out", str(tmp_path)])
    assert code == 1
    assert str(bad) in capsys.readouterr().err
    missing = tmp_path / "missing.nii.gz"
    assert predict_cli.main(["--model", str(served.checkpoint), "--input", str(missing),
                             "--out", str(tmp_path)]) == 1  # fmt: skip
    assert "missing" in capsys.readouterr().err


def test_predict_served_model_and_evaluate_give_identical_labels(served: Served, tmp_path: Path) -> None:
    """One code path: ``deunet predict``, the HTTP server and evaluate's headline variant agree exactly."""
    from pipeline.evaluation.config import EvaluateConfig
    from pipeline.evaluation.runner import evaluate_patient
    from tests.conftest import write_patient

    record = make_record(seed=3)
    folder = write_patient(record, tmp_path / "raw")
    source = next(folder.glob("*_4d.nii.gz"))
    with torch_threads(1):
        assert predict_cli.main(["--model", *map(str, served.checkpoints), "--input", str(source),
                                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0  # fmt: skip
        seg = Segmenter.from_files(served.checkpoints, device="cpu", tta=TTA, postprocess=POSTPROCESS)
        result = evaluate_patient(
            seg, folder, 0, EvaluateConfig(postprocess=POSTPROCESS, tta=TTA, whole_cycle=False)
        )
    img = nib.Nifti1Image.from_filename(tmp_path / "out" / f"{source.name[:-7]}_labels.nii.gz")
    cli = np.transpose(np.asarray(img.dataobj), (3, 2, 1, 0)).astype(np.uint8)
    response = invoke(served.url, [base64.b64encode(source.read_bytes()).decode("ascii")])
    assert response.status_code == 200, response.text
    http, _, _ = decode_nifti(base64.b64decode(response.json()["predictions"][0]["labels_nifti"]))
    np.testing.assert_array_equal(http.astype(np.uint8), cli)
    for phase in ("ED", "ES"):
        np.testing.assert_array_equal(cli[record.frame_index(phase)], result.arrays[f"pred_{phase}"])
    assert cli.any()  # the untrained ensemble still labels something: the comparison is not of empties

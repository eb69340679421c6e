"""report.html and cohort.html as a person sees them: rendered by a real headless Chromium (Debian's
package; .ci/run installs it, elsewhere the test is skipped without it), checked for the verdict, the
numbers, the curves and the contour images on screen."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from pipeline.checkpoint.io import save_checkpoint
from pipeline.clinical.report_html import COLOURS, overlay, png
from pipeline.data.acdc import write_patient
from pipeline.inference import predict_cli
from pipeline.models import build_model
from tests.conftest import make_record


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail("REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _browser(*args: str) -> str:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """predict on a folder of two ACDC patients (Info.cfg with height and weight) with a small U-Net."""
    root = tmp_path_factory.mktemp("html")
    torch.manual_seed(0)
    model = build_model("unet", radius=1, base_channels=4, depth=2, norm="batch")
    save_checkpoint(root / "m.pt", model, None, preprocess={"size": 32, "percentiles": [0.5, 99.5]}, fold=0)
    for i in (1, 2):
        write_patient(make_record(f"patient00{i}", t=6, z=3, y=20, x=24, seed=i), root / "raw")
    assert (
        predict_cli.main(
            ["--model", str(root / "m.pt"), "--input", str(root / "raw"), "--out", str(root / "out")]
        )
        == 0
    )
    return root / "out"


def test_png_and_overlay_are_exact() -> None:
    """The page's images: a valid PNG that decodes to the same pixels; contours in the structures' colours."""
    labels = np.zeros((10, 12), np.uint8)
    labels[3:7, 3:8] = 3
    rgb = overlay(np.arange(120, dtype=np.float32).reshape(10, 12), labels, (0.0, 119.0))
    assert rgb.shape == (30, 36, 3)
    decoded = (
        matplotlib.image.imread(__import__("io").BytesIO(png(rgb)), format="png")[..., :3] * 255
    ).round()
    np.testing.assert_array_equal(decoded.astype(np.uint8), rgb)
    lv = np.all(rgb == COLOURS["LV"], axis=-1)
    assert lv.any() and not lv[:9].any()  # the contour, only where the LV is


def test_chromium_shows_the_report(predicted: Path, tmp_path: Path) -> None:
    case = predicted / "patient001"
    report = json.loads((case / "patient001_report.json").read_text())
    page = case / "patient001_report.html"
    dom = _browser("--dump-dom", page.as_uri())
    qc = report["quality"]
    assert ("Quality control ok" in dom) if qc["ok"] else all(f in dom for f in qc["flags"])
    lv = report["LV"]
    for key in ("EDV_ml", "ESV_ml", "EF_pct"):
        if lv[key] is not None:
            status = report["reference"]["indices"].get(f"LV_{key}", {}).get("status")
            arrow = {"low": " ↓", "high": " ↑"}.get(status, "")
            assert re.search(f'id="LV_{key}"[^>]*>{re.escape(str(lv[key]) + arrow)}</td>', dom), key
    assert "Outside the adult reference range" in dom and "Hudsmith" in dom  # the ranges and their source
    assert f"{report['body']['bsa_m2']} m²" in dom  # Info.cfg: 170 cm, 70 kg
    assert dom.count("<img ") == 2 * 3 and dom.count("data:image/png;base64,") == 6  # ED and ES, 3 slices
    assert "<polyline" in dom
    shot = tmp_path / "report.png"
    _browser("--window-size=1200,2600", f"--screenshot={shot}", page.as_uri())
    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(np.uint8)
    banner = (0xE3, 0xF6, 0xE5) if qc["ok"] else (0xFD, 0xE2, 0xE0)
    assert np.all(pixels == banner, axis=-1).sum() > 1000  # the QC verdict's banner is on screen
    seen = [name for name, rgb in COLOURS.items() if np.all(pixels == rgb, axis=-1).sum() > 20]
    assert seen, "no contour colour on screen"


def test_chromium_shows_the_cohort_flagged_first(predicted: Path) -> None:
    rows = list(csv.DictReader((predicted / "summary.csv").open()))
    dom = _browser("--dump-dom", (predicted / "cohort.html").as_uri())
    positions = {r["case"]: dom.index(f'href="{r["case"]}/{r["case"]}_report.html"') for r in rows}
    flagged = [r["case"] for r in rows if r["qc_ok"] == "False"]
    clean = [r["case"] for r in rows if r["qc_ok"] == "True"]
    assert all(positions[f] < positions[c] for f in flagged for c in clean)
    for r in rows:  # every link leads to a report that exists
        assert (predicted / r["case"] / f"{r['case']}_report.html").is_file()

"""Shared fixtures: small valid ACDC-layout patients made on the fly, a tiny preprocessed store and
split for training and tuning, and the real acdc-roi sample."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.data.acdc import PatientInfo, PatientRecord, affine_from_spacing, write_patient
from pipeline.data.phantom import PhantomConfig, generate_dataset
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.run import preprocess_dataset
from pipeline.splitting.config import SplitConfig
from pipeline.splitting.folds import make_split, write_split

REPO = Path(__file__).resolve().parents[1]
ACDC_ROI = Path(os.environ.get("ACDC_ROI", REPO.parent / "shared" / "data" / "acdc-roi"))

# Quiet, offline tools in every test process.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def make_record(pid: str = "patient001", t: int = 6, z: int = 3, y: int = 20, x: int = 24, seed: int = 0,
                rotation: np.ndarray | None = None) -> PatientRecord:  # fmt: skip
    """A small hand-made patient: a disk of LV, a ring of MYO and a blob of RV on every slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:y, :x]
    labels = np.zeros((t, z, y, x), np.uint8)
    for f in range(t):
        r = 5 - 2 * np.sin(np.pi * f / t)  # contracts over the cycle
        d = np.hypot(yy - y / 2, xx - x / 2)
        lab = np.zeros((y, x), np.uint8)
        lab[(d >= r) & (d < r + 2)] = 2
        lab[d < r] = 3
        lab[(np.hypot(yy - y / 2, xx - 3) < 3) & (lab == 0)] = 1
        labels[f] = lab
    cine = (100 + 300 * (labels == 3) + 150 * (labels == 1) + 80 * (labels == 2)).astype(np.float32)
    cine += rng.normal(0, 5, cine.shape).astype(np.float32)
    info = PatientInfo(ed=1, es=t // 2 + 1, nb_frames=t, group="NOR", height_cm=170.0, weight_kg=70.0)
    spacing = (8.0, 1.5, 1.25)
    return PatientRecord(
        patient_id=pid,
        cine=np.round(cine),
        spacing=spacing,
        affine=affine_from_spacing(spacing, rotation),
        info=info,
        labels={"ED": labels[0], "ES": labels[info.es - 1]},
        cine_labels=labels,
    )


@pytest.fixture
def patient_dir(tmp_path: Path) -> Path:
    """A valid small patient folder written in the ACDC layout."""
    return write_patient(make_record(), tmp_path / "raw")


@pytest.fixture
def acdc_roi() -> Path:
    if not (ACDC_ROI / "patient002").is_dir():
        pytest.skip(f"real ACDC sample not found at {ACDC_ROI} (set ACDC_ROI)")
    return ACDC_ROI


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/raw (5 phantom patients), root/pre (32x32 store), root/folds.json (2 folds)."""
    root = tmp_path_factory.mktemp("tiny")
    cfg = PhantomConfig(n_patients=5, matrix=(48, 48), n_frames=(8, 10), n_slices=(4, 5))
    generate_dataset(root / "raw", cfg)
    preprocess_dataset(root / "raw", root / "pre", PreprocessConfig(size=32, workers=1), progress=False)
    groups = {f"patient{i:03d}": g for i, g in enumerate(("NOR", "DCM", "HCM", "MINF", "RV"), 1)}
    write_split(make_split(groups, SplitConfig(n_folds=2)), root / "folds.json")
    return root


def _postgres_bin() -> Path | None:
    """The folder holding initdb/pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth, user ``deunet``) for the session.

    ``.ci/run`` installs PostgreSQL when it is missing and sets REQUIRE_POSTGRES=1, so CI fails rather
    than skips; elsewhere the tests that need it are skipped when no server binaries are found.
    """
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but no PostgreSQL server binaries (initdb) were found")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="deunet-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True, timeout=120)

    pg(str(bindir / "initdb"), "-D", str(root / "db"), "-U", "deunet", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(str(bindir / "pg_ctl"), "-D", str(root / "db"), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"postgresql://deunet@127.0.0.1:{port}"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(root / "db"), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_db(postgres_url: str, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Makes fresh, empty databases on the session's server: ``postgres_db("optuna")`` -> its URL."""
    import psycopg2

    def make(purpose: str) -> str:
        name = "".join(c if c.isalnum() else "_" for c in f"{request.node.name}_{purpose}".lower())[-60:]
        conn = psycopg2.connect(f"{postgres_url}/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return f"{postgres_url}/{name}"

    return make


# A tiny synthetic pipeline (5 phantom patients, a 4-channel U-Net, 2 epochs): end-to-end runs in ~1 min.
TINY_PIPELINE_PARAMS: dict[str, dict] = {
    "download": {"synthetic": {"n_patients": 5, "matrix": [48, 48], "n_frames": [8, 10], "n_slices": [4, 5]}},
    "preprocess": {"size": 32},
    "train": {
        "model": "unet",
        "model_args": {"base_channels": 4, "depth": 2},
        "max_epochs": 2,
        "batch_size": 8,
    },
    "evaluate": {"overlays": 1},
}


def set_params(project: Path, **sections: dict) -> None:
    """Update sections of ``project``/params.yaml (created if absent)."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text()) if path.exists() else {}
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_pipeline(dst: Path) -> Path:
    """Copy the project's code, dvc.yaml and params.yaml (with TINY_PIPELINE_PARAMS) to ``dst``; the
    caller runs git/dvc init with its own environment."""
    dst.mkdir(parents=True)
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, dst / name)
    set_params(dst, **TINY_PIPELINE_PARAMS)
    return dst

"""benchmarks.gpu_check on the CPU: the bundle (pipeline.experiments.device_bundle) keeps every clip of r <= 1
exactly; the deformable convolution's paths agree (pipeline.experiments.deform_check); ``prepare`` then the
``--dry-run`` of every section end to end (JSON, markdown, weights) in a fresh Python without the packages
the GPU machine lacks; a second dry run with ``--resume`` skips what the first measured; a failing section
is recorded and the run goes on; training against a deadline (pipeline.experiments.timed_training) stops
between epochs. The script runs as a user runs it, in a subprocess: no test imports it."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoint.io import load_checkpoint
from pipeline.data.phantom import PhantomConfig, generate_dataset, iter_records
from pipeline.experiments import device_bundle
from pipeline.experiments.deform_check import compare_paths
from pipeline.experiments.timed_training import train_until
from pipeline.preprocessing.clips import clip_frames
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.training.config import TrainConfig
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

SECTIONS = (
    "deform_conv",
    "train_step",
    "speed_inference",
    "speed_training",
    "table1",
    "cpu_vs_cuda",
    "more_folds",
)
#: Not installed on the GPU machine: a run there must never import them.
ABSENT = ("mlflow", "dvc", "prefect", "optuna", "great_expectations", "pydicom", "hypothesis", "medpy")
#: ``python -c``: hide ABSENT (importing one raises ModuleNotFoundError), run the PRELUDE (a test may break a
#: library function there), then ``python -m benchmarks.gpu_check`` with the remaining arguments.
LAUNCH = f"""
import runpy
import sys
ABSENT = {ABSENT!r}
class Absent:  # every finder answers "not found" for ABSENT, as where they are not installed
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            return None
        return self.inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Absent(finder) for finder in sys.meta_path]
assert not [name for name in sys.modules if name.partition(".")[0] in ABSENT]
exec(sys.argv.pop(1))  # the PRELUDE
runpy.run_module("benchmarks.gpu_check", run_name="__main__")
"""
ROOT = Path(__file__).resolve().parents[2]

SMALL = PhantomConfig(n_patients=6, matrix=(48, 48), n_frames=(8, 10), n_slices=(4, 5))


def test_bundle_keeps_every_clip_of_radius_one_and_refuses_non_int16() -> None:
    for record in iter_records(
        PhantomConfig(n_patients=3, matrix=(48, 48), n_frames=(4, 12), n_slices=(4, 4))
    ):
        record.cine[...] = np.round(record.cine)
        back = device_bundle.unpack(record.patient_id, device_bundle.pack(record))
        assert back.n_frames == len(device_bundle.kept_frames(record)) <= min(6, record.n_frames)
        for phase in PHASES:
            assert np.array_equal(back.labels[phase], record.labels[phase])
            for r in (0, 1):
                ours = back.cine[clip_frames(back.frame_index(phase), back.n_frames, r)]
                theirs = record.cine[clip_frames(record.frame_index(phase), record.n_frames, r)]
                assert np.array_equal(ours, theirs), (record.patient_id, phase, r)
        assert back.spacing == record.spacing and np.array_equal(back.affine, record.affine)
    record.cine[0, 0, 0, 0] += 0.5
    with pytest.raises(ValueError, match="int16"):
        device_bundle.pack(record)


def test_deformable_paths_agree_on_the_cpu_away_from_the_kinks() -> None:
    rows = [compare_paths(torch.device("cpu"), 2, 3, 12, 12, 4, 3, modulated) for modulated in (False, True)]
    assert all(r["ok"] and r["offset_out_of_tol_kept"] == 0.0 for r in rows), rows
    assert all(0 < r["offset_kept"] < r["offset_elements"] for r in rows)  # some taps sit on a kink
    assert {"x", "offset", "weight", "bias", "mask"} == set(rows[1]["backward_rel_err"])


def test_training_stops_between_epochs_at_the_deadline(tiny_data: Path, tmp_path: Path) -> None:
    """What Table 1 trains with: the clock stops it after an epoch (the dry run, unclocked, never does), and
    its real clips/s are the medians after the first epoch."""
    store, split = ClipStore(tiny_data / "pre"), read_split(tiny_data / "folds.json")
    cfg = TrainConfig(model="unet", model_args={"base_channels": 4, "depth": 2}, max_epochs=3, patience=3,
                      batch_size=8, device="cpu", threads=1, resume=False)  # fmt: skip
    stopped = train_until(store, split, cfg, tmp_path, 0, deadline=time.monotonic())
    assert stopped.stopped_by_clock and stopped.steps == "eager" and len(stopped.history) == 1
    # what is published is the epoch the clock ended, not an older last.pt
    assert stopped.checkpoint == tmp_path / "fold0" / "final.pt"
    assert load_checkpoint(stopped.checkpoint)["epoch"] == 1
    assert stopped.rates(10, 5.0)["real_clips_per_s"] is None  # no epoch after the first
    full = train_until(store, split, cfg, tmp_path, 0, deadline=time.monotonic() + 3600)
    assert not full.stopped_by_clock and full.steps == "eager" and len(full.history) == 3
    assert full.checkpoint.is_file() and all(h["wall_s"] >= h["train_s"] > 0 for h in full.history)
    rates = full.rates(10, 5.0, drop_last=True)
    assert rates["real_clips_per_s"] == 10 / full.history[1]["train_s"]
    assert rates["wall_fraction"] == 10 / full.history[1]["wall_s"] / 5.0
    no_raw = full.rates(10, None)
    assert no_raw["wall_clips_per_s"] == 10 / statistics.median(h["wall_s"] for h in full.history[1:])
    assert no_raw["real_fraction"] is None


def _sections(out: Path) -> dict:
    return json.loads((out / "gpu_check.json").read_text())["sections"]


def _gpu_check(args: list[str], prelude: str = "") -> None:
    """``python -m benchmarks.gpu_check ARGS`` in a fresh Python where ABSENT cannot be imported, after
    ``prelude``; it must exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", LAUNCH, prelude, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _run_without_absent(args: list[str]) -> dict:
    """The dry run in a fresh Python where ABSENT cannot be imported; its report."""
    _gpu_check(["run", "--dry-run", "--threads", "1", *args])
    out = Path(args[args.index("--out") + 1])
    report = json.loads((out / "gpu_check.json").read_text())
    statuses = {n: s["status"] for n, s in report["sections"].items()}
    assert list(statuses) == [*SECTIONS]
    assert all(s == "ok" or (s.startswith("skipped: ") and len(s) > 12) for s in statuses.values()), statuses
    return report


@pytest.mark.slow
def test_prepare_and_dry_run_write_every_section_and_resume(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "raw", SMALL)
    bundle, site, out, work = (tmp_path / name for name in ("bundle", "site", "out", "work"))
    prepare = ["prepare", "--source", str(tmp_path / "raw"), "--out", str(bundle), "--site", str(site)]
    _gpu_check(prepare)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert len(meta["patients"]) == 6 and meta["check_patient"] in meta["fold0_val"]
    assert meta["frames_kept"] < meta["frames_total"]
    assert 0 < meta["bytes"] < device_bundle.folder_bytes(bundle)
    assert (site / "nibabel" / "__init__.py").is_file() and not list(site.rglob("tests"))

    run = ["--bundle", str(bundle), "--work", str(work)]
    # --workers 2: the process pools and DataLoader workers of the GPU run, here too
    report = _run_without_absent([*run, "--workers", "2", "--out", str(out)])
    sections = report["sections"]
    assert {n: s["status"] for n, s in sections.items()} == dict.fromkeys(SECTIONS, "ok"), sections
    assert (
        report["meta"]["dry_run"]
        and report["meta"]["device"] == "cpu"
        and report["meta"]["bundle"]["patients"] == 6
    )

    deform = sections["deform_conv"]["result"]
    assert len(deform["cases"]) == 3 and all(c["forward_rel_err"] <= 1e-4 for c in deform["cases"])
    assert {"x", "offset", "weight", "mask"} <= set(deform["cases"][1]["backward_rel_err"])
    assert all(
        c["offset_out_of_tol_kept"] == 0.0 and c["offset_kept"] < c["offset_elements"]
        for c in deform["cases"]
    )
    assert deform["gradcheck_float64"] == {"grid_sample": True, "torchvision": True}
    assert deform["speed"]["torchvision_ms"] > 0 and deform["speed"]["grid_sample_ms"] > 0
    steps = sections["train_step"]["result"]["rows"]
    assert len(steps) == 8 and all(math.isfinite(r["loss"]) and r["grads_finite"] for r in steps)
    infer = sections["speed_inference"]["result"]["rows"]
    assert {r["model"] for r in infer} == {"unet", "deunet"} and all(r["seconds"] > 0 for r in infer)
    train = sections["speed_training"]["result"]["rows"]
    assert len(train) == 10 and all(r["clips_per_s"] > 0 for r in train)
    speed = sections["speed_training"]["result"]
    assert speed["cuda_graph"] is False  # the CPU: eager steps, so no eager variant rows either
    variants = speed["variants"]  # NCHW, one choice of the trainer changed
    assert [r["channels_last"] for r in variants] == [False, False] and all(
        r["clips_per_s"] > 0 for r in variants
    )
    assert [r["model"] for r in speed["real_epochs"]] == ["deunet", "unet"] * 2
    assert all(r["steps"] == "eager" for r in speed["real_epochs"])
    assert all(r["real_clips_per_s"] > 0 and r["wall_clips_per_s"] > 0 for r in speed["real_epochs"])
    assert all(p["kernels"] and p["parts"] for p in speed["profile"])

    table = report["table1"]
    assert table["plan"]["epochs"] == 1 and len(table["plan"]["models"]) == 8
    t1 = sections["table1"]["result"]
    assert t1["split_matches_bundle"] and t1["fold0_val"] == meta["fold0_val"]
    fold0 = {k: e for k, e in table["entries"].items() if e["fold"] == 0}
    assert len(fold0) == 8 and all(e["epochs_run"] == 1 for e in fold0.values())
    for entry in fold0.values():
        assert set(entry["evaluation"]) == {"none", "flips"}
        lcc = entry["evaluation"]["flips"]["headline"]["lcc_fill"]
        assert 0.0 <= lcc["mean_dice"] <= 1.0
        cases = entry["evaluation"]["none"]["cases"]["raw"]
        assert {c["phase"] for c in cases} == set(PHASES) and set(cases[0]["metrics"]) == set(STRUCTURE_ORDER)
    assert set(table["entries"]) - set(fold0) == {
        "deunet/fold1",
        "unet/fold1",
    }  # more_folds: DeU-Net, U-Net first
    check = sections["cpu_vs_cuda"]["result"]
    assert check["cine"]["in_fold0_val"] and check["checkpoint"]["source"] == "this run's Table 1"
    assert check["comparisons"][0]["dice_vs_cpu"] == dict.fromkeys(STRUCTURE_ORDER, 1.0)  # CPU vs CPU
    written = [w for w in report["weights"] if "bytes" in w]
    assert [w["model"] for w in written[:2]] == ["deunet", "unet"] and len(written) == 6
    assert sorted(p.name for p in (out / "weights").iterdir()) == sorted(
        Path(w["file"]).name for w in written
    )
    from pipeline.inference.predict import Segmenter

    seg = Segmenter.from_files([out / written[0]["file"]])  # fp16 weights rebuild a working model
    assert seg.predict(np.zeros((3, 2, 40, 40), np.float32)).shape == (3, 2, 40, 40)
    md = (out / "gpu_check.md").read_text()
    assert "DRY RUN" in md and "### Table 1 (fold 0" in md and "### Pooled over folds" in md
    assert "| deunet | 0 | flips | lcc_fill |" in md

    # --resume: everything measured is copied (marked), nothing is trained again
    again = _run_without_absent(
        [*run, "--out", str(tmp_path / "out2"), "--resume", str(out / "gpu_check.json")]
    )
    assert again["sections"]["deform_conv"]["resumed"] and again["sections"]["cpu_vs_cuda"]["resumed"]
    assert again["sections"]["table1"]["result"]["note"] == "every model resumed"
    assert again["sections"]["more_folds"]["status"].startswith("skipped: every fold resumed")
    assert set(again["table1"]["entries"]) == set(table["entries"])
    assert all(e["resumed"] for e in again["table1"]["entries"].values())
    assert again["table1"]["plan"]["epochs"] == 1 and not (tmp_path / "out2" / "weights").exists()


def test_a_failing_section_is_recorded_and_the_next_runs(tmp_path: Path) -> None:
    broken = (
        "import pipeline.experiments.deform_check as check\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('deliberately broken')\n"
        "check.compare_paths = broken"
    )
    args = ["run", "--dry-run", "--threads", "1", "--work", str(tmp_path / "work"), "--bundle",
            str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--sections", "deform_conv", "train_step"]  # fmt: skip
    _gpu_check(args, prelude=broken)
    sections = _sections(tmp_path / "out")
    assert (
        sections["deform_conv"]["status"] == "error"
        and "deliberately broken" in sections["deform_conv"]["error"]
    )
    assert sections["train_step"]["status"] == "ok"
    assert sections["table1"]["status"] == "skipped: not selected"

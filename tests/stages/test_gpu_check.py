"""benchmarks.gpu_check on the CPU: the bundle keeps every clip of r <= 1 exactly; ``prepare`` then the
``--dry-run`` of all six sections end to end (JSON and markdown); a failing section is recorded and the
run goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu_bundle, gpu_check
from pipeline.data.phantom import PhantomConfig, generate_dataset, iter_records
from pipeline.preprocessing.clips import clip_frames
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

SECTIONS = ("deform_conv", "train_step", "cpu_vs_cuda", "speed_inference", "speed_training", "accuracy")

SMALL = PhantomConfig(n_patients=6, matrix=(48, 48), n_frames=(8, 10), n_slices=(4, 5))


def test_bundle_keeps_every_clip_of_radius_one_and_refuses_non_int16() -> None:
    for record in iter_records(
        PhantomConfig(n_patients=3, matrix=(48, 48), n_frames=(4, 12), n_slices=(4, 4))
    ):
        record.cine[...] = np.round(record.cine)
        back = gpu_bundle.unpack(record.patient_id, gpu_bundle.pack(record))
        assert back.n_frames == len(gpu_bundle.kept_frames(record)) <= min(6, record.n_frames)
        for phase in PHASES:
            assert np.array_equal(back.labels[phase], record.labels[phase])
            for r in (0, 1):
                ours = back.cine[clip_frames(back.frame_index(phase), back.n_frames, r)]
                theirs = record.cine[clip_frames(record.frame_index(phase), record.n_frames, r)]
                assert np.array_equal(ours, theirs), (record.patient_id, phase, r)
        assert back.spacing == record.spacing and np.array_equal(back.affine, record.affine)
    record.cine[0, 0, 0, 0] += 0.5
    with pytest.raises(ValueError, match="int16"):
        gpu_bundle.pack(record)


def _sections(out: Path) -> dict:
    return json.loads((out / "gpu_check.json").read_text())["sections"]


@pytest.mark.slow
def test_prepare_and_dry_run_write_every_section(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "raw", SMALL)
    bundle, site, out, work = (tmp_path / name for name in ("bundle", "site", "out", "work"))
    threads = torch.get_num_threads()
    try:
        prepare = ["prepare", "--source", str(tmp_path / "raw"), "--out", str(bundle), "--site", str(site)]
        assert gpu_check.main(prepare) == 0
        meta = json.loads((bundle / "bundle.json").read_text())
        assert len(meta["patients"]) == 6 and meta["check_patient"] in meta["fold0_val"]
        assert meta["frames_kept"] < meta["frames_total"]
        assert 0 < meta["bytes"] < gpu_bundle.folder_bytes(bundle)
        assert (site / "nibabel" / "__init__.py").is_file() and not list(site.rglob("tests"))

        run = ["run", "--dry-run", "--threads", "1", "--bundle", str(bundle), "--work", str(work)]
        # --workers 2: the process pools and DataLoader workers of the GPU run, here too
        assert gpu_check.main([*run, "--workers", "2", "--out", str(out)]) == 0
        sections = _sections(out)
        assert list(sections) == [*SECTIONS]
        assert {n: s["status"] for n, s in sections.items()} == dict.fromkeys(SECTIONS, "ok"), sections
        report = json.loads((out / "gpu_check.json").read_text())["meta"]
        assert report["dry_run"] and report["device"] == "cpu" and report["bundle"]["patients"] == 6

        deform = sections["deform_conv"]["result"]
        assert len(deform["cases"]) == 3 and all(c["forward_rel_err"] <= 1e-4 for c in deform["cases"])
        assert {"x", "offset", "weight", "mask"} <= set(deform["cases"][1]["backward_rel_err"])
        assert deform["speed"]["torchvision_ms"] > 0 and deform["speed"]["grid_sample_ms"] > 0
        steps = sections["train_step"]["result"]["rows"]
        assert len(steps) == 8 and all(math.isfinite(r["loss"]) and r["grads_finite"] for r in steps)
        check = sections["cpu_vs_cuda"]["result"]
        assert check["cine"]["in_fold0_val"]
        assert check["comparisons"][0]["dice_vs_cpu"] == dict.fromkeys(STRUCTURE_ORDER, 1.0)  # CPU vs CPU
        infer = sections["speed_inference"]["result"]["rows"]
        variants = {(r["model"], r["compile"]) for r in infer}
        assert variants >= {("unet", False), ("deunet", False), ("unet", "eager")}
        assert all(r["seconds"] > 0 for r in infer)  # the compiled one too, in its child process
        train = sections["speed_training"]["result"]["rows"]
        assert len(train) == 16 and all(r["clips_per_s"] > 0 for r in train)
        acc = sections["accuracy"]["result"]
        assert acc["split_matches_bundle"] and acc["val_patients"] == meta["fold0_val"]
        for model in ("deunet", "unet"):
            m = acc["models"][model]
            assert m["epochs_run"] == 1 and set(m["evaluation"]) == {"none", "flips"}
            lcc = m["evaluation"]["flips"]["variants"]["lcc_fill"]
            assert 0.0 <= lcc["headline"]["mean_dice"] <= 1.0 and set(lcc["by_phase"]) == set(PHASES)
            assert set(lcc["by_phase"]["ES"]["RV"]) == {"dice", "hd", "assd"}
        md = (out / "gpu_check.md").read_text()
        assert "DRY RUN" in md and "## 6. Real accuracy" in md and "| deunet | flips | lcc_fill |" in md

        # A section that raises is recorded with its traceback, and the next one still runs.
        (bundle / "check_cine.npz").unlink()
        only = ["--sections", "cpu_vs_cuda", "speed_inference"]
        assert gpu_check.main([*run, "--out", str(tmp_path / "out2"), *only]) == 0
        again = _sections(tmp_path / "out2")
        assert again["cpu_vs_cuda"]["status"] == "error" and "check_cine.npz" in again["cpu_vs_cuda"]["error"]
        assert again["speed_inference"]["status"] == "ok"
        assert again["accuracy"]["status"] == "skipped: not selected"
    finally:
        torch.set_num_threads(threads)

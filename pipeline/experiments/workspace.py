"""A folder of named experiments: ``<tag>/<model>/fold<k>/`` runs over shared clip stores and splits.

The cross-validation benchmarks train and score here (``data/bench/acdc_cv`` by default):

- ``stores/<geometry>-<size>-<key>/``: one clip store per (data, preprocessing), with its ``folds.json``
  (duplicate-image patients kept in one fold);
- ``<tag>/<model>/fold<k>/`` (``all`` for a model trained on every patient): ``params.yaml`` (the merged
  settings), the trainer's checkpoints, ``timing.json`` (CPU and wall seconds, the published model file, the
  store) and, once scored, ``evaluation.json`` (the cases per TTA mode and post-processing variant).

Paths in params (``download.local_path``) and in ``timing.json`` (``store``) are relative to ``repo``.
"""

from __future__ import annotations

import hashlib
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import section
from pipeline.evaluation.config import EvaluateConfig
from pipeline.experiments.folds import ALL, fold_dir, fold_patients, train_folds
from pipeline.experiments.scoring import score_fold
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.training.config import TrainConfig

TTA_ORDER = ("none", "flips", "dihedral")


@dataclass(frozen=True)
class FoldRun:
    """A finished training of one (tag, model, fold) and what scoring it needs."""

    path: Path
    tag: str
    model: str
    fold: int
    timing: dict[str, Any]
    params: dict[str, Any]
    store: Path
    val: list[str]
    raw: Path  # the ACDC-layout data it was trained on

    @property
    def files(self) -> list[Path]:
        """The published model file (what evaluation and shipping use)."""
        return [self.path / self.timing["model_file"]]


class Workspace:
    """The experiments under ``root``; relative paths they record resolve against ``repo``."""

    @classmethod
    def default(cls, repo: Path) -> Workspace:
        """The benchmarks' workspace: ``data/bench/acdc_cv`` of the repository ``repo``."""
        return cls(repo / "data" / "bench" / "acdc_cv", repo)

    def __init__(self, root: Path, repo: Path) -> None:
        self.root, self.repo = Path(root).resolve(), Path(repo).resolve()

    def _in_repo(self, path: str | Path) -> Path:
        return (self.repo / path).resolve()

    def store(self, params: dict[str, Any]) -> Path:
        """The clip store of params' data and preprocessing (preprocessed on first use)."""
        from pipeline.preprocessing.run import preprocess_dataset

        cfg = section(params, "preprocess", PreprocessConfig)
        raw = self._in_repo(params["download"]["local_path"])
        key = hashlib.sha1(json.dumps([str(raw), repr(cfg)]).encode(), usedforsecurity=False).hexdigest()[:10]
        out = self.root / "stores" / f"{cfg.geometry}-{cfg.size}-{key}"
        if not (out / "meta.json").is_file():
            preprocess_dataset(raw, out, cfg, progress=False)
        return out

    def split(self, store: Path, params: dict[str, Any]) -> Path:
        """The store's split (``folds.json``), made on first use with duplicate-image patients in one fold."""
        import pandas as pd

        from pipeline.splitting.config import SplitConfig
        from pipeline.splitting.folds import make_split, write_split
        from pipeline.validation.duplicates import duplicate_image_groups

        path = store / "folds.json"
        if not path.is_file():
            patients = json.loads((store / "patients.json").read_text())
            linked = duplicate_image_groups(pd.read_csv(store / "manifest.csv"))
            groups = {p["patient"]: p["group"] for p in patients}
            write_split(make_split(groups, section(params, "split", SplitConfig), linked), path)
        return path

    def run_dir(self, tag: str, model: str, fold: int) -> Path:
        return fold_dir(self.root / tag / model, fold)

    def train(self, params: dict[str, Any], model: str, fold: int, tag: str) -> dict[str, Any]:
        """Train ``model`` on ``fold`` (:data:`~pipeline.experiments.folds.ALL`: every patient) with ``params``
        under ``tag`` (resumed if interrupted); writes and returns its ``timing.json``."""
        import torch

        params = {**params, "train": {**params["train"], "model": model, "folds": [fold]}}
        cfg = section(params, "train", TrainConfig)
        store_dir = self.store(params)
        split = read_split(self.split(store_dir, params))
        work = self.run_dir(tag, model, fold)
        work.mkdir(parents=True, exist_ok=True)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=True))
        torch.set_num_threads(max(cfg.threads, 1))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        (result,) = train_folds(ClipStore(store_dir), split, cfg, work.parent, [fold], progress=False)
        timing = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0,
                  "epochs": result.epochs_run, "best_val_dice": result.best_dice, "best_epoch": result.best_epoch,
                  "final_val_dice": result.history[-1]["val_dice"], "model_file": result.model_file,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "store": str(store_dir.relative_to(self.repo) if store_dir.is_relative_to(self.repo) else store_dir)}  # fmt: skip
        (work / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
        return timing

    def run(self, tag: str, model: str, fold: int) -> FoldRun:
        """The finished training of (tag, model, fold); FileNotFoundError naming its timing.json if none."""
        path = self.run_dir(tag, model, fold)
        timing = json.loads((path / "timing.json").read_text())
        params = yaml.safe_load((path / "params.yaml").read_text())
        store = self._in_repo(timing["store"])
        split = read_split(store / "folds.json")
        val = fold_patients(split, fold)["val"]
        raw = self._in_repo(params["download"]["local_path"])
        return FoldRun(path, tag, model, fold, timing, params, store, val, raw)

    def runs(self, tag: str, model: str, folds: list[int] | None = None) -> list[FoldRun]:
        """Every finished fold of ``tag/model`` (those in ``folds`` if given), in fold order."""
        found = sorted(
            int(t.parent.name.removeprefix("fold"))
            for t in (self.root / tag / model).glob("fold*/timing.json")
        )
        return [self.run(tag, model, f) for f in found if folds is None or f in folds]

    def evaluate(self, model: str, fold: int, tag: str, tta_modes: list[str], members: list[str] | None = None,
                 data: Path | None = None) -> Path:  # fmt: skip
        """Score one fold's published model on its own validation patients under every TTA mode (every
        post-processing variant); writes ``evaluation.json``.

        ``members`` (tags of runs of the same model and fold, e.g. other seeds): score their ensemble instead,
        written under ``tag``. ``data``: score on this ACDC-layout folder's copies of the validation patients
        rather than the data the runs trained on (models trained on every slice, scored on the crops).
        """
        import torch

        runs = [self.run(m, model, fold) for m in members] if members else [self.run(tag, model, fold)]
        work = self.run_dir(tag, model, fold)
        if members:
            work.mkdir(parents=True, exist_ok=True)
            merged = {**runs[0].timing, "cpu_s": sum(r.timing["cpu_s"] for r in runs), "members": members}
            (work / "timing.json").write_text(json.dumps(merged, indent=1) + "\n")
        files = [f for r in runs for f in r.files]
        torch.set_num_threads(max(int(runs[0].params["train"].get("threads") or 1), 1))
        out: dict[str, Any] = {"model": model, "fold": fold, "tag": tag, "val": runs[0].val, "tta": {}}
        for tta in tta_modes:
            start = time.perf_counter()
            results = score_fold(files, (data or runs[0].raw).resolve(), runs[0].val, fold,
                                 EvaluateConfig(whole_cycle=False, tta=tta))  # fmt: skip
            out["tta"][tta] = {"seconds": time.perf_counter() - start,
                               "cases": {v: [c for r in results for c in r.cases[v]] for v in results[0].cases}}  # fmt: skip
        path = work / "evaluation.json"
        path.write_text(json.dumps(out, default=float) + "\n")
        return path

    def collect(self, tag: str, model: str) -> dict[str, Any]:
        """Pooled cases of every scored fold of ``tag/model``: ``cases`` {(tta, variant): cases}, ``folds``,
        ``cpu_minutes`` (a fold's training) and ``by_fold`` {fold: {(tta, variant): cases}}."""
        pooled: dict[tuple[str, str], list[dict[str, Any]]] = {}
        by_fold: dict[int, dict[tuple[str, str], list[dict[str, Any]]]] = {}
        folds, minutes = [], []
        for work in sorted((self.root / tag / model).glob("fold*")):
            if not (work / "evaluation.json").is_file():
                continue
            ev = json.loads((work / "evaluation.json").read_text())
            folds.append(ev["fold"])
            minutes.append(json.loads((work / "timing.json").read_text())["cpu_s"] / 60)
            for tta, body in ev["tta"].items():
                for variant, cases in body["cases"].items():
                    pooled.setdefault((tta, variant), []).extend(cases)
                    by_fold.setdefault(ev["fold"], {})[(tta, variant)] = cases
        return {"cases": pooled, "folds": folds, "cpu_minutes": minutes, "by_fold": by_fold}


__all__ = ["ALL", "TTA_ORDER", "FoldRun", "Workspace"]

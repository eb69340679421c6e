"""Run an Optuna study over lr, r (and optionally the batch size) with the real trainer.

Each trial trains one fold for ``tune.epochs`` epochs and reports the validation Dice after every epoch
to the pruner, which stops trials that fall behind the median of earlier trials. Every trial is an
MLflow child run of the study's run. Workers are processes that share the study through its storage:
one in-process worker with SQLite, several (here or on other machines) with PostgreSQL. A study is
named by its search space, the fixed train params, the data, the split and the training code, so a
re-run continues the same study and only runs the trials still missing.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pipeline.config import section
from pipeline.errors import ConfigError, PipelineError
from pipeline.experiments.folds import train_folds
from pipeline.preprocessing.store import ClipStore
from pipeline.splitting.folds import read_split
from pipeline.tracking import TrackingConfig, make_tracker
from pipeline.tracking.config import redact_uri
from pipeline.training.config import TrainConfig
from pipeline.training.runkey import content_key
from pipeline.tuning.config import TUNABLE, TuneConfig

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
PARENT_RUN_ATTR = "mlflow_parent_run_id"
# Train fields a trial sets itself, or that do not change what a trial computes.
_NOT_IN_KEY = (*TUNABLE, "max_epochs", "patience", "folds", "resume", "device", "threads", "num_workers",
               "loader", "checkpoint_every_s", "cuda_graph")  # fmt: skip


class TuningError(PipelineError):
    """The study could not run or produced no usable trial."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs; picklable, so it crosses a spawn boundary."""

    repo_root: Path
    store: Path
    split: Path
    work: Path  # scratch folder: each trial trains in a temporary folder under it
    tune: TuneConfig
    train: TrainConfig
    tracking: TrackingConfig
    storage: str
    study_name: str
    fold: int
    worker: int = 0
    threads: int = 0


@dataclass
class StudyResult:
    study_name: str
    storage: str  # password redacted
    best_trial: int
    best_value: float
    best_params: dict[str, Any]  # the train overrides
    trials: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    mlflow_run_id: str | None = None


def tuning_fold(cfg: TuneConfig, base: TrainConfig) -> int:
    return base.folds[0] if cfg.fold is None else cfg.fold


def study_key(cfg: TuneConfig, base: TrainConfig, store: ClipStore, split_path: Path) -> str:
    """``tune-<16 hex>``: the search space, the fixed train params, the data, the split and the code."""
    space = {k: v for k, v in asdict(cfg).items() if k not in ("enabled", "n_trials", "storage", "workers")}
    fixed = {k: v for k, v in asdict(base).items() if k not in _NOT_IN_KEY}
    fold = tuning_fold(cfg, base)
    return "tune-" + content_key(space, fixed, fold, store.meta, split_path.read_text())


def check_space(cfg: TuneConfig, base: TrainConfig, store: ClipStore, n_folds: int) -> None:
    """Refuse a search space the data cannot serve, naming the params key."""
    max_radius = int(store.meta["config"]["max_radius"])
    too_wide = [r for r in cfg.radius if r > max_radius]
    if too_wide:
        raise ConfigError(
            f"tune.radius: choices {too_wide} exceed the store's preprocess.max_radius = {max_radius}; "
            "raise preprocess.max_radius or drop them"
        )
    fold = tuning_fold(cfg, base)
    if not 0 <= fold < n_folds:
        raise ConfigError(f"tune.fold: {fold} is out of range, the split has folds 0..{n_folds - 1}")


def _storage(url: str) -> optuna.storages.RDBStorage:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        # Heartbeats mark the trial of a killed worker FAILED once the grace period has passed, and the
        # callback queues it again, so a killed study loses no trial. (Optuna flags both as experimental.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))  # fmt: skip
    except (optuna.exceptions.StorageInternalError, ImportError, ValueError, OSError) as exc:
        raise TuningError(f"{redact_uri(url)}: cannot open the Optuna storage ({exc})") from None
    except Exception as exc:  # sqlalchemy errors: bad URL, server down, wrong credentials
        raise TuningError(
            f"{redact_uri(url)}: cannot open the Optuna storage ({type(exc).__name__}: {exc})"
        ) from None


def _sampler(cfg: TuneConfig, worker: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.TPESampler(
        seed=cfg.sampler_seed + worker, n_startup_trials=max(cfg.startup_trials, 1)
    )


def _pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    import optuna

    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs
        )
    if cfg.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(cfg.warmup_epochs, 1))
    return optuna.pruners.NopPruner()


def trial_config(cfg: TuneConfig, base: TrainConfig, trial: optuna.Trial, fold: int) -> TrainConfig:
    """The train config of ``trial``: suggested lr, r (and batch size) over the fixed params."""
    lr = trial.suggest_float("lr", cfg.lr[0], cfg.lr[1], log=True)
    radius = trial.suggest_categorical("radius", list(cfg.radius))
    batch = (
        trial.suggest_categorical("batch_size", list(cfg.batch_size)) if cfg.batch_size else base.batch_size
    )
    return replace(base, lr=lr, radius=radius, batch_size=batch, max_epochs=cfg.epochs, patience=cfg.epochs,
                   folds=(fold,), resume=False)  # fmt: skip


def _finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _objective(spec: WorkerSpec, store: ClipStore, split: dict[str, Any], parent_run_id: str | None):
    import optuna

    def objective(trial: optuna.Trial) -> float:
        cfg = trial_config(spec.tune, spec.train, trial, spec.fold)
        tags = {
            "stage": "tune",
            "study": spec.study_name,
            "optuna_trial": trial.number,
            "worker": spec.worker,
        }
        with make_tracker(
            spec.tracking, spec.repo_root, f"trial-{trial.number}", 0, tags, parent_run_id
        ) as run:
            run.log_params({"trial": trial.params, "train": asdict(cfg)})

            def on_epoch(row: dict[str, float]) -> None:
                epoch = int(row["epoch"])
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                if math.isnan(row["val_dice"]):  # an epoch train.val_every skips
                    return
                trial.report(row["val_dice"], epoch)
                trial.set_user_attr("epochs_run", epoch)
                if trial.should_prune():
                    run.set_tags({"optuna_state": "PRUNED", "pruned_at_epoch": epoch})
                    raise optuna.TrialPruned(f"validation Dice {row['val_dice']:.4f} after epoch {epoch}")

            spec.work.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(
                prefix=f"{spec.study_name}-{trial.number}-", dir=spec.work
            ) as work:
                (result,) = train_folds(store, split, cfg, Path(work), [spec.fold],
                                        on_epoch=lambda _fold, row: on_epoch(row), progress=False)  # fmt: skip
            trial.set_user_attr("best_epoch", result.best_epoch)
            run.log_metrics({"best_val_dice": result.best_dice})
            run.set_tags({"optuna_state": "COMPLETE"})
            return result.best_dice

    return objective


def run_worker(spec: WorkerSpec) -> int:
    """Run trials of an existing study until it holds ``tune.n_trials`` finished ones; returns how many
    trials this worker ran. Usable as a process target and on other machines (``deunet tune --worker``)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if spec.threads:
        torch.set_num_threads(spec.threads)
    store = ClipStore(spec.store)
    split = read_split(spec.split)
    try:
        study = optuna.load_study(study_name=spec.study_name, storage=_storage(spec.storage),
                                  sampler=_sampler(spec.tune, spec.worker), pruner=_pruner(spec.tune))  # fmt: skip
    except KeyError:
        raise TuningError(
            f"{redact_uri(spec.storage)}: no study {spec.study_name!r}; start it with `dvc repro tune` first"
        ) from None
    remaining = spec.tune.n_trials - _finished(study)
    if remaining <= 0:
        return 0
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    before = {t.number for t in study.get_trials(deepcopy=False)}
    stop = MaxTrialsCallback(spec.tune.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    study.optimize(_objective(spec, store, split, parent), n_trials=remaining, callbacks=[stop],
                   gc_after_trial=True)  # fmt: skip
    return len({t.number for t in study.get_trials(deepcopy=False)} - before)


def _worker_main(spec: WorkerSpec) -> None:  # process entry point: errors end the process with a message
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s worker {spec.worker} %(levelname)s: %(message)s"
    )
    ran = run_worker(spec)
    log.info("worker %d ran %d trials", spec.worker, ran)


def _create_study(spec: WorkerSpec, parent_run_id: str | None) -> optuna.Study:
    import optuna

    study = optuna.create_study(study_name=spec.study_name, storage=_storage(spec.storage), direction="maximize",
                                sampler=_sampler(spec.tune, 0), pruner=_pruner(spec.tune),
                                load_if_exists=True)  # fmt: skip
    if not study.get_trials(deepcopy=False):
        study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
        current = {"lr": spec.train.lr, "radius": spec.train.radius}
        if spec.tune.batch_size:
            current["batch_size"] = spec.train.batch_size
        inside = spec.tune.lr[0] <= spec.train.lr <= spec.tune.lr[1] and spec.train.radius in spec.tune.radius
        if (
            spec.tune.enqueue_current
            and inside
            and spec.train.batch_size in (spec.tune.batch_size or [spec.train.batch_size])
        ):
            study.enqueue_trial(current)
            log.info("trial 0 is params.yaml's current setting %s", current)
    return study


def _run_workers(spec: WorkerSpec) -> None:
    n = spec.tune.workers
    threads = spec.train.threads or max(1, (os.cpu_count() or 1) // n)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(replace(spec, worker=i, threads=threads),), name=f"tune-{i}")
             for i in range(n)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise TuningError(
            f"tuning workers {failed} failed (exit codes {[p.exitcode for p in procs]}); see above"
        )


def summarise(study: optuna.Study, redacted_storage: str, run_id: str | None) -> StudyResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    rows = [
        {"number": t.number, "state": t.state.name, **t.params, "value": t.value,
         "epochs_run": t.user_attrs.get("epochs_run"), "best_epoch": t.user_attrs.get("best_epoch")}
        for t in trials
    ]  # fmt: skip
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise TuningError(
            f"study {study.study_name}: no trial completed ({counts}); widen the space or raise epochs"
        )
    best = study.best_trial
    overrides = {k: best.params[k] for k in TUNABLE if k in best.params}
    return StudyResult(study.study_name, redacted_storage, best.number, float(best.value or 0.0), overrides, rows,
                       counts, run_id)  # fmt: skip


def run_study(spec: WorkerSpec, tracking_tags: dict[str, Any] | None = None) -> StudyResult:
    """Create or continue the study of ``spec`` and run its missing trials (``tune.workers`` processes)."""
    tags = {"stage": "tune", "study": spec.study_name, **(tracking_tags or {})}
    with make_tracker(spec.tracking, spec.repo_root, spec.study_name, 0, tags) as parent:
        parent.log_params({"tune": asdict(spec.tune), "train": asdict(spec.train)})
        study = _create_study(spec, parent.run_id)
        already = _finished(study)
        log.info("study %s in %s: %d of %d trials finished", spec.study_name, redact_uri(spec.storage), already,
                 spec.tune.n_trials)  # fmt: skip
        if spec.tune.workers == 1:
            run_worker(spec)
        else:
            _run_workers(spec)
        result = summarise(study, redact_uri(spec.storage), parent.run_id)
        parent.log_metrics(
            {"best_val_dice": result.best_value, **{f"n_{k}": v for k, v in result.counts.items()}}
        )
        parent.set_tags({f"best_{k}": v for k, v in result.best_params.items()})
    return result


def spec_from_params(
    params: dict[str, Any], repo_root: Path, store: Path, split: Path, work: Path
) -> WorkerSpec:
    """The worker spec of a params mapping (the ``tune``, ``train`` and ``tracking`` sections); trials train
    in temporary folders under ``work``."""
    from pipeline.tuning.config import resolve_storage

    cfg = section(params, "tune", TuneConfig)
    base = section(params, "train", TrainConfig)
    clip_store = ClipStore(store)
    split_doc = read_split(split)
    check_space(cfg, base, clip_store, len(split_doc["folds"]))
    return WorkerSpec(
        repo_root=Path(repo_root).resolve(), store=Path(store).resolve(), split=Path(split).resolve(),
        work=Path(work).resolve(), tune=cfg, train=base, tracking=section(params, "tracking", TrackingConfig),
        storage=resolve_storage(cfg, repo_root),
        study_name=study_key(cfg, base, clip_store, split), fold=tuning_fold(cfg, base), threads=base.threads,
    )  # fmt: skip

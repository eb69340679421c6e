"""GPU check: correctness, speed, then the paper's Table 1 on real data, on one CUDA GPU in one prepared run.

    python -m benchmarks.gpu_check prepare          # here: .device/acdc-roi (31 MiB) + .device/site (nibabel)
    python -m benchmarks.gpu_check run --dry-run    # the CPU rehearsal at tiny sizes
    PYTHONPATH=.device/site python3 -m benchmarks.gpu_check run --out $OUT    # on the GPU machine
    PYTHONPATH=.device/site python3 -m benchmarks.gpu_check run --out $OUT --resume PREVIOUS/gpu_check.json

The GPU machine gets the working tree and the carried ``.device`` folder only
(pipeline.experiments.device_bundle): the data are the compact bundle, and nibabel, which that machine's
Python lacks, travels in ``.device/site``. The run keeps to ``--budget-s`` (540 s by default, counted from
the process's start). Sections, in order; each is wrapped (a failure is recorded with its traceback and the
run goes on; rows of several models are guarded one by one), and ``gpu_check.json`` and ``gpu_check.md``
in ``--out`` are rewritten after every section and every model:

1. ``deform_conv``: torchvision's ``deform_conv2d`` against the project's grid_sample path, forward and
   backward (TDAM- and DGPA-like shapes). Offset gradients are compared away from integer sample
   coordinates (bilinear interpolation's kink, where the two take different one-sided derivatives), with
   the fraction out of tolerance over all and over the kept elements; both paths also pass a float64
   ``gradcheck`` at non-integer points. Plus their speed.
2. ``train_step``: one bf16-autocast training step of each of the eight models at 256 px: finite loss,
   gradients and weights.
3. ``speed_inference``: a 30 x 10 x 256 x 256 cine through ``Segmenter.predict`` for DeU-Net and U-Net, bf16
   (fp32 when time allows), against the goals (DeU-Net <= 0.3 s, U-Net <= 0.15 s); with ``--compile``,
   also DeU-Net under torch.compile in a child process with a time limit.
4. ``speed_training``: raw training clips/s (forward + backward + Adam, bf16, batch 32) of all eight models at
   96 px (what Table 1 is planned from) and of U-Net and DeU-Net at 256 px; the DeU-Net / U-Net ratios.
5. ``table1``: all eight models on acdc-roi fold 0 with the ``acdc-roi-gpu`` profile at 96 px, the same
   number of epochs each, planned from the 96-px throughputs so that training and evaluation fit the time
   left (stopped cleanly between epochs at a deadline, recorded); each evaluated on the GPU (3D Dice, HD,
   ASSD per structure and phase; raw and lcc_fill; TTA none and dihedral), its real training clips/s
   against the raw one, and its weights (fp16) written to ``--out``/weights when they fit.
6. ``cpu_vs_cuda``: the Table-1 DeU-Net fold-0 checkpoint on the whole cine of a validation patient: CUDA
   fp32 (TF32 off) against CPU fp32 strictly, and bf16 against a looser stated tolerance.
7. ``more_folds``: the time left trains folds 1-4 of the same split, DeU-Net and U-Net first, evaluated
   the same way; the report pools the folds per model.

A section returns "ok" (every check within its tolerance), "fail" (a check out of tolerance or a row that
raised) or "skipped: <why>"; an exception escaping it is recorded as "error".

``--resume PREVIOUS.json`` copies what an earlier run measured (sections that ended ok, evaluated
(model, fold) entries of Table 1, marked as resumed) and trains with its planned epochs, so a 5-fold
Table 1 fills in over several runs. ``--dry-run`` runs every section on the CPU at tiny sizes (32 px,
base 4, one epoch) on a phantom bundle when no real one exists: the test suite runs it end to end.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from pipeline.config import section
from pipeline.experiments import device_bundle
from pipeline.experiments.deform_check import BACKWARD_TOL, FORWARD_TOL, KINK, compare_paths, gradcheck_paths
from pipeline.experiments.params import merged_params
from pipeline.experiments.speed import bench_deform, infer_job, reset_peak, sync, train_job
from pipeline.experiments.timed_training import train_until
from pipeline.models import DiceCELoss, available_models, build_model
from pipeline.preprocessing.store import ClipStore
from pipeline.training.config import TrainConfig
from pipeline.vocabulary import PHASES, STRUCTURE_ORDER, STRUCTURES

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "acdc-roi-gpu.yaml"
#: CPU vs CUDA label agreement, Dice per structure: fp32 strictly, bf16 within a rounding tolerance.
FP32_DICE, BF16_DICE = 0.999, 0.99
INFER_GOALS_S = {"deunet": 0.3, "unet": 0.15}  # per 30 x 10 x 256 x 256 cine
RATIO_GOAL, REAL_FRACTION_GOAL = 0.5, 0.85
#: Table 1 planning: the real epoch's expected share of the raw clips/s (corrected after each model), the
#: per-epoch overhead (loaders, checkpoints), per-model overhead (build, warm-up) and evaluation seconds.
EFFICIENCY, EPOCH_OVERHEAD_S, MODEL_OVERHEAD_S, EVAL_S = 0.75, 0.4, 4.0, 12.0
CPU_VS_CUDA_S, SAFETY = 20.0, 0.08  # seconds kept for cpu_vs_cuda; share of the time left kept unplanned
FIRST = ("deunet", "unet")
MODELS = [*FIRST, *(m for m in available_models() if m not in FIRST)]  # the registry's, these two first
VARIANTS = ("raw", "lcc_fill")


#: Everything that differs between the GPU run and the CPU dry run (model_args on the GPU: the profile's).
GPU_SIZES: dict[str, Any] = dict(
    size=256,  # train_step, speed_inference, speed_training's second size
    table_size=96,  # Table 1 and speed_training's first size: acdc-roi's native crop
    # (batch, channels in, height, width, channels out, offset groups, modulated): TDAM (one offset group per
    # frame), TDAM modulated (DCNv2), a DGPA encoder layer
    deform_cases=((8, 3, 256, 256, 32, 3, False), (8, 3, 256, 256, 32, 3, True), (8, 64, 128, 128, 64, 1, False)),
    deform_bench_shape="12x96x128x128", cine_frames=30, cine_slices=10, infer_batch=32, repeats=3, warmup=1,
    train_batch=32, train_steps=10,
    epochs=None,  # None: planned from the throughput and the clock
    eval_tta="dihedral",
    workers=8,  # processes for materialise / preprocess; DataLoader workers in training
    extra_folds=(1, 2, 3, 4),
    extra_models=None,  # None: all, DeU-Net and U-Net first
)  # fmt: skip
DRY_SIZES = {**GPU_SIZES, **dict(
    size=32, table_size=32, model_args={"base_channels": 4, "depth": 2, "norm": "batch"},
    deform_cases=((2, 3, 16, 16, 4, 3, False), (2, 3, 16, 16, 4, 3, True), (2, 8, 12, 12, 8, 1, False)),
    deform_bench_shape="2x8x16x16", cine_frames=4, cine_slices=2, infer_batch=4, repeats=1, warmup=0,
    train_batch=4, train_steps=1, epochs=1, eval_tta="flips", workers=0, extra_folds=(1,),
    extra_models=("deunet", "unet"))}  # fmt: skip


class Context:
    """What the sections share: options, sizes, device, clock, folders, data made once, and the report
    (``data``, what gpu_check.json holds; an accepted ``--resume`` report's Table 1 entries copied in)."""

    def __init__(self, args: argparse.Namespace) -> None:
        # params.yaml with the acdc-roi-gpu profile over it (the paper's width and the GPU schedule)
        self.args, self.params = args, merged_params(ROOT / "params.yaml", PROFILE)
        # from the command line the budget counts from the process's start: imports are part of the run
        self.start = time.monotonic() - (_process_age() if args.from_cli else 0.0)
        self.deadline = self.start + args.budget_s
        if args.threads:
            torch.set_num_threads(args.threads)
        self.device = torch.device(args.device.replace("auto", "cpu" if args.dry_run else "cuda"))
        self.cuda = self.device.type == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("error: no CUDA device here; use --dry-run for the CPU rehearsal")
        sizes = DRY_SIZES if args.dry_run else {**GPU_SIZES, "model_args": self.params["train"]["model_args"]}
        self.sizes = SimpleNamespace(**{**sizes, "workers": sizes["workers"] if args.workers is None else args.workers})  # fmt: skip
        self.out = Path(args.out)
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.bundle = Path(args.bundle)
        if not (self.bundle / "bundle.json").is_file():
            if not args.dry_run:
                raise SystemExit(f"error: no bundle at {self.bundle}; run `python -m benchmarks.gpu_check prepare` first")  # fmt: skip
            self.bundle = self.work / "phantom-bundle"
            if not (self.bundle / "bundle.json").is_file():
                device_bundle.synthetic_bundle(self.bundle, dict(self.params["split"]))
        self.bundle_info = json.loads((self.bundle / "bundle.json").read_text())
        self.selected = list(args.sections or SECTIONS)
        self.checkpoints: dict[tuple[str, int], Path] = {}  # (model, fold) -> checkpoint of this run
        self._stores: dict[int, tuple[ClipStore, list[dict[str, Any]]]] = {}
        self.previous = json.loads(Path(args.resume).read_text()) if args.resume else None
        note = None
        if self.previous is not None and ("table1" not in self.previous or self.previous["meta"].get("dry_run") != args.dry_run):  # fmt: skip
            self.previous, note = None, "ignored: not a report of this version, or a dry run resumed by a real one (or back)"  # fmt: skip
        self.data: dict[str, Any] = {
            "meta": {**_meta(args, self.device, self.bundle_info), "resume_note": note},
            "sections": {n: {"status": "pending" if n in self.selected else "skipped: not selected"} for n in SECTIONS},
            "table1": {"plan": None, "entries": {}}, "weights": []}  # fmt: skip
        if self.previous and {"table1", "more_folds"} & set(self.selected):
            self._resume_table1(self.previous)

    def _resume_table1(self, prev: dict[str, Any]) -> None:
        """Copy the earlier report's evaluated Table 1 entries and their weights (marked) and its plan."""
        t1, mark = self.data["table1"], self.args.resume
        t1["entries"] = {k: {**e, "resumed": mark} for k, e in prev["table1"].get("entries", {}).items() if "evaluation" in e}  # fmt: skip
        self.data["weights"] = [{"model": w["model"], "fold": w["fold"], "file": w["file"], "resumed": mark}
                                for w in prev.get("weights", []) if "bytes" in w and f"{w['model']}/fold{w['fold']}" in t1["entries"]]  # fmt: skip
        if prev["table1"].get("plan"):
            t1["plan"] = {**prev["table1"]["plan"], "resumed": mark}

    def left(self) -> float:
        """Seconds left of ``--budget-s``."""
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def save(self) -> None:
        """Rewrite the JSON and the markdown (after every section and every model)."""
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n"),
                           ("gpu_check.md", render_markdown(self.data))):  # fmt: skip
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    @cached_property
    def raw_root(self) -> Path:
        """The bundle written back as ACDC-layout folders (once per run)."""
        device_bundle.materialise(self.bundle, self.work / "raw", self.sizes.workers)
        return self.work / "raw"

    def store(self, size: int) -> tuple[ClipStore, list[dict[str, Any]]]:
        """The clip store at ``size`` px (r <= 1) and the folds of the pipeline's split of it."""
        from pipeline.experiments.workspace import Workspace
        from pipeline.preprocessing.config import PreprocessConfig
        from pipeline.preprocessing.run import preprocess_dataset
        from pipeline.splitting.folds import read_split

        if size not in self._stores:
            pre = {**self.params["preprocess"], "size": size, "radius": 1, "max_radius": device_bundle.KEEP_RADIUS,
                   "workers": max(self.sizes.workers, 1)}  # fmt: skip
            cfg = section({"preprocess": pre}, "preprocess", PreprocessConfig)
            store = preprocess_dataset(self.raw_root, self.work / f"store-{size}", cfg, progress=False)
            split = read_split(Workspace(self.work, ROOT).split(store, self.params))
            self._stores[size] = ClipStore(store), split["folds"]
        return self._stores[size]

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The profile's ``train`` section with ``overrides``."""
        train = {**self.params["train"], "model_args": self.sizes.model_args, "folds": [0],
                 "device": self.device.type, "threads": 0, "num_workers": self.sizes.workers,
                 "resume": False, **overrides}  # fmt: skip
        return section({"train": train}, "train", TrainConfig)

    def raw_rate(self, name: str, size: int) -> float | None:
        """The raw training clips/s speed_training measured (this run's, or the resumed report's)."""
        rows = self.data["sections"]["speed_training"].get("result", {}).get("rows", [])
        return next((r["clips_per_s"] for r in reversed(rows) if (r.get("model"), r.get("size")) == (name, size)
                     and "clips_per_s" in r), None)  # fmt: skip


def _process_age() -> float:
    """Seconds since this process started (0 where psutil cannot tell)."""
    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except Exception:
        return 0.0


def error_summary(exc: BaseException, limit: int = 3000) -> str:
    """The exception and the last frames of its traceback, short enough for the JSON."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _guarded(fn: Callable[[], dict[str, Any]], **label: Any) -> dict[str, Any]:
    """One row of a section: ``fn()``'s dict, or the error, so one model's failure does not stop the rest."""
    try:
        return {**label, **fn()}
    except Exception as exc:
        return {**label, "error": error_summary(exc, 1500)}


# ---------------------------------------------------------------- 1-4. correctness and speed


def section_deform_conv(ctx: Context, res: dict[str, Any]) -> str:
    res["tolerance"] = {"forward": FORWARD_TOL, "backward": BACKWARD_TOL, "relative_to": "max |reference|",
                        "offset_kink_px": KINK}  # fmt: skip
    res["cases"] = []
    for case in ctx.sizes.deform_cases:
        res["cases"].append(compare_paths(ctx.device, *case))
    res["gradcheck_float64"] = gradcheck_paths(ctx.device)
    res["speed"] = bench_deform(ctx.sizes.deform_bench_shape, ctx.sizes.repeats, ctx.device)
    ok = all(r["ok"] for r in res["cases"]) and all(v is True for v in res["gradcheck_float64"].values())
    return "ok" if ok else "fail"


def _one_train_step(ctx: Context, name: str) -> dict[str, Any]:
    dev, s = ctx.device, ctx.sizes.size
    torch.manual_seed(0)
    model = build_model(name, radius=1, **ctx.sizes.model_args).to(dev).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    clip, target = torch.randn(2, 3, s, s, device=dev), torch.randint(0, 4, (2, s, s), device=dev)
    reset_peak(dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=ctx.cuda):
        logits = model(clip)
    loss = DiceCELoss()(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    optimizer.step()
    weights_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    loss_finite = math.isfinite(float(loss.detach()))
    return {"loss": float(loss.detach()), "logits_dtype": str(logits.dtype).removeprefix("torch."),
            "loss_finite": loss_finite, "grads_finite": grads_finite, "weights_finite": weights_finite,
            "ok": loss_finite and grads_finite and weights_finite}  # fmt: skip


def section_train_step(ctx: Context, res: dict[str, Any]) -> str:
    res.update(size=ctx.sizes.size, batch=2, model_args=ctx.sizes.model_args, bf16_autocast=ctx.cuda, rows=[])
    for name in MODELS:
        res["rows"].append(_guarded(partial(_one_train_step, ctx, name), model=name))
        ctx.save()
    return "ok" if all(r.get("ok") for r in res["rows"]) else "fail"


def _bench_args(ctx: Context, size: int, **extra: Any) -> dict[str, Any]:
    """The command-line fields pipeline.experiments.speed's jobs read."""
    sz = ctx.sizes
    return {"threads": ctx.args.threads, "device": str(ctx.device), "model_args": json.dumps(sz.model_args),
            "radius": 1, "size": size, "frames": sz.cine_frames, "slices": sz.cine_slices,
            "warmup": sz.warmup, "repeats": sz.repeats, **extra}  # fmt: skip


def _compiled_job(job: dict[str, Any], limit_s: float) -> dict[str, Any]:
    """infer_job with torch.compile in a child process, given at most ``limit_s`` (compilation included)."""
    with mp.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(infer_job, (job,))
        try:
            return pending.get(timeout=limit_s)
        except mp.TimeoutError:
            return {"error": f"not finished within {limit_s:.0f} s (compilation included); stopped"}


def section_speed_inference(ctx: Context, res: dict[str, Any]) -> str:
    sz, start = ctx.sizes, time.monotonic()
    rows: list[dict[str, Any]] = []
    res.update(cine=[sz.cine_frames, sz.cine_slices, sz.size, sz.size], batch=sz.infer_batch,
               model_args=sz.model_args, repeats=sz.repeats, goals_s=INFER_GOALS_S, rows=rows)  # fmt: skip
    base = {"channels_last": False, "batch": sz.infer_batch, "args": _bench_args(ctx, sz.size)}
    for bf16 in (True, False) if ctx.cuda else (False,):
        if not bf16 and time.monotonic() - start > 20.0:
            rows.append({"model": "*", "bf16": False, "skipped": "fp32 left out: the bf16 rows took 20 s"})
            continue
        for name in FIRST:
            reset_peak(ctx.device)
            row = _guarded(partial(infer_job, {**base, "model": name, "compile": False, "bf16": bf16}),
                           model=name, bf16=bf16, compile=False)  # fmt: skip
            rows.append({k: v for k, v in row.items() if k not in ("args", "all_seconds", *base)})
            if "seconds" in row:
                rows[-1]["met"] = row["seconds"] <= INFER_GOALS_S[name] if ctx.cuda else None
            ctx.save()
    if ctx.args.compile:
        limit = min(ctx.args.compile_limit_s, max(ctx.left() - 300.0, 0.0))
        label = {"model": "deunet", "bf16": ctx.cuda, "compile": True}
        if limit < 20:
            rows.append({**label, "skipped": f"budget: {ctx.left():.0f} s left, Table 1 needs 300 s"})
        else:
            job = {**label, **base, "compile_backend": "inductor" if ctx.cuda else "eager"}
            row = _guarded(partial(_compiled_job, job, limit), **label)
            rows.append({k: v for k, v in row.items() if k not in ("args", "all_seconds")})
    for bf16 in (True, False):
        same = {r["model"]: r["seconds"] for r in rows if r.get("bf16") == bf16 and "seconds" in r and not r["compile"]}  # fmt: skip
        if len(same) == 2:
            res[f"deunet_over_unet_{'bf16' if bf16 else 'fp32'}"] = same["deunet"] / same["unet"]
    return "fail" if any("error" in r for r in rows) else "ok"


def section_speed_training(ctx: Context, res: dict[str, Any]) -> str:
    from pipeline.training.trainer import resolve_cuda_graph

    sz, cfg = ctx.sizes, ctx.train_config()
    channels_last, graph = cfg.channels_last, resolve_cuda_graph(cfg, ctx.device)  # as the trainer runs them
    res.update(batch=sz.train_batch, model_args=sz.model_args, steps=sz.train_steps, bf16_autocast=ctx.cuda,
               channels_last=channels_last, cuda_graph=graph, rows=[], variants=[])  # fmt: skip
    keep = ("model", "size", "channels_last", "cuda_graph", "clips_per_s", "peak_mb", "graph", "error")

    def measure(name: str, size: int, **variant: Any) -> dict[str, Any]:
        job = {"model": name, "channels_last": channels_last, "cuda_graph": graph, **variant,
               "args": _bench_args(ctx, size, train_batch=sz.train_batch, train_steps=sz.train_steps)}  # fmt: skip
        reset_peak(ctx.device)
        row = _guarded(partial(train_job, job), model=name, size=size, **variant)
        return {k: row[k] for k in keep if k in row}

    sizes = (sz.table_size, sz.size)
    for name, size in [(m, sz.table_size) for m in MODELS] + [(m, sz.size) for m in FIRST]:
        res["rows"].append(measure(name, size))
        ctx.save()
    rates = {s: (ctx.raw_rate("deunet", s), ctx.raw_rate("unet", s)) for s in sizes}
    res["deunet_over_unet"] = {str(s): d / u for s, (d, u) in rates.items() if d and u}
    res["ratio_goal"] = RATIO_GOAL
    # the trainer's choices one at a time: eager steps (no graph) at both sizes, NCHW at 96 px
    if graph:
        res["variants"] += [measure(name, size, cuda_graph=False) for size in sizes for name in FIRST]
    res["variants"] += [measure(name, sz.table_size, channels_last=not channels_last) for name in FIRST]
    ctx.save()
    res["profile"] = [_guarded(partial(_profile_step, ctx, size), size=size) for size in sizes]
    res["real_epochs"] = [_guarded(partial(_real_epochs, ctx, name, size), model=name, size=size)
                          for size in sizes for name in FIRST]  # fmt: skip
    ctx.save()
    rows = res["rows"] + res["variants"] + res["profile"] + res["real_epochs"]
    return "fail" if any("error" in r for r in rows) else "ok"


def _real_epochs(ctx: Context, name: str, size: int, epochs: int = 4) -> dict[str, Any]:
    """A few real epochs of the trainer on fold 0 at ``size`` px, validated once at the end: clips/s of
    the training part and of the whole epoch, after the first (warm-up), against the raw step's."""
    store, folds = ctx.store(size)
    cfg = ctx.train_config(model=name, max_epochs=epochs, patience=epochs, val_every=epochs, warmup_epochs=0)
    run = train_until(store, {"folds": folds}, cfg, ctx.work / "real-epochs" / f"{name}-{size}", 0)
    n = len(store.indices_for(folds[0]["train"]))
    return {"epochs": epochs, "train_clips": n, **run.rates(n, ctx.raw_rate(name, size), drop_last=True),
            "steps": run.steps}  # fmt: skip


def _profile_step(ctx: Context, size: int) -> dict[str, Any]:
    """Where a DeU-Net training step's time goes (pipeline.models.profiling), at ``size`` px."""
    from pipeline.models.profiling import profile_training_step
    from pipeline.training.trainer import prepare_device

    prepare_device(ctx.device)  # as the trainer runs
    torch.manual_seed(0)
    model = build_model("deunet", radius=1, **ctx.sizes.model_args)
    return profile_training_step(model, size, ctx.sizes.train_batch, ctx.device, bf16=ctx.cuda,
                                 channels_last=ctx.train_config().channels_last)  # fmt: skip


# ---------------------------------------------------------------- 5-7. Table 1, CPU vs CUDA, more folds


def _val_every(epochs: int) -> int:
    """Validate about four times (and after the last epoch): the other epochs time training alone."""
    return max(2, math.ceil(epochs / 4))


def _epoch_s(ctx: Context, name: str, n_train: int, n_val: int, val_every: int) -> float | None:
    """An epoch's expected seconds at Table 1's size, from the raw clips/s."""
    cps = ctx.raw_rate(name, ctx.sizes.table_size)
    return n_train / (cps * EFFICIENCY) + n_val / (3 * cps) / val_every + EPOCH_OVERHEAD_S if cps else None


def _plan(ctx: Context, n_train: int, n_val: int, seconds: float) -> dict[str, Any]:
    """The same number of epochs for every model, so that all eight trainings and evaluations fit."""
    models, sz = MODELS, ctx.sizes
    plan: dict[str, Any] = {"models": models, "size": sz.table_size, "model_args": sz.model_args,
                            "seconds": round(seconds, 1), "efficiency_assumed": EFFICIENCY,
                            "eval_s_assumed": EVAL_S, "model_overhead_s": MODEL_OVERHEAD_S}  # fmt: skip
    if sz.epochs is not None:
        return {**plan, "epochs": sz.epochs, "how": "fixed (dry run)"}
    per = {m: _epoch_s(ctx, m, n_train, n_val, 8) for m in models}
    if any(v is None for v in per.values()):
        return {**plan, "epochs": 20, "how": "no 96-px throughput measured: 20, the clock stops it"}
    fixed = len(models) * (MODEL_OVERHEAD_S + EVAL_S)
    epochs = max(1, min(ctx.train_config().max_epochs, int((seconds - fixed) // sum(per.values()))))  # type: ignore[arg-type]
    return {**plan, "epochs": epochs, "epoch_s_estimate": per, "how": "planned from the 96-px clips/s"}


def _clip_counts(ctx: Context) -> tuple[tuple[int, int], list[dict[str, Any]]]:
    """(training clips, validation clips) of fold 0 at Table 1's size, and the split's folds."""
    store, folds = ctx.store(ctx.sizes.table_size)
    return (len(store.indices_for(folds[0]["train"])), len(store.indices_for(folds[0]["val"]))), folds


def _evaluate(ctx: Context, ckpt: Path, val: list[str], fold: int, tta: str) -> dict[str, Any]:
    """Cases of raw and lcc_fill on the fold's validation patients, and their headline means."""
    from pipeline.evaluation.config import EvaluateConfig
    from pipeline.experiments.scoring import headline, pooled_cases, score_fold

    start = time.perf_counter()
    cfg = EvaluateConfig(whole_cycle=False, tta=tta, overlays=0, batch_size=64)
    results = score_fold([ckpt], ctx.raw_root, val, fold, cfg, device=str(ctx.device))
    cases = {v: pooled_cases(results, v) for v in VARIANTS}
    return {"seconds": time.perf_counter() - start, "cases": cases, "headline": {v: headline(c) for v, c in cases.items()}}  # fmt: skip


def _export_weights(ctx: Context, ckpt: Path, name: str, fold: int) -> dict[str, Any]:
    """The checkpoint's weights (fp16) in ``--out``/weights when within the limits; the row that says so."""
    a, row = ctx.args, {"model": name, "fold": fold}
    written = [w["bytes"] for w in ctx.data["weights"] if "bytes" in w]
    if len(written) >= a.weights_max_files:
        return {**row, "skipped": f"{a.weights_max_files} files written already"}
    path = ctx.out / "weights" / f"{name}-fold{fold}.pt"
    size = device_bundle.fp16_weights(ckpt, path)
    total = sum(written) + size
    if size > a.weights_max_mib * 2**20 or total > a.weights_total_mib * 2**20:
        path.unlink()
        return {**row, "skipped": f"{size / 2**20:.1f} MiB; limits {a.weights_max_mib} MiB a file, "
                f"{a.weights_total_mib} MiB together ({total / 2**20:.1f} with it)"}  # fmt: skip
    return {**row, "file": f"weights/{path.name}", "bytes": size, "dtype": "float16"}


def _train_eval(ctx: Context, name: str, fold: int, deadline: float | None, corr: dict[str, float]) -> bool:
    """Train one (model, fold) with the planned epochs (stopped between epochs at ``deadline``), evaluate it,
    export its weights; its entry in ``table1.entries`` fills as it goes, an error is recorded there. Whether
    it ran through; ``corr``: the planning's correction factors, updated."""
    entry: dict[str, Any] = {"model": name, "fold": fold}
    ctx.data["table1"]["entries"][f"{name}/fold{fold}"] = entry
    try:
        store, folds = ctx.store(ctx.sizes.table_size)
        spec, epochs = folds[fold], ctx.data["table1"]["plan"]["epochs"]
        n_train = len(store.indices_for(spec["train"]))
        warmup = min(ctx.train_config().warmup_epochs, max(epochs // 10, 1), max(epochs - 1, 0))
        cfg = ctx.train_config(model=name, folds=[fold], max_epochs=epochs, patience=epochs,
                               val_every=_val_every(epochs), warmup_epochs=warmup)  # fmt: skip
        entry.update(epochs_planned=epochs, val_every=cfg.val_every, warmup_epochs=cfg.warmup_epochs, train_clips=n_train,
                     val_patients=spec["val"], deadline_in_s=None if deadline is None else round(deadline - time.monotonic(), 1))  # fmt: skip
        run = train_until(store, {"folds": folds}, cfg, ctx.work / "table1" / name, fold, deadline)
        rates = run.rates(n_train, ctx.raw_rate(name, ctx.sizes.table_size))
        del rates["wall_clips_per_s"]  # the whole epoch as a share of the raw rate only
        scored = [h for h in run.history if not math.isnan(h["val_dice"])]
        entry.update(stopped_by_clock=run.stopped_by_clock, **({"steps": run.steps} if run.steps else {}),
                     epochs_run=len(run.history), train_s=round(run.seconds, 1),
                     epoch_wall_s=[round(h["wall_s"], 2) for h in run.history], **rates,
                     val_dice=scored[-1]["val_dice"] if scored else None,
                     val_curve=[[int(h["epoch"]), round(h["val_dice"], 4)] for h in scored])  # fmt: skip
        estimate = _epoch_s(ctx, name, n_train, len(store.indices_for(spec["val"])), cfg.val_every)
        if estimate and len(run.history) > 1:
            corr["train"] = run.median_s("wall_s") / estimate  # type: ignore[operator]
        ctx.checkpoints[(name, fold)] = run.checkpoint
        ctx.save()
        entry["evaluation"] = {tta: _evaluate(ctx, run.checkpoint, spec["val"], fold, tta) for tta in ("none", ctx.sizes.eval_tta)}  # fmt: skip
        corr["eval"] = sum(e["seconds"] for e in entry["evaluation"].values()) / EVAL_S
        try:
            ctx.data["weights"].append(_export_weights(ctx, run.checkpoint, name, fold))
        except Exception as exc:  # the measurements stand without the weights
            ctx.data["weights"].append({"model": name, "fold": fold, "skipped": error_summary(exc, 500)})
        return True
    except Exception as exc:
        entry["error"] = error_summary(exc, 1500)
        return False
    finally:
        ctx.save()


def _train_jobs(ctx: Context, res: dict[str, Any], jobs: list[tuple[str, int]], reserve_s: float, share: float) -> None:  # fmt: skip
    """Train and evaluate ``jobs`` (model, fold) in order with the plan's epochs, each stopped by the clock so
    that its evaluation ends ``reserve_s`` before the budget's end. ``share`` < 1 (Table 1: every model gets
    its turn): the jobs after it keep their estimated time too, and a job starts when ``share`` of its
    training time is left; 1 (more folds): when all of it is. The dry run trains every job unclocked.
    Jobs that ran through go into ``res["ran"]`` where it exists, those left out into ``res["skipped"]``."""
    plan, n = ctx.data["table1"]["plan"], _clip_counts(ctx)[0]
    corr = ctx.data["table1"].setdefault("correction", {"train": 1.0, "eval": 1.0})

    def train_s(name: str) -> float:  # estimated: the planned epochs at the corrected epoch time
        return plan["epochs"] * (_epoch_s(ctx, name, *n, _val_every(plan["epochs"])) or 5.0) * corr["train"] + MODEL_OVERHEAD_S  # fmt: skip

    for i, (name, fold) in enumerate(jobs):
        deadline = None
        if ctx.sizes.epochs is None:
            eval_s = EVAL_S * corr["eval"]
            rest = sum(train_s(m) + eval_s for m, _ in jobs[i + 1 :]) if share < 1 else 0.0
            deadline = ctx.deadline - reserve_s - rest - eval_s
            if deadline - time.monotonic() < share * train_s(name):
                res["skipped"].append(f"{name}/fold{fold}: needs ~{train_s(name) + eval_s:.0f} s, {ctx.left():.0f} s left")  # fmt: skip
                continue
        if _train_eval(ctx, name, fold, deadline, corr) and "ran" in res:
            res["ran"].append(f"{name}/fold{fold}")


def section_table1(ctx: Context, res: dict[str, Any]) -> str:
    t1 = ctx.data["table1"]
    if t1["plan"] and all(f"{m}/fold0" in t1["entries"] for m in t1["plan"]["models"]):  # a resumed plan
        res.update(ctx.previous["sections"]["table1"].get("result", {}), note="every model resumed")  # type: ignore[index]
        return "ok"
    (n_train, n_val), folds = _clip_counts(ctx)
    later = CPU_VS_CUDA_S if "cpu_vs_cuda" in ctx.selected else 0.0
    t1["plan"] = t1["plan"] or _plan(ctx, n_train, n_val, (ctx.left() - later) * (1 - SAFETY))
    res.update(epochs=t1["plan"]["epochs"], train_clips=n_train, val_clips=n_val, fold0_val=folds[0]["val"],
               split_matches_bundle=folds[0]["val"] == ctx.bundle_info["fold0_val"],
               left_at_start_s=round(ctx.left(), 1), skipped=[])  # fmt: skip
    ctx.save()
    _train_jobs(ctx, res, [(m, 0) for m in t1["plan"]["models"] if f"{m}/fold0" not in t1["entries"]], later + 5.0, 0.3)  # fmt: skip
    done = [m for m in t1["plan"]["models"] if "evaluation" in t1["entries"].get(f"{m}/fold0", {})]
    return "ok" if len(done) == len(t1["plan"]["models"]) else "fail"


def section_cpu_vs_cuda(ctx: Context, res: dict[str, Any]) -> str:
    from pipeline.evaluation.metrics import dice
    from pipeline.inference.predict import Segmenter

    ckpt, source = ctx.checkpoints.get(("deunet", 0)), "this run's Table 1"
    if ckpt is None and ctx.args.resume:  # the --resume run's exported weights of it
        ckpt = Path(ctx.args.resume).parent / "weights" / "deunet-fold0.pt"
        ckpt, source = (ckpt, f"{ckpt} (fp16 weights of the resumed run)") if ckpt.is_file() else (None, "")
    if ckpt is None:
        return "skipped: no DeU-Net fold-0 checkpoint (Table 1 did not train it in this run)"
    entry = ctx.data["table1"]["entries"].get("deunet/fold0", {})
    res["checkpoint"] = {"source": source, "epochs": entry.get("epochs_run"), "val_dice": entry.get("val_dice"),
                         "model_args": ctx.sizes.model_args, "size": ctx.sizes.table_size}  # fmt: skip
    res["tolerance"] = {"fp32": FP32_DICE, "bf16": BF16_DICE}
    pid, cine, spacing = device_bundle.load_check_cine(ctx.bundle)
    res["cine"] = {"patient": pid, "shape_tzyx": list(cine.shape), "in_fold0_val": pid in ctx.bundle_info["fold0_val"]}  # fmt: skip
    start = time.perf_counter()
    reference = Segmenter.from_files([ckpt], device="cpu", bf16=False).predict(cine, spacing=spacing)
    res["cpu_s"], res["comparisons"] = time.perf_counter() - start, []
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for bf16 in (False, True) if ctx.cuda else (False,):
            # fp32 strictly: without TF32, which cuDNN would otherwise use for fp32 convolutions
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            seg = Segmenter.from_files([ckpt], device=str(ctx.device), bf16=bf16)
            start = time.perf_counter()
            pred = seg.predict(cine, spacing=spacing)
            sync(ctx.device)
            agree = {s: dice(pred == STRUCTURES[s], reference == STRUCTURES[s]) for s in STRUCTURE_ORDER}
            tol = BF16_DICE if bf16 else FP32_DICE
            res["comparisons"].append({"device": str(ctx.device), "bf16": bf16, "seconds": time.perf_counter() - start,
                                       "dice_vs_cpu": agree, "pixels_differing": int((pred != reference).sum()),
                                       "pixels": int(pred.size), "tolerance": tol, "ok": min(agree.values()) >= tol})  # fmt: skip
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return "ok" if all(c["ok"] for c in res["comparisons"]) else "fail"


def section_more_folds(ctx: Context, res: dict[str, Any]) -> str:
    sz, entries, plan = ctx.sizes, ctx.data["table1"]["entries"], ctx.data["table1"]["plan"]
    if plan is None:
        return "skipped: no Table 1 plan (table1 did not run, and no --resume report has one)"
    models, n_folds = list(sz.extra_models or plan["models"]), int(ctx.params["split"]["n_folds"])
    jobs = [(m, f) for f in sz.extra_folds for m in FIRST if m in models]
    jobs += [(m, f) for f in sz.extra_folds for m in models if m not in FIRST]
    jobs = [(m, f) for m, f in jobs if f < n_folds and f"{m}/fold{f}" not in entries]
    res.update(epochs=plan["epochs"], planned=[f"{m}/fold{f}" for m, f in jobs], ran=[], skipped=[])
    if not jobs:
        return "skipped: every fold resumed (nothing left to train)"
    _train_jobs(ctx, res, jobs, 10.0, 1.0)
    if any("error" in entries.get(f"{m}/fold{f}", {}) for m, f in jobs):
        return "fail"
    return "ok" if res["ran"] else "skipped: no fold fits in the time left"


# ---------------------------------------------------------------- the markdown report, from the JSON

#: Column headers other than the key (with ``_`` read as a space).
HEADERS = {"shape": "input B x C x H x W", "c_out": "C_out", "forward_rel_err": "forward", "backward_rel_err": "backward (offset: kept)",
           "offset_out_of_tol_all": "offset grads out of tol.: all", "offset_out_of_tol_kept": "kept",
           "offset_elements": "offset grads", "offset_kept": "kept ones", "logits_dtype": "logits", "size": "px",
           "cuda_graph": "CUDA graph", "clips_per_s": "clips/s", "peak_mb": "peak MB (CUDA: max allocated; CPU: peak RSS)",
           "real_clips_per_s": "real clips/s (training)", "wall_clips_per_s": "clips/s (whole epoch)",
           "raw_clips_per_s": "raw clips/s", "real_fraction": "real / raw", "wall_fraction": "whole epoch / raw",
           "name": "kernel / op (self time)", "part": "part (forward only)", "stopped_by_clock": "stopped by the clock",
           "val_dice": "val Dice (2D, last scored)", "tta": "TTA", "variant": "post-processing", "mean_dice": "mean Dice",
           "mean_hd": "mean HD (mm)", "mean_assd": "mean ASSD (mm)", "dice_RV_ES": "RV ES Dice", "dice_vs_cpu": "Dice vs CPU",
           "tolerance": "Dice at least"}  # fmt: skip


def _f(value: Any, digits: int = 3) -> str:
    """A value in the report: n/a, yes/no, ``digits`` decimals (3 significant digits when tiny or huge), a
    dict as ``key value / ...`` (4 decimals), a list as ``a x b``."""
    if isinstance(value, dict):
        return " / ".join(f"{k} {_f(v, 4)}" for k, v in value.items())
    if isinstance(value, list):
        return " x ".join(map(str, value))
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == 0 or 1e-2 <= abs(value) < 1e4 else f"{value:.3g}"
    return str(value).replace("|", "/")


def _grid(header: list[str], cells: Iterable[list[Any]]) -> list[str]:
    line = partial(str.join, " | ")
    return [f"| {line(header)} |", "|" + "---|" * len(header), *(f"| {line(map(_f, row))} |" for row in cells)]  # fmt: skip


def _note(row: dict[str, Any]) -> str:
    """The last line of a row's error or reason for being skipped, or that it was resumed."""
    text = row.get("error") or row.get("skipped") or ""
    return text.strip().splitlines()[-1][:160] if text else "resumed" if row.get("resumed") else ""


def _table(rows: list[dict[str, Any]], keys: str, defaults: dict[str, Any] | None = None) -> list[str]:
    """A markdown table of ``rows`` with the columns ``keys`` (a key a row lacks: ``defaults``' value, else
    n/a), and a note column where a row has one (:func:`_note`)."""
    cols, notes = keys.split(), any(map(_note, rows))
    header = [HEADERS.get(k, k.replace("_", " ")) for k in cols] + ["note"] * notes
    return _grid(header, ([r.get(k, (defaults or {}).get(k)) for k in cols] + [_note(r)] * notes for r in rows))  # fmt: skip


def _md_deform(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    tol, s = res.get("tolerance", {}), res.get("speed")
    lines = [f"Relative error = max |grid_sample - torchvision| / max |torchvision|; tolerances: forward "
             f"{tol.get('forward')}, backward {tol.get('backward')}. Offset gradients are compared where the sample "
             f"position is at least {tol.get('offset_kink_px')} px from an integer row and column (bilinear "
             f"interpolation's kink: there the two kernels take different one-sided derivatives); the share of "
             f"offset-gradient elements out of tolerance is given over all of them and over the kept ones.", "",
             *_table(res.get("cases", []), "shape c_out offset_groups modulated forward_rel_err backward_rel_err "
                     "offset_out_of_tol_all offset_out_of_tol_kept offset_out_of_tol_near_kink offset_elements offset_kept ok")]  # fmt: skip
    if "gradcheck_float64" in res:
        lines += ["", "float64 `torch.autograd.gradcheck` (finite differences) at sample positions 0.1-0.9 px off the "
                      f"grid, modulated, 2 offset groups: {_f(res['gradcheck_float64'])}."]  # fmt: skip
    if s:
        lines += ["", f"Forward + backward, 3x3, {_f(s['shape'])}: grid_sample {s['grid_sample_ms']:.1f} ms, "
                      f"torchvision {s['torchvision_ms']:.1f} ms, plain conv {s['conv_ms']:.1f} ms."]  # fmt: skip
    return lines


def _md_train_step(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    return [f"{res.get('size')} x {res.get('size')}, batch {res.get('batch')}, {res.get('model_args')}, "
            f"bf16 autocast: {_f(res.get('bf16_autocast'))}.", "",
            *_table(res.get("rows", []), "model loss logits_dtype loss_finite grads_finite weights_finite ok")]  # fmt: skip


def _md_speed_inference(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    goals = ", ".join(f"{m} <= {s} s" for m, s in res.get("goals_s", {}).items())
    return [f"One cine of {_f(res.get('cine', []))} (T x Z x Y x X) through `Segmenter.predict` (normalisation, "
            f"resizing, clips, batch {res.get('batch')}, mapping back, argmax), {res.get('model_args')}, median of "
            f"{res.get('repeats')}; seconds per cine; goals on an H100/H200: {goals} (met).", "",
            *_table(res.get("rows", []), "model bf16 compile seconds met peak_mb"),
            *(f"\nDeU-Net / U-Net time per cine ({k[-4:]}): {res[k]:.2f}x" for k in
              ("deunet_over_unet_bf16", "deunet_over_unet_fp32") if k in res)]  # fmt: skip


def _md_speed_training(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    cols = "model size channels_last cuda_graph clips_per_s peak_mb graph"
    lines = [f"Forward + backward + Adam step, batch {res.get('batch')}, {res.get('model_args')}, {res.get('steps')} "
             f"timed steps, as the trainer runs them: bf16 autocast: {_f(res.get('bf16_autocast'))}, channels_last: "
             f"{_f(res.get('channels_last'))}, CUDA graph: {_f(res.get('cuda_graph'))}; size in px.", "",
             *_table(res.get("rows", []), cols, res)]  # fmt: skip
    if res.get("variants"):
        lines += ["", "One choice of the trainer changed at a time:", "", *_table(res["variants"], cols, res)]
    if res.get("real_epochs"):
        lines += ["", "Real epochs of `train_fold` (fold 0, the profile's loader; after the first epoch, the validated "
                      "last one left out of the whole-epoch (wall) figure; target: real / raw >= 0.85):", "",
                  *_table(res["real_epochs"], "model size real_clips_per_s wall_clips_per_s raw_clips_per_s "
                          "real_fraction wall_fraction steps")]  # fmt: skip
    for size, ratio in res.get("deunet_over_unet", {}).items():
        lines.append(f"\nDeU-Net / U-Net training clips/s at {size} px: {ratio:.2f} (goal >= {res.get('ratio_goal')}: "
                     f"met {_f(ratio >= res.get('ratio_goal', 0.5))})")  # fmt: skip
    for prof in res.get("profile", []):
        if "kernels" not in prof:
            lines += ["", f"DeU-Net profile at {prof.get('size')} px: {_note(prof)}"]
            continue
        lines += ["", f"Where one DeU-Net training step goes at {prof['size']} px, batch {prof['batch']} (torch profiler; "
                      f"step {prof['step_ms']:.1f} ms, {prof['device_total_ms']:.1f} ms of kernels):", "",
                  *_table(prof["kernels"], "name calls ms share"), "",
                  *_table(prof["parts"][:12], "part forward_ms share_of_forward")]  # fmt: skip
    return lines


def _cases(entry: dict[str, Any], tta: str, variant: str) -> list[dict[str, Any]]:
    return entry.get("evaluation", {}).get(tta, {}).get("cases", {}).get(variant, [])


def _headlines(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row per (entry, TTA, post-processing): its headline means and the evaluation's seconds."""
    return [{"model": e["model"], "fold": e["fold"], "tta": tta, "variant": v, "eval_s": ev.get("seconds"), **h}
            for e in entries for tta, ev in e.get("evaluation", {}).items() for v, h in ev.get("headline", {}).items()]  # fmt: skip


def _best_variant(entries: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The (TTA, post-processing) with the highest mean Dice averaged over the entries."""
    scores: dict[tuple[str, str], list[float]] = {}
    for h in _headlines(entries):
        scores.setdefault((h["tta"], h["variant"]), []).append(h["mean_dice"])
    full = {k: sum(v) / len(v) for k, v in scores.items() if len(v) == len(entries)}
    return max(full, key=lambda k: full[k]) if full else None


def _paper_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """Models as rows; Dice, HD and ASSD (mean ± std over the cases) per structure and phase, then the
    average Dice (pipeline.evaluation.summarise's numbers)."""
    from pipeline.evaluation import summarise

    cols = [(m, s, p) for m in ("dice", "hd", "assd") for s in STRUCTURE_ORDER for p in PHASES]
    header = ["model", *(f"{m.upper() if m != 'dice' else 'Dice'} {s} {p}" for m, s, p in cols), "mean Dice"]
    out = []
    for name, cases in rows:
        summary = summarise(cases)
        stats = [(summary["by_phase"][p][s][m], 3 if m == "dice" else 2) for m, s, p in cols]
        cells = [f"{st['mean']:.{d}f} ± {st['std']:.{d}f}" if st["n"] else "n/a" for st, d in stats]
        out.append([name, *cells, summary["average"]["all"]["dice"]["mean"]])
    return _grid(header, out)


def _training_rows(entries: list[dict[str, Any]]) -> list[str]:
    return _table(entries, "model fold epochs_planned epochs_run stopped_by_clock train_s real_clips_per_s "
                  "raw_clips_per_s real_fraction wall_fraction val_dice steps")  # fmt: skip


def _variants_rows(entries: list[dict[str, Any]]) -> list[str]:
    return _table(_headlines(entries), "model fold tta variant mean_dice mean_hd mean_assd dice_RV_ES eval_s")


def _md_table1(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    plan, entries = data["table1"].get("plan") or {}, data["table1"]["entries"].values()
    fold0 = [e for e in entries if e.get("fold") == 0]
    done = [e for e in fold0 if "evaluation" in e]
    best = _best_variant(done)
    lines = [f"acdc-roi fold 0: {res.get('train_clips')} training clips, {res.get('val_clips')} validation clips "
             f"({len(res.get('fold0_val', []))} patients; same split as the bundle: {_f(res.get('split_matches_bundle'))}); "
             f"{plan.get('size')} px, {plan.get('model_args')}, the acdc-roi-gpu profile otherwise. Epochs: "
             f"{plan.get('epochs')} for every model ({plan.get('how')}; {plan.get('seconds')} s planned"
             f"{'; resumed plan' if plan.get('resumed') else ''}). 3D metrics at the original resolution with the "
             f"header spacing; real clips/s = training clips / training seconds of an epoch (target: real / raw >= "
             f"{REAL_FRACTION_GOAL}), raw clips/s at {plan.get('size')} px; wall: the whole epoch.", "",
             *_training_rows(fold0), *(f"\nNot trained: {s}" for s in res.get("skipped", []))]  # fmt: skip
    if best:
        lines += ["", f"### Table 1 (fold 0, TTA {best[0]}, {best[1]}: the variant with the best mean Dice)", "",
                  *_paper_table([(e["model"], _cases(e, *best)) for e in done]),
                  "", "All four variants (means over structures and phases):", "", *_variants_rows(done)]  # fmt: skip
    if data["weights"]:
        lines += ["", "Weights (fp16 state dicts with model name, config, preprocessing and view; load with "
                      "`Segmenter.from_files`):", "", *_table(data["weights"], "model fold file bytes")]  # fmt: skip
    return lines


def _md_cpu_vs_cuda(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    c, cine = res.get("checkpoint"), res.get("cine")
    return [*([f"Checkpoint: Table 1's DeU-Net fold 0 ({c['source']}), {c['model_args']} at {c['size']} px, "
               f"{c['epochs']} epoch(s), validation Dice {_f(c['val_dice'])}."] if c else []),
            *([f"Cine: {cine['patient']} (T, Z, Y, X) = {tuple(cine['shape_tzyx'])}, a fold-0 validation patient: "
               f"{_f(cine['in_fold0_val'])}. CPU fp32 prediction: {_f(res.get('cpu_s'), 2)} s. CUDA fp32 with TF32 "
               f"off; tolerances (Dice per structure vs CPU fp32): {res.get('tolerance')}; seconds per cine."] if cine else []),
            "", *_table(res.get("comparisons", []), "device bf16 seconds dice_vs_cpu pixels_differing pixels tolerance ok")]  # fmt: skip


def _md_more_folds(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    entries = list(data["table1"]["entries"].values())
    later = [e for e in entries if e.get("fold", 0) > 0]
    lines = [f"Epochs: {res.get('epochs')} (Table 1's plan). Ran: {', '.join(res.get('ran', [])) or 'none'}.",
             *(f"Not trained: {s}" for s in res.get("skipped", []))]  # fmt: skip
    if later:
        lines += ["", *_training_rows(later), "", *_variants_rows([e for e in later if "evaluation" in e])]
    pooled: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if "evaluation" in e:
            pooled.setdefault(e["model"], []).append(e)
    pooled = {m: es for m, es in pooled.items() if len(es) > 1}
    best = _best_variant([e for es in pooled.values() for e in es])
    if best:
        lines += ["", f"### Pooled over folds (TTA {best[0]}, {best[1]}; cases of every evaluated fold together)", "",
                  *_paper_table([(f"{m} (folds {', '.join(str(e['fold']) for e in es)})",
                                  [c for e in es for c in _cases(e, *best)]) for m, es in pooled.items()])]  # fmt: skip
    return lines


#: Each section: what runs it, its title in the report, what renders its result.
SECTIONS: dict[str, tuple[Callable[[Context, dict[str, Any]], str], str, Callable[..., list[str]]]] = {
    "deform_conv": (section_deform_conv, "deform_conv2d: torchvision's kernel vs the grid_sample path", _md_deform),
    "train_step": (section_train_step, "One bf16-autocast training step per model", _md_train_step),
    "speed_inference": (section_speed_inference, "Inference speed per cine", _md_speed_inference),
    "speed_training": (section_speed_training, "Raw training throughput", _md_speed_training),
    "table1": (section_table1, "Table 1: the eight models on acdc-roi fold 0", _md_table1),
    "cpu_vs_cuda": (section_cpu_vs_cuda, "CPU vs CUDA predictions of Table 1's DeU-Net on a real cine", _md_cpu_vs_cuda),
    "more_folds": (section_more_folds, "More folds, and Table 1 pooled over folds", _md_more_folds),
}  # fmt: skip


def render_markdown(data: dict[str, Any]) -> str:
    """The report: what ran where, one status line per section, then each section's tables."""
    meta, sections = data["meta"], data["sections"]
    b = meta.get("bundle", {})
    lines = ["# GPU check", "",
             f"`{meta['command']}` on {meta['device_name']} ({meta['device']}), torch {meta['torch']}, torchvision "
             f"{meta['torchvision']}, CUDA {meta['cuda']}, Python {meta['python']}, {meta['cpu_count']} CPUs; started "
             f"{meta['started']}; {meta.get('elapsed_s', 0):.0f} s of a {meta['budget_s']:.0f} s budget"
             f"{'; DRY RUN (CPU, tiny sizes)' if meta['dry_run'] else ''}"
             + (f"; resumed from {meta['resumed_from']}" if meta.get("resumed_from") else "")
             + (f" ({meta['resume_note']})" if meta.get("resume_note") else "") + ".",
             f"Data: {b.get('patients')} patients ({b.get('source')}), {b.get('frames_kept')} of {b.get('frames_total')} "
             f"frames kept, bundle {b.get('bytes', 0) / 2**20:.1f} MiB.", "",
             *_table([{"section": n, **s} for n, s in sections.items()], "section status seconds")]  # fmt: skip
    for i, (name, s) in enumerate(sections.items(), 1):
        _, title, render = SECTIONS[name]
        lines += ["", f"## {i}. {title} ({s['status']})", ""]
        if s.get("result"):
            try:
                lines += render(s["result"], data)
            except Exception as exc:  # a partial result must never lose the report
                lines.append(f"(could not render the partial result: {type(exc).__name__}: {exc})")
        if "error" in s:
            lines += ["", "```", s["error"].strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command


def _meta(args: argparse.Namespace, device: torch.device, info: dict[str, Any]) -> dict[str, Any]:
    import torchvision

    return {"command": " ".join(["python", "-m", "benchmarks.gpu_check", *args.argv]),
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "dry_run": args.dry_run,
            "budget_s": args.budget_s, "resumed_from": args.resume, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "bundle": {**{k: info[k] for k in ("source", "frames_kept", "frames_total", "bytes", "check_patient")},
                       "patients": len(info["patients"])}}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the selected sections in SECTIONS order, each wrapped; the report is rewritten after each.
    A section that ended ok in the ``--resume`` report is copied, not rerun (Table 1's sections always
    run: they skip the (model, fold) entries already evaluated)."""
    ctx = Context(args)
    ctx.save()
    previous = (ctx.previous or {}).get("sections", {})
    for name in (n for n in SECTIONS if n in ctx.selected):
        entry, old = ctx.data["sections"][name], previous.get(name, {})
        if old.get("status") == "ok" and name not in ("table1", "more_folds"):
            entry.update(old, resumed=args.resume)
            print(f"gpu_check: {name}: resumed (ok in {args.resume})", flush=True)
            continue
        entry.update(status="running", started_at_s=round(ctx.elapsed(), 1), result={})
        ctx.save()
        start = time.perf_counter()
        try:
            entry["status"] = SECTIONS[name][0](ctx, entry["result"])
        except Exception as exc:
            entry["status"], entry["error"] = "error", error_summary(exc)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        print(f"gpu_check: {name}: {entry['status']} in {entry['seconds']:.1f} s "
              f"({ctx.left():.0f} s of the budget left)", flush=True)  # fmt: skip
        ctx.save()
    print(f"gpu_check: done in {ctx.elapsed():.0f} s; {ctx.out / 'gpu_check.json'} and {ctx.out / 'gpu_check.md'}")  # fmt: skip
    return 0


def prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    split = merged_params(ROOT / "params.yaml", PROFILE)["split"]
    meta = device_bundle.prepare(Path(args.source).resolve(), Path(args.out), dict(split))
    device_bundle.copy_nibabel(Path(args.site))
    site_bytes = device_bundle.folder_bytes(Path(args.site))
    print(f"bundle: {len(meta['patients'])} patients, {meta['frames_kept']} of {meta['frames_total']} frames kept, "
          f"{meta['bytes'] / 2**20:.1f} MiB in {args.out}; nibabel {site_bytes / 2**20:.1f} MiB in {args.site}; "
          f"total {(meta['bytes'] + site_bytes) / 2**20:.1f} MiB (limit 64 MiB with the working tree); "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="write the compact acdc-roi bundle that travels to the GPU machine")
    pr.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "acdc-roi"))
    pr.add_argument("--out", default=str(ROOT / ".device" / "acdc-roi"))
    pr.add_argument("--site", default=str(ROOT / ".device" / "site"), help="where nibabel is copied")
    r = sub.add_parser("run", help="run the check (on a CUDA GPU; --dry-run: the CPU at tiny sizes)")
    r.add_argument("--out", default=str(ROOT / "data" / "bench" / "gpu_check"))
    r.add_argument("--bundle", default=str(ROOT / ".device" / "acdc-roi"))
    r.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    r.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run")
    r.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, one epoch; phantom data if no bundle")  # fmt: skip
    r.add_argument("--resume", default=None, metavar="PREVIOUS.json", help="skip what this earlier report measured")  # fmt: skip
    r.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=None, help="only these (in order)")  # fmt: skip
    r.add_argument("--workers", type=int, default=None,
                   help="processes for writing and preprocessing the data, DataLoader workers (default 8; dry run 0)")  # fmt: skip
    r.add_argument("--compile", action="store_true", help="also time DeU-Net under torch.compile (child process)")  # fmt: skip
    r.add_argument("--compile-limit-s", type=float, default=60.0, help="most seconds the torch.compile row may take")  # fmt: skip
    r.add_argument("--weights-max-files", type=int, default=6)
    r.add_argument("--weights-max-mib", type=float, default=16.0, help="largest weights file written")
    r.add_argument("--weights-total-mib", type=float, default=58.0,
                   help="all weights files together (the device tool returns 64 MiB at most, reports included)")  # fmt: skip
    args = p.parse_args(argv)
    args.argv, args.from_cli = list(sys.argv[1:] if argv is None else argv), argv is None
    return prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    sys.exit(main())

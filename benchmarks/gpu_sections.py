"""The six sections of ``benchmarks.gpu_check``, in its order; each fills its result dict as it goes.

A section returns "ok" (ran, every check within its tolerance) or "fail" (ran, a check out of tolerance or
a row that raised); an exception escaping it is recorded as "error" by the runner. Rows of several models
are guarded one by one, so one model's failure (an out-of-memory error, say) does not hide the others.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import shutil
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmarks import gpu_bundle

if TYPE_CHECKING:
    from benchmarks.gpu_check import Context

#: deform_conv2d tolerances, relative to the largest reference value (the CPU tests use the same forward one).
FORWARD_TOL, BACKWARD_TOL = 1e-4, 1e-3
AGREEMENT_DICE = 0.99
#: Seconds of the budget that torch.compile leaves to the accuracy section (two trainings + evaluations).
ACCURACY_MIN_S = 200.0
GOAL_DEUNET_CINE_S = 0.3


def error_summary(exc: BaseException, limit: int = 3000) -> str:
    """The exception and the last frames of its traceback, short enough for the JSON."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _guarded(fn: Callable[[], dict[str, Any]], **label: Any) -> dict[str, Any]:
    """One row of a section: ``fn()``'s dict, or the error, so one model's failure does not stop the rest."""
    try:
        return {**label, **fn()}
    except Exception as exc:
        return {**label, "error": error_summary(exc, 1500)}


# ---------------------------------------------------------------- 1. deform_conv


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def section_deform_conv(ctx: Context, res: dict[str, Any]) -> str:
    from benchmarks.model_bench import bench_deform
    from pipeline.models.deform_conv import deform_conv2d

    dev, rows = ctx.device, []
    res["tolerance"] = {"forward": FORWARD_TOL, "backward": BACKWARD_TOL, "relative_to": "max |reference|"}
    for b, c, h, w, c_out, groups, modulated in ctx.sizes.deform_cases:
        gen = torch.Generator().manual_seed(0)
        inputs = {"x": torch.randn(b, c, h, w, generator=gen),
                  "offset": torch.randn(b, 2 * groups * 9, h, w, generator=gen) * 2.0,
                  "weight": torch.randn(c_out, c, 3, 3, generator=gen) / (3 * c**0.5),
                  "bias": torch.randn(c_out, generator=gen)}  # fmt: skip
        if modulated:
            inputs["mask"] = torch.rand(b, groups * 9, h, w, generator=gen)
        upstream = torch.randn(b, c_out, h, w, generator=gen).to(dev)
        outs, grads = {}, {}
        for backend in ("torchvision", "grid_sample"):
            leaves = {k: v.to(dev, copy=True).requires_grad_() for k, v in inputs.items()}  # fresh .grad each
            out = deform_conv2d(leaves["x"], leaves["offset"], leaves["weight"], leaves["bias"], leaves.get("mask"),
                                padding=1, backend=backend)  # fmt: skip
            out.backward(upstream)
            outs[backend] = out.detach()
            grads[backend] = {k: v.grad for k, v in leaves.items()}
        backward = {k: _relative(grads["grid_sample"][k], grads["torchvision"][k]) for k in inputs}
        row: dict[str, Any] = {"shape": [b, c, h, w], "c_out": c_out, "offset_groups": groups,
                               "modulated": modulated, "backward_rel_err": backward,
                               "forward_rel_err": _relative(outs["grid_sample"], outs["torchvision"])}  # fmt: skip
        row["ok"] = row["forward_rel_err"] <= FORWARD_TOL and max(backward.values()) <= BACKWARD_TOL
        rows.append(row)
        res["cases"] = rows
    shape = ctx.sizes.deform_bench_shape
    res["speed"] = bench_deform(argparse.Namespace(deform_shape=shape, deform_repeats=ctx.sizes.repeats), dev)
    return "ok" if all(r["ok"] for r in rows) else "fail"


# ---------------------------------------------------------------- 2. train_step


def _one_train_step(ctx: Context, name: str) -> dict[str, Any]:
    from pipeline.models import DiceCELoss, build_model

    dev, s = ctx.device, ctx.sizes.size
    torch.manual_seed(0)
    model = build_model(name, radius=1, **ctx.sizes.model_args).to(dev).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    clip = torch.randn(2, 3, s, s, device=dev)
    target = torch.randint(0, 4, (2, s, s), device=dev)
    _reset_peak(dev)
    start = time.perf_counter()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=ctx.cuda):
        logits = model(clip)
    loss = DiceCELoss()(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    optimizer.step()
    _sync(dev)
    seconds = time.perf_counter() - start
    weights_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    row = {"loss": float(loss.detach()), "logits_dtype": str(logits.dtype).removeprefix("torch."), "seconds": seconds,
           "loss_finite": math.isfinite(float(loss.detach())), "grads_finite": grads_finite,
           "weights_finite": weights_finite, "peak_mb": _peak_mb(dev)}  # fmt: skip
    row["ok"] = row["loss_finite"] and grads_finite and weights_finite
    return row


def section_train_step(ctx: Context, res: dict[str, Any]) -> str:
    from pipeline.models import available_models

    res.update(size=ctx.sizes.size, batch=2, model_args=ctx.sizes.model_args, bf16_autocast=ctx.cuda, rows=[])
    for name in available_models():
        res["rows"].append(_guarded(partial(_one_train_step, ctx, name), model=name))
        ctx.save()
    return "ok" if all(r.get("ok") for r in res["rows"]) else "fail"


# ---------------------------------------------------------------- 3. cpu_vs_cuda


def _agreement(a: Any, b: Any) -> dict[str, float]:
    from pipeline.evaluation.metrics import dice
    from pipeline.vocabulary import STRUCTURE_ORDER, STRUCTURES

    return {name: dice(a == STRUCTURES[name], b == STRUCTURES[name]) for name in STRUCTURE_ORDER}


def section_cpu_vs_cuda(ctx: Context, res: dict[str, Any]) -> str:
    from pipeline.inference.predict import Segmenter
    from pipeline.preprocessing.store import ClipStore
    from pipeline.training.trainer import train_fold

    sz = ctx.sizes
    store, fold = ctx.store(sz.check_size)
    cfg = ctx.train_config(model="deunet", model_args=sz.check_model_args, max_epochs=sz.check_epochs,
                           patience=sz.check_epochs, warmup_epochs=0)  # fmt: skip
    work = ctx.work / "check"
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    trained = train_fold(ClipStore(store), fold["train"], fold["val"], cfg, work, 0, progress=False)
    res["checkpoint"] = {"model": "deunet", "model_args": sz.check_model_args, "size": sz.check_size,
                         "epochs": trained.epochs_run, "val_dice": trained.history[-1]["val_dice"],
                         "train_s": time.perf_counter() - start}  # fmt: skip
    ckpt = work / trained.model_file
    pid, cine, spacing = gpu_bundle.load_check_cine(ctx.bundle)
    res["cine"] = {"patient": pid, "shape_tzyx": list(cine.shape), "in_fold0_val": pid in fold["val"]}
    start = time.perf_counter()
    reference = Segmenter.from_files([ckpt], device="cpu", bf16=False).predict(cine, spacing=spacing)
    res["cpu_s"] = time.perf_counter() - start
    res["comparisons"] = []
    for bf16 in (True, False) if ctx.cuda else (False,):
        seg = Segmenter.from_files([ckpt], device=ctx.device, bf16=bf16)
        seg.predict(cine[:2], spacing=spacing)  # warm-up
        _sync(ctx.device)
        start = time.perf_counter()
        pred = seg.predict(cine, spacing=spacing)
        _sync(ctx.device)
        dice = _agreement(pred, reference)
        res["comparisons"].append({"device": str(ctx.device), "bf16": bf16, "seconds": time.perf_counter() - start,
                                   "dice_vs_cpu": dice, "pixels_differing": int((pred != reference).sum()),
                                   "ok": min(dice.values()) >= AGREEMENT_DICE})  # fmt: skip
    return "ok" if all(c["ok"] for c in res["comparisons"]) else "fail"


# ---------------------------------------------------------------- 4. speed_inference


def _bench_args(ctx: Context, **extra: Any) -> dict[str, Any]:
    """The argparse fields benchmarks.inference_bench's jobs read."""
    sz = ctx.sizes
    return {"threads": ctx.args.threads, "device": str(ctx.device), "model_args": json.dumps(sz.model_args),
            "radius": 1, "size": sz.size, "frames": sz.cine_frames, "slices": sz.cine_slices,
            "warmup": sz.warmup, "repeats": sz.repeats, **extra}  # fmt: skip


def _compiled_job(job: dict[str, Any], limit_s: float) -> dict[str, Any]:
    """infer_job with torch.compile in a child process, given at most ``limit_s`` (compilation included)."""
    from benchmarks.inference_bench import infer_job

    with mp.get_context("spawn").Pool(1) as pool:
        pending = pool.apply_async(infer_job, (job,))
        try:
            return pending.get(timeout=limit_s)
        except mp.TimeoutError:
            return {"error": f"not finished within {limit_s:.0f} s (compilation included); stopped"}


def _preprocess_seconds(ctx: Context) -> float:
    """The CPU share of a cine's time: Segmenter's normalisation and resizing of the same random cine."""
    import numpy as np

    from pipeline.preprocessing.geometry import Geometry
    from pipeline.preprocessing.intensity import normalise

    sz = ctx.sizes
    shape = (sz.cine_frames, sz.cine_slices, sz.size, sz.size)
    cine = np.random.default_rng(0).normal(100, 30, shape).astype(np.float32)
    start = time.perf_counter()
    norm, _ = normalise(cine, (0.5, 99.5))
    Geometry("resize", sz.size).images_to_network(
        norm.reshape(-1, sz.size, sz.size), None, fill=float(norm.min())
    )
    return time.perf_counter() - start


def _keep(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("args", "all_seconds")}


def section_speed_inference(ctx: Context, res: dict[str, Any]) -> str:
    from benchmarks.inference_bench import infer_job

    sz, models = ctx.sizes, ("unet", "deunet")
    res.update(cine=[sz.cine_frames, sz.cine_slices, sz.size, sz.size], batch=sz.infer_batch,
               model_args=sz.model_args, repeats=sz.repeats, rows=[])  # fmt: skip
    variants = [{"bf16": False, "channels_last": False}, {"bf16": False, "channels_last": True}]
    if ctx.cuda:
        variants = [
            variants[0],
            {"bf16": True, "channels_last": False},
            {"bf16": True, "channels_last": True},
        ]
    args = _bench_args(ctx)
    for variant in variants:
        for name in models:
            job = {"model": name, "batch": sz.infer_batch, "compile": False, **variant, "args": args}
            _reset_peak(ctx.device)
            res["rows"].append(
                _keep(
                    _guarded(partial(infer_job, job), **{k: job[k] for k in ("model", "compile", *variant)})
                )
            )
            ctx.save()
    # torch.compile last: compilation costs tens of seconds, and a later accuracy section keeps
    # ACCURACY_MIN_S of the budget
    reserve = ACCURACY_MIN_S if "accuracy" in ctx.selected else 0.0
    for name in sz.compile_models:
        limit = ctx.args.compile_limit_s
        label = {"model": name, "compile": sz.compile_backend, "bf16": ctx.cuda, "channels_last": False}
        if ctx.left() - reserve < limit:
            res["rows"].append(
                {**label, "skipped": f"budget: {ctx.left():.0f} s left, {reserve:.0f} s kept for accuracy"}
            )
            continue
        job = {
            **label,
            "compile": True,
            "compile_backend": sz.compile_backend,
            "batch": sz.infer_batch,
            "args": args,
        }
        res["rows"].append({**_keep(_guarded(partial(_compiled_job, job, limit), **label)), **label})
        ctx.save()
    res["cpu_preprocess_s"] = _preprocess_seconds(ctx)
    res["ratios"] = []
    for v in {(r["bf16"], r["channels_last"], r["compile"]) for r in res["rows"]}:
        same = {r["model"]: r["seconds"] for r in res["rows"]
                if (r["bf16"], r["channels_last"], r["compile"]) == v and "seconds" in r}  # fmt: skip
        if len(same) == 2:
            res["ratios"].append({"bf16": v[0], "channels_last": v[1], "compile": v[2],
                                  "deunet_over_unet": same["deunet"] / same["unet"]})  # fmt: skip
    best = [r["seconds"] for r in res["rows"] if r["model"] == "deunet" and "seconds" in r]
    res["goal"] = {"deunet_s_per_cine_at_most": GOAL_DEUNET_CINE_S, "best_deunet_s": min(best) if best else None,
                   "met": (bool(best) and min(best) <= GOAL_DEUNET_CINE_S) if ctx.cuda else None}  # fmt: skip
    failed = any("error" in r for r in res["rows"])
    return "fail" if failed else "ok"


# ---------------------------------------------------------------- 5. speed_training


def section_speed_training(ctx: Context, res: dict[str, Any]) -> str:
    from benchmarks.inference_bench import train_job
    from pipeline.models import available_models

    sz = ctx.sizes
    res.update(size=sz.size, model_args=sz.model_args, steps=sz.train_steps, bf16_autocast=ctx.cuda, rows=[])
    for name in available_models():
        for batch in sz.train_batches:
            job = {"model": name, "args": _bench_args(ctx, train_batch=batch, train_steps=sz.train_steps)}
            _reset_peak(ctx.device)
            row = _keep(_guarded(partial(train_job, job), model=name, batch=batch))
            res["rows"].append(row)
            if "clips_per_s" in row:
                ctx.throughput[(name, batch)] = row["clips_per_s"]
            ctx.save()
    return "fail" if any("error" in r for r in res["rows"]) else "ok"


# ---------------------------------------------------------------- 6. accuracy


class _OutOfTime(Exception):
    """Raised between epochs when the next epoch would end after the model's deadline."""


def _plan_epochs(ctx: Context, name: str, batch: int, n_train: int, n_val: int, seconds: float,
                 correction: float, cap: int) -> tuple[int, float | None]:  # fmt: skip
    """Epochs that fit in ``seconds`` by the measured clips/s (times a correction learnt on the first
    model), and the estimated seconds per epoch; without a measurement, ``cap`` (the clock then stops it)."""
    if ctx.sizes.epochs is not None:
        return ctx.sizes.epochs, None
    cps = ctx.throughput.get((name, batch))
    if not cps:
        return cap, None
    per_epoch = (n_train / cps * 1.3 + n_val / (3 * cps) + 2.0) * correction
    return max(1, min(cap, int(seconds // per_epoch))), per_epoch


def _evaluate(ctx: Context, ckpt: Path, val: list[str], tta: str) -> dict[str, Any]:
    from pipeline.evaluation import summarise
    from pipeline.evaluation.report import headline_means
    from pipeline.evaluation.runner import EvaluateConfig, evaluate_patients
    from pipeline.inference.predict import Segmenter

    seg = Segmenter.from_files([ckpt], device=ctx.device, tta=tta, batch_size=32)
    start = time.perf_counter()
    results = evaluate_patients(
        seg, ctx.raw_root(), val, 0, EvaluateConfig(whole_cycle=False, tta=tta), progress=False
    )
    out: dict[str, Any] = {"seconds": time.perf_counter() - start, "variants": {}}
    for variant in results[0].cases:
        summary = summarise([c for r in results for c in r.cases[variant]])
        means = {p: {s: {m: summary["by_phase"][p][s][m]["mean"] for m in ("dice", "hd", "assd")}
                     for s in summary["by_phase"][p]} for p in summary["by_phase"]}  # fmt: skip
        out["variants"][variant] = {
            "headline": headline_means(summary),
            "by_phase": means,
            "summary": summary,
        }
    return out


def section_accuracy(ctx: Context, res: dict[str, Any]) -> str:
    from pipeline.preprocessing.store import ClipStore
    from pipeline.training.trainer import train_fold

    sz, models = ctx.sizes, ("deunet", "unet")
    store_dir, fold = ctx.store(sz.size)
    store = ClipStore(store_dir)
    n_train, n_val = len(store.indices_for(fold["train"])), len(store.indices_for(fold["val"]))
    base = ctx.train_config()
    res.update(size=sz.size, model_args=sz.model_args, fold=0, train_clips=n_train, val_clips=n_val,
               val_patients=fold["val"], batch=base.batch_size, lr=base.lr, schedule=base.schedule,
               split_matches_bundle=fold["val"] == json.loads((ctx.bundle / "bundle.json").read_text())["fold0_val"],
               tta=["none", sz.eval_tta], models={})  # fmt: skip
    correction = 1.0
    for i, name in enumerate(models):
        share = (ctx.left() - 5.0 - sz.eval_reserve_s * (len(models) - i)) / (len(models) - i)
        if sz.epochs is None and share < 20:
            res["models"][name] = {"skipped": f"{ctx.left():.0f} s left of the budget"}
            continue
        epochs, estimate = _plan_epochs(
            ctx, name, base.batch_size, n_train, n_val, share, correction, base.max_epochs
        )
        cfg = ctx.train_config(model=name, model_args=sz.model_args, max_epochs=epochs, patience=epochs,
                               warmup_epochs=min(base.warmup_epochs, max(epochs // 10, 1), epochs - 1))  # fmt: skip
        work = ctx.work / "accuracy" / name
        shutil.rmtree(work, ignore_errors=True)
        entry: dict[str, Any] = {"planned_epochs": epochs, "estimated_epoch_s": estimate, "budget_s": share,
                                 "warmup_epochs": cfg.warmup_epochs}  # fmt: skip
        res["models"][name] = entry
        start = time.monotonic()
        deadline = start + share
        history: list[dict[str, float]] = []

        def on_epoch(row: dict[str, float], deadline: float = deadline, history: list = history,
                     last: int = epochs, start: float = start) -> None:  # fmt: skip
            # wall time since the previous epoch ended: training, validation and the checkpoint writes
            now = time.monotonic()
            wall = now - (history[-1]["ended"] if history else start)
            history.append({**row, "ended": now, "wall_s": wall})
            if sz.epochs is None and row["epoch"] < last and now + wall > deadline:
                raise _OutOfTime

        try:
            trained = train_fold(
                store, fold["train"], fold["val"], cfg, work, 0, on_epoch=on_epoch, progress=False
            )
            ckpt, entry["stopped_by_clock"] = work / trained.model_file, False
        except _OutOfTime:
            ckpt, entry["stopped_by_clock"] = work / "last.pt", True
        entry.update(train_s=time.monotonic() - start, epochs_run=len(history),
                     epoch_s=[round(h["wall_s"], 2) for h in history],
                     val_dice=[round(h["val_dice"], 4) for h in history],
                     train_loss=[round(h["train_loss"], 4) for h in history])  # fmt: skip
        steady = history[1:] or history  # the first epoch also pays for warm-up
        if estimate and steady:
            correction *= sum(h["wall_s"] for h in steady) / len(steady) / estimate
        ctx.save()
        entry["evaluation"] = {tta: _evaluate(ctx, ckpt, fold["val"], tta) for tta in ("none", sz.eval_tta)}
        ctx.save()
    done = [m for m in res["models"].values() if "evaluation" in m]
    return "ok" if len(done) == len(models) else "fail"


RUNNERS: dict[str, Callable[[Context, dict[str, Any]], str]] = {
    "deform_conv": section_deform_conv,
    "train_step": section_train_step,
    "cpu_vs_cuda": section_cpu_vs_cuda,
    "speed_inference": section_speed_inference,
    "speed_training": section_speed_training,
    "accuracy": section_accuracy,
}

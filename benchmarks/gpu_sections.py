"""The sections of ``benchmarks.gpu_check``, in its order; each fills its result dict as it goes.

A section returns "ok" (ran, every check within its tolerance), "fail" (ran, a check out of tolerance or
a row that raised) or "skipped: <why>"; an exception escaping it is recorded as "error" by the runner.
Rows of several models are guarded one by one, so one model's failure (an out-of-memory error, say) does
not hide the others.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import shutil
import statistics
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
#: Offset-gradient elements whose sample position lies this close to an integer row or column are left out.
KINK = 1e-3
#: CPU vs CUDA label agreement, Dice per structure: fp32 strictly, bf16 within a rounding tolerance.
FP32_DICE, BF16_DICE = 0.999, 0.99
INFER_GOALS_S = {"deunet": 0.3, "unet": 0.15}  # per 30 x 10 x 256 x 256 cine
RATIO_GOAL, REAL_FRACTION_GOAL = 0.5, 0.85
#: Table 1 planning: the real epoch's expected share of the raw clips/s (corrected after each model), the
#: per-epoch overhead (loaders, checkpoints), per-model overhead (build, warm-up) and evaluation seconds.
EFFICIENCY, EPOCH_OVERHEAD_S, MODEL_OVERHEAD_S, EVAL_S = 0.75, 0.4, 4.0, 12.0
CPU_VS_CUDA_S, SAFETY = 20.0, 0.08  # seconds kept for cpu_vs_cuda; share of the time left kept unplanned
FIRST = ("deunet", "unet")
VARIANTS = ("raw", "lcc_fill")


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


def _guarded(fn: Callable[[], dict[str, Any]], **label: Any) -> dict[str, Any]:
    """One row of a section: ``fn()``'s dict, or the error, so one model's failure does not stop the rest."""
    try:
        return {**label, **fn()}
    except Exception as exc:
        return {**label, "error": error_summary(exc, 1500)}


def _models() -> list[str]:
    """The registry's models, DeU-Net and U-Net first."""
    from pipeline.models import available_models

    return [*FIRST, *(m for m in available_models() if m not in FIRST)]


# ---------------------------------------------------------------- 1. deform_conv


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _positions(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regular sample rows and columns of every 3x3 tap (padding 1, stride 1), broadcastable to offsets
    viewed as (B, G, 3, 3, H, W) per coordinate."""
    h, w = shape[-2:]
    k = torch.arange(3, device=device, dtype=dtype)
    rows = torch.arange(h, device=device, dtype=dtype).view(h, 1) - 1 + k.view(3, 1, 1, 1)
    cols = torch.arange(w, device=device, dtype=dtype) - 1 + k.view(3, 1, 1)
    return rows, cols  # (3, 1, h, 1) and (3, 1, w): ki on dim -4, kj on dim -3


def _near_integer(offset: torch.Tensor, groups: int) -> torch.Tensor:
    """Per offset element: whether its tap's sample position lies within KINK of an integer row or column,
    where bilinear interpolation has a kink (both coordinates' elements of that tap)."""
    b, _, h, w = offset.shape
    off = offset.view(b, groups, 3, 3, 2, h, w)
    rows, cols = _positions(offset.shape, offset.device, offset.dtype)
    near = [((p - p.round()).abs() < KINK) for p in (rows + off[..., 0, :, :], cols + off[..., 1, :, :])]
    return (near[0] | near[1]).unsqueeze(4).expand_as(off).reshape(offset.shape)


def _gradcheck(device: torch.device) -> dict[str, Any]:
    """float64 gradcheck of both paths on a tiny modulated case, sample positions 0.1-0.9 px off the grid:
    True, or the first line of gradcheck's complaint. ``nondet_tol``: on CUDA both backward kernels add
    into the input's gradient with atomics, so two backward passes differ in the last bits (gradcheck's
    reentrancy check fails on exactly 0); 1e-10 is far below any real gradient error in float64."""
    gen, f64, h = torch.Generator().manual_seed(1), torch.float64, 5
    rows, cols = _positions((h, h), torch.device("cpu"), f64)
    base = torch.stack(torch.broadcast_tensors(rows, cols), dim=-3).expand(1, 2, 3, 3, 2, h, h)
    pos = (base + 1.5 * torch.randn(base.shape, generator=gen, dtype=f64)).floor()
    pos = pos + 0.1 + 0.8 * torch.rand(base.shape, generator=gen, dtype=f64)
    inputs = [torch.randn(1, 4, h, h, generator=gen, dtype=f64), (pos - base).reshape(1, 36, h, h),
              torch.randn(3, 4, 3, 3, generator=gen, dtype=f64), torch.randn(3, generator=gen, dtype=f64),
              torch.rand(1, 18, h, h, generator=gen, dtype=f64)]  # fmt: skip
    leaves = [t.to(device).requires_grad_() for t in inputs]
    out: dict[str, Any] = {}
    for backend in ("grid_sample", "torchvision"):
        try:
            out[backend] = bool(torch.autograd.gradcheck(partial(_deform_fn, backend=backend), leaves, eps=1e-6,
                                                         atol=1e-5, nondet_tol=1e-10))  # fmt: skip
        except Exception as exc:  # GradcheckError: keep why, not just "no"
            out[backend] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return out


def _deform_fn(x: Any, offset: Any, weight: Any, bias: Any, mask: Any, backend: str) -> torch.Tensor:
    from pipeline.models.deform_conv import deform_conv2d

    if backend == "torchvision":  # the project's wrapper casts to fp32; call torchvision in float64 directly
        import torchvision.ops

        return torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    return deform_conv2d(x, offset, weight, bias, mask, padding=1, backend="grid_sample")


def section_deform_conv(ctx: Context, res: dict[str, Any]) -> str:
    from benchmarks.model_bench import bench_deform
    from pipeline.models.deform_conv import deform_conv2d

    dev, rows = ctx.device, []
    res["tolerance"] = {"forward": FORWARD_TOL, "backward": BACKWARD_TOL, "relative_to": "max |reference|",
                        "offset_kink_px": KINK}  # fmt: skip
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
        ref, ours = grads["torchvision"]["offset"], grads["grid_sample"]["offset"]
        bad = (ours - ref).abs() > BACKWARD_TOL * ref.abs().max()
        kept = ~_near_integer(inputs["offset"].to(dev), groups)
        backward["offset"] = _relative(ours[kept], ref[kept])  # away from the kinks
        row: dict[str, Any] = {"shape": [b, c, h, w], "c_out": c_out, "offset_groups": groups,
                               "modulated": modulated, "backward_rel_err": backward,
                               "forward_rel_err": _relative(outs["grid_sample"], outs["torchvision"]),
                               "offset_elements": ref.numel(), "offset_kept": int(kept.sum()),
                               "offset_out_of_tol_all": float(bad.float().mean()),
                               "offset_out_of_tol_kept": float(bad[kept].float().mean()),
                               "offset_out_of_tol_near_kink": int((bad & ~kept).sum())}  # fmt: skip
        row["ok"] = row["forward_rel_err"] <= FORWARD_TOL and max(backward.values()) <= BACKWARD_TOL
        rows.append(row)
        res["cases"] = rows
    res["gradcheck_float64"] = _gradcheck(dev)
    shape = ctx.sizes.deform_bench_shape
    res["speed"] = bench_deform(argparse.Namespace(deform_shape=shape, deform_repeats=ctx.sizes.repeats), dev)
    return (
        "ok"
        if all(r["ok"] for r in rows) and all(v is True for v in res["gradcheck_float64"].values())
        else "fail"
    )


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
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=ctx.cuda):
        logits = model(clip)
    loss = DiceCELoss()(logits.float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    optimizer.step()
    weights_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    row = {"loss": float(loss.detach()), "logits_dtype": str(logits.dtype).removeprefix("torch."),
           "loss_finite": math.isfinite(float(loss.detach())), "grads_finite": grads_finite,
           "weights_finite": weights_finite}  # fmt: skip
    row["ok"] = row["loss_finite"] and grads_finite and weights_finite
    return row


def section_train_step(ctx: Context, res: dict[str, Any]) -> str:
    res.update(size=ctx.sizes.size, batch=2, model_args=ctx.sizes.model_args, bf16_autocast=ctx.cuda, rows=[])
    for name in _models():
        res["rows"].append(_guarded(partial(_one_train_step, ctx, name), model=name))
        ctx.save()
    return "ok" if all(r.get("ok") for r in res["rows"]) else "fail"


# ---------------------------------------------------------------- 3. speed_inference


def _bench_args(ctx: Context, size: int, **extra: Any) -> dict[str, Any]:
    """The argparse fields benchmarks.inference_bench's jobs read."""
    sz = ctx.sizes
    return {"threads": ctx.args.threads, "device": str(ctx.device), "model_args": json.dumps(sz.model_args),
            "radius": 1, "size": size, "frames": sz.cine_frames, "slices": sz.cine_slices,
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


def section_speed_inference(ctx: Context, res: dict[str, Any]) -> str:
    from benchmarks.inference_bench import infer_job

    sz, start = ctx.sizes, time.monotonic()
    res.update(cine=[sz.cine_frames, sz.cine_slices, sz.size, sz.size], batch=sz.infer_batch,
               model_args=sz.model_args, repeats=sz.repeats, goals_s=INFER_GOALS_S, rows=[])  # fmt: skip
    args = _bench_args(ctx, sz.size)
    for bf16 in (True, False) if ctx.cuda else (False,):
        if not bf16 and time.monotonic() - start > 20.0:
            res["rows"].append(
                {"model": "*", "bf16": False, "skipped": "fp32 left out: the bf16 rows took 20 s"}
            )
            continue
        for name in FIRST:
            job = {"model": name, "batch": sz.infer_batch, "compile": False, "bf16": bf16, "channels_last": False,
                   "args": args}  # fmt: skip
            _reset_peak(ctx.device)
            row = _guarded(partial(infer_job, job), model=name, bf16=bf16, compile=False)
            row = {k: v for k, v in row.items() if k not in ("args", "all_seconds", "channels_last", "batch")}
            if "seconds" in row:
                row["met"] = row["seconds"] <= INFER_GOALS_S[name] if ctx.cuda else None
            res["rows"].append(row)
            ctx.save()
    if ctx.args.compile:
        limit = min(ctx.args.compile_limit_s, max(ctx.left() - 300.0, 0.0))
        label = {"model": "deunet", "bf16": ctx.cuda, "compile": True}
        if limit < 20:
            res["rows"].append({**label, "skipped": f"budget: {ctx.left():.0f} s left, Table 1 needs 300 s"})
        else:
            job = {**label, "channels_last": False, "batch": sz.infer_batch, "args": args,
                   "compile_backend": "inductor" if ctx.cuda else "eager"}  # fmt: skip
            row = _guarded(partial(_compiled_job, job, limit), **label)
            res["rows"].append({k: v for k, v in row.items() if k not in ("args", "all_seconds")})
    for bf16 in (True, False):
        same = {r["model"]: r["seconds"] for r in res["rows"] if r.get("bf16") == bf16 and "seconds" in r
                and not r.get("compile")}  # fmt: skip
        if len(same) == 2:
            res[f"deunet_over_unet_{'bf16' if bf16 else 'fp32'}"] = same["deunet"] / same["unet"]
    return "fail" if any("error" in r for r in res["rows"]) else "ok"


# ---------------------------------------------------------------- 4. speed_training


def section_speed_training(ctx: Context, res: dict[str, Any]) -> str:
    from benchmarks.inference_bench import train_job
    from pipeline.training.trainer import resolve_cuda_graph

    sz = ctx.sizes
    cfg = ctx.train_config()
    channels_last, graph = cfg.channels_last, resolve_cuda_graph(cfg, ctx.device)  # as the trainer runs them
    res.update(batch=sz.train_batch, model_args=sz.model_args, steps=sz.train_steps, bf16_autocast=ctx.cuda,
               channels_last=channels_last, cuda_graph=graph, rows=[], variants=[])  # fmt: skip
    keep = ("model", "size", "channels_last", "cuda_graph", "clips_per_s", "peak_mb", "graph", "error")

    def measure(name: str, size: int, **variant: Any) -> dict[str, Any]:
        job = {"model": name, "channels_last": channels_last, "cuda_graph": graph, **variant,
               "args": _bench_args(ctx, size, train_batch=sz.train_batch, train_steps=sz.train_steps)}  # fmt: skip
        _reset_peak(ctx.device)
        row = _guarded(partial(train_job, job), model=name, size=size, **variant)
        return {k: row[k] for k in keep if k in row}

    for name, size in [(m, sz.table_size) for m in _models()] + [(m, sz.size) for m in FIRST]:
        row = measure(name, size)
        res["rows"].append(row)
        if "clips_per_s" in row:
            ctx.throughput[(name, size)] = row["clips_per_s"]
        ctx.save()
    res["deunet_over_unet"] = {str(s): ctx.throughput[("deunet", s)] / ctx.throughput[("unet", s)]
                               for s in (sz.table_size, sz.size)
                               if ("deunet", s) in ctx.throughput and ("unet", s) in ctx.throughput}  # fmt: skip
    res["ratio_goal"] = RATIO_GOAL
    # the trainer's choices one at a time: eager steps (no graph) at both sizes, NCHW at 96 px
    if graph:
        res["variants"] += [
            measure(name, size, cuda_graph=False) for size in (sz.table_size, sz.size) for name in FIRST
        ]
    res["variants"] += [measure(name, sz.table_size, channels_last=not channels_last) for name in FIRST]
    ctx.save()
    res["profile"] = [
        _guarded(partial(_profile_step, ctx, size), size=size) for size in (sz.table_size, sz.size)
    ]
    res["real_epochs"] = [_guarded(partial(_real_epochs, ctx, name, size), model=name, size=size)
                          for size in (sz.table_size, sz.size) for name in FIRST]  # fmt: skip
    ctx.save()
    rows = res["rows"] + res["variants"] + res["profile"] + res["real_epochs"]
    return "fail" if any("error" in r for r in rows) else "ok"


def _real_epochs(ctx: Context, name: str, size: int, epochs: int = 4) -> dict[str, Any]:
    """A few real epochs of ``train_fold`` on fold 0 at ``size`` px, validated once at the end: clips/s of
    the training part and of the whole epoch, after the first (warm-up), against the raw step's."""
    from pipeline.preprocessing.store import ClipStore
    from pipeline.training.trainer import train_fold

    store_dir, folds = ctx.store(size)
    store, spec = ClipStore(store_dir), folds[0]
    cfg = ctx.train_config(model=name, max_epochs=epochs, patience=epochs, val_every=epochs, warmup_epochs=0)
    work = ctx.work / "real-epochs" / f"{name}-{size}"
    shutil.rmtree(work, ignore_errors=True)
    marks: list[float] = [time.monotonic()]
    result = train_fold(store, spec["train"], spec["val"], cfg, work, 0, progress=False,
                        on_epoch=lambda row: marks.append(time.monotonic()))  # fmt: skip
    n = len(store.indices_for(spec["train"]))
    steady = result.history[1:-1] or result.history[1:]  # not the first (warm-up), not the validated last
    per_epoch = [b - a for a, b in itertools.pairwise(marks)]  # epoch k's wall: from epoch k-1's end
    walls = per_epoch[1:-1] or per_epoch[1:]
    raw = ctx.throughput.get((name, size))
    real = n / statistics.median(h["train_s"] for h in steady) if steady else None
    wall = n / statistics.median(walls) if walls else None
    return {"epochs": epochs, "train_clips": n, "real_clips_per_s": real, "wall_clips_per_s": wall,
            "raw_clips_per_s": raw, "real_fraction": real / raw if real and raw else None,
            "wall_fraction": wall / raw if wall and raw else None, "steps": result.steps}  # fmt: skip


def _profile_step(ctx: Context, size: int) -> dict[str, Any]:
    """Where a DeU-Net training step's time goes (pipeline.models.profiling), at ``size`` px."""
    from pipeline.models import build_model
    from pipeline.models.profiling import profile_training_step
    from pipeline.training.trainer import prepare_device

    prepare_device(ctx.device)  # as the trainer runs
    torch.manual_seed(0)
    model = build_model("deunet", radius=1, **ctx.sizes.model_args)
    return profile_training_step(model, size, ctx.sizes.train_batch, ctx.device, bf16=ctx.cuda,
                                 channels_last=ctx.train_config().channels_last)  # fmt: skip


# ---------------------------------------------------------------- 5-7. Table 1


class _OutOfTime(Exception):
    """Raised between epochs when the next epoch would end after the training's deadline."""


def _restore_throughput(ctx: Context) -> None:
    """The 96-px clips/s of a resumed speed_training section (this run's when it ran)."""
    for row in ctx.data["sections"].get("speed_training", {}).get("result", {}).get("rows", []):
        if "clips_per_s" in row and "size" in row:
            ctx.throughput.setdefault((row["model"], row["size"]), row["clips_per_s"])


def _epoch_s(
    ctx: Context, name: str, n_train: int, n_val: int, val_every: int, efficiency: float
) -> float | None:
    cps = ctx.throughput.get((name, ctx.sizes.table_size))
    if not cps:
        return None
    return n_train / (cps * efficiency) + n_val / (3 * cps) / val_every + EPOCH_OVERHEAD_S


def _val_every(epochs: int) -> int:
    """Validate about four times (and after the last epoch): the other epochs time training alone."""
    return max(2, math.ceil(epochs / 4))


def _plan(ctx: Context, n_train: int, n_val: int, seconds: float) -> dict[str, Any]:
    """The same number of epochs for every model, so that all eight trainings and evaluations fit."""
    models, sz = _models(), ctx.sizes
    cap = ctx.train_config().max_epochs
    plan: dict[str, Any] = {"models": models, "size": sz.table_size, "model_args": sz.model_args,
                            "seconds": round(seconds, 1), "efficiency_assumed": EFFICIENCY,
                            "eval_s_assumed": EVAL_S, "model_overhead_s": MODEL_OVERHEAD_S}  # fmt: skip
    if sz.epochs is not None:
        return {**plan, "epochs": sz.epochs, "how": "fixed (dry run)"}
    per = {m: _epoch_s(ctx, m, n_train, n_val, 8, EFFICIENCY) for m in models}
    if any(v is None for v in per.values()):
        return {**plan, "epochs": 20, "how": "no 96-px throughput measured: 20, the clock stops it"}
    fixed = len(models) * (MODEL_OVERHEAD_S + EVAL_S)
    epochs = max(1, min(cap, int((seconds - fixed) // sum(per.values()))))  # type: ignore[arg-type]
    return {**plan, "epochs": epochs, "epoch_s_estimate": per, "how": "planned from the 96-px clips/s"}


def _cost(ctx: Context, name: str, plan: dict[str, Any], n: tuple[int, int], corr: dict[str, float]) -> float:
    """Estimated seconds of one (model, fold): training at the corrected per-epoch time, then evaluation."""
    epoch = _epoch_s(ctx, name, *n, _val_every(plan["epochs"]), EFFICIENCY) or 5.0
    return plan["epochs"] * epoch * corr["train"] + MODEL_OVERHEAD_S + EVAL_S * corr["eval"]


def _evaluate(ctx: Context, ckpt: Path, val: list[str], fold: int, tta: str) -> dict[str, Any]:
    """Cases of raw and lcc_fill on the fold's validation patients (pipeline.evaluation.runner)."""
    from pipeline.evaluation import summarise
    from pipeline.evaluation.config import EvaluateConfig
    from pipeline.evaluation.report import headline_means
    from pipeline.evaluation.runner import evaluate_patients
    from pipeline.inference.predict import Segmenter

    seg = Segmenter.from_files([ckpt], device=str(ctx.device), tta=tta, batch_size=64)
    start = time.perf_counter()
    cfg = EvaluateConfig(whole_cycle=False, tta=tta, overlays=0)
    results = evaluate_patients(seg, ctx.raw_root(), val, fold, cfg, progress=False)
    cases = {v: [c for r in results for c in r.cases[v]] for v in VARIANTS}
    return {"seconds": time.perf_counter() - start, "cases": cases,
            "headline": {v: headline_means(summarise(c)) for v, c in cases.items()}}  # fmt: skip


def _export_weights(ctx: Context, ckpt: Path, name: str, fold: int) -> None:
    """The checkpoint's weights in fp16 with what rebuilds it, in ``--out``/weights, when within the limits."""
    from pipeline.checkpoint.io import load_checkpoint

    a, done = ctx.args, ctx.data["weights"]
    written = [w for w in done if "bytes" in w]
    row: dict[str, Any] = {"model": name, "fold": fold}
    if len(written) >= a.weights_max_files:
        done.append({**row, "skipped": f"{a.weights_max_files} files written already"})
        return
    ck = load_checkpoint(ckpt)
    keep = {"model_name", "model_config", "preprocess", "view", "fold", "epoch", "val_dice", "params"}
    payload = {k: v for k, v in ck.items() if k in keep}
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    path = ctx.out / "weights" / f"{name}-fold{fold}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    size, total = path.stat().st_size, sum(w["bytes"] for w in written) + path.stat().st_size
    if size > a.weights_max_mib * 2**20 or total > a.weights_total_mib * 2**20:
        path.unlink()
        done.append({**row, "skipped": f"{size / 2**20:.1f} MiB; limits {a.weights_max_mib} MiB a file, "
                     f"{a.weights_total_mib} MiB together ({total / 2**20:.1f} with it)"})  # fmt: skip
        return
    done.append({**row, "file": f"weights/{path.name}", "bytes": size, "dtype": "float16"})


def _train_eval(ctx: Context, name: str, fold: int, deadline: float | None, corr: dict[str, float]) -> None:
    """Train one (model, fold) with the planned epochs, evaluate it, export its weights; the entry goes
    into the report's ``table1.entries`` as it fills."""
    from pipeline.preprocessing.store import ClipStore
    from pipeline.training.trainer import train_fold

    sz, plan = ctx.sizes, ctx.data["table1"]["plan"]
    store_dir, folds = ctx.store(sz.table_size)
    store, spec, epochs = ClipStore(store_dir), folds[fold], plan["epochs"]
    n_train = len(store.indices_for(spec["train"]))
    base = ctx.train_config()
    cfg = ctx.train_config(model=name, folds=[fold], max_epochs=epochs, patience=epochs, val_every=_val_every(epochs),
                           warmup_epochs=min(base.warmup_epochs, max(epochs // 10, 1), max(epochs - 1, 0)))  # fmt: skip
    work = ctx.work / "table1" / f"{name}-fold{fold}"
    shutil.rmtree(work, ignore_errors=True)
    entry: dict[str, Any] = {"model": name, "fold": fold, "epochs_planned": epochs, "val_every": cfg.val_every,
                             "warmup_epochs": cfg.warmup_epochs, "train_clips": n_train, "val_patients": spec["val"],
                             "deadline_in_s": None if deadline is None else round(deadline - time.monotonic(), 1)}  # fmt: skip
    ctx.data["table1"]["entries"][f"{name}/fold{fold}"] = entry
    history: list[dict[str, float]] = []
    start = time.monotonic()

    def on_epoch(row: dict[str, float]) -> None:
        now = time.monotonic()
        wall = now - (history[-1]["ended"] if history else start)
        history.append({**row, "ended": now, "wall_s": wall})
        if deadline is not None and row["epoch"] < epochs and now + wall > deadline:
            raise _OutOfTime

    try:
        trained = train_fold(
            store, spec["train"], spec["val"], cfg, work, fold, on_epoch=on_epoch, progress=False
        )
        ckpt, entry["stopped_by_clock"] = work / trained.model_file, False
        entry["steps"] = trained.steps
    except _OutOfTime:
        ckpt, entry["stopped_by_clock"] = work / "last.pt", True
    # training seconds of an epoch after the first (which pays for warm-up): the trainer's own ``train_s``
    # where it reports them, else the unvalidated epochs' whole time
    train_s = [h["train_s"] for h in history[1:] if "train_s" in h] or \
        [h["seconds"] for h in history[1:] if math.isnan(h["val_dice"])]  # fmt: skip
    real = n_train / statistics.median(train_s) if train_s else None
    # the whole epoch (validation on scored epochs, the checkpoint hand-over): median over epochs after the first
    wall = n_train / statistics.median(h["wall_s"] for h in history[1:]) if len(history) > 1 else None
    raw = ctx.throughput.get((name, sz.table_size))
    scored = [h for h in history if not math.isnan(h["val_dice"])]
    entry.update(epochs_run=len(history), train_s=round(time.monotonic() - start, 1),
                 epoch_wall_s=[round(h["wall_s"], 2) for h in history], real_clips_per_s=real,
                 raw_clips_per_s=raw, real_fraction=real / raw if real and raw else None,
                 wall_fraction=wall / raw if wall and raw else None,
                 val_dice=scored[-1]["val_dice"] if scored else None,
                 val_curve=[[int(h["epoch"]), round(h["val_dice"], 4)] for h in scored])  # fmt: skip
    estimate = _epoch_s(ctx, name, n_train, len(store.indices_for(spec["val"])), cfg.val_every, EFFICIENCY)
    if estimate and len(history) > 1:
        corr["train"] = statistics.median(h["wall_s"] for h in history[1:]) / estimate
    ctx.checkpoints[(name, fold)] = ckpt
    ctx.save()
    entry["evaluation"] = {tta: _evaluate(ctx, ckpt, spec["val"], fold, tta) for tta in ("none", sz.eval_tta)}
    corr["eval"] = sum(e["seconds"] for e in entry["evaluation"].values()) / EVAL_S
    try:
        _export_weights(ctx, ckpt, name, fold)
    except Exception as exc:  # the measurements stand without the weights
        ctx.data["weights"].append({"model": name, "fold": fold, "skipped": error_summary(exc, 500)})
    ctx.save()


def _resume_entries(ctx: Context) -> dict[str, Any] | None:
    """Copy the --resume report's evaluated Table 1 entries (marked) and return its plan, if any."""
    prev = (ctx.previous or {}).get("table1") or {}
    entries = ctx.data["table1"]["entries"]
    for key, entry in prev.get("entries", {}).items():
        if "evaluation" in entry and key not in entries:
            entries[key] = {**entry, "resumed": ctx.args.resume}
    for w in (ctx.previous or {}).get("weights", []):
        if "bytes" in w and f"{w['model']}/fold{w['fold']}" in entries:
            ctx.data["weights"].append(
                {"model": w["model"], "fold": w["fold"], "file": w["file"], "resumed": ctx.args.resume}
            )  # in that run's --out, not this one's
    return prev.get("plan")


def _clip_counts(ctx: Context) -> tuple[tuple[int, int], list[dict[str, Any]]]:
    """(training clips, validation clips) of fold 0 at Table 1's size, and the split's folds."""
    from pipeline.preprocessing.store import ClipStore

    store_dir, folds = ctx.store(ctx.sizes.table_size)
    store = ClipStore(store_dir)
    return (len(store.indices_for(folds[0]["train"])), len(store.indices_for(folds[0]["val"]))), folds


def section_table1(ctx: Context, res: dict[str, Any]) -> str:
    sz, entries = ctx.sizes, ctx.data["table1"]["entries"]
    _restore_throughput(ctx)
    previous_plan = _resume_entries(ctx)
    if previous_plan and all(f"{m}/fold0" in entries for m in previous_plan["models"]):
        res.update((ctx.previous or {})["sections"]["table1"].get("result", {}), note="every model resumed")
        ctx.data["table1"]["plan"] = {**previous_plan, "resumed": ctx.args.resume}
        return "ok"
    n, folds = _clip_counts(ctx)
    later = CPU_VS_CUDA_S if "cpu_vs_cuda" in ctx.selected else 0.0
    seconds = (ctx.left() - later) * (1 - SAFETY)
    plan = {**previous_plan, "resumed": ctx.args.resume} if previous_plan else _plan(ctx, *n, seconds)
    ctx.data["table1"]["plan"] = plan
    res.update(epochs=plan["epochs"], train_clips=n[0], val_clips=n[1], fold0_val=folds[0]["val"],
               split_matches_bundle=folds[0]["val"] == json.loads((ctx.bundle / "bundle.json").read_text())["fold0_val"],
               left_at_start_s=round(ctx.left(), 1), skipped=[])  # fmt: skip
    ctx.save()
    corr = ctx.data["table1"].setdefault("correction", {"train": 1.0, "eval": 1.0})
    todo = [m for m in plan["models"] if f"{m}/fold0" not in entries]
    for i, name in enumerate(todo):
        end = ctx.deadline - later - 5.0 - sum(_cost(ctx, m, plan, n, corr) for m in todo[i + 1 :])
        deadline = None if sz.epochs is not None else end - EVAL_S * corr["eval"]
        if deadline is not None and deadline - time.monotonic() < _cost(ctx, name, plan, n, corr) * 0.3:
            res["skipped"].append(f"{name}: {ctx.left():.0f} s left of the budget")
            continue
        try:
            _train_eval(ctx, name, 0, deadline, corr)
        except Exception as exc:
            entries.setdefault(f"{name}/fold0", {"model": name, "fold": 0})["error"] = error_summary(
                exc, 1500
            )
            ctx.save()
    done = [m for m in plan["models"] if "evaluation" in entries.get(f"{m}/fold0", {})]
    return "ok" if len(done) == len(plan["models"]) else "fail"


def _check_checkpoint(ctx: Context) -> tuple[Path | None, str]:
    """This run's DeU-Net fold-0 checkpoint, else the --resume run's exported weights of it."""
    if ("deunet", 0) in ctx.checkpoints:
        return ctx.checkpoints[("deunet", 0)], "this run's Table 1"
    if ctx.args.resume:
        path = Path(ctx.args.resume).parent / "weights" / "deunet-fold0.pt"
        if path.is_file():
            return path, f"{path} (fp16 weights of the resumed run)"
    return None, ""


def _agreement(a: Any, b: Any) -> dict[str, float]:
    from pipeline.evaluation.metrics import dice
    from pipeline.vocabulary import STRUCTURE_ORDER, STRUCTURES

    return {name: dice(a == STRUCTURES[name], b == STRUCTURES[name]) for name in STRUCTURE_ORDER}


def section_cpu_vs_cuda(ctx: Context, res: dict[str, Any]) -> str:
    from pipeline.inference.predict import Segmenter

    ckpt, source = _check_checkpoint(ctx)
    if ckpt is None:
        return "skipped: no DeU-Net fold-0 checkpoint (Table 1 did not train it in this run)"
    entry = ctx.data["table1"]["entries"].get("deunet/fold0", {})
    res["checkpoint"] = {"source": source, "epochs": entry.get("epochs_run"), "val_dice": entry.get("val_dice"),
                         "model_args": ctx.sizes.model_args, "size": ctx.sizes.table_size}  # fmt: skip
    res["tolerance"] = {"fp32": FP32_DICE, "bf16": BF16_DICE}
    pid, cine, spacing = gpu_bundle.load_check_cine(ctx.bundle)
    fold0_val = json.loads((ctx.bundle / "bundle.json").read_text())["fold0_val"]
    res["cine"] = {"patient": pid, "shape_tzyx": list(cine.shape), "in_fold0_val": pid in fold0_val}
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
            _sync(ctx.device)
            dice, tol = _agreement(pred, reference), BF16_DICE if bf16 else FP32_DICE
            res["comparisons"].append({"device": str(ctx.device), "bf16": bf16, "seconds": time.perf_counter() - start,
                                       "dice_vs_cpu": dice, "pixels_differing": int((pred != reference).sum()),
                                       "pixels": int(pred.size), "tolerance": tol,
                                       "ok": min(dice.values()) >= tol})  # fmt: skip
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return "ok" if all(c["ok"] for c in res["comparisons"]) else "fail"


def section_more_folds(ctx: Context, res: dict[str, Any]) -> str:
    sz, entries, plan = ctx.sizes, ctx.data["table1"]["entries"], ctx.data["table1"]["plan"]
    if plan is None:
        _restore_throughput(ctx)
        plan = _resume_entries(ctx)
        if plan is None:
            return "skipped: no Table 1 plan (table1 did not run, and no --resume report has one)"
        ctx.data["table1"]["plan"] = plan
    from benchmarks.gpu_check import profile_params

    models = list(sz.extra_models or plan["models"])
    jobs = [(m, f) for f in sz.extra_folds for m in FIRST if m in models]
    jobs += [(m, f) for f in sz.extra_folds for m in models if m not in FIRST]
    n_folds = int(profile_params()["split"]["n_folds"])
    jobs = [(m, f) for m, f in jobs if f < n_folds and f"{m}/fold{f}" not in entries]
    res.update(epochs=plan["epochs"], planned=[f"{m}/fold{f}" for m, f in jobs], ran=[], skipped=[])
    if not jobs:
        return "skipped: every fold resumed (nothing left to train)"
    n, _ = _clip_counts(ctx)
    corr = ctx.data["table1"].setdefault("correction", {"train": 1.0, "eval": 1.0})
    for name, fold in jobs:
        cost = _cost(ctx, name, plan, n, corr)
        if sz.epochs is None and cost > ctx.left() - 10.0:
            res["skipped"].append(f"{name}/fold{fold}: needs ~{cost:.0f} s, {ctx.left():.0f} s left")
            continue
        deadline = None if sz.epochs is not None else ctx.deadline - 10.0 - EVAL_S * corr["eval"]
        try:
            _train_eval(ctx, name, fold, deadline, corr)
            res["ran"].append(f"{name}/fold{fold}")
        except Exception as exc:
            entries.setdefault(f"{name}/fold{fold}", {"model": name, "fold": fold})["error"] = error_summary(
                exc, 1500
            )
        ctx.save()
    if any("error" in entries.get(f"{m}/fold{f}", {}) for m, f in jobs):
        return "fail"
    return "ok" if res["ran"] else "skipped: no fold fits in the time left"


RUNNERS: dict[str, Callable[[Context, dict[str, Any]], str]] = {
    "deform_conv": section_deform_conv,
    "train_step": section_train_step,
    "speed_inference": section_speed_inference,
    "speed_training": section_speed_training,
    "table1": section_table1,
    "cpu_vs_cuda": section_cpu_vs_cuda,
    "more_folds": section_more_folds,
}

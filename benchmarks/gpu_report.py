"""The markdown summary of a ``benchmarks.gpu_check`` run, rendered from its JSON (partial runs too)."""

from __future__ import annotations

import math
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows)]  # fmt: skip


def _error(row: dict[str, Any]) -> str:
    text = row.get("error") or row.get("skipped") or ""
    return text.strip().splitlines()[-1][:160] if text else ""


def _deform(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    tol = res.get("tolerance", {})
    lines = [f"Relative error = max |grid_sample - torchvision| / max |torchvision|; tolerances: forward "
             f"{tol.get('forward')}, backward {tol.get('backward')}. Offset gradients are compared where the sample "
             f"position is at least {tol.get('offset_kink_px')} px from an integer row and column (bilinear "
             f"interpolation's kink: there the two kernels take different one-sided derivatives); the share of "
             f"offset-gradient elements out of tolerance is given over all of them and over the kept ones.", ""]  # fmt: skip
    rows = [[" x ".join(map(str, c["shape"])), c["c_out"], c["offset_groups"], c["modulated"],
             f"{c['forward_rel_err']:.2e}", " / ".join(f"{k} {v:.1e}" for k, v in c["backward_rel_err"].items()),
             f"{c['offset_out_of_tol_all']:.1e} / {c['offset_out_of_tol_kept']:.1e} "
             f"({c['offset_out_of_tol_near_kink']} near a kink, {c['offset_elements'] - c['offset_kept']} of "
             f"{c['offset_elements']} left out)", c["ok"]] for c in res.get("cases", [])]  # fmt: skip
    lines += _table(["input B x C x H x W", "C_out", "offset groups", "modulated", "forward", "backward (offset: kept)",
                     "offset grads out of tol.: all / kept", "ok"], rows)  # fmt: skip
    if "gradcheck_float64" in res:
        g = res["gradcheck_float64"]
        lines += ["", "float64 `torch.autograd.gradcheck` (finite differences) at sample positions 0.1-0.9 px off the "
                      "grid, modulated, 2 offset groups: " + ", ".join(f"{k} {_f(v)}" for k, v in g.items()) + "."]  # fmt: skip
    if "speed" in res:
        s = res["speed"]
        lines += ["", f"Forward + backward, 3x3, {' x '.join(map(str, s['shape']))}: grid_sample {s['grid_sample_ms']:.1f} ms, "
                      f"torchvision {s['torchvision_ms']:.1f} ms, plain conv {s['conv_ms']:.1f} ms."]  # fmt: skip
    return lines


def _train_step(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    lines = [f"{res.get('size')} x {res.get('size')}, batch {res.get('batch')}, {res.get('model_args')}, "
             f"bf16 autocast: {_f(res.get('bf16_autocast'))}.", ""]  # fmt: skip
    rows = [[r["model"], r.get("loss"), r.get("logits_dtype", ""),
             "/".join(_f(r.get(k)) for k in ("loss_finite", "grads_finite", "weights_finite")) if "loss" in r else "",
             _f(r.get("ok", False)) + (f" ({_error(r)})" if "error" in r else "")]
            for r in res.get("rows", [])]  # fmt: skip
    return lines + _table(["model", "loss", "logits", "finite loss/grads/weights", "ok"], rows)


def _speed_inference(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    cine = " x ".join(map(str, res.get("cine", [])))
    goals = res.get("goals_s", {})
    lines = [f"One cine of {cine} (T x Z x Y x X) through `Segmenter.predict` (normalisation, resizing, clips, "
             f"batch {res.get('batch')}, mapping back, argmax), {res.get('model_args')}, median of "
             f"{res.get('repeats')}; goals on an H100/H200: " + ", ".join(f"{m} <= {s} s" for m, s in goals.items()) + ".", ""]  # fmt: skip
    rows = [[r["model"], r.get("bf16"), r.get("compile"), r.get("seconds") if "seconds" in r else _error(r),
             goals.get(r["model"], ""), r.get("met"), r.get("peak_mb")] for r in res.get("rows", [])]  # fmt: skip
    lines += _table(["model", "bf16", "compile", "s per cine", "goal s", "met", "peak MB"], rows)
    for key in ("deunet_over_unet_bf16", "deunet_over_unet_fp32"):
        if key in res:
            lines.append(f"\nDeU-Net / U-Net time per cine ({key[-4:]}): {res[key]:.2f}x")
    return lines


def _speed_training(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    lines = [f"Forward + backward + Adam step, batch {res.get('batch')}, {res.get('model_args')}, {res.get('steps')} "
             f"timed steps, as the trainer runs them: bf16 autocast: {_f(res.get('bf16_autocast'))}, channels_last: "
             f"{_f(res.get('channels_last'))}, CUDA graph: {_f(res.get('cuda_graph'))}.", ""]  # fmt: skip

    def rows(key: str) -> list[list[Any]]:
        return [[r.get("model", ""), r.get("size"), _f(r.get("channels_last", res.get("channels_last"))),
                 _f(r.get("cuda_graph", res.get("cuda_graph"))), r.get("clips_per_s") if "clips_per_s" in r else _error(r),
                 r.get("peak_mb"), r.get("graph", "")] for r in res.get(key, [])]  # fmt: skip

    head = [
        "model",
        "px",
        "channels_last",
        "CUDA graph",
        "clips/s",
        "peak MB (CUDA: max allocated; CPU: peak RSS)",
        "graph",
    ]
    lines += _table(head, rows("rows"))
    if res.get("variants"):
        lines += ["", "One choice of the trainer changed at a time:", "", *_table(head, rows("variants"))]
    real = [[r["model"], r["size"], r.get("real_clips_per_s") if "error" not in r else _error(r),
             r.get("wall_clips_per_s"), r.get("raw_clips_per_s"), r.get("real_fraction"), r.get("wall_fraction"),
             r.get("steps", "")] for r in res.get("real_epochs", [])]  # fmt: skip
    if real:
        lines += ["", "Real epochs of `train_fold` (fold 0, the profile's loader; after the first epoch, the validated "
                      "last one left out of the whole-epoch figure; target: real / raw >= 0.85):", ""]  # fmt: skip
        lines += _table(["model", "px", "real clips/s (training)", "clips/s (whole epoch)", "raw clips/s",
                         "real / raw", "whole / raw", "steps"], real)  # fmt: skip
    for size, ratio in res.get("deunet_over_unet", {}).items():
        lines.append(f"\nDeU-Net / U-Net training clips/s at {size} px: {ratio:.2f} (goal >= {res.get('ratio_goal')}: "
                     f"met {_f(ratio >= res.get('ratio_goal', 0.5))})")  # fmt: skip
    for prof in res.get("profile", []):
        if "kernels" not in prof:
            lines += ["", f"DeU-Net profile at {prof.get('size')} px: {_error(prof)}"]
            continue
        lines += ["", f"Where one DeU-Net training step goes at {prof['size']} px, batch {prof['batch']} (torch profiler; "
                      f"step {prof['step_ms']:.1f} ms, {prof['device_total_ms']:.1f} ms of kernels):", ""]  # fmt: skip
        lines += _table(
            ["kernel / op (self time)", "calls", "ms", "share"],
            [[k["name"].replace("|", "/"), k["calls"], k["ms"], k["share"]] for k in prof["kernels"]],
        )
        parts = [[p["part"], p["forward_ms"], p["share_of_forward"]] for p in prof["parts"][:12]]
        lines += ["", *_table(["part (forward only)", "ms", "share of forward"], parts)]
    return lines


def _cases(entry: dict[str, Any], tta: str, variant: str) -> list[dict[str, Any]]:
    return entry.get("evaluation", {}).get(tta, {}).get("cases", {}).get(variant, [])


def _best_variant(entries: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The (TTA, post-processing) with the highest mean Dice averaged over the entries."""
    scores: dict[tuple[str, str], list[float]] = {}
    for e in entries:
        for tta, ev in e.get("evaluation", {}).items():
            for variant, head in ev.get("headline", {}).items():
                scores.setdefault((tta, variant), []).append(head["mean_dice"])
    full = {k: sum(v) / len(v) for k, v in scores.items() if len(v) == len(entries)}
    return max(full, key=lambda k: full[k]) if full else None


def _paper_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[str]:
    """Models as rows; Dice, HD and ASSD (mean ± std) per structure and phase, then the average Dice."""
    from pipeline.evaluation import summarise
    from pipeline.vocabulary import PHASES, STRUCTURE_ORDER

    cols = [(m, s, p) for m in ("dice", "hd", "assd") for s in STRUCTURE_ORDER for p in PHASES]
    header = ["model", *(f"{m.upper() if m != 'dice' else 'Dice'} {s} {p}" for m, s, p in cols), "mean Dice"]
    out = []
    for name, cases in rows:
        summary = summarise(cases)
        cells = []
        for m, s, p in cols:
            st, d = summary["by_phase"][p][s][m], 3 if m == "dice" else 2
            cells.append(f"{st['mean']:.{d}f} ± {st['std']:.{d}f}" if st["n"] else "n/a")
        out.append([name, *cells, summary["average"]["all"]["dice"]["mean"]])
    return _table(header, out)


def _training_rows(entries: list[dict[str, Any]]) -> list[str]:
    rows = [[e["model"], e["fold"], f"{e.get('epochs_planned')} / {e.get('epochs_run', '')}", e.get("stopped_by_clock"),
             e.get("train_s"), e.get("real_clips_per_s"), e.get("raw_clips_per_s"), e.get("real_fraction"),
             None if e.get("real_fraction") is None else e["real_fraction"] >= 0.85, e.get("wall_fraction"),
             e.get("val_dice"),
             "resumed" if e.get("resumed") else ("error: " + _error(e) if "error" in e else e.get("steps", ""))]
            for e in entries]  # fmt: skip
    return _table(["model", "fold", "epochs planned / run", "stopped by the clock", "train s", "real clips/s",
                   "raw clips/s (96 px)", "real / raw", ">= 85 %", "whole epoch / raw", "val Dice (2D, last scored)",
                   "note"], rows)  # fmt: skip


def _variants_rows(entries: list[dict[str, Any]]) -> list[str]:
    rows = [[e["model"], e["fold"], tta, v, h["mean_dice"], h["mean_hd"], h["mean_assd"], h["dice_RV_ES"], ev.get("seconds")]
            for e in entries for tta, ev in e.get("evaluation", {}).items() for v, h in ev.get("headline", {}).items()]  # fmt: skip
    return _table(["model", "fold", "TTA", "post-processing", "mean Dice", "mean HD (mm)", "mean ASSD (mm)",
                   "RV ES Dice", "eval s"], rows)  # fmt: skip


def _table1(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    t1 = data.get("table1", {})
    plan = t1.get("plan") or {}
    fold0 = [e for e in t1.get("entries", {}).values() if e.get("fold") == 0]
    lines = [f"acdc-roi fold 0: {res.get('train_clips')} training clips, {res.get('val_clips')} validation clips "
             f"({len(res.get('fold0_val', []))} patients; same split as the bundle: {_f(res.get('split_matches_bundle'))}); "
             f"{plan.get('size')} px, {plan.get('model_args')}, the acdc-roi-gpu profile otherwise. Epochs: "
             f"{plan.get('epochs')} for every model ({plan.get('how')}; {plan.get('seconds')} s planned"
             f"{'; resumed plan' if plan.get('resumed') else ''}). 3D metrics at the original resolution with the "
             f"header spacing; real clips/s = training clips / training seconds of an epoch.", ""]  # fmt: skip
    lines += _training_rows(fold0)
    for skipped in res.get("skipped", []):
        lines.append(f"\nNot trained: {skipped}")
    done = [e for e in fold0 if "evaluation" in e]
    best = _best_variant(done)
    if best:
        lines += [
            "",
            f"### Table 1 (fold 0, TTA {best[0]}, {best[1]}: the variant with the best mean Dice)",
            "",
        ]
        lines += _paper_table([(e["model"], _cases(e, *best)) for e in done])
        lines += ["", "All four variants (means over structures and phases):", "", *_variants_rows(done)]
    weights = data.get("weights", [])
    if weights:
        lines += ["", "Weights (fp16 state dicts with model name, config, preprocessing and view; load with "
                      "`Segmenter.from_files`):", ""]  # fmt: skip
        lines += _table(["model", "fold", "file", "MiB", "note"],
                        [[w["model"], w["fold"], w.get("file", ""), w.get("bytes", 0) / 2**20 if "bytes" in w else None,
                          "resumed" if w.get("resumed") else w.get("skipped", "")] for w in weights])  # fmt: skip
    return lines


def _cpu_vs_cuda(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    lines = []
    if "checkpoint" in res:
        c = res["checkpoint"]
        lines.append(f"Checkpoint: Table 1's DeU-Net fold 0 ({c['source']}), {c['model_args']} at {c['size']} px, "
                     f"{c['epochs']} epoch(s), validation Dice {_f(c['val_dice'])}.")  # fmt: skip
    if "cine" in res:
        c = res["cine"]
        lines.append(f"Cine: {c['patient']} (T, Z, Y, X) = {tuple(c['shape_tzyx'])}, a fold-0 validation patient: "
                     f"{_f(c['in_fold0_val'])}. CPU fp32 prediction: {_f(res.get('cpu_s'), 2)} s. CUDA fp32 with TF32 "
                     f"off; tolerances (Dice per structure vs CPU fp32): {res.get('tolerance')}.")  # fmt: skip
    rows = [[c["device"], c["bf16"], c["seconds"], " / ".join(f"{v:.4f}" for v in c["dice_vs_cpu"].values()),
             f"{c['pixels_differing']} of {c.get('pixels', '?')}", c.get("tolerance"), c["ok"]]
            for c in res.get("comparisons", [])]  # fmt: skip
    return [*lines, "", *_table(["device", "bf16", "s per cine", "Dice vs CPU (LV / MYO / RV)", "pixels differing",
                                 "Dice at least", "ok"], rows)]  # fmt: skip


def _more_folds(res: dict[str, Any], data: dict[str, Any]) -> list[str]:
    entries = list(data.get("table1", {}).get("entries", {}).values())
    later = [e for e in entries if e.get("fold", 0) > 0]
    lines = [f"Epochs: {res.get('epochs')} (Table 1's plan). Ran: {', '.join(res.get('ran', [])) or 'none'}."]
    lines += [f"Not trained: {s}" for s in res.get("skipped", [])]
    if later:
        lines += ["", *_training_rows(later), "", *_variants_rows([e for e in later if "evaluation" in e])]
    pooled = {}
    for e in entries:
        if "evaluation" in e:
            pooled.setdefault(e["model"], []).append(e)
    pooled = {m: es for m, es in pooled.items() if len(es) > 1}
    best = _best_variant([e for es in pooled.values() for e in es])
    if best:
        lines += [
            "",
            f"### Pooled over folds (TTA {best[0]}, {best[1]}; cases of every evaluated fold together)",
            "",
        ]
        lines += _paper_table([(f"{m} (folds {', '.join(str(e['fold']) for e in es)})",
                                [c for e in es for c in _cases(e, *best)]) for m, es in pooled.items()])  # fmt: skip
    return lines


RENDER = {"deform_conv": ("deform_conv2d: torchvision's kernel vs the grid_sample path", _deform),
          "train_step": ("One bf16-autocast training step per model", _train_step),
          "speed_inference": ("Inference speed per cine", _speed_inference),
          "speed_training": ("Raw training throughput", _speed_training),
          "table1": ("Table 1: the eight models on acdc-roi fold 0", _table1),
          "cpu_vs_cuda": ("CPU vs CUDA predictions of Table 1's DeU-Net on a real cine", _cpu_vs_cuda),
          "more_folds": ("More folds, and Table 1 pooled over folds", _more_folds)}  # fmt: skip


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
             f"frames kept, bundle {b.get('bytes', 0) / 2**20:.1f} MiB.", ""]  # fmt: skip
    lines += _table(["section", "status", "seconds"],
                    [[name, s["status"] + (" (resumed)" if s.get("resumed") else ""), s.get("seconds")]
                     for name, s in sections.items()])  # fmt: skip
    for i, (name, s) in enumerate(sections.items(), 1):
        title, render = RENDER[name]
        lines += ["", f"## {i}. {title} ({s['status']})", ""]
        if s.get("result"):
            try:
                lines += render(s["result"], data)
            except Exception as exc:  # a partial result must never lose the report
                lines.append(f"(could not render the partial result: {type(exc).__name__}: {exc})")
        if "error" in s:
            lines += ["", "```", s["error"].strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"

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


def _deform(res: dict[str, Any]) -> list[str]:
    tol = res.get("tolerance", {})
    lines = [f"Relative error = max |grid_sample - torchvision| / max |torchvision|; tolerances: forward "
             f"{tol.get('forward')}, backward {tol.get('backward')}.", ""]  # fmt: skip
    rows = [[" x ".join(map(str, c["shape"])), c["c_out"], c["offset_groups"], c["modulated"],
             f"{c['forward_rel_err']:.2e}", " / ".join(f"{k} {v:.1e}" for k, v in c["backward_rel_err"].items()),
             c["ok"]] for c in res.get("cases", [])]  # fmt: skip
    lines += _table(
        ["input B x C x H x W", "C_out", "offset groups", "modulated", "forward", "backward", "ok"], rows
    )
    if "speed" in res:
        s = res["speed"]
        lines += ["", f"Forward + backward, 3x3, {' x '.join(map(str, s['shape']))}: grid_sample {s['grid_sample_ms']:.1f} ms, "
                      f"torchvision {s['torchvision_ms']:.1f} ms, plain conv {s['conv_ms']:.1f} ms."]  # fmt: skip
    return lines


def _train_step(res: dict[str, Any]) -> list[str]:
    lines = [f"{res.get('size')} x {res.get('size')}, batch {res.get('batch')}, {res.get('model_args')}, "
             f"bf16 autocast: {_f(res.get('bf16_autocast'))}.", ""]  # fmt: skip
    rows = [[r["model"], r.get("loss"), r.get("logits_dtype", ""),
             "/".join(_f(r.get(k)) for k in ("loss_finite", "grads_finite", "weights_finite")) if "loss" in r else "",
             r.get("seconds"), r.get("peak_mb"), _f(r.get("ok", False)) + (f" ({_error(r)})" if "error" in r else "")]
            for r in res.get("rows", [])]  # fmt: skip
    return lines + _table(
        ["model", "loss", "logits", "finite loss/grads/weights", "s (first step)", "peak MB", "ok"], rows
    )


def _cpu_vs_cuda(res: dict[str, Any]) -> list[str]:
    lines = []
    if "checkpoint" in res:
        c = res["checkpoint"]
        lines.append(f"Checkpoint: {c['model']} {c['model_args']} at {c['size']} px, {c['epochs']} epoch(s) on fold 0 "
                     f"(validation Dice {_f(c['val_dice'])}), trained in {c['train_s']:.0f} s.")  # fmt: skip
    if "cine" in res:
        c = res["cine"]
        lines.append(f"Cine: {c['patient']} (T, Z, Y, X) = {tuple(c['shape_tzyx'])}, a fold-0 validation patient: "
                     f"{_f(c['in_fold0_val'])}. CPU fp32 prediction: {_f(res.get('cpu_s'), 2)} s.")  # fmt: skip
    rows = [[c["device"], c["bf16"], c["seconds"], " / ".join(f"{v:.4f}" for v in c["dice_vs_cpu"].values()),
             c["pixels_differing"], c["ok"]] for c in res.get("comparisons", [])]  # fmt: skip
    return [
        *lines,
        "",
        *_table(
            ["device", "bf16", "s per cine", "Dice vs CPU (LV / MYO / RV)", "pixels differing", "ok"], rows
        ),
    ]


def _speed_inference(res: dict[str, Any]) -> list[str]:
    cine = " x ".join(map(str, res.get("cine", [])))
    lines = [f"One cine of {cine} (T x Z x Y x X) through `Segmenter.predict` (normalisation, resizing, clips, "
             f"batch {res.get('batch')}, mapping back, argmax), {res.get('model_args')}, median of {res.get('repeats')}.", ""]  # fmt: skip
    rows = [[r["model"], r.get("bf16"), r.get("channels_last"), r.get("compile"),
             r.get("seconds") if "seconds" in r else _error(r), r.get("peak_mb")] for r in res.get("rows", [])]  # fmt: skip
    lines += _table(["model", "bf16", "channels_last", "compile", "s per cine", "peak MB"], rows)
    if "cpu_preprocess_s" in res:
        lines.append(f"\nOf which on the CPU before the network: intensity normalisation and resizing of the cine, "
                     f"{res['cpu_preprocess_s']:.3f} s (measured alone).")  # fmt: skip
    for r in res.get("ratios", []):
        lines.append(f"\nDeU-Net / U-Net (bf16 {_f(r['bf16'])}, channels_last {_f(r['channels_last'])}, "
                     f"compile {_f(r['compile'])}): {r['deunet_over_unet']:.2f}x")  # fmt: skip
    if "goal" in res:
        g = res["goal"]
        lines.append(f"\nGoal: DeU-Net <= {g['deunet_s_per_cine_at_most']} s per cine on an H100/H200; best measured "
                     f"{_f(g['best_deunet_s'])} s: met {_f(g['met'])}.")  # fmt: skip
    return lines


def _speed_training(res: dict[str, Any]) -> list[str]:
    lines = [f"Forward + backward + Adam step at {res.get('size')} x {res.get('size')}, {res.get('model_args')}, "
             f"{res.get('steps')} timed steps, bf16 autocast: {_f(res.get('bf16_autocast'))}.", ""]  # fmt: skip
    rows = [[r.get("model", ""), r.get("batch"), r.get("clips_per_s") if "clips_per_s" in r else _error(r),
             r.get("peak_mb")] for r in res.get("rows", [])]  # fmt: skip
    return lines + _table(["model", "batch", "clips/s", "peak MB (CUDA: max allocated; CPU: peak RSS)"], rows)


def _accuracy(res: dict[str, Any]) -> list[str]:
    from pipeline.evaluation import table1_markdown

    lines = [f"acdc-roi fold 0: {res.get('train_clips')} training clips, {res.get('val_clips')} validation clips "
             f"({len(res.get('val_patients', []))} patients; same split as the bundle: "
             f"{_f(res.get('split_matches_bundle'))}), {res.get('size')} px, {res.get('model_args')}, batch "
             f"{res.get('batch')}, lr {res.get('lr')} {res.get('schedule')}. 3D metrics at the original "
             f"resolution with the header spacing.", ""]  # fmt: skip
    models = res.get("models", {})
    rows = [[name, f"{m.get('planned_epochs')} / {m.get('epochs_run', '')}", m.get("stopped_by_clock", ""),
             m.get("train_s"), (m.get("epoch_s") or [None])[-1], (m.get("val_dice") or [None])[-1]]
            if "skipped" not in m else [name, m["skipped"], "", "", "", ""] for name, m in models.items()]  # fmt: skip
    lines += _table(["model", "epochs planned / run", "stopped by the clock", "train s", "s per epoch (last)",
                     "val Dice (2D, last)"], rows)  # fmt: skip
    heads = [[name, tta, variant, v["headline"]["mean_dice"], v["headline"]["mean_hd"], v["headline"]["mean_assd"],
              v["headline"]["dice_RV_ES"]]
             for name, m in models.items() for tta, ev in m.get("evaluation", {}).items()
             for variant, v in ev["variants"].items()]  # fmt: skip
    if heads:
        lines += ["", *_table(["model", "TTA", "post-processing", "mean Dice", "mean HD (mm)", "mean ASSD (mm)",
                               "RV ES Dice"], heads)]  # fmt: skip
    for name, m in models.items():
        for tta, ev in m.get("evaluation", {}).items():
            variant = "lcc_fill" if tta != "none" else "raw"
            if variant in ev["variants"]:
                lines += [
                    "",
                    f"#### {name}, TTA {tta}, {variant}",
                    "",
                    table1_markdown(ev["variants"][variant]["summary"]),
                ]
    return lines


RENDER = {"deform_conv": ("deform_conv2d: torchvision's kernel vs the grid_sample path", _deform),
          "train_step": ("One bf16-autocast training step per model", _train_step),
          "cpu_vs_cuda": ("CPU vs CUDA predictions of one checkpoint on a real cine", _cpu_vs_cuda),
          "speed_inference": ("Inference speed per cine", _speed_inference),
          "speed_training": ("Training throughput and peak memory", _speed_training),
          "accuracy": ("Real accuracy: DeU-Net and U-Net on acdc-roi fold 0", _accuracy)}  # fmt: skip


def render_markdown(data: dict[str, Any]) -> str:
    """The report: what ran where, one status line per section, then each section's tables."""
    meta, sections = data["meta"], data["sections"]
    b = meta.get("bundle", {})
    lines = ["# GPU check (issue 15)", "",
             f"`{meta['command']}` on {meta['device_name']} ({meta['device']}), torch {meta['torch']}, torchvision "
             f"{meta['torchvision']}, CUDA {meta['cuda']}, Python {meta['python']}, {meta['cpu_count']} CPUs; started "
             f"{meta['started']}; {meta.get('elapsed_s', 0):.0f} s of a {meta['budget_s']:.0f} s budget"
             f"{'; DRY RUN (CPU, tiny sizes)' if meta['dry_run'] else ''}.",
             f"Data: {b.get('patients')} patients ({b.get('source')}), {b.get('frames_kept')} of {b.get('frames_total')} "
             f"frames kept, bundle {b.get('bytes', 0) / 2**20:.1f} MiB.", ""]  # fmt: skip
    lines += _table(["section", "status", "seconds"],
                    [[name, s["status"], s.get("seconds")] for name, s in sections.items()])  # fmt: skip
    for i, (name, s) in enumerate(sections.items(), 1):
        title, render = RENDER[name]
        lines += ["", f"## {i}. {title} ({s['status']})", ""]
        if s.get("result"):
            try:
                lines += render(s["result"])
            except Exception as exc:  # a partial result must never lose the report
                lines.append(f"(could not render the partial result: {type(exc).__name__}: {exc})")
        if "error" in s:
            lines += ["", "```", s["error"].strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"

"""``<name>_report.html``: the clinical report as one self-contained page, and ``cohort.html`` for a folder.

The page holds everything inline (no file beside it, nothing fetched): the quality-control verdict first,
the numbers with where each came from, the volume curves as SVG with ED and ES marked, and the ED and ES
contours on every slice as PNG images made here from the arrays (numpy and zlib: no plotting library, a
few milliseconds a cine). ``cohort.html`` lists every case of a folder run, flagged ones first, each
linked to its report.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.vocabulary import CURVE_ORDER, STRUCTURES

#: Contour colours (RGB): the figures' convention, RV blue, MYO green, LV red.
COLOURS = {"RV": (40, 120, 255), "MYO": (40, 200, 60), "LV": (235, 50, 40)}
CURVE_COLOURS = {"LV": "#eb3228", "RV": "#2878ff", "MYO": "#28c83c"}
SCALE = 3  # each pixel drawn as SCALE x SCALE


def png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image (8-bit RGB, no filter)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def overlay(image: np.ndarray, labels: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """(H, W) intensities and labels -> (H*SCALE, W*SCALE, 3) grey image with each structure's contour."""
    low, high = window
    grey = np.clip((np.asarray(image, np.float64) - low) / max(high - low, 1e-6), 0, 1)
    rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    rgb = rgb.repeat(SCALE, 0).repeat(SCALE, 1)
    big = np.asarray(labels).repeat(SCALE, 0).repeat(SCALE, 1)
    for name, value in STRUCTURES.items():
        mask = big == value
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        rgb[mask & ~inner] = COLOURS[name]
    return rgb


def _img(rgb: np.ndarray, alt: str) -> str:
    data = base64.b64encode(png(rgb)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def curves_svg(curves: Mapping[str, Sequence[float] | np.ndarray], ed: int | None, es: int | None, width: int = 560,
               height: int = 220) -> str:  # fmt: skip
    """An inline SVG of the volume curves (ml per frame) with ED and ES as vertical lines."""
    n = max((len(v) for v in curves.values()), default=0)
    top = max((max(v) for v in curves.values() if len(v)), default=1.0) or 1.0
    pad = 40

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * (t / max(n - 1, 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="volume curves"><rect width="100%" height="100%" fill="white"/>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>',
             f'<text x="{pad}" y="{pad - 12}" font-size="12">ml (max {top:.0f})</text>',
             f'<text x="{width - pad}" y="{height - 12}" font-size="12" text-anchor="end">frame</text>']  # fmt: skip
    for phase, t in (("ED", ed), ("ES", es)):
        if t is not None and n:
            parts.append(f'<line x1="{x(t):.1f}" y1="{pad}" x2="{x(t):.1f}" y2="{height - pad}" stroke="#444" '
                         f'stroke-dasharray="4 3"/><text x="{x(t) + 3:.1f}" y="{pad + 10}" font-size="12">{phase} '
                         f"(frame {t})</text>")  # fmt: skip
    for name in CURVE_ORDER:
        values = curves.get(name)
        if values is None or not len(values):
            continue
        points = " ".join(f"{x(t):.1f},{y(float(v)):.1f}" for t, v in enumerate(values))
        parts.append(
            f'<polyline fill="none" stroke="{CURVE_COLOURS[name]}" stroke-width="2" points="{points}"/>'
        )
        parts.append(f'<text x="{width - pad + 4}" y="{y(float(values[-1])):.1f}" font-size="12" '
                     f'fill="{CURVE_COLOURS[name]}">{name}</text>')  # fmt: skip
    return "".join(parts) + "</svg>"


def _value(v: Any, unit: str = "") -> str:
    return "&mdash;" if v is None else f"{v}{(' ' + unit) if unit else ''}"


STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#111;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.qc{padding:10px 14px;border-radius:6px;font-weight:600}.ok{background:#e3f6e5;color:#145a1e}
.flagged{background:#fde2e0;color:#8a1810}td.out{background:#fff1c2;font-weight:600}.note{color:#555;font-size:13px}
.slices{display:grid;grid-template-columns:max-content max-content max-content;gap:8px;align-items:center}
.slices img{image-rendering:pixelated;border:1px solid #ddd}"""


def report_html(name: str, report: Mapping[str, Any], image: np.ndarray, labels: np.ndarray,
                curves: Mapping[str, Sequence[float] | np.ndarray]) -> str:  # fmt: skip
    """The page of one case: ``image`` and ``labels`` (T, Z, Y, X), the report of pipeline.clinical.report."""
    image, labels = np.asarray(image), np.asarray(labels)
    image = image[None] if image.ndim == 3 else image  # one frame: (Z, Y, X)
    labels = labels[None] if labels.ndim == 3 else labels
    phases = report["phases"]
    ed, es = (phases["ed_frame"], phases["es_frame"]) if report["status"] == "ok" else (0, None)
    qc = report.get("quality") or {}
    verdict = ("ok: no quality-control flag" if qc.get("ok") else
               "FLAGGED: " + ", ".join(qc.get("flags", [])) + " (check this segmentation before using its numbers)")  # fmt: skip
    reference = report.get("reference") or {"indices": {}, "outside": [], "sources": {}}

    def cell(side: str, key: str) -> str:
        marking = reference["indices"].get(f"{side}_{key}", {})
        value, status = _value(report[side][key]), marking.get("status")
        if status in ("low", "high"):
            low, high = marking["range"]
            arrow = "&darr;" if status == "low" else "&uarr;"
            return (f'<td class="out" id="{side}_{key}" title="{status}: reference {low}-{high}">'
                    f"{value} {arrow}</td>")  # fmt: skip
        return f'<td id="{side}_{key}">{value}</td>'

    keys = ("EDV_ml", "ESV_ml", "SV_ml", "EF_pct", "EDV_ml_per_m2", "ESV_ml_per_m2", "SV_ml_per_m2")
    rows = [
        f'<tr><th class="l">{side}</th>' + "".join(cell(side, k) for k in keys) + "</tr>"
        for side in ("LV", "RV")
    ]
    outside = ", ".join(
        f"{k.replace('_', ' ', 1)} {reference['indices'][k]['status']} (reference "
        f"{reference['indices'][k]['range'][0]}-{reference['indices'][k]['range'][1]}, {reference['indices'][k]['sex']})"
        for k in reference["outside"]
    )
    ranges_note = (f"<p id='reference'>Outside the adult reference range: <b>{html.escape(outside or 'none')}</b>. "
                   f"Ranges ({html.escape(str(reference.get('method', '')))}; sex {html.escape(str(reference.get('sex', '')))}): "
                   + "; ".join(html.escape(c) for c in reference["sources"].values())
                   + f". {html.escape(str(reference.get('not_assessed', '')))}.</p>")  # fmt: skip
    body, rate, myo = report["body"], report["heart_rate"], report["myocardium"]
    window = tuple(np.percentile(image, (1, 99)).tolist())
    tiles = ['<div class="l"></div><div><b>ED</b> (frame ' + str(ed) + ")</div><div><b>ES</b> "
             + ("(frame " + str(es) + ")" if es is not None else "(none)") + "</div>"]  # fmt: skip
    for z in range(image.shape[1]):
        cells = [f"<div>slice {z}</div>"]
        for t in (ed, es):
            cells.append("<div></div>" if t is None else
                         "<div>" + _img(overlay(image[t, z], labels[t, z], window), f"frame {t} slice {z}") + "</div>")  # fmt: skip
        tiles.append("".join(cells))
    flags_table = ""
    if qc.get("measures"):
        flags_table = ("<p class='note'>Measures: " + html.escape(str(qc["measures"]))
                       + "</p>")  # fmt: skip
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}: cardiac MRI report</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(name)}: LV, myocardium and RV from the short-axis cine</h1>
<p class="note">Research use only, not for clinical decisions. Frames are 0-based.</p>
<div id="qc" class="qc {"ok" if qc.get("ok") else "flagged"}">Quality control {html.escape(verdict)} (score {qc.get("score", "&mdash;")})</div>
{flags_table}
<h2>Ventricles</h2>
<table id="ventricles"><tr><th class="l"></th><th>EDV (ml)</th><th>ESV (ml)</th><th>SV (ml)</th><th>EF (%)</th>
<th>EDV (ml/m&sup2;)</th><th>ESV (ml/m&sup2;)</th><th>SV (ml/m&sup2;)</th></tr>{"".join(rows)}</table>
{ranges_note}
<p>LV myocardial mass at ED: <b id="mass">{_value(myo["mass_g"], "g")}</b> ({_value(myo["mass_g_per_m2"], "g/m&sup2;")}; {myo["density_g_per_ml"]} g/ml).</p>
<p>Body surface area: <b id="bsa">{_value(body["bsa_m2"], "m&sup2;")}</b> {html.escape("(" + body["bsa_formula"] + ", height " + str(body["height_cm"]) + " cm, weight " + str(body["weight_kg"]) + " kg, from " + str(body["source"]) + ")" if body["bsa_m2"] else "(" + str(body["reason"]) + ")")}.</p>
<p>Heart rate: <b id="hr">{_value(rate["bpm"], "bpm")}</b> ({html.escape(str(rate["source"] or rate["reason"]))}).</p>
<p>ED frame <b>{phases["ed_frame"]}</b>, ES frame <b>{phases["es_frame"]}</b> of {phases["frames"]}: {html.escape(str(phases["method"]))}.</p>
<h2>Volume curves</h2>
{curves_svg(curves, ed, es)}
<h2>Contours on every slice</h2>
<p class="note">RV blue, myocardium green, LV red.</p>
<div class="slices">{"".join(tiles)}</div>
</body></html>
"""


def cohort_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The folder run's index: one row per case (summary.csv's), flagged and failed cases first, then by
    QC score; each case name links to ``<case>/<case>_report.html``."""

    def order(r: Mapping[str, Any]) -> tuple[int, float, str]:
        failed = r.get("status") == "failed"
        flagged = str(r.get("qc_ok")) == "False"
        score = float(r["qc_score"]) if r.get("qc_score") not in (None, "") else 0.0
        return (0 if failed else 1 if flagged else 2, -score, str(r["case"]))

    lines = []
    for r in sorted(rows, key=order):
        case = html.escape(str(r["case"]))
        link = case if r.get("status") == "failed" else f'<a href="{case}/{case}_report.html">{case}</a>'
        verdict = ("failed: " + html.escape(str(r.get("error", ""))) if r.get("status") == "failed" else
                   "ok" if str(r.get("qc_ok")) == "True" else "FLAGGED: " + html.escape(str(r.get("qc_flags", ""))))  # fmt: skip
        lines.append(f'<tr><td class="l">{link}</td><td class="l">{verdict}</td><td>{_value(r.get("qc_score") or None)}</td>'
                     f'<td>{_value(r.get("LV_EF") or None)}</td><td>{_value(r.get("RV_EF") or None)}</td>'
                     f'<td>{_value(r.get("LV_EDV") or None)}</td><td>{_value(r.get("MYO_mass") or None)}</td></tr>')  # fmt: skip
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Cohort: {len(rows)} case(s)</title>
<style>{STYLE}</style></head><body><h1>{len(rows)} case(s), flagged first</h1>
<p class="note">Research use only, not for clinical decisions.</p>
<table id="cases"><tr><th class="l">case</th><th class="l">quality control</th><th>QC score</th><th>LV EF (%)</th>
<th>RV EF (%)</th><th>LV EDV (ml)</th><th>LV mass (g)</th></tr>{"".join(lines)}</table></body></html>
"""

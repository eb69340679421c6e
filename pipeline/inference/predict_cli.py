"""``predict``: segment cines on this machine and write labels, volume curves and indices.

    deunet predict --model best.pt --input cine.nii.gz --out results/            # one NIfTI cine
    deunet predict --model best.pt --input scans/dicom/study01 --out results/    # one DICOM series or study
    deunet predict --model data/train/models/fold*.pt --input FOLDER --out results/   # many cases

``--input`` is a 4D (or 3D) NIfTI file, a folder of one DICOM cine series (or of one study: the cine
series is picked, ``--series`` chooses among several), or a folder of cases: an ACDC-layout tree
(``patient*/patient*_4d.nii.gz``), a folder of NIfTI cines, or a folder of DICOM series/study folders.

Without ``--model`` the default shipped model segments (pipeline.inference.pretrained; ``deunet models``
lists them, ``--model shipped:NAME`` picks one). ``--model`` is otherwise one or more checkpoint files (``.pt``; several are a fold ensemble whose probabilities are
averaged), their ONNX exports (``.onnx``, from ``deunet export-onnx``: run by ONNX Runtime on the CPU, and
torch is never imported), or an MLflow model URI (``models:/name@champion``, ``runs:/...``; the logged
model brings its own folds, TTA and post-processing). ``--tta``, ``--postprocess`` and ``--locate`` apply
to checkpoints and exports; they are the options of :class:`pipeline.inference.predict.Segmenter`, the
code evaluate scores. A field of view much larger than training's (a full scan, for a model trained on
heart crops) is searched for the heart first and segmented in a window of training's field of view
(``--locate auto``, the default). The model is loaded once for all cases. Writes, for each case
``<name>`` (the file name without ``.nii[.gz]``, the DICOM folder's name, or the ACDC patient id):

    <name>_labels.nii.gz   labels (X, Y, Z, T) uint8, 0 bg, 1 RV, 2 MYO, 3 LV, with the input's affine
    <name>_volumes.csv     frame (0-based), LV_ml, RV_ml, MYO_ml
    <name>_volumes.png     LV and RV volume curves with ED and ES marked
    <name>_indices.json    ED/ES frames, LV/RV EDV, ESV (ml), EF (%), MYO_mass (g), status (NaN -> null)
    <name>_report.json     the clinical report (pipeline.clinical.report): LV/RV EDV, ESV, SV, EF and the
                           mass, indexed to BSA when height and weight are known (Info.cfg, DICOM), the
                           heart rate when the timing is, how ED/ES were found, quality control (flags,
                           score); null + reason otherwise
    <name>_report.html     the same as one self-contained page: the QC verdict, the numbers, the volume
                           curves and the ED/ES contours on every slice (pipeline.clinical.report_html)
    <name>_seg_ED.dcm      DICOM input only (when ED/ES are found): the ED and ES labels as DICOM
    <name>_seg_ES.dcm      Segmentations (SEG, highdicom) of the source images, for DICOM viewers

into ``--out`` for one case, and into ``--out/<name>/`` for a folder of cases, plus ``--out/summary.csv``
and ``--out/cohort.html`` (every case linked, flagged and failed ones first)
(one row per case: its indices, or ``failed`` and the reason). A bad case is reported and skipped while
the others go on; nothing is written for it.

Exit status: 0 all done, 1 a case (or the model) failed (one line naming the file each), 2 bad usage.
Only what the chosen path needs is imported: torch for checkpoints, onnxruntime for ONNX exports, mlflow
and pandas for an MLflow URI, the DICOM reader for DICOM; scipy.ndimage and matplotlib load in a thread
while the model runs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import importlib
import io
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from pipeline.clinical.indices import CLINICAL_KEYS, CLINICAL_UNITS
from pipeline.clinical.quality_control import qc_columns
from pipeline.clinical.readout import Readout, segmented_readout
from pipeline.clinical.readout_columns import CURVE_COLUMNS
from pipeline.clinical.report import (
    Subject,
    case_quality,
    clinical_report,
    subject_from_dicom,
    subject_from_info_cfg,
)
from pipeline.clinical.report_html import cohort_html, report_html
from pipeline.data import imageio
from pipeline.data.image_bytes import DECOMPRESSION_FACTOR, decode_nifti, encode_cine, encode_labels
from pipeline.errors import DataError, PipelineError, RequestError
from pipeline.inference.locate import LOCATE_MODES
from pipeline.inference.network import PRECISIONS
from pipeline.inference.onnx_network import is_export
from pipeline.inference.postprocess import POSTPROCESS_MODES
from pipeline.inference.tta import TTA_MODES
from pipeline.vocabulary import CURVE_ORDER

if TYPE_CHECKING:
    from pipeline.data.dicom import DicomCine

log = logging.getLogger(__name__)

#: Largest input file the CLI reads (bytes); the served model has its own limit.
MAX_INPUT_BYTES = 2 * 1024**3
#: Defaults for checkpoint files: the levers measured best on acdc-roi (docs/experiments.md).
DEFAULT_TTA = "flips"
DEFAULT_POSTPROCESS = "lcc_fill"
#: summary.csv's report columns: (column, section of the report, its key)
REPORT_COLUMNS = (("bsa_m2", "body", "bsa_m2"), ("heart_rate_bpm", "heart_rate", "bpm"),
                  ("LV_EDV_per_m2", "LV", "EDV_ml_per_m2"), ("LV_ESV_per_m2", "LV", "ESV_ml_per_m2"),
                  ("RV_EDV_per_m2", "RV", "EDV_ml_per_m2"), ("RV_ESV_per_m2", "RV", "ESV_ml_per_m2"),
                  ("MYO_mass_per_m2", "myocardium", "mass_g_per_m2"))  # fmt: skip
SUMMARY_COLUMNS = ("case", "input", "status", "qc_ok", "qc_score", "qc_flags", "ed_frame", "es_frame", *CLINICAL_KEYS,
                   *(c for c, _, _ in REPORT_COLUMNS), "outside_reference", "seconds", "error")  # fmt: skip


def input_stem(path: Path) -> str:
    """``cine.nii.gz`` -> ``cine``; a folder keeps its name."""
    name = path.name
    for suffix in imageio.NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name if path.is_dir() else path.stem


def is_checkpoint(model: str) -> bool:
    """A local checkpoint file rather than an MLflow URI (``scheme:/...``)."""
    return ":/" not in model or Path(model).is_file()


def shipped_settings(models: Sequence[str], tta: str | None, postprocess: str | None) -> tuple[str, str]:
    """The TTA and post-processing to predict with: those given, else the shipped model's own (its manifest's
    settings, when ``models`` is one shipped model), else the defaults."""
    settings: dict[str, str] = {}
    if len(models) == 1:
        from pipeline.inference.pretrained import is_shipped, shipped_model

        if is_shipped(models[0]):
            settings = shipped_model(models[0]).manifest.get("settings") or {}
    return (tta or settings.get("tta") or DEFAULT_TTA,
            postprocess or settings.get("postprocess") or DEFAULT_POSTPROCESS)  # fmt: skip


def shipped_files(models: Sequence[str], device: str = "auto") -> list[str]:
    """``--model`` with each ``shipped:NAME`` replaced by that shipped model's files (checksums checked):
    its ONNX exports on the CPU (no torch needed), its checkpoints for a GPU device."""
    from pipeline.inference.pretrained import is_shipped, shipped_model

    out: list[str] = []
    for model in models:
        if is_shipped(model):
            kind: Literal["onnx", "torch"] = "torch" if device.startswith("cuda") else "onnx"
            out += [str(p) for p in shipped_model(model).files(kind)]
        else:
            out.append(model)
    return out


def checkpoint_paths(models: Sequence[str]) -> list[Path] | None:
    """The checkpoint files of ``--model`` (None for one MLflow URI); a URI among files is an error."""
    kinds = {is_checkpoint(m) for m in models}
    if kinds == {False}:
        if len(models) > 1:
            raise DataError(models[1], "give one MLflow model URI (it carries its own folds), not several")
        return None
    if kinds != {True}:
        raise DataError(
            next(m for m in models if not is_checkpoint(m)), "cannot mix MLflow URIs and checkpoint files"
        )
    return [Path(m) for m in models]


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One cine to segment: ``name`` of its outputs, ``path`` a NIfTI file or a DICOM folder."""

    name: str
    path: Path


def _acdc_cine(folder: Path) -> Path | None:
    cine = folder / f"{folder.name}_4d.nii.gz"
    return cine if cine.is_file() else None


def discover_cases(path: Path) -> tuple[list[Case], bool]:
    """The cases of ``--input`` and whether it is a folder of cases (outputs in one folder per case).

    Raises:
        DataError: the input is missing or holds nothing this CLI can read.
    """
    from pipeline.data.dicom import is_dicom_dir, study_folders

    if path.is_file() or not path.exists():
        return [Case(input_stem(path), path)], False
    if is_dicom_dir(path):
        return [Case(path.name, path)], False
    acdc = _acdc_cine(path)
    if acdc is not None:  # one ACDC patient folder
        return [Case(path.name, acdc)], False
    cases = [
        Case(p.name, c) for p in sorted(path.iterdir()) if p.is_dir() and (c := _acdc_cine(p)) is not None
    ]
    if not cases:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(imageio.NIFTI_SUFFIXES))
        cases = [Case(input_stem(p), p) for p in files]
    if not cases:
        studies = study_folders(path) or []
        if studies == [path]:  # one study whose series sit in sub-folders
            return [Case(path.name, path)], False
        cases = [Case(p.name, p) for p in studies]
    if not cases:
        raise DataError(path, "holds no cine: expected NIfTI files, patient*/patient*_4d.nii.gz folders or "
                              "DICOM series folders")  # fmt: skip
    return cases, True


# ---------------------------------------------------------------- the model, loaded once


#: What segmenting one cine gives: the label NIfTI's bytes, the read-out, the (T, Z, Y, X) labels.
Segmented = tuple[bytes, Readout, np.ndarray]


@dataclass
class Predictor:
    """Checkpoint files (a :class:`~pipeline.inference.predict.Segmenter`) or one MLflow pyfunc model."""

    models: Sequence[str]
    device: str = "auto"
    tta: str = DEFAULT_TTA
    postprocess: str = DEFAULT_POSTPROCESS
    locate: str = "auto"
    precision: str = "auto"
    _segment: Callable[[imageio.Image, bytes | None], Segmented] | None = field(default=None, repr=False)

    def load(self) -> Predictor:
        paths = checkpoint_paths(self.models)
        self._segment = self._checkpoints(paths) if paths is not None else self._mlflow(self.models[0])
        return self

    def import_runtime(self) -> None:
        """Import what runs the model (torch, onnxruntime or mlflow), so ``--timing`` shows it apart from
        loading; a missing package is left to :meth:`load`, which reports it naming the model."""
        paths = checkpoint_paths(self.models)
        if paths is None:
            module = "mlflow"
        elif all(is_export(p) for p in paths):
            module = "onnxruntime"
        else:
            module = "torch"
        with contextlib.suppress(ImportError):
            importlib.import_module(module)

    def _checkpoints(self, paths: list[Path]) -> Callable[[imageio.Image, bytes | None], Segmented]:
        from pipeline.inference.predict import Segmenter

        onnx = [is_export(p) for p in paths]
        if any(onnx) and not all(onnx):
            raise DataError(paths[onnx.index(False) if onnx[0] else onnx.index(True)],
                            "cannot mix ONNX exports and checkpoints in one ensemble")  # fmt: skip
        if all(onnx) and self.device not in ("auto", "cpu"):
            raise DataError(paths[0], f"ONNX models run on the CPU (ONNX Runtime), not on {self.device!r}; "
                                      "give the checkpoints to run on a GPU")  # fmt: skip
        if all(onnx):
            device = "cpu"  # ONNX Runtime on the host; no torch is imported on this path
        else:
            from pipeline.models.device import resolve_device

            device = str(resolve_device(self.device))
        try:
            segmenter = Segmenter.from_files(
                paths,
                device=device,
                tta=self.tta,
                postprocess=self.postprocess,
                locate=self.locate,
                bf16=PRECISIONS[self.precision],
            )
        except ValueError as exc:
            raise DataError(paths[0], str(exc)) from None

        def segment(image: imageio.Image, _: bytes | None) -> Segmented:
            labels = segmenter.predict(image.array, spacing=image.spacing)
            result = segmented_readout(segmenter, image.array, labels, image.spacing)
            return encode_labels(labels, image.affine), result, labels

        return segment

    def _mlflow(self, uri: str) -> Callable[[imageio.Image, bytes | None], Segmented]:
        """The logged pyfunc (the same code path as the server), fed NIfTI bytes: the file's own bytes
        for a NIfTI input, the cine re-encoded for a DICOM one."""
        import mlflow
        import pandas as pd
        from mlflow.exceptions import MlflowException

        try:
            model = mlflow.pyfunc.load_model(uri, model_config={"device": self.device})
        except MlflowException as exc:
            raise DataError(uri, f"cannot load the model ({exc.message})") from None

        def segment(image: imageio.Image, data: bytes | None) -> Segmented:
            data = data if data is not None else encode_cine(image.array, image.affine)
            try:
                frame = model.predict(pd.DataFrame({"nifti": [base64.b64encode(data).decode("ascii")]}))
            except MlflowException as exc:
                raise RequestError(f"model {uri} refused it: {exc.message}") from None
            row = frame.iloc[0]
            curves = {k: np.asarray(json.loads(row[c]), dtype=np.float64) for k, c in CURVE_COLUMNS.items()}
            result = Readout(curves, int(row["ed_frame"]), int(row["es_frame"]),
                             {k: float(row[k]) for k in CLINICAL_KEYS}, str(row["status"]))  # fmt: skip
            labels_nifti = base64.b64decode(row["labels_nifti"])
            return labels_nifti, result, decode_nifti(labels_nifti)[0].astype(np.uint8)

        return segment

    def __call__(self, image: imageio.Image, data: bytes | None = None) -> Segmented:
        assert self._segment is not None, "call load() first"
        return self._segment(image, data)


def read_case(
    case: Case, series: str | None = None
) -> tuple[imageio.Image, bytes | None, Subject, DicomCine | None]:
    """The cine of ``case``, for a NIfTI file its bytes (what an MLflow model is sent), what the input
    says about the patient and the timing (DICOM headers, or an ACDC Info.cfg beside the cine), and for a
    DICOM input the :class:`~pipeline.data.dicom.DicomCine` (its files are the SEG's source images)."""
    path = case.path
    if path.is_dir():
        from pipeline.data.dicom import read_dicom_dir

        cine = read_dicom_dir(path, series)
        return cine.image, None, subject_from_dicom(cine.patient, cine.frame_ms), cine
    if not path.is_file():
        raise DataError(path, "input file is missing")
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise DataError(path, f"input is larger than {MAX_INPUT_BYTES} bytes")
    data = path.read_bytes()
    try:
        array, spacing, affine = decode_nifti(data, max_image_bytes=MAX_INPUT_BYTES * DECOMPRESSION_FACTOR)
    except RequestError as exc:
        raise DataError(path, str(exc)) from None
    return imageio.Image(array, spacing, affine), data, subject_from_info_cfg(path), None


# ---------------------------------------------------------------- outputs


def write_outputs(out: Path, stem: str, labels_nifti: bytes, result: Readout, title: str = "",
                  report: dict[str, Any] | None = None, page: str | None = None, labels: np.ndarray | None = None,
                  source: DicomCine | None = None, algorithm: str = "deunet") -> dict[str, Path]:  # fmt: skip
    """Write the result files of one cine into ``out`` (the report and its page too when given); returns
    them by kind. For a DICOM input (``source``, a :class:`~pipeline.data.dicom.DicomCine`, and the
    ``(T, Z, Y, X)`` ``labels``) with ED and ES found, also the DICOM SEG of each (:func:`write_dicom_seg`)."""
    from pipeline.clinical.curve_figure import volume_curve_figure

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "labels": out / f"{stem}_labels.nii.gz",
        "volumes": out / f"{stem}_volumes.csv",
        "plot": out / f"{stem}_volumes.png",
        "indices": out / f"{stem}_indices.json",
    }
    atomic_write_bytes(files["labels"], labels_nifti)
    lines = ["frame,LV_ml,RV_ml,MYO_ml"]
    for t in range(len(result.curves["LV"])):
        lines.append(",".join([str(t), *(f"{float(result.curves[k][t]):.6f}" for k in CURVE_ORDER)]))
    atomic_write_text(files["volumes"], "\n".join(lines) + "\n")
    markers = {"ED": result.ed_frame, "ES": result.es_frame} if result.status == "ok" else None
    volume_curve_figure(result.curves, None, markers, files["plot"], title=title)
    atomic_write_text(files["indices"], json.dumps(indices_payload(result), indent=2) + "\n")
    if report is not None:
        files["report"] = out / f"{stem}_report.json"
        atomic_write_text(files["report"], json.dumps(report, indent=2) + "\n")
    if page is not None:
        files["report_html"] = out / f"{stem}_report.html"
        atomic_write_text(files["report_html"], page)
    if source is not None and labels is not None:
        files.update(write_dicom_seg(out, stem, source, labels, result, algorithm))
    return files


def write_dicom_seg(out: Path, stem: str, source: DicomCine, labels: np.ndarray, result: Readout,
                    algorithm: str = "deunet") -> dict[str, Path]:  # fmt: skip
    """``<stem>_seg_ED.dcm`` and ``<stem>_seg_ES.dcm``: the ED and ES labels as DICOM Segmentations of the
    DICOM images they were predicted on (:mod:`pipeline.data.dicom_seg`); none when ED/ES are undefined
    (status other than ``ok``). Raises DataError naming the SEG file that could not be written."""
    if result.status != "ok" or labels.ndim != 4:
        return {}
    from pipeline.data.dicom_seg import seg_path, write_segmentation

    files = {}
    for phase, frame in (("ED", result.ed_frame), ("ES", result.es_frame)):
        path = seg_path(out, stem, phase)
        if not 0 <= frame < labels.shape[0]:
            raise DataError(path, f"{phase} frame {frame} is outside the {labels.shape[0]} frame(s)")
        files[f"seg_{phase}"] = write_segmentation(
            path, source.frame_datasets(frame), labels[frame], phase=phase, algorithm=algorithm
        )
    return files


def algorithm_name(models: Sequence[str]) -> str:
    """The model as a SEG's AlgorithmName (at most 64 characters): ``deunet`` and the model files' names."""
    names = ", ".join(Path(m).name for m in models)
    return f"deunet {names}"[:64] if names else "deunet"


def indices_payload(result: Readout) -> dict[str, Any]:
    """The ``<name>_indices.json`` content: ED/ES, status, units and the indices (NaN -> null)."""
    indices = {k: (None if math.isnan(v) else round(v, 6)) for k, v in result.indices.items()}
    return {"ed_frame": result.ed_frame, "es_frame": result.es_frame, "status": result.status,
            "units": CLINICAL_UNITS, **indices}  # fmt: skip


def summary(
    path: Path, n_frames: int, result: Readout, out: Path, quality: dict[str, Any] | None = None
) -> str:
    """The one-line report printed after a prediction (with the quality-control verdict when given)."""
    ix = result.indices

    def fmt(key: str, digits: int = 1) -> str:
        return "n/a" if math.isnan(ix[key]) else f"{ix[key]:.{digits}f}"

    return (
        f"{path.name}: {n_frames} frame(s), ED {result.ed_frame} ES {result.es_frame} ({result.status}); "
        f"LV EF {fmt('LV_EF')}% EDV {fmt('LV_EDV')} ml ESV {fmt('LV_ESV')} ml; RV EF {fmt('RV_EF')}%; "
        f"MYO mass {fmt('MYO_mass')} g"
        + (
            ""
            if quality is None
            else f"; QC {'ok' if quality['ok'] else 'FLAGGED: ' + ', '.join(quality['flags'])}"
        )
        + f" -> {out}"
    )


def summary_row(case: Case, seconds: float, result: Readout | None = None, error: str = "",
                report: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One row of ``summary.csv``."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(case=case.name, input=str(case.path), seconds=f"{seconds:.2f}", error=error)
    if result is None:
        row["status"] = "failed"
        return row
    payload = indices_payload(result)
    row.update(
        {
            k: ("" if payload[k] is None else payload[k])
            for k in ("status", "ed_frame", "es_frame", *CLINICAL_KEYS)
        }
    )
    if report is not None:
        for column, part, key in REPORT_COLUMNS:
            value = report[part][key]
            row[column] = "" if value is None else value
        if "reference" in report:
            row["outside_reference"] = ";".join(
                f"{k}:{report['reference']['indices'][k]['status']}" for k in report["reference"]["outside"]
            )
        if "quality" in report:
            row.update(qc_columns(report["quality"]))
    return row


def write_summary(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, nargs="+",
                        help="checkpoint .pt file(s) (several: a fold ensemble), their .onnx exports, one MLflow model "
                             "URI, or shipped:NAME (`deunet models` lists them); default: the default shipped model")  # fmt: skip
    parser.add_argument("--input", required=True, type=Path,
                        help="NIfTI cine, DICOM series/study folder, or a folder of cases")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--series", default=None,
                        help="DICOM: the SeriesInstanceUID or SeriesNumber of the cine, when a study has several")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu or cuda[:N]")
    parser.add_argument("--tta", default=None, choices=TTA_MODES,
                        help=f"test-time augmentation (default: a shipped model's own setting, else {DEFAULT_TTA})")  # fmt: skip
    parser.add_argument("--postprocess", default=None, choices=POSTPROCESS_MODES,
                        help=f"post-processing (default: a shipped model's own setting, else {DEFAULT_POSTPROCESS})")  # fmt: skip
    parser.add_argument("--locate", default="auto", choices=LOCATE_MODES,
                        help="auto: a field of view much larger than training's is searched for the heart and "
                             "cropped to training's framing first; off: the whole slice (checkpoints)")  # fmt: skip
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="auto: bf16 on CUDA, fp32 on the CPU; bf16: also on the CPU (faster on CPUs with "
                             "native bf16, labels differ slightly); fp32 everywhere (checkpoints)")  # fmt: skip
    parser.add_argument("--timing", action="store_true",
                        help="print the seconds spent importing the runtime, loading the model, reading, segmenting "
                             "and writing")  # fmt: skip
    return parser


class _Clock:
    """Seconds per phase, for ``--timing``."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Add the time since the last lap to ``phase``."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now


def _run_one(predictor: Predictor, case: Case, out: Path, series: str | None, clock: _Clock,
             own_folder: bool = False) -> tuple[Readout, int, dict[str, Any]]:  # fmt: skip
    """Read, segment and write one case into ``out``; with ``own_folder`` (a folder of cases) ``out`` is
    the case's own folder, written whole or not at all. Returns the read-out, the frames and the report."""
    image, data, subject, source = read_case(case, series)
    clock.lap("read")
    _import_later_modules()
    labels_nifti, result, labels = predictor(image, data)
    clock.lap("segment")
    n_frames = image.array.shape[0] if image.array.ndim == 4 else 1
    report = clinical_report(result, subject, n_frames)
    report["quality"] = case_quality(labels, result).as_record()
    page = report_html(case.name, report, image.array, labels, result.curves)

    def write(folder: Path) -> None:
        write_outputs(folder, case.name, labels_nifti, result, title=case.path.name, report=report, page=page,
                      labels=labels, source=source, algorithm=algorithm_name(predictor.models))  # fmt: skip

    if own_folder:
        with atomic_directory(out) as tmp:
            write(tmp)
    else:
        write(out)
    clock.lap("write")
    return result, n_frames, report


@functools.cache
def _import_later_modules() -> None:
    """Start importing, in a thread, what the steps after the forward passes need (once per process).

    scipy.ndimage (post-processing) and matplotlib (the figure) take ~0.2 and ~0.4 s to import; the
    forward passes release the GIL, so that time mostly overlaps them instead of adding to the wall time
    (benchmarks/predict_bench.py). A failure is left to the modules' own imports, which report it where
    they are handled.
    """

    def run() -> None:
        with contextlib.suppress(Exception):
            for module in ("scipy.ndimage", "matplotlib.figure", "matplotlib.backends.backend_agg"):
                importlib.import_module(module)

    threading.Thread(target=run, name="import-later-modules", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    clock = _Clock()
    try:
        cases, many = discover_cases(args.input)
        if args.model is None:
            from pipeline.inference.pretrained import PREFIX, shipped_model

            shipped = shipped_model()
            args.model = [PREFIX + shipped.name]
            print(f"no --model: using the shipped model {shipped.name} ({shipped.manifest['summary']}; "
                  f"`deunet models` lists the others)", file=sys.stderr)  # fmt: skip
        args.tta, args.postprocess = shipped_settings(args.model, args.tta, args.postprocess)
        predictor = Predictor(
            shipped_files(args.model, args.device),
            args.device,
            args.tta,
            args.postprocess,
            args.locate,
            args.precision,
        )
        predictor.import_runtime()
        clock.lap("import runtime")
        predictor.load()
        clock.lap("load model")
    except (PipelineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not many:
        try:
            result, n_frames, report = _run_one(predictor, cases[0], args.out, args.series, clock)
        except (PipelineError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(summary(cases[0].path, n_frames, result, args.out, report["quality"]))
        failed = 0
    else:
        failed = _run_many(predictor, cases, args.out, args.series, clock)
    if args.timing:
        print("timing: " + ", ".join(f"{k} {v:.2f} s" for k, v in clock.phases.items()), file=sys.stderr)
    return 1 if failed else 0


def _run_many(
    predictor: Predictor, cases: Sequence[Case], out: Path, series: str | None, clock: _Clock
) -> int:
    """Every case into ``out/<name>/``, a progress bar, and ``out/summary.csv``; returns the failures."""
    from tqdm import tqdm

    rows, failed = [], 0
    with tqdm(cases, desc="predict", unit="case", file=sys.stderr, dynamic_ncols=True) as bar:
        for case in bar:
            bar.set_postfix_str(case.name)
            start = time.perf_counter()
            try:
                result, _, report = _run_one(predictor, case, out / case.name, series, clock, own_folder=True)
                rows.append(summary_row(case, time.perf_counter() - start, result, report=report))
            except (PipelineError, ValueError, OSError) as exc:
                failed += 1
                bar.write(f"error: {exc}", file=sys.stderr)
                rows.append(summary_row(case, time.perf_counter() - start, error=str(exc)))
            write_summary(out / "summary.csv", rows)  # after every case: a stopped run keeps what it did
            atomic_write_text(out / "cohort.html", cohort_html(rows))
    print(f"{len(cases) - failed} of {len(cases)} case(s) done, {failed} failed -> {out / 'summary.csv'}")
    return failed


if __name__ == "__main__":
    sys.exit(main())

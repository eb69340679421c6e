"""``predict``: segment one NIfTI cine on this machine and write labels, volume curves and indices.

    python -m pipeline.serving.predict_cli --model best.pt --input cine.nii.gz --out results/
    deunet predict --model data/train/models/fold*.pt --input cine.nii.gz --out results/   # fold ensemble

``--model`` is one or more checkpoint files (``.pt``; several are a fold ensemble whose probabilities are
averaged) or an MLflow model URI (``models:/name@champion``, ``runs:/...``; the logged model brings its
own folds, TTA and post-processing). ``--tta`` and ``--postprocess`` apply to checkpoints; they are the
options of :class:`pipeline.inference.predict.Segmenter`, the code evaluate scores. Writes, for ``<stem>``
the input name without ``.nii[.gz]``:

    <stem>_labels.nii.gz   labels (X, Y, Z, T) uint8, 0 bg, 1 RV, 2 MYO, 3 LV, with the input's affine
    <stem>_volumes.csv     frame (0-based), LV_ml, RV_ml, MYO_ml
    <stem>_volumes.png     LV and RV volume curves with ED and ES marked
    <stem>_indices.json    ED/ES frames, LV/RV EDV, ESV (ml), EF (%), MYO_mass (g), status (NaN -> null)

Exit status: 0 done, 1 bad input or model (one line naming the file), 2 bad usage.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_write_bytes
from pipeline.errors import DataError, PipelineError
from pipeline.evaluation.clinical import CLINICAL_KEYS, CLINICAL_UNITS
from pipeline.inference.postprocess import POSTPROCESS_MODES
from pipeline.inference.tta import TTA_MODES
from pipeline.serving.codec import RequestError, decode_nifti, encode_labels
from pipeline.serving.pyfunc_model import CURVE_COLUMNS, DECOMPRESSION_FACTOR, resolve_device
from pipeline.serving.readout import Readout, readout
from pipeline.vocabulary import CURVE_ORDER

log = logging.getLogger(__name__)

#: Largest input file the CLI reads (bytes); the served model has its own limit.
MAX_INPUT_BYTES = 2 * 1024**3
#: Defaults for checkpoint files: the levers measured best on acdc-roi (docs/benchmarks.md).
DEFAULT_TTA = "flips"
DEFAULT_POSTPROCESS = "lcc_fill"


def input_stem(path: Path) -> str:
    """``cine.nii.gz`` -> ``cine``."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_checkpoint(model: str) -> bool:
    """A local checkpoint file rather than an MLflow URI (``scheme:/...``)."""
    return ":/" not in model or Path(model).is_file()


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


def predict_with_checkpoint(paths: Path | Sequence[Path], cine: np.ndarray, device: str,
                            spacing: Sequence[float] | None = None, tta: str = DEFAULT_TTA,
                            postprocess: str = DEFAULT_POSTPROCESS) -> np.ndarray:  # fmt: skip
    """Labels ``(T, Z, Y, X)`` uint8 of ``cine`` ``(T, Z, Y, X)`` from checkpoint files (an ensemble)."""
    from pipeline.inference.predict import Segmenter

    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    try:
        segmenter = Segmenter.from_files(
            paths, device=resolve_device(device), tta=tta, postprocess=postprocess
        )
    except ValueError as exc:
        raise DataError(paths[0], str(exc)) from None
    return segmenter.predict(cine, spacing=spacing)


def predict_with_mlflow(uri: str, data: bytes, device: str) -> tuple[bytes, Readout]:
    """Label NIfTI bytes and read-out from a logged pyfunc model (the same code path as the server)."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(uri, model_config={"device": device})
        frame = model.predict(pd.DataFrame({"nifti": [base64.b64encode(data).decode("ascii")]}))
    except MlflowException as exc:
        raise RequestError(exc.message) from None
    row = frame.iloc[0]
    curves = {name: np.asarray(json.loads(row[col]), dtype=np.float64) for name, col in CURVE_COLUMNS.items()}
    result = Readout(
        curves, int(row["ed_frame"]), int(row["es_frame"]), {k: float(row[k]) for k in CLINICAL_KEYS},
        str(row["status"]),
    )  # fmt: skip
    return base64.b64decode(row["labels_nifti"]), result


def write_outputs(
    out: Path, stem: str, labels_nifti: bytes, result: Readout, title: str = ""
) -> dict[str, Path]:
    """Write the four result files of one cine into ``out``; returns them by kind."""
    from pipeline.atomic import atomic_write_text
    from pipeline.evaluation.figures import volume_curve_figure

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
    indices = {k: (None if math.isnan(v) else round(v, 6)) for k, v in result.indices.items()}
    payload = {"ed_frame": result.ed_frame, "es_frame": result.es_frame, "status": result.status,
               "units": CLINICAL_UNITS, **indices}  # fmt: skip
    atomic_write_text(files["indices"], json.dumps(payload, indent=2) + "\n")
    return files


def summary(path: Path, n_frames: int, result: Readout, out: Path) -> str:
    """The one-line report printed after a prediction."""
    ix = result.indices

    def fmt(key: str, digits: int = 1) -> str:
        return "n/a" if math.isnan(ix[key]) else f"{ix[key]:.{digits}f}"

    return (
        f"{path.name}: {n_frames} frame(s), ED {result.ed_frame} ES {result.es_frame} ({result.status}); "
        f"LV EF {fmt('LV_EF')}% EDV {fmt('LV_EDV')} ml ESV {fmt('LV_ESV')} ml; RV EF {fmt('RV_EF')}%; "
        f"MYO mass {fmt('MYO_mass')} g -> {out}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+",
                        help="checkpoint .pt file(s) (several: a fold ensemble) or one MLflow model URI")  # fmt: skip
    parser.add_argument("--input", required=True, type=Path, help="4D (or 3D) NIfTI cine, .nii or .nii.gz")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu or cuda[:N]")
    parser.add_argument("--tta", default=DEFAULT_TTA, choices=TTA_MODES,
                        help=f"test-time augmentation for checkpoints (default {DEFAULT_TTA})")  # fmt: skip
    parser.add_argument("--postprocess", default=DEFAULT_POSTPROCESS, choices=POSTPROCESS_MODES,
                        help=f"post-processing for checkpoints (default {DEFAULT_POSTPROCESS})")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    path: Path = args.input
    try:
        if not path.is_file():
            raise DataError(path, "input file is missing")
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise DataError(path, f"input is larger than {MAX_INPUT_BYTES} bytes")
        data = path.read_bytes()
        try:
            cine, spacing, affine = decode_nifti(data, max_image_bytes=MAX_INPUT_BYTES * DECOMPRESSION_FACTOR)
        except RequestError as exc:
            raise DataError(path, str(exc)) from None
        paths = checkpoint_paths(args.model)
        if paths is not None:
            labels = predict_with_checkpoint(paths, cine, args.device, spacing, args.tta, args.postprocess)
            labels_nifti, result = encode_labels(labels, affine), readout(labels, spacing)
        else:
            try:
                labels_nifti, result = predict_with_mlflow(args.model[0], data, args.device)
            except RequestError as exc:
                raise DataError(path, f"model {args.model} refused it: {exc}") from None
        write_outputs(args.out, input_stem(path), labels_nifti, result, title=path.name)
    except (PipelineError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(path, cine.shape[0], result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

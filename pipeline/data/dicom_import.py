"""``import-dicom``: turn a folder of DICOM studies into the ACDC layout.

    deunet import-dicom --input scans/ --out data/imported/

Each study (a sub-folder of ``--input`` holding DICOM, or ``--input`` itself when it is one series or one
study) becomes ``<out>/<patient>/`` with

    <patient>_4d.nii.gz   the cine series (X, Y, Z, T) float32 with the DICOM geometry as its affine
    Info.cfg              NbFrame, and Height (cm) / Weight (kg) where the headers carry them
    dicom_source.json     where it came from: folder, SeriesInstanceUID, description, files, frame step

``<patient>`` is the study folder's name, prefixed ``patient_`` unless it starts with ``patient``, so the
tree is what ``deunet predict --input <out>`` and the ACDC readers expect. Scans are not labelled: to
train on them, add ED, ES and Group to Info.cfg and the ``<patient>_frameNN[_gt].nii.gz`` files.

A study that cannot be read (no cine, a missing slice or frame, ...) is reported in one line naming the
file and skipped; nothing is written for it. An existing patient folder is never overwritten. Exit status:
0 all imported, 1 a study failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.atomic import atomic_directory
from pipeline.data.dicom import DicomCine, read_dicom_dir, study_folders
from pipeline.data.imageio import save_nifti
from pipeline.errors import DataError, PipelineError


def patient_id(folder: Path) -> str:
    """``study 01`` -> ``patient_study_01``; ``patient042`` stays."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name).strip("._") or "study"
    return name if name.startswith("patient") else f"patient_{name}"


def info_cfg(cine: DicomCine) -> str:
    """Info.cfg with what the headers know (PatientSize is in m, PatientWeight in kg)."""
    lines = []
    height, weight = cine.patient.get("PatientSize"), cine.patient.get("PatientWeight")
    if height:
        lines.append(f"Height: {float(height) * 100:.1f}")
    lines.append(f"NbFrame: {cine.image.array.shape[0]}")
    if weight:
        lines.append(f"Weight: {float(weight):.1f}")
    return "\n".join(lines) + "\n"


def import_study(study: Path, out_dir: Path, series: str | None = None) -> Path:
    """Write ``study``'s cine as ``out_dir/<patient>/`` (atomically); returns the patient folder.

    Raises:
        DataError: the study has no readable cine (naming the file), or the patient folder exists.
    """
    target = out_dir / patient_id(study)
    if target.exists():
        raise DataError(target, "exists already; remove it to import the study again")
    cine = read_dicom_dir(study, series)
    with atomic_directory(target) as tmp:
        zooms_t = cine.frame_ms / 1000.0 if cine.frame_ms else None
        save_nifti(cine.image.array, cine.image.affine, tmp / f"{target.name}_4d.nii.gz", zooms_t)
        (tmp / "Info.cfg").write_text(info_cfg(cine))
        source = {"folder": str(study), "series_instance_uid": cine.series, "series_description": cine.description,
                  "files": cine.files, "frame_ms": cine.frame_ms, "spacing_zyx_mm": list(cine.image.spacing)}  # fmt: skip
        (tmp / "dicom_source.json").write_text(json.dumps(source, indent=2) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="import-dicom", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="a folder of studies, or one study/series")
    parser.add_argument("--out", required=True, type=Path, help="the ACDC-layout folder to write into")
    parser.add_argument("--series", default=None, help="SeriesInstanceUID or SeriesNumber of the cine")
    args = parser.parse_args(argv)
    studies = study_folders(args.input)
    if not studies:
        what = "is not a folder" if studies is None else "holds no DICOM study"
        print(f"error: {args.input}: {what}", file=sys.stderr)
        return 1
    failed = 0
    for study in studies:
        try:
            target = import_study(study, args.out, args.series)
        except (PipelineError, OSError, ValueError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(f"{study} -> {target}")
    print(f"{len(studies) - failed} of {len(studies)} stud(ies) imported into {args.out}, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

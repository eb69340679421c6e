"""Where the raw ACDC-layout data comes from: the synthetic phantom, a local folder or a URL.

All three end the same way: ``data/raw/patientNNN/...`` in the ACDC layout, written atomically.
A local folder is imported with hard links where the filesystem allows (no gigabytes copied; the
files are never written to), falling back to copies across filesystems.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pipeline.atomic import atomic_directory
from pipeline.data.acdc import list_patients
from pipeline.data.config import DownloadConfig
from pipeline.data.download import fetch_url, find_acdc_root, safe_extract
from pipeline.data.phantom import generate_dataset
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)


def _link_or_copy(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "link"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def import_folder(source: Path, out_dir: Path, patients: tuple[str, ...] = ()) -> list[Path]:
    """Import the ``patient*`` folders of an ACDC-layout tree under ``source`` into ``out_dir``.

    Only the files of the layout (Info.cfg and .nii.gz) are imported; anything else is ignored.
    """
    root = find_acdc_root(Path(source))
    folders = list_patients(root)
    if patients:
        missing = sorted(set(patients) - {f.name for f in folders})
        if missing:
            raise ConfigError(f"download.patients: not found under {root}: {missing[:5]}")
        folders = [f for f in folders if f.name in patients]
    counts = {"link": 0, "copy": 0}
    with atomic_directory(out_dir) as tmp:
        for folder in folders:
            (tmp / folder.name).mkdir()
            for f in sorted(folder.iterdir()):
                if f.is_file() and (f.name == "Info.cfg" or f.name.endswith(".nii.gz")):
                    counts[_link_or_copy(f, tmp / folder.name / f.name)] += 1
    log.info(
        "imported %d patients from %s (%d hard links, %d copies)",
        len(folders),
        root,
        counts["link"],
        counts["copy"],
    )
    return list_patients(out_dir)


def acquire(cfg: DownloadConfig, out_dir: Path, cache_dir: Path) -> list[Path]:
    """Make ``out_dir`` hold the dataset named by ``cfg``; return its patient folders.

    ``cache_dir`` keeps the downloaded archive and its extraction between runs (a re-run after an
    interrupted transfer resumes; a finished archive with a matching sha256 is not fetched again).
    """
    if cfg.source == "synthetic":
        with atomic_directory(out_dir) as tmp:
            generate_dataset(tmp, cfg.synthetic)
        return list_patients(out_dir)
    if cfg.source == "local":
        source = Path(cfg.local_path).expanduser()
        if not source.is_dir():
            raise ConfigError(f"download.local_path: {source} is not a folder (source is 'local')")
        return import_folder(source, out_dir, cfg.patients)
    cache_dir.mkdir(parents=True, exist_ok=True)
    archive = fetch_url(cfg.url, cache_dir / "acdc_archive", sha256=cfg.sha256)
    extracted = safe_extract(archive, cache_dir / "extracted")
    return import_folder(extracted, out_dir, cfg.patients)

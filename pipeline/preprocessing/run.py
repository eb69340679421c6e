"""Preprocess a whole ACDC-layout dataset into the clip store, using several processes."""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from pipeline.data.acdc import list_patients
from pipeline.preprocessing.config import PreprocessConfig
from pipeline.preprocessing.patient import PreprocessedPatient, preprocess_patient
from pipeline.preprocessing.store import write_store

log = logging.getLogger(__name__)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; no oversubscription


def preprocess_dataset(
    raw_root: Path, out_dir: Path, cfg: PreprocessConfig, *, progress: bool = True
) -> Path:
    """Preprocess every ``patient*`` folder under ``raw_root`` and write the store to ``out_dir``.

    The first bad file stops the run with a DataError naming it; ``out_dir`` is then left as it was
    (the store is written only once every patient has been read).
    """
    folders = list_patients(raw_root)
    results: list[PreprocessedPatient]
    if cfg.workers == 1 or len(folders) == 1:
        results = [preprocess_patient(f, cfg) for f in tqdm(folders, desc="preprocess", disable=not progress)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(preprocess_patient, f, cfg) for f in folders]
            try:
                results = [fut.result() for fut in tqdm(futures, desc="preprocess", disable=not progress)]
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # fail fast on the first bad patient
                raise
    log.info("preprocessed %d patients from %s", len(results), raw_root)
    return write_store(out_dir, results, cfg)

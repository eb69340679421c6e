"""The ``download`` stage's settings (params.yaml ``download``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.data.phantom import PhantomConfig

# The official ACDC training/testing release (the "humanheart-project" data portal of CREATIS).
ACDC_URL = (
    "https://humanheart-project.creatis.insa-lyon.fr/database/api/v1/folder/637218e573e9f0047faa00fc/download"
)


@dataclass(frozen=True)
class DownloadConfig:
    """The ``download`` section of params.yaml.

    source: ``synthetic`` (the embedded phantom), ``local`` (an ACDC-layout folder on disk) or ``url``.
    local_path: the folder for ``local`` (the folder holding ``patient*`` or a parent of it).
    url / sha256: the archive for ``url``; sha256 may be null (a warning prints the digest to pin).
    patients: optional subset of patient ids to import (empty = all).
    synthetic: the phantom's settings.
    """

    source: Literal["synthetic", "local", "url"] = "synthetic"
    local_path: str = "../shared/data/acdc-roi"
    url: str = ACDC_URL
    sha256: str | None = None
    patients: tuple[str, ...] = ()
    synthetic: PhantomConfig = field(default_factory=PhantomConfig)

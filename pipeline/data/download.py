"""The url path of the ``download`` stage: fetch an archive, verify it, extract it safely.

* :func:`fetch_url` streams ``http(s)://`` or ``file://`` URLs to ``<dest>.part`` with a progress bar,
  resumes an interrupted transfer with an HTTP ``Range`` request, verifies the sha256 and only then
  renames the ``.part`` file to ``dest`` (so ``dest`` never holds a partial or unverified archive).
* :func:`safe_extract` validates every member of a tar/zip archive before writing anything (no
  absolute paths, no ``..``, no links, no devices), extracts into a temporary sibling directory and
  swaps it into place, so the target is either the old tree or the complete new one.
* :func:`find_acdc_root` locates the folder that holds the ``patientNNN`` folders.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pipeline.atomic import atomic_directory
from pipeline.errors import ChecksumError, DownloadError, UnsafeArchiveError

log = logging.getLogger(__name__)

#: First retry waits this many seconds, doubling each retry (capped at 10 s).
RETRY_BACKOFF_S = 0.5
_SCHEMES = ("http", "https", "file")
_TRANSIENT = (http.client.HTTPException, ConnectionError, TimeoutError, urllib.error.URLError)
_DRIVE = re.compile(r"^[A-Za-z]:")
_BAR = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "leave": False}  # tqdm byte counter


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in ``chunk_size``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    """Size of ``path`` in bytes, 0 if it does not exist."""
    return path.stat().st_size if path.exists() else 0


def _is_transient(exc: BaseException, url: str) -> bool:
    """Whether a failed attempt is worth retrying (broken connection, timeout, 5xx)."""
    if urllib.parse.urlsplit(url).scheme == "file":
        return False
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    return isinstance(exc, _TRANSIENT)


def _download_once(url: str, part: Path, chunk_size: int, timeout: float, progress: bool) -> None:
    """One attempt: request the bytes missing from ``part`` and append them (or restart at 0)."""
    offset = _size(part)
    headers = {"User-Agent": "deunet-pipeline", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range starts at/after the end: .part is complete
            log.info("%s: server reports %s already complete (%d bytes)", url, part, offset)
            return
        raise
    with resp:
        status = resp.getcode() or 200  # file:// has no status; it always serves the whole file
        if status == 206:
            start = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
            if start is None or int(start[1]) != offset:
                raise DownloadError(
                    f"{url}: asked for bytes {offset}- but got Content-Range "
                    f"{resp.headers.get('Content-Range')!r}"
                )
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            offset, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            open(part, mode) as fh,
            tqdm(
                total=total, initial=offset, desc=part.name, disable=None if progress else True, **_BAR
            ) as bar,
        ):
            while chunk := resp.read(chunk_size):
                fh.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:  # http.client returns b"" on a truncated body
        raise http.client.IncompleteRead(b"", total - size)


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    chunk_size: int = 1 << 20,
    retries: int = 3,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic) and return ``dest``.

    Bytes go to ``dest.part``; an existing ``.part`` is resumed with ``Range: bytes=N-``. A broken
    connection is retried up to ``retries`` times (backoff from ``RETRY_BACKOFF_S`` seconds), each
    resuming from the ``.part`` size. ``timeout`` is the per-socket-operation timeout in seconds,
    ``chunk_size`` the read size in bytes. If ``dest`` already exists with the expected sha256 it is
    kept as is. Raises ``ChecksumError`` (and deletes the ``.part``) on a digest mismatch, and
    ``DownloadError`` when the retries are exhausted (the ``.part`` is kept for a later resume).
    """
    dest = Path(dest)
    if urllib.parse.urlsplit(url).scheme not in _SCHEMES:
        raise DownloadError(f"{url}: unsupported URL scheme (expected one of {', '.join(_SCHEMES)})")
    expected = sha256.strip().lower() if sha256 else None
    if expected and dest.is_file() and sha256_file(dest) == expected:
        log.info("%s: already present with sha256 %s; not downloading", dest, expected)
        return dest
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            _download_once(url, part, chunk_size, timeout, progress)
            break
        except (*_TRANSIENT, OSError) as exc:
            if not _is_transient(exc, url):
                raise DownloadError(f"{url}: download failed: {exc!r}") from exc
            if attempt >= retries:
                raise DownloadError(
                    f"{url}: download failed after {retries} retries: {exc!r} "
                    f"(partial file kept at {part} for a later resume)"
                ) from exc
            attempt += 1
            wait, done = min(RETRY_BACKOFF_S * 2 ** (attempt - 1), 10.0), _size(part)
            log.warning("%s: %r; retry %d/%d in %.1f s from byte %d", url, exc, attempt, retries, wait, done)
            time.sleep(wait)
    actual = sha256_file(part)
    if expected is None:
        log.warning(
            "%s: no sha256 given; the downloaded archive has sha256=%s (pin it in params)", url, actual
        )
    elif actual != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: sha256 mismatch: expected {expected}, got {actual} (download deleted)")
    os.replace(part, dest)
    log.info("%s: saved to %s (sha256 %s)", url, dest, actual)
    return dest


def _check_name(archive: Path, name: str) -> None:
    """Refuse a member name that is absolute or climbs out of the target with ``..``."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    if ".." in PurePosixPath(posix).parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} escapes the target directory ('..')")


def _validate_tar(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Raise ``UnsafeArchiveError`` for the first unsafe tar member."""
    for m in members:
        _check_name(archive, m.name)
        if m.issym() or m.islnk():
            kind = "symlink" if m.issym() else "hardlink"
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} is a {kind} to {m.linkname!r}; "
                "links are not allowed in the dataset archive"
            )
        if not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device, fifo or special file")


def _validate_zip(archive: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Raise ``UnsafeArchiveError`` for the first unsafe zip member (unix mode in external_attr)."""
    for info in infos:
        _check_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UnsafeArchiveError(
                f"{archive}: member {info.filename!r} is a symlink; "
                "links are not allowed in the dataset archive"
            )
        if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a device, fifo or special file")


def _extract_tar(tar: tarfile.TarFile, members: list[tarfile.TarInfo], tmp: Path) -> None:
    """``extractall`` with ``filter="data"`` (Python 3.11.4+) as defence in depth on top of validation."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(tmp, members, filter="data")
    else:  # pragma: no cover - Python < 3.11.4
        tar.extractall(tmp, members)


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a .tar/.tar.gz/.tgz/.zip ``archive`` into ``target`` all-or-nothing; return ``target``.

    The format is detected from the content. Every member is validated before anything is written;
    an unsafe one raises ``UnsafeArchiveError`` naming the archive and the member. The tree is
    extracted into a hidden temporary sibling of ``target`` and renamed into place only once
    complete; on any failure the temporary tree is removed and an existing ``target`` is untouched.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                _validate_tar(archive, members)
                with atomic_directory(target) as tmp:
                    _extract_tar(tar, members, tmp)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _validate_zip(archive, zf.infolist())
                with atomic_directory(target) as tmp:
                    zf.extractall(tmp)
        else:
            raise DownloadError(f"{archive}: not a tar, tar.gz or zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DownloadError(f"{archive}: extraction into {target} failed: {exc}") from exc
    log.info("%s: extracted into %s", archive, target)
    return target


def find_acdc_root(extracted: Path, max_depth: int = 4) -> Path:
    """Return the directory under ``extracted`` that directly contains ``patient*`` folders.

    Searches breadth-first up to ``max_depth`` levels, in sorted order, skipping hidden folders and
    ``__MACOSX``; among candidates at the same depth a folder named ``training`` wins (the official
    release has ``ACDC/database/training`` and ``ACDC/database/testing``).
    """
    level = [Path(extracted)]
    for _ in range(max_depth + 1):
        found = [d for d in level if any(c.is_dir() and c.name.startswith("patient") for c in d.iterdir())]
        if found:
            return min(found, key=lambda d: (d.name != "training", str(d)))
        level = sorted(
            c
            for d in level
            for c in d.iterdir()
            if c.is_dir() and not c.name.startswith(".") and c.name != "__MACOSX"
        )
    raise DownloadError(f"{extracted}: no folder with patient* sub-folders within {max_depth} levels")

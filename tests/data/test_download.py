"""Tests of the url path of the ``download`` stage against a local HTTP server on 127.0.0.1.

The server serves a generated tar.gz of a fake ACDC tree, honours ``Range: bytes=N-`` (206 / 416),
and can drop the connection after a number of bytes to simulate a broken transfer.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.data import download
from pipeline.data.download import fetch_url, find_acdc_root, safe_extract, sha256_file
from pipeline.errors import ChecksumError, DownloadError, UnsafeArchiveError

CHUNK = 16 * 1024  # bytes per read in the tests, so that a transfer spans many chunks


def _fake_tree() -> dict[str, bytes]:
    """Files of a small fake ACDC release (``ACDC/database/{training,testing}/patientNNN``)."""
    rng = random.Random(0)
    files: dict[str, bytes] = {}
    for split, ids in (("training", (1, 2)), ("testing", (101,))):
        for i in ids:
            pid = f"patient{i:03d}"
            base = f"ACDC/database/{split}/{pid}"
            files[f"{base}/Info.cfg"] = b"ED: 1\nES: 12\nGroup: NOR\nHeight: 180\nNbFrame: 30\nWeight: 80\n"
            files[f"{base}/{pid}_4d.nii.gz"] = rng.randbytes(60_000)  # incompressible: big archive
    return files


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


FILES = _fake_tree()
PAYLOAD = _tar_gz(FILES)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Server(ThreadingHTTPServer):
    """Serves ``payload`` at any path; records each request's Range header."""

    payload: bytes = PAYLOAD
    honour_range: bool = True
    drop_after: int | None = None  # bytes of body sent before dropping the connection
    drops_left: int = 0  # how many requests get dropped
    status: int | None = None  # force an error status (e.g. 404)
    ranges: list[str | None]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if srv.status is not None:
            self.send_error(srv.status)
            return
        total, start, status = len(srv.payload), 0, 200
        if rng and srv.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match, rng
            start, status = int(match[1]), 206
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = srv.payload[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        if srv.drop_after is not None and srv.drops_left > 0:
            srv.drops_left -= 1
            self.wfile.write(body[: srv.drop_after])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.ranges = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/ACDC.tar.gz"


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def _assert_tree(root: Path) -> None:
    for name, data in FILES.items():
        assert (root / name).read_bytes() == data


# --- fetch_url ---------------------------------------------------------------------------------


def test_download_verify_extract(server: _Server, tmp_path: Path) -> None:
    dest = fetch_url(_url(server), tmp_path / "ACDC.tar.gz", sha256=DIGEST.upper(), chunk_size=CHUNK)
    assert dest == tmp_path / "ACDC.tar.gz"
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "ACDC.tar.gz.part").exists()
    assert server.ranges == [None]
    target = safe_extract(dest, tmp_path / "raw")
    _assert_tree(target)
    assert find_acdc_root(target) == target / "ACDC/database/training"
    assert sha256_file(dest) == DIGEST


def test_resume_after_broken_connection(server: _Server, tmp_path: Path) -> None:
    server.drop_after, server.drops_left = 50_000, 1
    dest = fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST, chunk_size=CHUNK)
    assert server.ranges == [None, "bytes=50000-"]
    assert sha256_file(dest) == DIGEST


def test_several_drops_resume_each_time(server: _Server, tmp_path: Path) -> None:
    server.drop_after, server.drops_left = 40_000, 3
    dest = fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST, chunk_size=CHUNK, retries=3)
    assert server.ranges == [None, "bytes=40000-", "bytes=80000-", "bytes=120000-"]
    assert dest.read_bytes() == PAYLOAD


def test_retries_exhausted_keeps_part_for_later(server: _Server, tmp_path: Path) -> None:
    server.drop_after, server.drops_left = 30_000, 10
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match="after 2 retries"):
        fetch_url(_url(server), dest, sha256=DIGEST, chunk_size=CHUNK, retries=2)
    assert len(server.ranges) == 3
    assert not dest.exists()
    assert (tmp_path / "a.tar.gz.part").read_bytes() == PAYLOAD[:90_000]
    server.drops_left = 0  # a later run resumes where the failed one stopped
    fetch_url(_url(server), dest, sha256=DIGEST, chunk_size=CHUNK)
    assert server.ranges[-1] == "bytes=90000-"
    assert dest.read_bytes() == PAYLOAD


def test_existing_part_file_resumes(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz.part").write_bytes(PAYLOAD[:12_345])
    dest = fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST, chunk_size=CHUNK)
    assert server.ranges == ["bytes=12345-"]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_416_is_verified(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz.part").write_bytes(PAYLOAD)
    dest = fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    server.honour_range = False
    (tmp_path / "a.tar.gz.part").write_bytes(b"garbage that is not a prefix")
    dest = fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST, chunk_size=CHUNK)
    assert server.ranges == ["bytes=28-"]
    assert dest.read_bytes() == PAYLOAD


def test_wrong_checksum_deletes_download_and_extracts_nothing(server: _Server, tmp_path: Path) -> None:
    dest, target, wrong = tmp_path / "a.tar.gz", tmp_path / "raw", "0" * 64
    with pytest.raises(ChecksumError) as err:
        safe_extract(fetch_url(_url(server), dest, sha256=wrong, chunk_size=CHUNK), target)
    msg = str(err.value)
    assert _url(server) in msg and wrong in msg and DIGEST in msg
    assert isinstance(err.value, DownloadError)
    assert not dest.exists() and not (tmp_path / "a.tar.gz.part").exists() and not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_verified_dest_is_not_downloaded_again(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "a.tar.gz").write_bytes(PAYLOAD)
    fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST)
    assert server.ranges == []


def test_no_checksum_warns_with_digest(
    server: _Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipeline.data.download"):
        dest = fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=None, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert DIGEST in caplog.text


def test_http_error_is_not_retried(server: _Server, tmp_path: Path) -> None:
    server.status = 404
    with pytest.raises(DownloadError, match="404"):
        fetch_url(_url(server), tmp_path / "a.tar.gz", sha256=DIGEST, retries=3)
    assert len(server.ranges) == 1
    assert not (tmp_path / "a.tar.gz").exists()


def test_file_url_and_bad_scheme(tmp_path: Path) -> None:
    src = tmp_path / "src.tar.gz"
    src.write_bytes(PAYLOAD)
    dest = fetch_url(src.as_uri(), tmp_path / "out" / "a.tar.gz", sha256=DIGEST)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        fetch_url("ftp://example.org/a.tar.gz", tmp_path / "b.tar.gz", sha256=None)
    with pytest.raises(DownloadError, match="missing"):
        fetch_url((tmp_path / "missing.zip").as_uri(), tmp_path / "c.zip", sha256=None)


# --- safe_extract ------------------------------------------------------------------------------


def _tar_with(info: tarfile.TarInfo, data: bytes = b"evil") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        good = tarfile.TarInfo("ACDC/database/training/patient001/Info.cfg")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"ok\n"))
        if info.isfile():
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            tar.addfile(info)
    return buf.getvalue()


def _unsafe_tars(outside: Path) -> dict[str, bytes]:
    sym = tarfile.TarInfo("ACDC/link")
    sym.type, sym.linkname = tarfile.SYMTYPE, str(outside)
    hard = tarfile.TarInfo("ACDC/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
    inner_sym = tarfile.TarInfo("ACDC/inner")  # even a link that stays inside is refused
    inner_sym.type, inner_sym.linkname = tarfile.SYMTYPE, "database"
    dev = tarfile.TarInfo("ACDC/null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    fifo = tarfile.TarInfo("ACDC/fifo")
    fifo.type = tarfile.FIFOTYPE
    return {
        "dotdot": _tar_with(tarfile.TarInfo("../evil.txt")),
        "nested-dotdot": _tar_with(tarfile.TarInfo("ACDC/../../evil.txt")),
        "absolute": _tar_with(tarfile.TarInfo(str(outside / "abs-evil.txt"))),
        "symlink": _tar_with(sym),
        "hardlink": _tar_with(hard),
        "inner-symlink": _tar_with(inner_sym),
        "chardev": _tar_with(dev),
        "fifo": _tar_with(fifo),
    }


def _zip_with(name: str, mode: int | None = None, data: bytes = b"evil") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ACDC/database/training/patient001/Info.cfg", b"ok\n")
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return buf.getvalue()


def _unsafe_zips(outside: Path) -> dict[str, bytes]:
    return {
        "zip-dotdot": _zip_with("../evil.txt"),
        "zip-absolute": _zip_with(str(outside / "abs-evil.txt")),
        "zip-drive": _zip_with("C:/evil.txt"),
        "zip-symlink": _zip_with("ACDC/link", stat.S_IFLNK | 0o777, str(outside).encode()),
        "zip-fifo": _zip_with("ACDC/fifo", stat.S_IFIFO | 0o644),
    }


UNSAFE = sorted([*_unsafe_tars(Path("/x")), *_unsafe_zips(Path("/x"))])
REASON = {"dotdot": "'..'", "absolute": "absolute path", "drive": "absolute path", "link": "link"}
REASON |= {"hardlink": "hardlink", "chardev": "device", "fifo": "device"}


def _reason(case: str) -> str:
    """Expected part of the error message for an unsafe-archive case."""
    return next(v for k, v in sorted(REASON.items(), key=lambda kv: -len(kv[0])) if case.endswith(k))


@pytest.mark.parametrize("case", UNSAFE)
@pytest.mark.parametrize("target_exists", [False, True])
def test_unsafe_archive_refused_and_nothing_written(case: str, target_exists: bool, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = {**_unsafe_tars(outside), **_unsafe_zips(outside)}[case]
    archive = tmp_path / "bad.archive"
    archive.write_bytes(data)
    target = tmp_path / "work" / "raw"
    if target_exists:
        (target / "old").mkdir(parents=True)
        (target / "old" / "keep.txt").write_text("previous extraction")
    before = _snapshot(tmp_path)
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract(archive, target)
    assert str(archive) in str(err.value) and _reason(case) in str(err.value)
    assert _snapshot(tmp_path) == before  # target unchanged (or absent), no tmp dir, nothing outside


def test_zip_archive_extracts(tmp_path: Path) -> None:
    archive = tmp_path / "ACDC.zip"
    archive.write_bytes(_zip(FILES))
    target = safe_extract(archive, tmp_path / "raw")
    _assert_tree(target)
    assert find_acdc_root(target).relative_to(target).as_posix() == "ACDC/database/training"


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"<html>login page</html>")
    with pytest.raises(DownloadError, match=re.escape(str(junk))):
        safe_extract(junk, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_truncated_archive_leaves_target(tmp_path: Path) -> None:
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    target = tmp_path / "raw"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    before = _snapshot(tmp_path)
    with pytest.raises(DownloadError):
        safe_extract(archive, target)
    assert _snapshot(tmp_path) == before


def test_existing_target_replaced_only_on_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "ACDC.tar.gz"
    archive.write_bytes(PAYLOAD)
    target = tmp_path / "raw"
    target.mkdir()
    (target / "stale.txt").write_text("from an older run")
    before = _snapshot(tmp_path)

    real = tarfile.TarFile.extractall

    def half_then_fail(self: tarfile.TarFile, path: str, *args: object, **kwargs: object) -> None:
        (Path(path) / "half-written.bin").write_bytes(b"x" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", half_then_fail)
    with pytest.raises(DownloadError, match="No space left"):
        safe_extract(archive, target)
    assert _snapshot(tmp_path) == before  # old target intact, temporary tree removed

    monkeypatch.setattr(tarfile.TarFile, "extractall", real)
    assert safe_extract(archive, target) == target
    assert not (target / "stale.txt").exists()
    _assert_tree(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ACDC.tar.gz", "raw"]  # no .tmp-/.old- left


# --- find_acdc_root ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (["ACDC/database/training/patient001", "ACDC/database/testing/patient101"], "ACDC/database/training"),
        (["training/patient001", "training/patient002"], "training"),
        (["patient001"], "."),
        (["__MACOSX/x/patient001", "b/data/patient007"], "b/data"),
    ],
)
def test_find_acdc_root(layout: list[str], expected: str, tmp_path: Path) -> None:
    for rel in layout:
        (tmp_path / rel).mkdir(parents=True)
    assert find_acdc_root(tmp_path) == tmp_path / expected  # pathlib drops a "." component


def test_find_acdc_root_none(tmp_path: Path) -> None:
    (tmp_path / "a" / "b" / "notes").mkdir(parents=True)
    (tmp_path / "patient001.txt").write_text("a file, not a folder")
    with pytest.raises(DownloadError, match="patient"):
        find_acdc_root(tmp_path)

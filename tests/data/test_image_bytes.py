"""NIfTI bytes <-> (T, Z, Y, X) arrays, in memory, and the requests the codec must refuse."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.image_bytes import (
    decode_dicom_zip,
    decode_nifti,
    encode_cine,
    encode_labels,
    gunzip_capped,
)
from pipeline.errors import RequestError
from tests.conftest import make_record


def nifti_bytes(disk: np.ndarray, zooms: tuple[float, ...] | None = None) -> bytes:
    img = nib.Nifti1Image(disk, np.eye(4))
    if zooms is not None:
        img.header.set_zooms(zooms)
    return img.to_bytes()


def test_round_trip_4d_gzip_and_plain() -> None:
    record = make_record()
    data = encode_cine(record.cine, record.affine)
    assert data[:2] == b"\x1f\x8b"
    cine, spacing, affine = decode_nifti(data)
    assert cine.dtype == np.float32 and cine.shape == record.cine.shape == (6, 3, 20, 24)
    np.testing.assert_array_equal(cine, record.cine)
    assert spacing == pytest.approx(record.spacing)
    np.testing.assert_allclose(affine, record.affine)
    plain, _, _ = decode_nifti(gzip.decompress(data))
    np.testing.assert_array_equal(plain, cine)


def test_disk_order_is_x_y_z_t() -> None:
    disk = np.arange(4 * 3 * 2 * 5, dtype=np.float32).reshape(4, 3, 2, 5)  # (X, Y, Z, T)
    cine, spacing, _ = decode_nifti(nifti_bytes(disk, (1.25, 1.5, 8.0, 1.0)))
    assert cine.shape == (5, 2, 3, 4)
    assert cine[4, 1, 2, 3] == disk[3, 2, 1, 4]
    assert spacing == (8.0, 1.5, 1.25)


def test_3d_image_is_one_frame() -> None:
    record = make_record()
    cine, _, _ = decode_nifti(encode_cine(record.cine[2], record.affine))
    assert cine.shape == (1, 3, 20, 24)
    np.testing.assert_array_equal(cine[0], record.cine[2])


def test_trailing_singleton_fifth_axis_is_dropped() -> None:
    cine, _, _ = decode_nifti(nifti_bytes(np.ones((4, 3, 2, 5, 1), np.float32)))
    assert cine.shape == (5, 2, 3, 4)


def test_encode_labels_round_trip() -> None:
    record = make_record()
    assert record.cine_labels is not None
    data = encode_labels(record.cine_labels, record.affine)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    assert img.shape == (24, 20, 3, 6) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, record.affine)
    back, spacing, _ = decode_nifti(data)
    np.testing.assert_array_equal(back.astype(np.uint8), record.cine_labels)
    assert spacing == pytest.approx(record.spacing)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "empty"),
        (b"this is not an image" * 20, "not a NIfTI"),
        (gzip.compress(b"this is not an image" * 20), "not a NIfTI"),
        (nifti_bytes(np.ones((4, 3), np.float32)), "2D"),
        (nifti_bytes(np.ones((4, 3, 2, 5, 2), np.float32)), "5D"),
        (nifti_bytes(np.full((4, 3, 2), np.nan, np.float32)), "NaN"),
        (nifti_bytes(np.ones((4, 3, 2), np.complex64)), "real number"),
        (nifti_bytes(np.ones((4, 3, 2, 5), np.float32))[:400], "voxel data"),
        (gzip.compress(nifti_bytes(np.ones((4, 3, 2), np.float32)))[:-12], "truncated"),
    ],
    ids=["empty", "junk", "gzip-junk", "2d", "5d", "nan", "complex", "truncated", "cut-gzip"],
)
def test_bad_payloads_raise_request_error(payload: bytes, match: str) -> None:
    with pytest.raises(RequestError, match=match):
        decode_nifti(payload)


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)  # ~50 KB that inflates to 50 MB
    assert len(bomb) < 100_000
    with pytest.raises(RequestError, match="larger than the limit of 1000000"):
        decode_nifti(bomb, max_image_bytes=1_000_000)
    with pytest.raises(RequestError, match="larger than the limit"):
        gunzip_capped(bomb, 1_000_000)


def test_header_declaring_huge_data_is_refused() -> None:
    img = nib.Nifti1Image(np.ones((4, 3, 2), np.float32), np.eye(4))
    img.header.set_data_shape((4000, 3000, 200))  # ~9.6 GB declared, a few bytes sent
    with pytest.raises(RequestError, match="over the limit"):
        decode_nifti(img.header.binaryblock + b"\0" * 400, max_image_bytes=10_000_000)


def test_multi_member_gzip_is_one_stream() -> None:
    data = gzip.compress(b"abc") + gzip.compress(b"def")
    assert gunzip_capped(data, 100) == b"abcdef"


# ---------------------------------------------------------------- zipped DICOM series


def dicom_zip(tmp_path, record=None, extra: dict[str, bytes] | None = None) -> bytes:  # type: ignore[no-untyped-def]
    """A zip of ``record`` (default: make_record()) written as a DICOM series, plus ``extra`` members."""
    import io
    import zipfile

    from pipeline.data.dicom import write_series

    record = record if record is not None else make_record()
    files = write_series(record.cine, record.affine, tmp_path / "series")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, f"study/series/{path.name}")
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return buffer.getvalue()


def test_dicom_zip_decodes_to_the_cine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    record = make_record()
    cine, spacing, affine = decode_dicom_zip(
        dicom_zip(tmp_path, record, {"study/.DS_Store": b"x", "DICOMDIR": b"y"})
    )
    assert cine.shape == record.cine.shape and np.abs(cine - record.cine).max() < 0.5
    assert spacing == pytest.approx(record.spacing)
    np.testing.assert_allclose(affine, record.affine, atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "limits", "match"),
    [
        (
            {"../../etc/cron.d/x": b"evil"},
            {},
            r"'\.\./\.\./etc/cron\.d/x' has a '\.\.' component \(zip-slip\)",
        ),
        ({"/abs/path.dcm": b"x"}, {}, "has an absolute path"),
        (
            {"bomb.bin": b"\0" * 50_000_000},
            {},
            r"'bomb.bin' expands 50000000 bytes from \d+ \(a zip bomb\?\)",
        ),
        ({}, {"max_members": 5}, r"zip holds 18 members, more than the limit of 5"),
        ({}, {"max_bytes": 10_000}, r"zip members declare \d+ bytes, more than the limit of 10000"),
        ({"notes.txt": b"not dicom"}, {}, r"DICOM notes.txt: is not a DICOM file"),
    ],
)
def test_unsafe_or_bad_dicom_zips_are_refused(tmp_path, extra, limits, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError, match=match):
        decode_dicom_zip(dicom_zip(tmp_path, extra=extra), **limits)


def test_not_a_zip_and_a_lying_header_are_refused() -> None:
    import io
    import zipfile

    with pytest.raises(RequestError, match="not a zip archive"):
        decode_dicom_zip(b"PK\x03\x04 but not really")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.dcm", b"\0" * 100_000)
    data = bytearray(buffer.getvalue())
    central = data.rfind(b"PK\x01\x02")  # the central directory's uncompressed size: claim 10 bytes
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    with pytest.raises(RequestError, match=r"cannot be read|more than the limit"):
        decode_dicom_zip(bytes(data), max_bytes=1000)

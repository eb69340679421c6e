"""The image I/O module: one place for the NIfTI <-> memory convention, shared by files and requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.data import imageio
from pipeline.data.acdc import affine_from_spacing
from pipeline.data.image_bytes import decode_nifti, encode_cine
from pipeline.errors import DataError, RequestError


def test_file_and_bytes_readers_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cine = rng.normal(size=(5, 3, 7, 6)).astype(np.float32)
    affine = affine_from_spacing((8.0, 1.25, 1.5))
    path = tmp_path / "cine.nii.gz"
    imageio.save_nifti(cine, affine, path, zooms_t=1.0)
    from_file = imageio.read_image(path)
    np.testing.assert_array_equal(from_file.array, cine)
    assert from_file.spacing == (8.0, 1.25, 1.5)
    from_bytes, spacing, back_affine = decode_nifti(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, from_file.array)
    assert spacing == from_file.spacing and np.allclose(back_affine, from_file.affine)
    np.testing.assert_array_equal(decode_nifti(encode_cine(cine, affine))[0], cine)


def test_one_frame_file_is_a_one_frame_cine(tmp_path: Path) -> None:
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    imageio.save_nifti(volume, np.eye(4), tmp_path / "frame.nii")
    assert imageio.read_image(tmp_path / "frame.nii").array.shape == (1, 2, 3, 4)


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    nan = np.ones((2, 2, 2, 2), np.float32)
    nan[0, 0, 0, 0] = np.nan
    imageio.save_nifti(nan, np.eye(4), tmp_path / "nan.nii.gz")
    with pytest.raises(DataError, match=r"nan\.nii\.gz: 1 voxel\(s\) are NaN"):
        imageio.read_image(tmp_path / "nan.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not a known image kind \(readers: nifti"):
        imageio.read_image(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="input is missing"):
        imageio.read_image(tmp_path / "absent.nii.gz")
    with pytest.raises(RequestError, match="not a NIfTI"):
        imageio.nifti_from_bytes(b"\0" * 400)


def test_spacing_and_axes_convention() -> None:
    assert imageio.spacing_zyx((1.5, 1.25, 8.0, 1.0)) == (8.0, 1.25, 1.5)
    with pytest.raises(ValueError, match="positive and finite"):
        imageio.spacing_zyx((1.0, 0.0, 5.0))
    disk = np.zeros((4, 3, 2, 5))
    assert imageio.to_memory(disk).shape == (5, 2, 3, 4)
    assert imageio.to_disk(imageio.to_memory(disk)).shape == disk.shape

"""Tests for the image part of napari_unet.io."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.io import IMAGE_SUFFIXES, list_images, read_image, write_image


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("labels.tif", np.arange(2 * 5 * 7, dtype=np.uint32).reshape(2, 5, 7)),
        ("probs.tiff", np.linspace(0, 1, 3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)),
        ("grey.png", np.arange(48, dtype=np.uint8).reshape(6, 8)),
        ("deep.PNG", (np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8)),
        ("rgb.png", np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)),
    ],
)
def test_lossless_round_trip(tmp_path, name, array):
    path = tmp_path / name
    write_image(path, array)
    back = read_image(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_jpeg_round_trip_is_close(tmp_path):
    array = np.full((16, 16), 120, dtype=np.uint8)
    write_image(tmp_path / "a.jpg", array)
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == (16, 16) and np.abs(back.astype(int) - 120).max() <= 2


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        read_image(tmp_path / "notes.txt")
    for name in ("broken.png", "broken.tif"):
        (tmp_path / name).write_bytes(b"\x00\x01 definitely not an image" * 10)
        with pytest.raises(ValueError, match=f"cannot read image .*{name}"):
            read_image(tmp_path / name)


def test_write_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(tmp_path / "nowhere" / "a.tif", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"dtype float32.*\.png"):
        write_image(tmp_path / "a.png", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "a.jpg", np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2, 2\)"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="unsupported file type"):
        write_image(tmp_path / "a.npy", np.zeros((2, 2), np.uint8))


def test_list_images(tmp_path):
    for name in ("b.tif", "a.PNG", "c.jpeg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.tif").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.tif", "c.jpeg"]
    assert list_images(tmp_path / "b.tif") == [tmp_path / "b.tif"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert list_images(empty) == []
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list_images(tmp_path / "gone")
    with pytest.raises(ValueError, match="not a supported image file"):
        list_images(tmp_path / "notes.txt")
    assert ".tif" in IMAGE_SUFFIXES and ".png" in IMAGE_SUFFIXES


def test_reads_real_isbi_slice(isbi2012):
    image = read_image(isbi2012 / "labels" / "slice_00.png")
    assert image.shape == (512, 512) and image.dtype == np.uint8
    assert set(np.unique(image).tolist()) == {0, 255}

"""Safe outputs: inputs never replaced, links never followed, atomic writes, clean I/O errors."""

from __future__ import annotations

import errno
import json
import os
import time

import numpy as np
import pytest

from napari_unet import io, outputs
from napari_unet.errors import (
    InputError,
    OutputError,
    OutputExistsError,
    exit_code,
    output_error,
)
from napari_unet.outputs import (
    TMP_SUFFIX,
    atomic_path,
    check_output,
    check_outputs,
    remove_orphans,
    write_json,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


def test_output_equal_to_an_input_is_refused_even_with_overwrite(tmp_path):
    # Issue 18 item 2: `predict --overwrite --out <input folder>` replaced the inputs.
    image = tmp_path / "cells.tif"
    io.write_image(image, np.ones((4, 4), np.uint8))
    with pytest.raises(OutputError, match="would replace the input"):
        check_outputs([tmp_path / "cells.tif"], inputs=[image], root=tmp_path, overwrite=True)
    # Through another spelling of the same file too.
    other = tmp_path / "sub" / ".." / "cells.tif"
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputError, match="would replace the input"):
        check_output(other, inputs=[image], overwrite=True)
    assert io.read_image(image).sum() == 16


def test_dangling_link_in_output_folder_is_refused(tmp_path):
    # Issue 18 item 3: a dangling symlink made predict write outside --out.
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "elsewhere.tif"
    (out / "cells.tif").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link"):
        check_outputs([out / "cells.tif"], root=out, overwrite=True)
    with pytest.raises(OutputError, match="symbolic link"):
        io.write_image(out / "cells.tif", np.ones((4, 4), np.uint16))
    assert not outside.exists()
    assert (out / "cells.tif").is_symlink()


def test_linked_subfolder_resolving_outside_the_output_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim").mkdir()
    (out / "probabilities").symlink_to(tmp_path / "victim")
    with pytest.raises(OutputError, match="outside the output folder"):
        check_outputs([out / "probabilities" / "a.tif"], root=out)


def test_existing_output_needs_overwrite(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("{}")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_json(target, {"a": 1.0})
    assert target.read_text() == "{}"
    write_json(target, {"a": 1.0, "nan": float("nan"), "n": np.float32(2)}, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 1.0, "nan": None, "n": 2.0}


def test_two_outputs_with_the_same_name_are_refused(tmp_path):
    with pytest.raises(OutputError, match="same output"):
        check_outputs([tmp_path / "a.tif", tmp_path / "x" / ".." / "a.tif"], root=tmp_path)


def test_unwritable_folder_is_found_before_the_work(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="permission denied; choose a folder") as info:
        check_outputs([tmp_path / "a.tif"], root=tmp_path)
    assert str(tmp_path) in str(info.value)
    assert exit_code(info.value) == 4


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_interrupted_tiff_write_keeps_the_previous_file(tmp_path, monkeypatch, interrupt):
    # Issue 18 item 5: Ctrl-C or a full disk during a write left a truncated file.
    import tifffile

    target = tmp_path / "labels.tif"
    io.write_image(target, np.full((8, 8), 3, np.uint16))
    real = tifffile.imwrite

    def half_write(path, data, **kwargs):
        real(path, data, **kwargs)
        with open(path, "r+b") as fh:
            fh.truncate(10)
        if interrupt is OSError:
            raise OSError(errno.ENOSPC, "No space left on device")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", half_write)
    expected = KeyboardInterrupt if interrupt is KeyboardInterrupt else OutputError
    with pytest.raises(expected) as info:
        io.write_image(target, np.zeros((8, 8), np.uint16))
    if interrupt is OSError:
        assert "disk is full" in str(info.value) and str(target) in str(info.value)
    assert io.read_image(target).tolist() == np.full((8, 8), 3).tolist()
    assert _leftovers(tmp_path) == []


def test_write_respects_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        io.write_image(tmp_path / "a.tif", np.ones((2, 2), np.uint8))
        with atomic_path(tmp_path / "b.zarr", folder=True) as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "a.tif").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.zarr").stat().st_mode & 0o777 == 0o750


def test_folder_output_replaced_only_when_complete(tmp_path):
    store = tmp_path / "labels.zarr"
    store.mkdir()
    (store / "old").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(store, folder=True) as tmp:
        (tmp / "new").write_text("new")
        raise KeyboardInterrupt
    assert sorted(p.name for p in store.iterdir()) == ["old"]
    with atomic_path(store, folder=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in store.iterdir()) == ["new"]
    assert _leftovers(tmp_path) == []


def test_orphaned_temporary_files_are_removed_at_the_next_start(tmp_path):
    old = tmp_path / f".labels.tif.abc{TMP_SUFFIX}"
    old.write_bytes(b"II")
    old_dir = tmp_path / f".labels.zarr.def{TMP_SUFFIX}"
    old_dir.mkdir()
    (old_dir / "0").write_bytes(b"0")
    fresh = tmp_path / f".other.tif.ghi{TMP_SUFFIX}"
    fresh.write_bytes(b"II")
    mine = tmp_path / "notes.napari-unet.tmp"  # not hidden: not ours
    mine.write_text("keep")
    hour_ago = time.time() - 3600
    for path in (old, old_dir):
        os.utime(path, (hour_ago, hour_ago))
    removed = remove_orphans(tmp_path)
    assert sorted(p.name for p in removed) == sorted([old.name, old_dir.name])
    assert fresh.exists() and mine.exists()


def test_output_error_names_file_and_fix():
    err = output_error(OSError(errno.EROFS, "Read-only file system"), "out/a.tif")
    assert (
        str(err)
        == "cannot write out/a.tif: the file system is read-only; choose another output folder"
    )
    assert isinstance(err, OSError) and err.exit_code == 4


@pytest.mark.parametrize(
    "content",
    [b"", b"II*\x00", b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08\x00\x00"],
    ids=["empty", "magic-only", "header-only", "big-endian-header"],
)
def test_header_only_tiff_is_a_clear_input_error(tmp_path, content):
    path = tmp_path / "broken.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"broken\.tif"):
        io.read_image(path)


def test_zero_sized_tiff_is_a_clear_input_error(tmp_path):
    import tifffile

    path = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):
        tifffile.imwrite(path, np.zeros((0, 7), np.uint8))
    with pytest.raises(InputError, match=r"holds no pixels \(shape \(0, 7\)\)"):
        io.read_image(path)
    with pytest.raises(ValueError, match="not an image"):
        io.write_image(tmp_path / "out.tif", np.zeros((0, 7), np.uint8))


def test_unreadable_image_says_permission_denied_not_damaged(tmp_path, monkeypatch):
    import tifffile

    path = tmp_path / "locked.tif"
    io.write_image(path, np.ones((4, 4), np.uint8))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(tifffile, "imread", denied)
    with pytest.raises(InputError, match=r"locked\.tif: permission denied") as info:
        io.read_image(path)
    assert "damaged" not in str(info.value)

"""The command line never replaces inputs, never writes through links, fails before the work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.cli import main
from napari_unet.io import read_image, save_model, write_image
from napari_unet.models import UNet

QUIET = ["--device", "cpu", "--quiet"]


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "m.safetensors"
    save_model(UNet(depth=2, base_channels=4, dropout=0.0), model)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_image(images / f"{name}.tif", rng.integers(0, 255, (40, 40), dtype=np.uint8))
    return model, images


def _contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_predict_overwrite_into_the_input_folder_refuses_and_keeps_the_inputs(setup, capsys):
    # Issue 18 item 2.
    model, images = setup
    before = _contents(images)
    args = ["predict", "--model", str(model), str(images), "--out", str(images), "--overwrite"]
    assert main([*args, *QUIET]) == 4
    assert "would replace the input" in capsys.readouterr().err
    assert _contents(images) == before


def test_predict_never_writes_through_a_link_in_the_output_folder(setup, tmp_path, capsys):
    # Issue 18 item 3: a dangling link made predict write outside --out.
    model, images = setup
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.tif"
    (out / "a.tif").symlink_to(outside)
    for extra in ([], ["--overwrite"]):
        args = ["predict", "--model", str(model), str(images), "--out", str(out), *extra]
        assert main([*args, *QUIET]) == 4
        assert "symbolic link" in capsys.readouterr().err
    assert not outside.exists()
    assert not (out / "b.tif").exists()  # refused before any work


def test_predict_writes_labels_it_can_read_back(setup, tmp_path):
    model, images = setup
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), str(images), "--out", str(out), *QUIET]) == 0
    assert read_image(out / "a.tif").shape == (40, 40)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

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


def test_evaluate_json_needs_overwrite_to_replace_a_report(setup, tmp_path, capsys):
    # Issue 18 item 2: `evaluate --json` overwrote an existing file without --overwrite.
    _, images = setup
    report = tmp_path / "scores.json"
    report.write_text("keep me")
    args = ["evaluate", "--pred", str(images), "--gt", str(images), "--json", str(report)]
    assert main(args) == 4
    assert "--overwrite" in capsys.readouterr().err
    assert report.read_text() == "keep me"
    assert main([*args, "--overwrite"]) == 0
    assert report.read_text().startswith("{")


def test_ctrl_c_while_preparing_claims_no_file(setup, tmp_path, monkeypatch, capsys):
    # Issue 18 item 7: "wrote None and None ... the model trained so far is saved".
    import signal

    from napari_unet.training import run as training_run

    _, images = setup
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("a", "b"):
        cells = np.zeros((40, 40), np.uint16)
        cells[5:15, 5:15], cells[20:30, 22:34] = 1, 2
        write_image(labels / f"{name}.tif", cells)
    real = training_run._prepare_plane

    def prepare_then_ctrl_c(*args, **kwargs):
        plane = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return plane

    monkeypatch.setattr(training_run, "_prepare_plane", prepare_then_ctrl_c)
    out = tmp_path / "m2.safetensors"
    args = ["train", "--images", str(images), "--labels", str(labels), "--out", str(out),
            "--iterations", "2", "--depth", "2", "--base-channels", "4", "--tile", "92",
            "--val-fraction", "0", *QUIET]  # fmt: skip
    assert main(args) == 130
    captured = capsys.readouterr()
    assert "None" not in captured.out + captured.err
    assert "no model file written" in captured.out
    assert "saved" not in captured.err and "no model file was written" in captured.err
    assert not out.exists()


def test_predict_goes_chunked_when_the_image_would_not_fit_in_memory(setup, tmp_path, monkeypatch):
    # Issue 18 item 8: decided from the memory the run needs, not a fixed 1 GiB.
    from napari_unet import memory

    model, images = setup
    args = ["predict", "--model", str(model), str(images / "a.tif"), *QUIET]
    assert main([*args, "--out", str(tmp_path / "roomy")]) == 0
    assert (tmp_path / "roomy" / "a.tif").is_file()
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)  # 1 MiB free
    assert main([*args, "--out", str(tmp_path / "tight")]) == 0
    assert (tmp_path / "tight" / "a.zarr").is_dir()

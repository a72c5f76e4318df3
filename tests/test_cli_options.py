"""Command-line options that map onto core settings: object size and 3D training."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet._sample_data import synthetic_cells
from napari_unet.cli import main
from napari_unet.inference import default_precision
from napari_unet.io import read_metadata
from napari_unet.models import UNet
from napari_unet.pretrained import load_pretrained


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("volumes")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for seed in (1, 2):
        image, labels = synthetic_cells((8, 40, 40), radius=(4, 7), spacing=(2, 1, 1), seed=seed)
        tifffile.imwrite(root / "images" / f"v{seed}.tif", image)
        tifffile.imwrite(root / "labels" / f"v{seed}.tif", labels)
    return root


def test_train_dims_3_writes_an_anisotropic_3d_model(volumes, tmp_path, capsys):
    out = tmp_path / "vol.safetensors"
    argv = [
        "train", "--dims", "3", "--spacing", "2", "1", "1",
        "--images", str(volumes / "images"), "--labels", str(volumes / "labels"),
        "--out", str(out), "--depth", "2", "--base-channels", "4", "--optimizer", "adam",
        "--iterations", "2", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    meta = read_metadata(out)
    assert meta["arguments"]["spatial_dims"] == 3
    assert [float(s) for s in meta["spacing"]] == [2.0, 1.0, 1.0]
    # Z is coarser than XY: the first pooling is in-plane only.
    net = UNet(**meta["arguments"])
    assert tuple(net.pool_kernels[0]) == (1, 2, 2)

    # The 3D model segments a volume as a volume through the same command line.
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(out), str(volumes / "images" / "v1.tif"),
                 "--out", str(pred), "--quiet", "--backend", "eager"]) == 0  # fmt: skip
    labels = tifffile.imread(pred / "v1.tif")
    assert labels.shape == (8, 40, 40)


def test_spacing_without_3d_is_a_usage_error(volumes, tmp_path, capsys):
    argv = [
        "train", "--spacing", "2", "1", "1", "--images", str(volumes / "images"),
        "--labels", str(volumes / "labels"), "--out", str(tmp_path / "m.safetensors"),
        "--iterations", "1", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 2
    assert "spacing" in capsys.readouterr().err


@pytest.fixture(scope="module")
def discs(tmp_path_factory):
    """A plane of separate round cells about 14 px across."""
    root = tmp_path_factory.mktemp("discs")
    yy, xx = np.mgrid[:96, :96]
    image = np.zeros((96, 96), np.uint8)
    for cy in range(16, 96, 32):
        for cx in range(16, 96, 32):
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 49] = 200
    tifffile.imwrite(root / "discs.tif", image)
    return root / "discs.tif"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("14", "object diameter 14.0 px, given"), ("none", None), ("auto", "estimated")],
)
def test_predict_diameter_is_used_and_reported(discs, tmp_path, capsys, value, expected):
    out = tmp_path / "out"
    argv = ["predict", "--model", "nuclei", str(discs), "--out", str(out), "--quiet",
            "--diameter", value, "--backend", "eager"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    if expected is None:
        assert "object diameter" not in printed
    else:
        assert expected in printed
    # Which engine and precision ran: the bundled model's bf16 check decides on this CPU.
    precision = default_precision(load_pretrained("nuclei")[1], "cpu")
    assert f"[eager {precision}]" in printed
    assert tifffile.imread(out / "discs.tif").shape == (96, 96)


@pytest.mark.parametrize("value", ["-3", "big", "0"])
def test_predict_diameter_must_be_positive_auto_or_none(discs, tmp_path, capsys, value):
    argv = ["predict", "--model", "nuclei", str(discs), "--out", str(tmp_path),
            "--diameter", value]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "--diameter" in capsys.readouterr().err

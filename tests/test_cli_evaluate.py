"""Tests for `napari-unet evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet import metrics
from napari_unet.cli import main
from napari_unet.io import read_image, write_image


def _labels(shift=0):
    labels = np.zeros((32, 32), np.uint16)
    labels[4:14, 4:14] = 1
    labels[4:14, 14:24] = 2  # touches object 1
    labels[20:30, 8 + shift : 20 + shift] = 3
    return labels


def test_isbi_slice_against_itself(isbi2012, tmp_path, capsys):
    gt = isbi2012 / "labels" / "slice_00.png"
    out = tmp_path / "result.json"
    code = main(
        ["evaluate", "--pred", str(gt), "--gt", str(gt), "--binary-labels", "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    (image,) = report["images"]
    assert image["name"] == "slice_00" and image["shape"] == [512, 512]
    assert image["rand_error"] == 0.0 and image["pixel_error"] == 0.0
    assert image["ap50"] == 1.0 and image["mean_ap"] == 1.0 and image["seg"] == 1.0
    assert image["n_gt"] == image["n_pred"] > 50  # cell profiles, not one "255" object
    assert report["mean"]["rand_error"] == 0.0
    printed = capsys.readouterr().out
    assert "slice_00" in printed and "mean" in printed and "rand_error" in printed


def test_isbi_folders_paired_by_stem_against_a_worse_prediction(isbi2012, tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    expected = {}
    for name in ("slice_00", "slice_01"):
        gt = read_image(isbi2012 / "labels" / f"{name}.png")
        write_image(gt_dir / f"{name}.png", gt)
        worse = np.where(ndi.binary_dilation(gt > 0, iterations=2), 255, 0).astype(np.uint8)
        write_image(pred_dir / f"{name}.tif", worse)  # other suffix: paired by stem
        true_labels = metrics.mask_to_instances(gt)
        expected[name] = metrics.rand_error(true_labels, metrics.mask_to_instances(worse))
    out = tmp_path / "r.json"
    args = ["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--binary-labels"]
    assert main([*args, "--metrics", "rand_error,warping_error", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["metrics"] == ["rand_error", "warping_error"]
    for image in report["images"]:
        assert image["rand_error"] == pytest.approx(expected[image["name"]])
        assert image["rand_error"] > 0.1 and image["warping_error"] > 0  # membranes closed
    assert report["mean"]["rand_error"] == pytest.approx(np.mean(list(expected.values())))


def test_instance_labels_and_metric_selection(tmp_path, capsys):
    write_image(tmp_path / "gt.tif", _labels())
    write_image(tmp_path / "pred.png", _labels(shift=3))
    out = tmp_path / "r.json"
    args = ["evaluate", "--pred", str(tmp_path / "pred.png"), "--gt", str(tmp_path / "gt.tif")]
    assert main([*args, "--metrics", "ap50", "seg", "dice", "--json", str(out)]) == 0
    (image,) = json.loads(out.read_text())["images"]
    truth, pred = _labels(), _labels(shift=3)
    assert image["ap50"] == metrics.average_precision(truth, pred)["ap"][0]
    assert image["seg"] == pytest.approx(metrics.seg_score(truth, pred))
    assert image["dice"] == pytest.approx(metrics.dice_score(truth, pred))
    assert set(image) >= {"ap50", "seg", "dice"} and "rand_error" not in image
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["image", "n_gt", "n_pred", "ap50", "seg", "dice"]


def test_missing_files_are_named(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    write_image(tmp_path / "gt" / "a.png", _labels().astype(np.uint8))
    write_image(tmp_path / "gt" / "b.png", _labels().astype(np.uint8))
    write_image(tmp_path / "pred" / "a.tif", _labels())
    write_image(tmp_path / "pred" / "c.tif", _labels())
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")])
    assert code == 3  # an input error
    err = capsys.readouterr().err
    assert "no prediction for b.png" in err and "no ground truth for c.tif" in err


def test_file_against_folder_uses_its_namesake(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    write_image(tmp_path / "gt" / "a.png", _labels().astype(np.uint8))
    write_image(tmp_path / "gt" / "b.png", np.zeros((32, 32), np.uint8))
    write_image(tmp_path / "a.tif", _labels())
    args = ["evaluate", "--pred", str(tmp_path / "a.tif"), "--gt", str(tmp_path / "gt")]
    assert main([*args, "--metrics", "seg"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split() == ["a", "3", "3", "1.000000"] and len(rows) == 3
    write_image(tmp_path / "c.tif", _labels())
    args = ["evaluate", "--pred", str(tmp_path / "c.tif"), "--gt", str(tmp_path / "gt")]
    assert main(args) == 3
    assert "no ground truth for c.tif" in capsys.readouterr().err


def test_shape_mismatch_is_an_error(tmp_path, capsys):
    write_image(tmp_path / "gt.tif", _labels())
    write_image(tmp_path / "pred.tif", _labels()[:30])
    args = ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--gt", str(tmp_path / "gt.tif")]
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "pred.tif has shape (30, 32)" in err and "gt.tif has shape (32, 32)" in err


@pytest.mark.parametrize(
    ("setup", "extra", "message", "code"),
    [
        ("ok", ["--metrics", "rand_error,accuracy"], "unknown metric(s) accuracy", 2),
        ("float", [], "not a label image", 3),
        ("ok", ["--json", "/nonexistent-folder/x.json"], "does not exist", 4),
        ("nogt", [], "no such file or folder", 3),
    ],
)
def test_user_errors_give_one_line_and_their_exit_code(
    tmp_path, capsys, setup, extra, message, code
):
    write_image(tmp_path / "gt.tif", _labels())
    pred = _labels().astype(np.float32) + (0.5 if setup == "float" else 0.0)
    write_image(tmp_path / "pred.tif", pred)
    gt = tmp_path / ("missing.tif" if setup == "nogt" else "gt.tif")
    args = ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--gt", str(gt), *extra]
    assert main(args) == code
    assert message in capsys.readouterr().err


def test_undefined_scores_are_null_in_json(tmp_path):
    write_image(tmp_path / "gt.tif", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "pred.tif", np.zeros((8, 8), np.uint8))
    out = tmp_path / "r.json"
    args = ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--gt", str(tmp_path / "gt.tif")]
    assert main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())  # strict JSON: no NaN
    assert report["images"][0]["seg"] is None and report["mean"]["seg"] is None
    assert report["images"][0]["mean_ap"] == 1.0

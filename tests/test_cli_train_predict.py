"""`napari-unet train | predict | info` end to end on ISBI 2012 slices (tiny model)."""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest
import tifffile

from napari_unet import training
from napari_unet._modelfile import load_model
from napari_unet.cli import main
from napari_unet.io import read_image

TINY = ["--depth", "2", "--base-channels", "4", "--tile", "92", "--seed", "1"]


@pytest.fixture(scope="module")
def isbi_dirs(tmp_path_factory, request):
    """A copy of ISBI slices: train 00-02, validate 20, predict 21-22."""
    source = request.getfixturevalue("isbi2012")
    root = tmp_path_factory.mktemp("isbi")
    for name, indices in (("train", (0, 1, 2)), ("val", (20,)), ("test", (21, 22))):
        for kind in ("images", "labels"):
            folder = root / name / kind
            folder.mkdir(parents=True)
            for i in indices:
                shutil.copy(source / kind / f"slice_{i:02d}.png", folder)
    return root


def _train_args(root, out, *extra):
    return [
        "train",
        "--images", str(root / "train" / "images"),
        "--labels", str(root / "train" / "labels"),
        "--val-images", str(root / "val" / "images"),
        "--val-labels", str(root / "val" / "labels"),
        "--binary-labels",
        "--out", str(out),
        "--iterations", "4",
        "--val-every", "2",
        "--optimizer", "adam",
        "--device", "cpu",
        "--quiet",
        *TINY,
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_train_predict_info_evaluate_end_to_end(isbi_dirs, tmp_path, capsys):
    model_path = tmp_path / "isbi.safetensors"
    assert main(_train_args(isbi_dirs, model_path, "--classes", "2")) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "4 iterations" in printed
    _, meta = load_model(model_path)
    assert meta["arguments"]["depth"] == 2 and meta["num_classes"] == 2
    assert meta["training"]["data"]["files"] == ["slice_00", "slice_01", "slice_02"]
    assert meta["training"]["best"] is not None
    assert (tmp_path / "isbi.last.safetensors").is_file()

    # Predict two slices, with probabilities.
    out = tmp_path / "pred"
    test_images = isbi_dirs / "test" / "images"
    code = main(
        ["predict", "--model", str(model_path), str(test_images), "--out", str(out),
         "--probabilities", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    labels = read_image(out / "slice_21.tif")
    probs = read_image(out / "probabilities" / "slice_21.tif")
    assert labels.shape == (512, 512) and np.issubdtype(labels.dtype, np.integer)
    assert probs.shape == (2, 512, 512) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert (out / "slice_22.tif").is_file()

    # Never overwrite without --overwrite; nothing is touched then.
    before = (out / "slice_21.tif").stat().st_mtime_ns
    args = ["predict", "--model", str(model_path), str(test_images), "--out", str(out)]
    assert main([*args, "--quiet"]) == 4  # an output error
    assert "exists" in capsys.readouterr().err
    assert (out / "slice_21.tif").stat().st_mtime_ns == before
    assert main([*args, "--quiet", "--overwrite"]) == 0

    # info: human-readable and JSON.
    capsys.readouterr()
    assert main(["info", str(model_path)]) == 0
    text = capsys.readouterr().out
    assert "unet" in text and "background, cell" in text and "4 of 4 iterations" in text
    assert main(["info", str(model_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training"]["iteration"] == 4

    # evaluate pairs the predicted label images with the ground truth by name.
    capsys.readouterr()
    code = main(
        ["evaluate", "--pred", str(out), "--gt", str(isbi_dirs / "test" / "labels"),
         "--binary-labels", "--metrics", "rand_error", "pixel_error"]
    )  # fmt: skip
    assert code == 0
    report = capsys.readouterr().out
    assert "slice_21" in report and "slice_22" in report and "mean" in report


def test_predict_stack_and_existing_model_refused(isbi_dirs, tmp_path, capsys):
    model_path = tmp_path / "m.safetensors"
    assert main(_train_args(isbi_dirs, model_path, "--iterations", "1")) == 0
    # The same --out again is refused without --overwrite.
    assert main(_train_args(isbi_dirs, model_path, "--iterations", "1")) == 4
    assert "--overwrite" in capsys.readouterr().err

    stack = np.stack([read_image(isbi_dirs / "test" / "images" / "slice_21.png")[:100, :120]] * 3)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    out = tmp_path / "pred"
    code = main(
        ["predict", "--model", str(model_path), str(tmp_path / "stack.tif"), "--out", str(out),
         "--probabilities", "--device", "cpu", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert read_image(out / "stack.tif").shape == (3, 100, 120)
    assert read_image(out / "probabilities" / "stack.tif").shape == (3, 3, 100, 120)


def test_ctrl_c_keeps_a_loadable_model(isbi_dirs, tmp_path, monkeypatch, capsys):
    """The first Ctrl-C stops after the current iteration; the model is saved."""
    real_train = training.train

    def train_with_ctrl_c(*args, progress=None, **kwargs):
        def interrupting(event):
            progress(event)
            if event.stage == "train" and event.done == 2:
                signal.raise_signal(signal.SIGINT)

        return real_train(*args, progress=interrupting, **kwargs)

    monkeypatch.setattr(training, "train", train_with_ctrl_c)
    model_path = tmp_path / "m.safetensors"
    code = main(_train_args(isbi_dirs, model_path, "--iterations", "50", "--val-every", "100"))
    assert code == 130
    assert "interrupted after 2 iterations" in capsys.readouterr().err
    for path in (model_path, tmp_path / "m.last.safetensors"):
        _, meta = load_model(path)
        assert meta["training"]["iteration"] == 2 and meta["training"]["cancelled"]
    # Resuming the interrupted run continues from iteration 2.
    resumed = tmp_path / "resumed.safetensors"
    monkeypatch.setattr(training, "train", real_train)
    args = _train_args(isbi_dirs, resumed, "--iterations", "3", "--val-every", "100")
    assert main([*args, "--resume", str(tmp_path / "m.last.safetensors")]) == 0
    assert "resuming" in capsys.readouterr().out
    assert load_model(resumed)[1]["training"]["iteration"] == 3


@pytest.mark.parametrize(
    ("argv", "message", "code"),
    [
        (["train", "--images", "{missing}", "--labels", "{missing}", "--out", "{out}"],
         "no such", 3),
        (["train", "--images", "{images}", "--labels", "{empty}", "--out", "{out}"],
         "no image", 3),
        (
            ["train", "--images", "{images}", "--labels", "{labels}", "--out", "{out}",
             "--val-images", "{images}"],
            "go together", 2,
        ),
        (
            ["train", "--images", "{images}", "--labels", "{labels}", "--out", "{out}",
             "--binary-labels", "--tile", "93", "--depth", "2", "--base-channels", "2",
             "--iterations", "1", "--device", "cpu", "--quiet"],
            "nearest valid", 2,
        ),
        (
            ["train", "--images", "{images}", "--labels", "{labels}", "--out", "{out}",
             "--lr", "-1"],
            "lr", 2,
        ),
        (
            ["train", "--images", "{images}", "--labels", "{labels}", "--out", "{out}",
             "--model", "transformer", "--quiet"],
            "unknown architecture", 2,
        ),
        (["predict", "--model", "{bad_model}", "{images}", "--out", "{out_dir}"], "not a", 3),
        (["predict", "--model", "{missing}", "{images}", "--out", "{out_dir}"],
         "bundled model", 3),
        (["info", "{bad_model}"], "not a napari-unet model file", 3),
    ],
)  # fmt: skip
def test_bad_input_gives_one_line_and_its_exit_code(tmp_path, capsys, argv, message, code):
    images = tmp_path / "images"
    labels = tmp_path / "labels"
    empty = tmp_path / "empty"
    for folder in (images, labels, empty):
        folder.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(images / "a.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    tifffile.imwrite(labels / "a.tif", (rng.random((64, 64)) > 0.5).astype(np.uint8) * 255)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage" * 10)
    names = {
        "missing": str(tmp_path / "missing"),
        "images": str(images),
        "labels": str(labels),
        "empty": str(empty),
        "out": str(tmp_path / "m.safetensors"),
        "out_dir": str(tmp_path / "pred"),
        "bad_model": str(tmp_path / "bad.safetensors"),
    }
    assert main([arg.format(**names) for arg in argv]) == code
    err = capsys.readouterr().err
    assert message in err and err.startswith("napari-unet ")
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("command", ["train", "predict", "info"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: napari-unet " + command in capsys.readouterr().out


@pytest.mark.slow
def test_unetplusplus_trains_with_deep_supervision_and_predicts_pruned(
    isbi_dirs, tmp_path, capsys, monkeypatch
):
    """U-Net++ from the command line: every head is trained, and --level prunes."""
    from napari_unet.models import UNetPlusPlus

    seen = []
    original = UNetPlusPlus.forward_heads

    def spy(self, x):
        heads = original(self, x)
        if self.training:
            seen.append(len(heads))
        return heads

    monkeypatch.setattr(UNetPlusPlus, "forward_heads", spy)
    model_path = tmp_path / "plus.safetensors"
    args = _train_args(isbi_dirs, model_path, "--model", "unetplusplus", "--tile", "96")
    assert main(args) == 0
    assert seen == [2, 2, 2, 2]  # one training forward per iteration, both heads of depth 2
    model, meta = load_model(model_path)
    assert meta["architecture"] == "unetplusplus"
    assert meta["training"]["config"]["loss"] == "auto"
    assert not model.return_heads  # a trained model predicts one map again

    test_images = isbi_dirs / "test" / "images"
    common = ["--device", "cpu", "--quiet", "--probabilities"]
    for name, extra in (("ensemble", []), ("pruned", ["--level", "1"])):
        code = main(
            ["predict", "--model", str(model_path), str(test_images), "--out",
             str(tmp_path / name), *extra, *common]
        )  # fmt: skip
        assert code == 0
    ensemble = read_image(tmp_path / "ensemble" / "probabilities" / "slice_21.tif")
    pruned = read_image(tmp_path / "pruned" / "probabilities" / "slice_21.tif")
    assert ensemble.shape == pruned.shape == (3, 512, 512)
    assert not np.allclose(ensemble, pruned)  # head 1 alone is not the ensemble
    assert main(["predict", "--model", str(model_path), str(test_images), "--out",
                 str(tmp_path / "bad"), "--level", "5", *common]) == 2  # fmt: skip
    assert "--level" in capsys.readouterr().err

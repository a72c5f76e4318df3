"""Training messages never lie: bad pixels named, no claimed files, nothing-to-learn labels."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch

from napari_unet import outputs, training
from napari_unet.errors import DataWarning, InputError, OutputError
from napari_unet.models import UNet
from napari_unet.training import TrainConfig, checkpoint_paths, train, train_iter


def _cells(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    for i in range(1, 4):
        cy, cx = rng.integers(8, size - 8, 2)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 25) & (labels == 0)] = i
    image = (labels > 0) * 150.0 + rng.normal(40, 10, labels.shape)
    return image.astype(np.float32), labels


def _model() -> UNet:
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, num_classes=3)


def _config(**kwargs) -> TrainConfig:
    return TrainConfig(
        **{"iterations": 2, "tile_shape": (60, 60), "device": "cpu", "elastic": False, **kwargs}
    )


def test_nan_pixel_is_named_before_training(tmp_path):
    # Issue 18 item 7: a NaN pixel ended in "lower the learning rate".
    image, labels = _cells(0)
    image[5, 7] = np.nan
    out = tmp_path / "m.safetensors"
    with pytest.raises(InputError, match=r"b\.tif\).*1 NaN or infinite pixel.*\(5, 7\)"):
        train(
            [_cells(1), (image, labels)],
            model=_model(),
            config=_config(),
            out=out,
            data_info={"files": ["a.tif", "b.tif"]},
        )
    assert not any(p.exists() for p in checkpoint_paths(out))


def test_diverging_loss_does_not_claim_a_file_that_was_never_written(tmp_path, monkeypatch):
    def nan_loss(logits, targets, weights):
        return logits.sum() * float("nan")

    monkeypatch.setitem(training._LOSSES, "ce", nan_loss)
    out = tmp_path / "m.safetensors"
    with pytest.raises(FloatingPointError) as info:
        train([_cells(0)], model=_model(), config=_config(), out=out)
    message = str(info.value)
    assert "No model file was written" in message
    assert "kept in" not in message
    assert not any(p.exists() for p in checkpoint_paths(out))


def test_cancel_while_preparing_writes_nothing_and_says_so(tmp_path):
    # Ctrl-C during weight maps printed "wrote None and None ... saved".
    out = tmp_path / "m.safetensors"
    result = train(
        [_cells(0), _cells(1)], model=_model(), config=_config(), out=out, cancel=lambda: True
    )
    assert result.cancelled
    assert result.written == []
    assert not any(p.exists() for p in checkpoint_paths(out))


def test_finished_run_lists_both_files(tmp_path):
    out = tmp_path / "m.safetensors"
    result = train([_cells(0)], model=_model(), config=_config(), out=out)
    assert result.written == list(checkpoint_paths(out))
    assert all(p.exists() for p in result.written)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (np.zeros_like, "no cells"),
        (np.ones_like, "no background"),
    ],
    ids=["all-background", "one-label-everywhere"],
)
def test_labels_with_nothing_to_learn_are_refused(make, message):
    image, labels = _cells(0)
    with pytest.raises(InputError, match=f"{message}.*nothing to learn"):
        train([(image, make(labels)), (image, make(labels))], model=_model(), config=_config())


def test_some_planes_without_cells_warn_and_train():
    image, labels = _cells(0)
    with pytest.warns(DataWarning, match=r"1 of 2 planes .* no cells .* plane\(s\) 1\b"):
        result = train(
            [(image, labels), (image, np.zeros_like(labels))], model=_model(), config=_config()
        )
    assert result.iterations == 2


def test_unwritable_out_is_found_before_any_work(tmp_path, monkeypatch):
    # Issue 18 item 9: `train` found an unwritable --out only after training.
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    events = train_iter(
        [_cells(0)], model=_model(), config=_config(), out=tmp_path / "m.safetensors"
    )
    with pytest.raises(OutputError, match="read-only"):
        next(events)  # the very first step: no weight map, no iteration

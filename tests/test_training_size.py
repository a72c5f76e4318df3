"""Training records the object size and chooses its post-processing on validation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.io import load_model
from napari_unet.models import UNet
from napari_unet.scale import object_diameter
from napari_unet.training import TrainConfig, train


def _discs(radius: int, size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    k = 0
    for cy in range(radius + 2, size - radius - 1, 2 * radius + 4):
        for cx in range(radius + 2, size - radius - 1, 2 * radius + 4):
            k += 1
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    image = (labels > 0) * 1.0 + 0.1 * rng.random((size, size))
    return image.astype(np.float32), labels


def _tiny() -> UNet:
    return UNet(1, 3, depth=2, base_channels=4, padding="same")


def test_size_normalised_training_records_diameter_and_postprocessing(tmp_path):
    samples = [_discs(5), _discs(10, seed=1)]
    config = TrainConfig(
        iterations=3,
        tile_shape=(64, 64),
        batch_size=2,
        optimizer="adam",
        intensity=True,
        object_diameter=14.0,
        zoom_range=(0.8, 1.25),
        val_every=3,
        device="cpu",
    )
    out = tmp_path / "m.safetensors"
    result = train(samples, model=_tiny(), config=config, val_samples=[_discs(7, seed=2)], out=out)
    for path in (result.best_path, result.last_path):
        _, meta = load_model(path)
        assert meta["object_diameter"] == 14.0
        assert meta["object_diameter_range"] == [11.2, 17.5]
        chosen = meta["postprocessing"]
        assert chosen["metric"] == "dsb" and chosen["images"] == 1
        assert chosen["method"] in ("watershed", "components") and 0 < chosen["threshold"] < 1
    assert meta["training"]["config"]["zoom_range"] == [0.8, 1.25]


def test_training_without_normalisation_records_the_labels_median(tmp_path):
    samples = [_discs(5), _discs(10, seed=1)]
    expected = float(np.median([object_diameter(s[1]) for s in samples]))
    config = TrainConfig(
        iterations=1,
        tile_shape=(64, 64),
        device="cpu",
        choose_postprocessing=False,
        elastic=False,
    )
    result = train(samples, model=_tiny(), config=config, out=tmp_path / "m.safetensors")
    _, meta = load_model(result.last_path)
    assert meta["object_diameter"] == pytest.approx(expected, abs=0.01)
    low, high = meta["object_diameter_range"]
    assert low < expected < high
    assert meta["postprocessing"] is None


def test_config_checks_size_settings():
    with pytest.raises(ValueError, match="object_diameter"):
        TrainConfig(object_diameter=0)
    with pytest.raises(ValueError, match="zoom_range"):
        TrainConfig(zoom_range=(1.5, 1.0))
    with pytest.raises(ValueError, match="postprocessing_metric"):
        TrainConfig(postprocessing_metric="iou")

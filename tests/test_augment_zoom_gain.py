"""Random zoom and gain field: sizes change with the zoom, labels stay ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.augment_zoom_gain import RandomGainField, RandomZoom


def _disc(radius: float = 8.0, size: int = 64):
    yy, xx = np.mgrid[:size, :size]
    labels = ((yy - 31.5) ** 2 + (xx - 31.5) ** 2 <= radius**2).astype(np.uint8) * 3
    return labels


@pytest.mark.parametrize("zoom", [0.8, 1.25])
def test_random_zoom_scales_objects_and_keeps_ids(zoom):
    labels = _disc()
    image = labels[np.newaxis].astype(np.float32)
    weights = np.ones(labels.shape, np.float32)
    out = RandomZoom((zoom, zoom))(image, labels, weights, rng=0)
    assert out.image.shape == image.shape and out.labels.dtype == labels.dtype
    assert set(np.unique(out.labels)) <= {0, 3}
    area = (out.labels == 3).sum()
    assert area / (labels == 3).sum() == pytest.approx(zoom**2, rel=0.1)
    # The disc stays centred.
    ys, xs = np.nonzero(out.labels)
    assert abs(ys.mean() - 31.5) < 0.5 and abs(xs.mean() - 31.5) < 0.5
    # Zooming out reaches past the tile: those pixels carry no loss.
    if zoom < 1:
        assert out.weights[0, 0] == 0 and out.weights[32, 32] == 1
    else:
        assert (out.weights == 1).all()


def test_gain_field_is_smooth_and_in_range():
    image = torch.ones(1, 48, 48)
    out = RandomGainField((0.3, 1.0), p=1.0)(image, rng=1)
    assert out.image.shape == image.shape
    assert 0.2 < float(out.image.min()) and float(out.image.max()) < 1.1
    assert float(out.image.max() - out.image.min()) > 0.05  # not constant
    assert float(out.image.diff(dim=2).abs().max()) < 0.1  # smooth
    with pytest.raises(ValueError, match="gain_range"):
        RandomGainField((0.0, 1.0))

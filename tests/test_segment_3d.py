"""The segmentation pipeline on volumes: linked Z planes (2D models) and 3D models."""

from __future__ import annotations

import numpy as np
import torch

from napari_unet._sample_data import synthetic_cells
from napari_unet.linking import link_planes
from napari_unet.models import UNet
from napari_unet.postprocess import probabilities_to_labels
from napari_unet.segment import SegmentConfig, segment


def _stack() -> np.ndarray:
    return synthetic_cells((6, 40, 40), radius=(6.0, 9.0), spacing=(2.0, 1.0, 1.0), seed=4)[0]


def test_link_planes_joins_a_2d_models_planes():
    torch.manual_seed(0)
    net = UNet(num_classes=3, depth=1, base_channels=4, padding="same").eval()
    stack = _stack()
    apart = segment(net, stack, config=SegmentConfig(device="cpu")).labels
    linked = segment(net, stack, config=SegmentConfig(device="cpu", link_planes=True)).labels
    assert linked.shape == stack.shape and linked.dtype == np.uint32
    np.testing.assert_array_equal(linked, link_planes(apart))
    assert (linked > 0).sum() == (apart > 0).sum()


def test_a_3d_model_segments_the_volume_in_3d():
    torch.manual_seed(1)
    net = UNet(num_classes=3, depth=1, base_channels=4, spatial_dims=3, spacing=(2, 1, 1)).eval()
    stack = _stack()
    result = segment(net, stack, config=SegmentConfig(device="cpu", threshold=0.5))
    assert result.probabilities.shape == (3, *stack.shape)
    expected = probabilities_to_labels(result.probabilities, threshold=0.5, spatial_dims=3)
    np.testing.assert_array_equal(result.labels, expected)


def test_memory_estimate_tiles_a_volume_for_a_3d_model():
    from napari_unet.memory import estimate_prediction_memory

    net = UNet(num_classes=3, depth=1, base_channels=4, spatial_dims=3, spacing=(2, 1, 1))
    small = estimate_prediction_memory((8, 64, 64), net, labels=False)
    large = estimate_prediction_memory((32, 64, 64), net, labels=False)
    assert 0 < small < large

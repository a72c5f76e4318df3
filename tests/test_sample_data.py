"""Synthetic sample data (napari_unet._sample_data), without a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._sample_data import make_cells_2d, make_cells_3d, synthetic_cells
from napari_unet.weights import separation_borders


def test_synthetic_cells_2d_touching_and_seeded():
    image, labels = synthetic_cells((128, 128), seed=3)
    assert image.shape == labels.shape == (128, 128)
    assert image.dtype == np.uint16 and labels.dtype == np.int32
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(ids.max() + 1))  # 0..N, consecutive
    assert ids.max() >= 20
    # Some cells touch: that is what the border weights are for.
    assert separation_borders(labels, include_cells=True).any()
    # Cells are brighter than the background.
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()
    again, labels_again = synthetic_cells((128, 128), seed=3)
    np.testing.assert_array_equal(again, image)
    np.testing.assert_array_equal(labels_again, labels)
    assert not np.array_equal(synthetic_cells((128, 128), seed=4)[1], labels)


def test_synthetic_cells_3d_with_spacing():
    image, labels = synthetic_cells((6, 64, 64), spacing=(2, 1, 1), seed=0)
    assert image.shape == labels.shape == (6, 64, 64)
    # Cells span several planes.
    spans = [np.unique(np.nonzero(labels == i)[0]).size for i in range(1, labels.max() + 1)]
    assert max(spans) >= 3


@pytest.mark.parametrize(
    "kwargs",
    [{"shape": (4,)}, {"shape": (2, 2, 2, 2)}, {"radius": (5, 2)}, {"spacing": (1, 0)}],
)
def test_synthetic_cells_validates(kwargs):
    with pytest.raises(ValueError):
        synthetic_cells(**{"shape": (32, 32), **kwargs})


def test_sample_contributions_are_layer_tuples():
    for make, ndim in ((make_cells_2d, 2), (make_cells_3d, 3)):
        layers = make()
        assert [kind for _, _, kind in layers] == ["image", "labels"]
        (image, image_kwargs, _), (labels, labels_kwargs, _) = layers
        assert image.ndim == ndim and image.shape == labels.shape
        assert image_kwargs["name"] and labels_kwargs["name"] != image_kwargs["name"]
        assert image_kwargs.get("scale") == labels_kwargs.get("scale")
        assert labels.max() > 10

"""3D seeded watershed: touching cells of an anisotropic volume become one id each."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet._sample_data import synthetic_cells
from napari_unet.metrics import average_precision
from napari_unet.postprocess import probabilities_to_labels


def test_3d_watershed_separates_touching_cells_of_a_volume():
    labels = synthetic_cells((12, 80, 80), spacing=(2.0, 1.0, 1.0), seed=6)[1]
    rng = np.random.default_rng(0)
    # 3-class maps a decent 3D model would give: borders between touching cells, blur, noise.
    hi = ndi.maximum_filter(labels, size=3)
    lo = ndi.minimum_filter(np.where(labels > 0, labels, labels.max() + 1), size=3)
    border = (labels > 0) & (hi != lo) & (hi > 0) & (lo <= labels.max())
    cell = (labels > 0) & ~border
    maps = [ndi.gaussian_filter(m.astype(float), (0.5, 1.0, 1.0)) for m in (cell, border)]
    cell_p, border_p = (np.clip(m + 0.1 * rng.standard_normal(m.shape), 0, 1) for m in maps)
    total = np.maximum(cell_p + border_p, 1.0)
    probs = np.stack([1 - (cell_p + border_p) / total, cell_p / total, border_p / total])
    volume = probabilities_to_labels(probs.astype(np.float32), spatial_dims=3)
    planes = probabilities_to_labels(probs.astype(np.float32), spatial_dims=2)
    n_true = int(labels.max())
    assert abs(int(volume.max()) - n_true) <= 0.1 * n_true
    assert average_precision(labels, volume.astype(np.int64), thresholds=[0.5])["ap"][0] >= 0.8
    assert planes.max() > 4 * n_true  # planes alone: one id per cell per plane
    # The cells touch (pairs of ids meeting face to face), and stay apart.
    pairs = {
        (int(a), int(b))
        for axis in range(3)
        for a, b in zip(
            np.moveaxis(labels, axis, 0)[:-1].ravel(),
            np.moveaxis(labels, axis, 0)[1:].ravel(),
            strict=True,
        )
        if a and b and a != b
    }
    assert len(pairs) >= 5

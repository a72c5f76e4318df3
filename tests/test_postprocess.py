"""Tests for napari_unet.postprocess.probabilities_to_labels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.metrics import average_precision, interior_mask
from napari_unet.postprocess import probabilities_to_labels

# ---------------------------------------------------------------------------
# synthetic touching cells
# ---------------------------------------------------------------------------


def touching_cells(rng, shape=(96, 96), spacing=20, radius=13) -> np.ndarray:
    """Voronoi cells of jittered grid points, cut to disks: many touch.

    Neighbouring points are ~20 px apart and the disks have radius 13, so
    most cells share a straight contact line with their neighbours; some
    grid points are dropped, leaving cells that touch only background.
    """
    gy, gx = np.mgrid[spacing // 2 : shape[0] - 1 : spacing, spacing // 2 : shape[1] - 1 : spacing]
    points = np.stack([gy.ravel(), gx.ravel()], 1) + rng.integers(-4, 5, size=(gy.size, 2))
    points = points[rng.random(len(points)) < 0.85]
    not_seed = np.ones(shape, bool)
    not_seed[points[:, 0], points[:, 1]] = False
    distance, (iy, ix) = ndi.distance_transform_edt(not_seed, return_indices=True)
    owner = np.zeros(shape, np.int32)
    owner[points[:, 0], points[:, 1]] = np.arange(1, len(points) + 1)
    labels = owner[iy, ix]
    labels[distance > radius] = 0
    return labels


def class_targets(labels: np.ndarray) -> np.ndarray:
    """0 = background, 1 = cell, 2 = border: cell pixels next to another cell."""
    big = labels.max() + 1
    high = ndi.maximum_filter(labels, size=3)
    low = ndi.minimum_filter(np.where(labels == 0, big, labels), size=3)
    other = ((high != labels) & (high > 0)) | ((low != labels) & (low < big))
    classes = (labels > 0).astype(np.int32)
    classes[(labels > 0) & other] = 2
    return classes


def smooth_probabilities(rng, classes: np.ndarray, num_classes=3, sigma=1.0, noise=0.08):
    onehot = np.stack([classes == c for c in range(num_classes)]).astype(np.float64)
    probs = np.stack([ndi.gaussian_filter(c, sigma) for c in onehot])
    probs = np.clip(probs + rng.normal(0, noise, probs.shape), 0, None)
    return (probs / probs.sum(axis=0, keepdims=True)).astype(np.float32)


def test_touching_cells_are_separated():
    rng = np.random.default_rng(0)
    ap50, mean_ap, mean_ap_components, ap50_merged, contacts = [], [], [], [], 0
    for _ in range(6):
        truth = touching_cells(rng)
        contacts += np.count_nonzero((truth > 0) & ~interior_mask(truth))
        probs = smooth_probabilities(rng, class_targets(truth))
        foreground = np.stack([probs[0], probs[1] + probs[2]])
        merged = probabilities_to_labels(foreground, method="components")
        ap50_merged.append(average_precision(truth, merged)["ap"][0])
        labels = probabilities_to_labels(probs)
        scores = average_precision(truth, labels)
        ap50.append(scores["ap"][0])
        mean_ap.append(scores["mean_ap"])
        components = probabilities_to_labels(probs, method="components")
        mean_ap_components.append(average_precision(truth, components)["mean_ap"])
    # the set really has touching cells: without the border class they merge
    assert contacts > 1000 and np.mean(ap50_merged) < 0.5
    assert np.mean(ap50) >= 0.9
    # giving the border pixels back to the cells makes the shapes right too
    assert np.mean(mean_ap) > np.mean(mean_ap_components) + 0.1


def test_two_classes_split_touching_disks_by_distance():
    yy, xx = np.mgrid[0:40, 0:60]
    truth = np.zeros((40, 60), np.int32)
    truth[(yy - 20) ** 2 + (xx - 20) ** 2 < 144] = 1
    truth[((yy - 20) ** 2 + (xx - 40) ** 2 < 144) & (truth == 0)] = 2
    foreground = (truth > 0).astype(np.float32)
    probs = np.stack([1 - foreground, foreground])
    merged = probabilities_to_labels(probs, method="components")
    assert merged.max() == 1
    split = probabilities_to_labels(probs)
    assert split.max() == 2
    assert average_precision(truth, split)["ap"][0] == 1.0


# ---------------------------------------------------------------------------
# output contract
# ---------------------------------------------------------------------------


def _two_blobs(num_classes=3, shape=(32, 32)):
    classes = np.zeros(shape, np.int32)
    classes[4:12, 4:12] = 1
    classes[18:28, 16:30] = 1
    onehot = np.stack([classes == c for c in range(num_classes)]).astype(np.float32)
    return onehot


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_output_dtype_shape_and_sequential_ids(dtype, num_classes):
    probs = _two_blobs(num_classes).astype(dtype)
    before = probs.copy()
    labels = probabilities_to_labels(probs)
    assert labels.dtype == np.uint32 and labels.shape == probs.shape[1:]
    assert np.unique(labels).tolist() == [0, 1, 2]
    assert np.array_equal(probs, before)  # input untouched


def test_min_size_and_fill_holes():
    probs = _two_blobs(2)
    probs[1, 30, 30] = 1.0  # a 1-pixel speck
    probs[1, 7, 7] = 0.0  # a hole in the first blob
    probs[0] = 1 - probs[1]
    labels = probabilities_to_labels(probs, min_size=4)
    assert labels[30, 30] == 0 and labels.max() == 2
    assert labels[7, 7] == labels[5, 5] != 0
    kept = probabilities_to_labels(probs, min_size=1, fill_holes=False, method="components")
    assert kept[30, 30] != 0 and kept[7, 7] == 0 and kept.max() == 3


def test_unseeded_foreground_becomes_a_cell():
    # A small cell whose interior probability never reaches the seed threshold.
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1.0
    probs[:, 5:11, 5:11] = np.array([0.0, 0.55, 0.45])[:, None, None]
    labels = probabilities_to_labels(probs, min_size=1)
    assert labels.max() == 1 and np.count_nonzero(labels) == 36


def test_border_class_is_given_back_to_cells():
    # two cells separated by a 2-px border: the border goes to the cells
    classes = np.zeros((20, 30), np.int32)
    classes[5:15, 4:26] = 1
    classes[5:15, 14:16] = 2
    probs = np.stack([classes == c for c in range(3)]).astype(np.float32)
    labels = probabilities_to_labels(probs, min_size=1)
    assert labels.max() == 2
    assert np.all(labels[5:15, 4:26] > 0)
    assert set(np.unique(labels[5:15, 4:14])) == {1} or set(np.unique(labels[5:15, 4:14])) == {2}


# ---------------------------------------------------------------------------
# stacks
# ---------------------------------------------------------------------------


def test_stack_planes_independent_or_volume():
    plane = _two_blobs(3)
    stack = np.stack([plane, plane, plane], axis=1)  # (3, Z=3, Y, X)
    volume = probabilities_to_labels(stack)
    assert volume.shape == (3, 32, 32) and volume.max() == 2  # blobs span the planes
    planes = probabilities_to_labels(stack, spatial_dims=2)
    assert planes.max() == 6
    ids = [set(np.unique(p[p > 0]).tolist()) for p in planes]
    assert ids == [{1, 2}, {3, 4}, {5, 6}]  # no id shared between planes


def test_extra_leading_axes_need_spatial_dims_and_match_per_plane_results():
    rng = np.random.default_rng(1)
    planes = [
        smooth_probabilities(rng, class_targets(touching_cells(rng, (48, 48)))) for _ in range(4)
    ]
    stack = np.stack(planes, axis=1).reshape(3, 2, 2, 48, 48)  # (C, T, Z, Y, X)
    with pytest.raises(ValueError, match="`spatial_dims`"):
        probabilities_to_labels(stack)
    labels = probabilities_to_labels(stack, spatial_dims=2)
    assert labels.shape == (2, 2, 48, 48)
    flat = labels.reshape(4, 48, 48)
    offset = 0
    for index, probs in enumerate(planes):
        alone = probabilities_to_labels(probs)
        expected = np.where(alone > 0, alone + offset, 0)
        assert np.array_equal(flat[index], expected)
        offset += int(alone.max())
    assert labels.max() == offset
    by_volume = probabilities_to_labels(stack, spatial_dims=3)
    assert by_volume.shape == (2, 2, 48, 48)


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probs", "kwargs", "message"),
    [
        (np.zeros((3, 8, 8), np.uint8), {}, "float array"),
        (np.full((3, 8, 8), np.nan, np.float32), {}, "NaN"),
        (np.full((3, 8, 8), 1.5, np.float32), {}, r"\[0, 1\]"),
        (np.full((3, 8, 8), -0.5, np.float32), {}, r"\[0, 1\]"),
        (np.zeros((1, 8, 8), np.float32), {}, "2 classes"),
        (np.zeros((4, 8, 8), np.float32), {}, "2 classes"),
        (np.zeros((8, 8), np.float32), {}, r"\(num_classes, Y, X\)"),
        (np.zeros((3, 8, 8), np.float32), {"method": "magic"}, "`method`"),
        (np.zeros((3, 8, 8), np.float32), {"threshold": 1.0}, "`threshold`"),
        (np.zeros((3, 8, 8), np.float32), {"seed_threshold": 0.0}, "`seed_threshold`"),
        (np.zeros((3, 8, 8), np.float32), {"spatial_dims": 3}, "`spatial_dims`"),
        (np.zeros((3, 8, 8), np.float32), {"min_size": -1}, "`min_size`"),
    ],
)
def test_validation(probs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        probabilities_to_labels(probs, **kwargs)


def test_rounding_past_one_is_accepted():
    probs = _two_blobs(2).astype(np.float64)
    probs[1] *= 1.0 + 1e-7
    assert probabilities_to_labels(probs).max() == 2


# ---------------------------------------------------------------------------
# seeded growth (membrane models)
# ---------------------------------------------------------------------------


def _cells_with_a_leaky_membrane():
    """Two 14x14 cells behind a 3-pixel membrane with a 4-pixel gap (cell probability 0.4)."""
    cell = np.full((20, 34), 0.05)
    cell[3:17, 2:16] = 0.95
    cell[3:17, 19:33] = 0.95
    cell[8:12, 16:19] = 0.4  # the gap: a blurry membrane the network is unsure of
    return np.stack([1.0 - cell, cell]).astype(np.float32)


def test_seeded_growth_closes_a_membrane_gap_with_a_line():
    probs = _cells_with_a_leaky_membrane()
    # Connected components join the cells through the gap at any threshold below 0.4.
    assert probabilities_to_labels(probs, method="components", threshold=0.3).max() == 1
    labels = probabilities_to_labels(
        probs, method="seeded", threshold=0.3, seed_threshold=0.9, min_size=0
    )
    assert labels.max() == 2
    # Grown into the gap up to a one-pixel line: the two stay separate
    # 4-connected components, as a binary image (the ISBI evaluation labels
    # cells as the components of the binary result).
    assert ndi.label(labels > 0)[1] == 2
    assert np.count_nonzero(labels[8:12, 16:19] == 0) == 4  # one line pixel per gap row
    assert np.count_nonzero(labels[8:12, 16:19]) == 8


def test_seeded_small_seeds_are_flooded_by_their_neighbours():
    probs = _cells_with_a_leaky_membrane()
    # A dark ring (an organelle's membrane) cuts a 2x2 speck off the left seed.
    probs[1, 4:8, 4] = probs[1, 4:8, 7] = probs[1, 4, 4:8] = probs[1, 7, 4:8] = 0.05
    probs[0] = 1.0 - probs[1]
    options = {"method": "seeded", "threshold": 0.02, "min_size": 0}
    kept = probabilities_to_labels(probs, min_seed_size=1, **options)
    merged = probabilities_to_labels(probs, min_seed_size=8, **options)
    assert kept.max() == 3  # the speck is a cell of its own
    assert merged.max() == 2  # no seed of its own: its cell floods it
    assert np.all(merged[5:7, 5:7] == merged[10, 8])


def test_seed_erosion_cuts_a_thin_confident_bridge():
    # Two 14x14 cells joined by a confident 2-pixel bridge through their membrane.
    probs = _cells_with_a_leaky_membrane()
    probs[1, 9:11, 16:19] = 0.95
    probs[0] = 1.0 - probs[1]
    options = {"method": "seeded", "threshold": 0.3, "seed_threshold": 0.9, "min_size": 0}
    assert probabilities_to_labels(probs, **options).max() == 1  # one seed across the bridge
    labels = probabilities_to_labels(probs, seed_erosion=2, **options)
    assert labels.max() == 2 and ndi.label(labels > 0)[1] == 2
    # The growth gives the eroded width back: the cells are whole again.
    assert np.count_nonzero(labels[3:17, 2:16] == labels[10, 8]) == 14 * 14
    with pytest.raises(ValueError, match="seed_erosion"):
        probabilities_to_labels(probs, seed_erosion=-1, **options)

"""Tests for napari_unet.linking: per-plane instances joined into 3D objects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet._sample_data import synthetic_cells
from napari_unet.linking import link_planes, plane_overlaps
from napari_unet.metrics import match_instances
from napari_unet.postprocess import probabilities_to_labels

SPACING = (2.0, 1.0, 1.0)  # planes twice as far apart as pixels


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Touching, irregular cells in an anisotropic stack (ground truth labels)."""
    return synthetic_cells((16, 112, 112), spacing=SPACING, seed=15)[1]


def _count(labels: np.ndarray) -> int:
    return len(np.unique(labels[labels > 0]))


def _probabilities_from_truth(labels: np.ndarray, seed: int) -> np.ndarray:
    """3-class maps a decent 2D model would give: blurred, noisy, borders marked."""
    rng = np.random.default_rng(seed)
    hi = ndi.maximum_filter(labels, size=(1, 3, 3))
    lo = ndi.minimum_filter(np.where(labels > 0, labels, labels.max() + 1), size=(1, 3, 3))
    border = (labels > 0) & ((hi != labels) | (lo != labels)) & (hi > 0)
    cell = (labels > 0) & ~border
    smooth = [ndi.gaussian_filter(m.astype(float), (0, 1.0, 1.0)) for m in (cell, border)]
    cell_p, border_p = (np.clip(m + 0.15 * rng.standard_normal(m.shape), 0, 1) for m in smooth)
    total = np.maximum(cell_p + border_p, 1.0)
    cell_p, border_p = cell_p / total, border_p / total
    return np.stack([1 - cell_p - border_p, cell_p, border_p]).astype(np.float32)


def test_truth_planes_relabelled_become_one_id_per_cell(volume: np.ndarray) -> None:
    # Each plane numbered on its own, in a random order: only overlap can link them.
    rng = np.random.default_rng(0)
    planes = np.zeros_like(volume)
    for z in range(volume.shape[0]):
        lut = np.concatenate([[0], rng.permutation(int(volume.max())) + 1])
        planes[z] = lut[volume[z]]
    linked = link_planes(planes)
    n_true, n_linked = _count(volume), _count(linked)
    assert abs(n_linked - n_true) <= 0.1 * n_true, (n_linked, n_true)
    assert match_instances(volume, linked, threshold=0.5)["f1"] >= 0.85
    # Consecutive ids 1..N.
    assert np.array_equal(np.unique(linked), np.arange(n_linked + 1))
    assert linked.dtype == np.int32


def test_per_plane_segmentation_links_to_the_cell_count(volume: np.ndarray) -> None:
    probs = _probabilities_from_truth(volume, seed=1)
    planes = probabilities_to_labels(probs, spatial_dims=2)
    n_true = _count(volume)
    assert _count(planes) > 4 * n_true  # onion rings: one id per cell per plane
    linked = link_planes(planes)
    assert abs(_count(linked) - n_true) <= 0.1 * n_true, (_count(linked), n_true)
    assert match_instances(volume, linked, threshold=0.5)["f1"] >= 0.8


def test_touching_cells_stay_apart_when_one_slice_overlaps_both() -> None:
    # Two cells side by side; in plane 1 cell A bulges over part of B's place.
    stack = np.zeros((3, 10, 20), np.int32)
    stack[:, 2:8, 2:10] = 1
    stack[:, 2:8, 10:18] = 2
    stack[1, 2:8, 2:15] = 1  # IoU 0.31 with B's slice in plane 0 or 2
    stack[1, 2:8, 15:18] = 2
    linked = link_planes(stack)
    assert _count(linked) == 2
    assert len(np.unique(linked[:, 4, 4])) == 1 and len(np.unique(linked[:, 4, 15])) == 1
    assert linked[0, 4, 4] != linked[0, 4, 15]


def test_end_cap_joins_its_cell_but_a_new_cell_does_not() -> None:
    stack = np.zeros((4, 20, 20), np.int32)
    stack[0:3, 4:16, 4:16] = 1  # a cell ...
    stack[3, 9:11, 9:11] = 1  # ... and its 4-pixel cap: IoU 4/144, but inside it
    linked = link_planes(stack)
    assert _count(linked) == 1
    # A cell that only touches the corner of another's slice is not joined.
    stack[3] = 0
    stack[3, 14:20, 14:20] = 2
    assert _count(link_planes(stack)) == 2


def test_axis_and_ids_reused_across_planes() -> None:
    # The same id in two planes that do not overlap is two objects.
    stack = np.zeros((3, 8, 8), np.int32)
    stack[0, 0:3, 0:3] = 7
    stack[1, 5:8, 5:8] = 7
    stack[2, 5:8, 5:8] = 3
    linked = link_planes(stack)
    assert _count(linked) == 2
    assert linked[1, 6, 6] == linked[2, 6, 6] != linked[0, 1, 1]
    moved = link_planes(np.moveaxis(stack, 0, 2), axis=2)
    assert np.array_equal(np.moveaxis(moved, 2, 0), linked)


def test_plane_overlaps_iou() -> None:
    a = np.array([[1, 1, 0], [1, 1, 0]])
    b = np.array([[0, 2, 2], [0, 2, 2]])
    ids_a, ids_b, iou = plane_overlaps(a, b)
    assert ids_a.tolist() == [1] and ids_b.tolist() == [2]
    assert iou[0] == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": np.zeros((4, 4), int)}, "3D stack"),
        ({"labels": np.zeros((2, 4, 4), float)}, "integer"),
        ({"labels": np.zeros((2, 4, 4), int), "min_iou": 0.0}, "min_iou"),
        ({"labels": np.zeros((2, 4, 4), int), "min_overlap": 1.5}, "min_overlap"),
        ({"labels": np.zeros((2, 4, 4), int), "axis": 3}, "axis"),
    ],
)
def test_bad_input_is_named(kwargs: dict, match: str) -> None:
    labels = kwargs.pop("labels")
    with pytest.raises(ValueError, match=match):
        link_planes(labels, **kwargs)


def test_pieces_of_a_cell_cut_in_one_plane_join_it() -> None:
    stack = np.zeros((3, 12, 12), np.int32)
    stack[:, 2:10, 2:10] = 1
    stack[1, 2:10, 7:10] = 2  # plane 1: the cell cut in two pieces
    stack[1, 2:4, 2:4] = 3  # and a third
    assert _count(link_planes(stack, absorb_fragments=False)) == 3
    linked = link_planes(stack)
    assert _count(linked) == 1
    # A separate cell beside it, alone in its plane, stays separate.
    stack[1, 10:12, 10:12] = 4
    assert _count(link_planes(stack)) == 2

"""Chunked labelling (labels_dask) equals in-memory labelling, chunk borders included."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.metrics import average_precision
from napari_unet.postprocess import labels_dask, probabilities_to_labels
from test_postprocess import class_targets, smooth_probabilities, touching_cells

da = pytest.importorskip("dask.array")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` and ``b`` are the same labelling up to renumbering (0 stays 0)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    one_to_one = len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return one_to_one and bool(np.array_equal(a == 0, b == 0))


def _crossing(labels: np.ndarray, chunks: tuple[tuple[int, ...], ...]) -> int:
    """Objects of ``labels`` (Y, X) that lie in more than one chunk."""
    edges = [np.cumsum(c)[:-1] for c in chunks]
    yy, xx = np.nonzero(labels)
    chunk_of = np.searchsorted(edges[0], yy, side="right") * 1000 + np.searchsorted(
        edges[1], xx, side="right"
    )
    ids = labels[yy, xx]
    pairs = np.unique(np.stack([ids, chunk_of]), axis=1)
    return int((np.bincount(pairs[0]) > 1).sum())


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(3)
    truth = touching_cells(rng, shape=(300, 260))
    probs = smooth_probabilities(rng, class_targets(truth))
    return truth, probs


@pytest.mark.parametrize("compute_lookup", [False, True])
def test_chunked_labels_equal_in_memory_labels_as_a_partition(cells, compute_lookup):
    truth, probs = cells
    expected = probabilities_to_labels(probs)
    lazy = labels_dask(
        da.from_array(probs, chunks=(3, 64, 50)), margin=24, compute_lookup=compute_lookup
    )
    assert lazy.dtype == np.uint32 and lazy.shape == probs.shape[1:]
    labels = lazy.compute()
    # Many objects really cross chunk borders (24 chunks, ~170 cells).
    assert _crossing(expected, lazy.chunks) >= 40
    assert _same_partition(labels, expected)
    assert average_precision(expected, labels)["ap"][0] == 1.0
    # Ids unique and sequential; every cell pixel of the truth's interior has an id.
    assert np.unique(labels).tolist() == list(range(int(labels.max()) + 1))
    assert average_precision(truth, labels)["ap"][0] >= 0.9


def test_two_class_distance_watershed_and_leading_axes(cells):
    _, probs = cells
    # Two classes (border pixels as background): split by the distance watershed.
    two = np.stack([probs[0] + probs[2], probs[1]])
    stack = np.stack([two, two[:, ::-1]], axis=1)  # (C, Z, Y, X): two planes
    expected = probabilities_to_labels(stack, spatial_dims=2)
    labels = labels_dask(
        da.from_array(stack, chunks=(2, 1, 70, 60)), margin=48, spatial_dims=2
    ).compute()
    assert _same_partition(labels, expected)
    # Planes are labelled on their own: no id is shared between them.
    assert not set(np.unique(labels[0])) & set(np.unique(labels[1])) - {0}


def test_an_object_across_four_chunks_gets_one_id():
    probs = np.zeros((2, 40, 40), np.float32)
    probs[1, 10:30, 12:28] = 1.0  # a rectangle over the corner of four chunks
    probs[1, 2:6, 2:6] = 1.0  # a small one inside a chunk
    probs[0] = 1.0 - probs[1]
    labels = labels_dask(
        da.from_array(probs, chunks=(2, 20, 20)), margin=12, method="components", min_size=1
    ).compute()
    assert labels[20, 20] == labels[10, 12] == labels[29, 27] != 0
    assert np.unique(labels).tolist() == [0, 1, 2]


def test_small_chunks_are_merged_and_bad_input_is_refused():
    probs = np.zeros((2, 50, 50), np.float32)
    probs[0] = 1.0
    lazy = labels_dask(da.from_array(probs, chunks=(2, 8, 30)), margin=10)
    assert min(min(c) for c in lazy.chunks) >= 10
    assert lazy.max().compute() == 0
    with pytest.raises(ValueError, match="float"):
        labels_dask(da.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="2 or 3 classes"):
        labels_dask(da.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="`margin`"):
        labels_dask(da.zeros((2, 8, 8)), margin=0)
    with pytest.raises(ValueError, match="`iou_threshold`"):
        labels_dask(da.zeros((2, 8, 8)), iou_threshold=0.3)
    with pytest.raises(ValueError, match="`spatial_dims`"):
        labels_dask(da.zeros((2, 3, 4, 8, 8)))
    # Options of probabilities_to_labels are checked before anything runs.
    with pytest.raises(ValueError, match="`method`"):
        labels_dask(da.zeros((2, 8, 8)), method="magic")

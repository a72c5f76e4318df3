"""Annotation helpers (napari_unet.annotation), without a viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet import annotation
from napari_unet.annotation import (
    collect_planes,
    count_cells,
    fill_holes,
    next_label,
    rectangles_to_mask,
    relabel,
    remove_small_fragments,
)


def test_next_label_and_count_cells():
    labels = np.array([[0, 3, 3], [7, 0, 0]])
    assert next_label(labels) == 8
    assert next_label(np.zeros((4, 4), int)) == 1
    assert count_cells(labels) == 2
    assert count_cells(np.zeros((3, 3), int)) == 0


def test_fill_holes_fills_own_holes_only():
    labels = np.zeros((9, 9), np.int32)
    labels[1:6, 1:6] = 1
    labels[3, 3] = 0  # a hole inside cell 1
    labels[2, 2] = 0
    labels[4, 4] = 2  # another cell enclosed by cell 1: keeps its id
    # A gap closed only by two touching cells together is not a hole of either.
    labels[6:9, 0:3] = 3
    labels[6:9, 4:7] = 4
    labels[6, 3] = labels[8, 3] = 3
    before = labels.copy()
    filled = fill_holes(labels)
    np.testing.assert_array_equal(labels, before)  # input not modified
    assert filled.dtype == labels.dtype
    assert filled[3, 3] == 1 and filled[2, 2] == 1
    assert filled[4, 4] == 2
    assert filled[7, 3] == 0


def test_fill_holes_works_plane_by_plane():
    ring = np.zeros((5, 5), np.uint16)
    ring[1:4, 1:4] = 4
    ring[2, 2] = 0
    stack = np.stack([ring, np.zeros_like(ring), ring])
    filled = fill_holes(stack)
    assert filled[0, 2, 2] == 4 and filled[2, 2, 2] == 4
    assert not filled[1].any()


def test_remove_small_fragments():
    labels = np.zeros((10, 10), np.int32)
    labels[0:4, 0:4] = 1
    labels[9, 9] = 1  # stray click of cell 1
    labels[6:8, 6:8] = 2  # a whole small cell of 4 pixels
    out = remove_small_fragments(labels, min_size=5)
    assert out[9, 9] == 0
    assert (out[0:4, 0:4] == 1).all()
    assert not (out == 2).any()
    assert remove_small_fragments(labels, min_size=1)[9, 9] == 1
    with pytest.raises(ValueError, match="min_size"):
        remove_small_fragments(labels, min_size=-1)


def test_relabel_sequential_and_split():
    labels = np.array([[0, 9, 9], [4, 0, 0], [4, 0, 9]])
    out = relabel(labels)
    assert out.tolist() == [[0, 1, 1], [2, 0, 0], [2, 0, 1]]
    assert out.dtype == np.int32
    split = relabel(labels, split_disconnected=True)
    assert count_cells(split) == 3
    assert split[0, 1] != split[2, 2]
    # Without background the first cell is 1 as well.
    assert relabel(np.array([[5, 7], [7, 5]])).tolist() == [[1, 2], [2, 1]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32, np.int64])
def test_tidy_functions_keep_dtype(dtype):
    labels = np.zeros((6, 6), dtype)
    labels[1:4, 1:4] = 3
    assert fill_holes(labels).dtype == dtype
    assert remove_small_fragments(labels).dtype == dtype


@pytest.mark.parametrize("bad", [np.zeros(5, int), np.zeros((3, 3), float), -np.ones((3, 3), int)])
def test_tidy_functions_reject_bad_labels(bad):
    with pytest.raises(ValueError, match="labels"):
        fill_holes(bad)


def test_rectangles_to_mask_2d_inclusive_edges():
    box = np.array([[1.0, 1.0], [1.0, 3.0], [3.0, 3.0], [3.0, 1.0]])
    mask = rectangles_to_mask([box], (6, 6))
    assert mask.sum() == 9
    assert mask[1:4, 1:4].all()
    # Half-pixel corners (as drawn with the mouse) round inwards to pixel centres.
    mask = rectangles_to_mask([box + 0.4], (6, 6))
    assert mask.sum() == 4


def test_rectangles_to_mask_stack_planes_and_clipping():
    box3d = np.array([[2, 0, 0], [2, 0, 9], [2, 9, 9], [2, 9, 0]], float)
    outside = box3d.copy()
    outside[:, 0] = 7
    mask = rectangles_to_mask([box3d, outside], (4, 5, 5))
    assert mask[2].all()
    assert mask.sum() == 25
    box2d = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], float)
    mask = rectangles_to_mask([box2d], (3, 5, 5))
    assert mask[:, :2, :2].all() and mask.sum() == 12
    with pytest.raises(ValueError, match="rectangles"):
        rectangles_to_mask([np.zeros((4, 3))], (5, 5))


def test_rectangles_to_mask_rotated_polygon():
    diamond = np.array([[0, 4], [4, 8], [8, 4], [4, 0]], float)
    mask = rectangles_to_mask([diamond], (9, 9))
    assert mask[4, 4] and not mask[0, 0] and not mask[8, 8]


def test_collect_planes_stack_with_channels_last():
    rng = np.random.default_rng(0)
    image = rng.random((3, 8, 8, 2)).astype(np.float32)
    labels = np.zeros((3, 8, 8), np.int32)
    labels[0, :3, :3] = 1
    labels[2, 4:, 4:] = 2
    labels[2, :2, :2] = 5
    planes = collect_planes(image, labels, channel_axis=-1)
    assert [p.index for p in planes] == [(0,), (2,)]
    assert [p.n_cells for p in planes] == [1, 2]
    assert planes[0].image.shape == (2, 8, 8)
    np.testing.assert_array_equal(planes[1].image, np.moveaxis(image[2], -1, 0))
    assert planes[0].mask is None
    # Copies: painting afterwards does not change the collected planes.
    labels[0] = 0
    assert planes[0].labels.any()


def test_collect_planes_channel_axis_between_leading_axes():
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # (T, C, Y, X)
    labels = np.ones((2, 4, 5), np.int32)
    planes = collect_planes(image, labels, channel_axis=1)
    assert len(planes) == 2
    np.testing.assert_array_equal(planes[1].image, image[1])


def test_collect_planes_with_mask_and_selected_planes():
    image = np.zeros((4, 6, 6))
    labels = np.zeros((4, 6, 6), np.int32)
    labels[1, :2, :2] = 3
    labels[3, :2, :2] = 4
    mask = np.zeros(labels.shape, bool)
    mask[1, :3, :3] = True
    mask[2] = True  # a region with no cells: a background-only example
    planes = collect_planes(image, labels, mask)
    assert [p.index for p in planes] == [(1,), (2,)]
    assert [p.n_cells for p in planes] == [1, 0]
    assert planes[0].mask.sum() == 9
    only = collect_planes(image, labels, planes=[(3,)])
    assert [p.index for p in only] == [(3,)]
    assert collect_planes(image[0], labels[1])[0].index == ()


def test_collect_planes_validates():
    with pytest.raises(ValueError, match="labels"):
        collect_planes(np.zeros((4, 4)), np.zeros((5, 5), int))
    with pytest.raises(ValueError, match="mask"):
        collect_planes(np.zeros((4, 4)), np.ones((4, 4), int), np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="channel_axis"):
        collect_planes(np.zeros((4, 4)), np.ones((4, 4), int), channel_axis=5)
    with pytest.raises(ValueError, match="plane"):
        collect_planes(np.zeros((2, 4, 4)), np.ones((2, 4, 4), int), planes=[(5,)])


def test_module_does_not_import_napari():
    import subprocess
    import sys

    code = (
        "import sys, napari_unet.annotation; print('napari' in sys.modules, 'qtpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert "collect_planes" in annotation.__all__

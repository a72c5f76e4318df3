"""Instance metrics on volumes: AP at IoU thresholds and the CTC SEG measure in 3D."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.metrics import average_precision, match_instances, seg_score


def _cubes() -> np.ndarray:
    """Four 10-voxel cubes, two of them touching face to face."""
    true = np.zeros((12, 24, 24), np.int32)
    true[1:11, 1:11, 1:11] = 1
    true[1:11, 1:11, 11:21] = 2  # touches cell 1
    true[1:11, 12:22, 1:11] = 3
    true[1:11, 12:22, 12:22] = 4
    return true


def test_perfect_volume_scores_one():
    true = _cubes()
    shuffled = np.array([0, 3, 4, 1, 2])[true]  # other ids, same objects
    assert average_precision(true, shuffled)["mean_ap"] == 1.0
    assert seg_score(true, shuffled) == 1.0


def test_a_cell_split_along_z_counts_as_a_volume_not_as_planes():
    true = _cubes()
    pred = true.copy()
    pred[8:11][pred[8:11] == 1] = 9  # cell 1 cut: planes 1-7 keep its id, 8-10 are a new object
    result = average_precision(true, pred, thresholds=[0.5, 0.75])
    # IoU of the larger part is 0.7: matched at 0.5 (4 TP, 1 FP), not at 0.75 (3 TP, 2 FP, 1 FN).
    assert result["tp"] == [4, 3] and result["fp"] == [1, 2] and result["fn"] == [0, 1]
    assert result["ap"] == pytest.approx([4 / 5, 3 / 6])
    # SEG: Jaccard of each true cell with the predicted object covering > half of it.
    assert seg_score(true, pred) == pytest.approx((0.7 + 3) / 4)


def test_merged_touching_cells_match_neither_above_half():
    true = _cubes()
    pred = true.copy()
    pred[pred == 2] = 1  # the two touching cells merged: IoU 0.5 with each
    m = match_instances(true, pred, threshold=0.5)
    assert m["tp"] == 2 and m["fn"] == 2 and m["fp"] == 1
    # SEG needs > 50 % of a true cell inside one predicted object: both are, with J = 0.5.
    assert seg_score(true, pred) == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)

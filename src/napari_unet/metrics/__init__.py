"""Metrics for semantic and instance segmentation.

Three families, each following a named source:

- Confusion-matrix scores of class images (FCN, Long et al. 2015): pixel
  accuracy, mean class accuracy, per-class and mean IoU, frequency-weighted
  IoU, and Dice (F1) per class. See :func:`confusion_matrix`,
  :func:`class_scores`, :func:`dice_score`.
- The ISBI 2012 EM challenge errors (Arganda-Carreras et al. 2015): pixel
  error, foreground-restricted Rand error, warping error (Jain et al. 2010),
  and their minimum over thresholds of a probability map. See
  :func:`pixel_error`, :func:`rand_scores`, :func:`rand_error`,
  :func:`warping_error`, :func:`isbi_errors`.
- Instance scores of label images: one-to-one IoU matching with precision,
  recall, F1 and the Data Science Bowl 2018 average precision, and the Cell
  Tracking Challenge SEG measure. See :func:`match_instances`,
  :func:`average_precision`, :func:`seg_score`.

Label images: non-negative integers, 0 = background, any other value one
object (ids need not be sequential). Binary images: non-zero = cell
(foreground), 0 = background/membrane. Overlaps are counted once with
``np.bincount``/``np.unique`` on pixel label pairs (a sparse contingency
table), never with a loop over objects on full images.
"""

from __future__ import annotations

from ._contingency import DSB_THRESHOLDS, interior_mask, mask_to_instances
from ._contingency import ISBI_THRESHOLDS as ISBI_THRESHOLDS
from ._instances import average_precision, match_instances, seg_score
from ._isbi import _NEIGHBOURS as _NEIGHBOURS
from ._isbi import _SIMPLE as _SIMPLE
from ._isbi import _pixel_counts as _pixel_counts
from ._isbi import _pixel_error_from_counts as _pixel_error_from_counts
from ._isbi import _rand_counts as _rand_counts
from ._isbi import _rand_from_counts as _rand_from_counts
from ._isbi import isbi_errors, pixel_error, rand_error, rand_scores, warping_error
from ._semantic import class_scores, confusion_matrix, dice_score

__all__ = [
    "DSB_THRESHOLDS",
    "average_precision",
    "class_scores",
    "confusion_matrix",
    "dice_score",
    "interior_mask",
    "isbi_errors",
    "mask_to_instances",
    "match_instances",
    "pixel_error",
    "rand_error",
    "rand_scores",
    "seg_score",
    "warping_error",
]

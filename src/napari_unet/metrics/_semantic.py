"""Confusion-matrix family (FCN) (part of :mod:`napari_unet.metrics`)."""

from __future__ import annotations

import numpy as np

from ._contingency import _check_same_shape, _pair, _ratio

# ---------------------------------------------------------------------------
# Confusion-matrix family (FCN)
# ---------------------------------------------------------------------------


def confusion_matrix(
    true: np.ndarray,
    pred: np.ndarray,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Pixel confusion matrix of two class images.

    Parameters
    ----------
    true, pred : ndarray of int
        Class images of the same shape (any number of axes), values
        ``0..num_classes - 1``.
    num_classes : int, optional
        Number of classes; default ``max(true.max(), pred.max()) + 1``.
    ignore_index : int, optional
        Pixels where ``true == ignore_index`` are not counted (e.g. 255 for
        unannotated pixels); it may lie outside ``0..num_classes - 1``.

    Returns
    -------
    matrix : ndarray of int64, shape (num_classes, num_classes)
        ``matrix[i, j]`` = number of pixels of true class ``i`` predicted as
        class ``j`` (``n_ij`` in [1]_).

    References
    ----------
    .. [1] Long, Shelhamer, Darrell (2015). Fully convolutional networks for
           semantic segmentation. CVPR. :DOI:`10.1109/CVPR.2015.7298965`

    Examples
    --------
    >>> confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])).tolist()
    [[1, 1], [0, 2]]
    """
    true, pred = _pair("true", true, "pred", pred)
    if ignore_index is not None:
        keep = true != ignore_index
        true, pred = true[keep], pred[keep]
    true = true.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    top = int(max(true.max(initial=0), pred.max(initial=0))) + 1
    if num_classes is None:
        num_classes = top
    elif num_classes < 1:
        raise ValueError(f"`num_classes` must be >= 1, got {num_classes}")
    elif top > num_classes:
        raise ValueError(
            f"class images contain class {top - 1}, but `num_classes` is {num_classes} "
            f"(expected values 0..{num_classes - 1})"
        )
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def class_scores(
    true: np.ndarray,
    pred: np.ndarray,
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> dict:
    """Confusion-matrix scores of a class prediction (FCN, Long et al. 2015).

    With ``n_ij`` the pixels of true class ``i`` predicted as ``j`` and
    ``t_i = sum_j n_ij`` (the definitions of [1]_, section 5):

    - ``pixel_accuracy`` = ``sum_i n_ii / sum_i t_i``
    - ``mean_accuracy`` = ``mean_i n_ii / t_i``
    - ``iou[i]`` = ``n_ii / (t_i + sum_j n_ji - n_ii)``; ``mean_iou`` = its mean
    - ``frequency_weighted_iou`` = ``sum_i t_i iou[i] / sum_i t_i``
    - ``dice[i]`` = ``2 n_ii / (t_i + sum_j n_ji)`` (the F1 score of class
      ``i``); ``mean_dice`` = its mean

    A class absent from both images has no defined accuracy, IoU or Dice: its
    entries are NaN and the means skip it.

    Parameters
    ----------
    true, pred : ndarray of int
        Class images of the same shape.
    num_classes, ignore_index : int, optional
        As in :func:`confusion_matrix`.

    Returns
    -------
    scores : dict
        ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``,
        ``frequency_weighted_iou``, ``mean_dice`` (float) and ``accuracy``,
        ``iou``, ``dice`` (list of float, one per class).

    References
    ----------
    .. [1] Long, Shelhamer, Darrell (2015). Fully convolutional networks for
           semantic segmentation. CVPR. :DOI:`10.1109/CVPR.2015.7298965`

    Examples
    --------
    >>> s = class_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    >>> s["pixel_accuracy"], s["iou"]
    (0.75, [0.5, 0.6666666666666666])
    """
    matrix = confusion_matrix(
        true, pred, num_classes=num_classes, ignore_index=ignore_index
    ).astype(np.float64)
    hits = np.diag(matrix)
    t = matrix.sum(axis=1)
    p = matrix.sum(axis=0)
    total = t.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(t > 0, hits / t, np.nan)
        union = t + p - hits
        iou = np.where(union > 0, hits / union, np.nan)
        dice = np.where(t + p > 0, 2 * hits / (t + p), np.nan)

    def _mean(values: np.ndarray) -> float:
        valid = values[~np.isnan(values)]
        return float(valid.mean()) if valid.size else float("nan")

    return {
        "pixel_accuracy": _ratio(hits.sum(), total, empty=float("nan")),
        "mean_accuracy": _mean(accuracy),
        "mean_iou": _mean(iou),
        "frequency_weighted_iou": _ratio(
            np.sum(t * np.nan_to_num(iou)), total, empty=float("nan")
        ),
        "mean_dice": _mean(dice),
        "accuracy": accuracy.tolist(),
        "iou": iou.tolist(),
        "dice": dice.tolist(),
    }


def dice_score(true: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient (F1 score) of two binary masks.

    ``2 |T ∩ P| / (|T| + |P|)`` with ``T``, ``P`` the non-zero pixels [1]_;
    1.0 when both masks are empty.

    Parameters
    ----------
    true, pred : ndarray
        Binary images of the same shape (non-zero = foreground).

    Returns
    -------
    dice : float
        In [0, 1]; 1 means identical foregrounds.

    References
    ----------
    .. [1] Dice (1945). Measures of the amount of ecologic association between
           species. Ecology 26(3). :DOI:`10.2307/1932409`
    """
    true = np.asarray(true) != 0
    pred = np.asarray(pred) != 0
    _check_same_shape("true", true, "pred", pred)
    both = np.count_nonzero(true & pred)
    return _ratio(2 * both, np.count_nonzero(true) + np.count_nonzero(pred), empty=1.0)

"""Instance matching, DSB 2018 average precision, CTC SEG (part of :mod:`napari_unet.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._contingency import DSB_THRESHOLDS, _contingency, _pair, _ratio

# ---------------------------------------------------------------------------
# Instance matching, DSB 2018 average precision, CTC SEG
# ---------------------------------------------------------------------------


def _overlaps(true: np.ndarray, pred: np.ndarray):
    """Object ids, areas and pairwise intersections of two label images.

    Returns ``true_ids, pred_ids`` (non-zero ids), ``true_area, pred_area``,
    and for every overlapping pair of objects ``rows`` (index into
    ``true_ids``), ``cols`` (into ``pred_ids``) and ``inter`` (pixels).
    """
    ids_t, ids_p, rows, cols, counts = _contingency(true, pred)
    area_t = np.bincount(rows, weights=counts, minlength=len(ids_t))
    area_p = np.bincount(cols, weights=counts, minlength=len(ids_p))
    fg_t = ids_t != 0
    fg_p = ids_p != 0
    # Re-index onto the non-zero ids only.
    map_t = np.cumsum(fg_t) - 1
    map_p = np.cumsum(fg_p) - 1
    both = fg_t[rows] & fg_p[cols]
    return (
        ids_t[fg_t],
        ids_p[fg_p],
        area_t[fg_t],
        area_p[fg_p],
        map_t[rows[both]],
        map_p[cols[both]],
        counts[both].astype(np.float64),
    )


def _match(n_true: int, n_pred: int, rows, cols, iou, threshold: float):
    """One-to-one matches with IoU > threshold: indices and their IoU.

    For threshold >= 0.5 every candidate pair is already one-to-one (two
    disjoint objects cannot both overlap a third by more than half of the
    union); below 0.5 the Hungarian algorithm finds the largest number of
    matches, ties broken by the largest total IoU.
    """
    candidate = iou > threshold
    rows, cols, iou = rows[candidate], cols[candidate], iou[candidate]
    if threshold >= 0.5 or len(iou) == 0:
        return rows, cols, iou
    from scipy.optimize import linear_sum_assignment

    # Compact to the objects that have a candidate, so the dense matrix stays small.
    ur, r = np.unique(rows, return_inverse=True)
    uc, c = np.unique(cols, return_inverse=True)
    weight = np.zeros((len(ur), len(uc)))
    # Count first (each match is worth more than any sum of IoUs), IoU second.
    weight[r, c] = 1.0 + iou / (min(n_true, n_pred) + 1.0)
    pr, pc = linear_sum_assignment(weight, maximize=True)
    keep = weight[pr, pc] > 0
    pr, pc = pr[keep], pc[keep]
    lookup = dict(zip(zip(r.tolist(), c.tolist(), strict=True), iou.tolist(), strict=True))
    matched_iou = np.array([lookup[(a, b)] for a, b in zip(pr.tolist(), pc.tolist(), strict=True)])
    return ur[pr], uc[pc], matched_iou


def _counts_to_scores(tp: int, fp: int, fn: int) -> dict:
    if tp + fp + fn == 0:
        # Nothing to find and nothing found: perfect, not undefined.
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap": 1.0}
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ap": _ratio(tp, tp + fp + fn),
    }


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"IoU `threshold` must be in [0, 1), got {threshold}")
    return threshold


def match_instances(true: np.ndarray, pred: np.ndarray, *, threshold: float = 0.5) -> dict:
    """Match objects one-to-one by IoU and count hits and misses.

    A predicted object matches a true one when their intersection over union
    is strictly greater than `threshold`, each object matching at most once.
    For ``threshold >= 0.5`` the matching is unique; below, the largest
    matching is found with the Hungarian algorithm (ties: largest total IoU).
    Scores: ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``,
    ``f1 = 2 tp / (2 tp + fp + fn)`` and the Data Science Bowl 2018
    ``ap = tp / (tp + fp + fn)`` [1]_. With no object in either image all
    scores are 1; otherwise an empty denominator gives 0.

    Parameters
    ----------
    true, pred : ndarray of int
        Label images of the same shape (2D or nD), 0 = background.
    threshold : float, optional
        IoU threshold in [0, 1).

    Returns
    -------
    result : dict
        ``tp``, ``fp``, ``fn``, ``n_true``, ``n_pred`` (int); ``precision``,
        ``recall``, ``f1``, ``ap``, ``mean_matched_iou`` (float; NaN without
        matches); ``true_ids``, ``pred_ids``, ``iou`` (ndarray, one entry per
        match).

    References
    ----------
    .. [1] Caicedo et al. (2019). Nucleus segmentation across imaging
           experiments: the 2018 Data Science Bowl. Nat. Methods 16.
           :DOI:`10.1038/s41592-019-0612-7`

    Examples
    --------
    >>> true = np.array([[1, 1, 0, 2, 2]])
    >>> m = match_instances(true, np.array([[3, 3, 0, 0, 4]]))
    >>> m["tp"], m["fp"], m["fn"], m["ap"]
    (1, 1, 1, 0.3333333333333333)
    """
    true, pred = _pair("true", true, "pred", pred)
    threshold = _check_threshold(threshold)
    ids_t, ids_p, area_t, area_p, rows, cols, inter = _overlaps(true, pred)
    iou = inter / (area_t[rows] + area_p[cols] - inter)
    r, c, matched_iou = _match(len(ids_t), len(ids_p), rows, cols, iou, threshold)
    tp = len(r)
    fp, fn = len(ids_p) - tp, len(ids_t) - tp
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_true": len(ids_t),
        "n_pred": len(ids_p),
        **_counts_to_scores(tp, fp, fn),
        "mean_matched_iou": float(matched_iou.mean()) if tp else float("nan"),
        "true_ids": ids_t[r],
        "pred_ids": ids_p[c],
        "iou": matched_iou,
    }


def average_precision(
    true: np.ndarray,
    pred: np.ndarray,
    *,
    thresholds: Sequence[float] = DSB_THRESHOLDS,
) -> dict:
    """Data Science Bowl 2018 average precision over IoU thresholds.

    At each IoU threshold ``t``, objects are matched one-to-one with IoU
    ``> t`` (:func:`match_instances`) and scored ``AP(t) = TP / (TP + FP +
    FN)``; the image score is the mean over thresholds 0.5, 0.55, ..., 0.95
    [1]_. (This "AP" is the challenge's name; it is not the area under a
    precision-recall curve.) The overlaps are counted once for all
    thresholds.

    Parameters
    ----------
    true, pred : ndarray of int
        Label images of the same shape, 0 = background.
    thresholds : sequence of float, optional
        IoU thresholds in [0, 1); default :data:`DSB_THRESHOLDS`.

    Returns
    -------
    result : dict
        ``mean_ap`` (float) and, one entry per threshold, ``thresholds``,
        ``ap``, ``precision``, ``recall``, ``f1`` (lists of float) and
        ``tp``, ``fp``, ``fn`` (lists of int).

    References
    ----------
    .. [1] Caicedo et al. (2019). Nucleus segmentation across imaging
           experiments: the 2018 Data Science Bowl. Nat. Methods 16.
           :DOI:`10.1038/s41592-019-0612-7`
    """
    true, pred = _pair("true", true, "pred", pred)
    thresholds = [_check_threshold(t) for t in thresholds]
    if not thresholds:
        raise ValueError("`thresholds` must not be empty")
    ids_t, ids_p, area_t, area_p, rows, cols, inter = _overlaps(true, pred)
    iou = inter / (area_t[rows] + area_p[cols] - inter)
    keys = ("ap", "precision", "recall", "f1", "tp", "fp", "fn")
    result: dict = {"thresholds": thresholds, **{k: [] for k in keys}}
    for threshold in thresholds:
        r, _, _ = _match(len(ids_t), len(ids_p), rows, cols, iou, threshold)
        tp = len(r)
        fp, fn = len(ids_p) - tp, len(ids_t) - tp
        scores = _counts_to_scores(tp, fp, fn)
        for key in ("ap", "precision", "recall", "f1"):
            result[key].append(scores[key])
        result["tp"].append(tp)
        result["fp"].append(fp)
        result["fn"].append(fn)
    result["mean_ap"] = float(np.mean(result["ap"]))
    return result


def seg_score(true: np.ndarray, pred: np.ndarray) -> float:
    """Cell Tracking Challenge SEG: mean Jaccard index of the reference objects.

    Each reference (true) object ``R`` is matched to the predicted object
    ``S`` with ``|R ∩ S| > 0.5 |R|`` (at most one exists); its score is the
    Jaccard index ``|R ∩ S| / |R ∪ S|``, or 0 without such an ``S``. SEG is
    the mean over all reference objects [1]_ — the "IoU" the U-Net paper
    reports for PhC-U373 (0.9203) and DIC-HeLa (0.7756). Extra predicted
    objects cost nothing (SEG is a recall-like measure); it is not
    symmetric.

    Parameters
    ----------
    true, pred : ndarray of int
        Reference and predicted label images of the same shape (2D or 3D;
        in 3D objects are matched as volumes), 0 = background.

    Returns
    -------
    seg : float
        In [0, 1]; NaN when `true` has no object.

    References
    ----------
    .. [1] Maška et al. (2014). A benchmark for comparison of cell tracking
           algorithms. Bioinformatics 30(11). :DOI:`10.1093/bioinformatics/btu080`

    Examples
    --------
    >>> seg_score(np.array([[1, 1, 1, 1, 0]]), np.array([[5, 5, 5, 0, 0]]))
    0.75
    """
    true, pred = _pair("true", true, "pred", pred)
    ids_t, _, area_t, area_p, rows, cols, inter = _overlaps(true, pred)
    if len(ids_t) == 0:
        return float("nan")
    hit = inter > 0.5 * area_t[rows]
    jaccard = np.zeros(len(ids_t))
    r, c, i = rows[hit], cols[hit], inter[hit]
    jaccard[r] = i / (area_t[r] + area_p[c] - i)
    return float(jaccard.mean())

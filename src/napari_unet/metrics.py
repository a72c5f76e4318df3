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

from collections.abc import Sequence

import numpy as np

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

#: IoU thresholds of the Data Science Bowl 2018 metric: 0.5, 0.55, ..., 0.95.
DSB_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

#: Default thresholds of :func:`isbi_errors`: 0.1, 0.2, ..., 0.9.
ISBI_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))


# ---------------------------------------------------------------------------
# Validation and counting helpers
# ---------------------------------------------------------------------------


def _check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_b}` (shape {b.shape}) must have the same shape as `{name_a}` "
            f"(shape {a.shape})"
        )


def _as_labels(name: str, array: np.ndarray) -> np.ndarray:
    """Return `array` as a non-negative integer array (bool becomes 0/1)."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"`{name}` must be an integer label image, got dtype {array.dtype}; "
            "turn probabilities into labels first (napari_unet.postprocess)"
        )
    if array.size and array.min() < 0:
        raise ValueError(f"`{name}` must not contain negative labels, got min {array.min()}")
    return array


def _pair(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray):
    a = _as_labels(name_a, a)
    b = _as_labels(name_b, b)
    _check_same_shape(name_a, a, name_b, b)
    return a, b


def _compact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values and the index of each element into them (like np.unique).

    Uses a bincount lookup table when the values are small, which is several
    times faster than sorting.
    """
    values = values.ravel()
    if values.size == 0:
        return np.zeros(0, dtype=values.dtype), np.zeros(0, dtype=np.intp)
    top = int(values.max())
    if top <= 4 * values.size + 1024:
        present = np.bincount(values.astype(np.intp, copy=False), minlength=top + 1) > 0
        lut = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(values.dtype), lut[values]
    unique, inverse = np.unique(values, return_inverse=True)
    return unique, inverse.ravel()


def _contingency(a: np.ndarray, b: np.ndarray):
    """Sparse contingency table of two label arrays of the same shape.

    Returns
    -------
    ids_a, ids_b : ndarray
        The distinct labels of `a` and of `b` (including 0 if present).
    rows, cols : ndarray of intp
        Index into ``ids_a`` / ``ids_b`` of every non-empty cell.
    counts : ndarray of int64
        Number of pixels labelled ``ids_a[rows[k]]`` in `a` and
        ``ids_b[cols[k]]`` in `b`.
    """
    ids_a, ia = _compact(a)
    ids_b, ib = _compact(b)
    nb = max(len(ids_b), 1)
    code = ia.astype(np.int64) * nb + ib
    cells = len(ids_a) * nb
    if cells <= 4 * code.size + 1024:
        full = np.bincount(code, minlength=cells)
        occupied = np.flatnonzero(full)
        counts = full[occupied]
    else:
        occupied, counts = np.unique(code, return_counts=True)
    rows, cols = np.divmod(occupied, nb)
    return ids_a, ids_b, rows.astype(np.intp), cols.astype(np.intp), counts.astype(np.int64)


def _ratio(num: float, den: float, empty: float = 0.0) -> float:
    return float(num) / float(den) if den > 0 else float(empty)


def mask_to_instances(mask: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """Instance labels of a binary image: its connected components.

    This is how ISBI 2012 turns its binary labels (255 = cell interior,
    0 = membrane) into one id per cell profile.

    Parameters
    ----------
    mask : ndarray
        Binary image of any shape; non-zero = cell.
    connectivity : int, optional
        1 (default: 4-neighbourhood in 2D, 6 in 3D, as the Fiji code of the
        ISBI 2012 evaluation) up to ``mask.ndim`` (8 / 26).

    Returns
    -------
    labels : ndarray of int32
        Same shape; 0 = background, 1..N = components.
    """
    from skimage.measure import label

    mask = np.asarray(mask)
    return label(mask != 0, connectivity=connectivity).astype(np.int32, copy=False)


def interior_mask(labels: np.ndarray) -> np.ndarray:
    """Binary cell mask of a label image with the contacts between cells removed.

    A pixel is in the mask when it belongs to an object and none of its
    4-neighbours (2D; 2·ndim-neighbours in nD) belongs to a *different*
    object, so touching objects stay apart, as in the ISBI 2012 binary
    labels where the membrane separates cells. Objects that already touch
    only background are unchanged.

    Parameters
    ----------
    labels : ndarray of int
        Label image, 0 = background.

    Returns
    -------
    mask : ndarray of bool
        Same shape.
    """
    labels = _as_labels("labels", labels)
    contact = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        touch = (a != b) & (a != 0) & (b != 0)
        contact[tuple(lo)] |= touch
        contact[tuple(hi)] |= touch
    return (labels != 0) & ~contact


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


# ---------------------------------------------------------------------------
# ISBI 2012: pixel, Rand and warping errors
# ---------------------------------------------------------------------------


def _pixel_counts(true: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.count_nonzero(true & pred))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(true)) - tp


def _pixel_error_from_counts(tp: float, fp: float, fn: float) -> float:
    # 1 - F1 = (fp + fn) / (2 tp + fp + fn); both foregrounds empty: no error.
    return _ratio(fp + fn, 2 * tp + fp + fn, empty=0.0)


def pixel_error(true: np.ndarray, pred: np.ndarray) -> float:
    """ISBI 2012 pixel error: 1 − the F-score of the pixel classification.

    Both images are binary, non-zero = cell (foreground). With ``tp`` the
    pixels that are cell in both, ``fp`` cell only in `pred`, ``fn`` cell only
    in `true`: ``1 - 2 tp / (2 tp + fp + fn)``, as the challenge's Fiji
    evaluation (``PixelError``) computes it at a given threshold [1]_. It is
    0 for identical masks and when both are empty. The plain fraction of
    mismatched pixels (the squared Euclidean distance of [1]_) is
    ``1 - class_scores(true, pred)["pixel_accuracy"]``.

    Parameters
    ----------
    true, pred : ndarray
        Binary images of the same shape.

    Returns
    -------
    error : float
        In [0, 1]; lower is better.

    See Also
    --------
    isbi_errors : the minimum over thresholds of a probability map.

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Crowdsourcing the creation of image
           segmentation algorithms for connectomics. Front. Neuroanat. 9:142.
           :DOI:`10.3389/fnana.2015.00142`
    """
    true = np.asarray(true) != 0
    pred = np.asarray(pred) != 0
    _check_same_shape("true", true, "pred", pred)
    return _pixel_error_from_counts(*_pixel_counts(true, pred))


def _rand_counts(true: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """Pair counts of the foreground-restricted Rand index.

    Returns ``(same_both, same_true, same_pred)``: the numbers of unordered
    pixel pairs inside the true foreground that share an object in both
    images, in `true`, and in `pred`. `pred` pixels labelled 0 are singletons.
    """
    fg = true != 0
    t = true[fg]
    p = pred[fg]
    _, ids_p, rows, cols, counts = _contingency(t, p)
    counts = counts.astype(np.float64)
    true_sizes = np.bincount(rows, weights=counts)
    # The zero column of the prediction is "unassigned": drop it from the
    # joint and predicted counts, so its pixels pair with nothing.
    keep = ids_p[cols] != 0
    cols, counts_pred = cols[keep], counts[keep]
    pred_sizes = np.bincount(cols, weights=counts_pred)

    def pairs(x: np.ndarray) -> float:
        return float(np.sum(x * (x - 1.0)) / 2.0)

    return pairs(counts_pred), pairs(true_sizes), pairs(pred_sizes)


def _rand_from_counts(same_both: float, same_true: float, same_pred: float) -> dict:
    split = _ratio(same_both, same_true, empty=1.0)
    merge = _ratio(same_both, same_pred, empty=1.0)
    v_rand = _ratio(2 * split * merge, split + merge, empty=0.0)
    return {
        "rand_error": 1.0 - v_rand,
        "v_rand": v_rand,
        "v_rand_split": split,
        "v_rand_merge": merge,
    }


def rand_scores(true: np.ndarray, pred: np.ndarray) -> dict:
    """Foreground-restricted Rand scores (V_rand) of a segmentation, ISBI 2012.

    Over the unordered pairs of pixels inside the true foreground
    (``true != 0``), with ``n_ij`` the pixels of true object ``i`` and
    predicted object ``j > 0``, ``t_i = sum_j n_ij`` over all ``j`` (including
    ``j = 0``) and ``s_j = sum_i n_ij`` [1]_:

    - ``v_rand_split`` = ``sum_ij C(n_ij, 2) / sum_i C(t_i, 2)``: the fraction
      of same-object true pairs kept together (1 = no splits; a recall)
    - ``v_rand_merge`` = ``sum_ij C(n_ij, 2) / sum_j C(s_j, 2)``: the fraction
      of same-object predicted pairs that are right (1 = no merges; a
      precision)
    - ``v_rand`` = their harmonic mean (the F-score, α = 0.5), and
      ``rand_error = 1 - v_rand``.

    True background (0: the membrane in ISBI 2012) is ignored; predicted
    background pixels inside the true foreground are singletons (pair with
    nothing), as in the challenge's Fiji code (``RandError``, "prune out the
    zero component in the labeling"). The pair counts ``C(n, 2)`` are those
    of that code; the paper writes the same ratios with squared
    probabilities ``p_ij^2``, which differ only by the ``n`` self-pairs.

    Parameters
    ----------
    true, pred : ndarray of int
        Label images of the same shape (2D, or nD: pairs are then taken across
        the whole volume). For binary ISBI labels use
        ``mask_to_instances(true)`` first.

    Returns
    -------
    scores : dict of float
        ``rand_error``, ``v_rand``, ``v_rand_split``, ``v_rand_merge``.
        When a denominator is empty (no pairs) its score is 1.

    Notes
    -----
    ``skimage.metrics.adapted_rand_error(true, pred)`` computes the same
    F-score when `pred` has no 0 inside the true foreground (its ``error``
    equals ``rand_error``); it treats predicted 0 as one more object instead
    of singletons, so in general it equals ours after those pixels are given
    unique ids. Its returned ``prec`` is our ``v_rand_split`` and ``rec`` our
    ``v_rand_merge`` (scikit-image 0.26 divides by the true and the
    predicted pair counts, respectively).

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Crowdsourcing the creation of image
           segmentation algorithms for connectomics. Front. Neuroanat. 9:142.
           :DOI:`10.3389/fnana.2015.00142`

    Examples
    --------
    >>> true = np.array([[1, 1, 1, 1]])
    >>> rand_scores(true, np.array([[1, 1, 2, 2]]))["v_rand_split"]
    0.3333333333333333
    """
    true, pred = _pair("true", true, "pred", pred)
    return _rand_from_counts(*_rand_counts(true, pred))


def rand_error(true: np.ndarray, pred: np.ndarray) -> float:
    """ISBI 2012 Rand error: 1 − the foreground-restricted Rand F-score.

    Shorthand for ``rand_scores(true, pred)["rand_error"]``; see
    :func:`rand_scores` for the definition.

    Parameters
    ----------
    true, pred : ndarray of int
        Label images of the same shape, 0 = background.

    Returns
    -------
    error : float
        In [0, 1]; 0 for identical segmentations of the true foreground.
    """
    return rand_scores(true, pred)["rand_error"]


def _simple_point_table() -> np.ndarray:
    """Lookup table: is a pixel with this 3x3 neighbourhood code simple?

    Topology: foreground 4-connected, background 8-connected (a valid 2D
    pair, and the connectivity the ISBI evaluation uses to label cells).
    A pixel is simple (can flip without changing the topology of either
    phase) iff T4(p, fg) = 1 and T8(p, bg) = 1 [1]_, where T4 counts the
    4-connected components of the foreground in the 8-neighbourhood that are
    4-adjacent to p, and T8 the 8-connected background components there.
    The test does not depend on the value of p itself.

    .. [1] Bertrand (1994). Simple points, topological numbers and geodesic
           neighborhoods in cubic grids. Pattern Recognit. Lett. 15(10).
    """
    table = np.zeros(256, dtype=bool)
    for code in range(256):
        bits = [(code >> k) & 1 for k in range(8)]
        fg = {_NEIGHBOURS[k] for k in range(8) if bits[k]}
        bg = {_NEIGHBOURS[k] for k in range(8) if not bits[k]}
        t4 = _count_components(fg, four=True, touching_centre=True)
        t8 = _count_components(bg, four=False, touching_centre=False)
        table[code] = t4 == 1 and t8 == 1
    return table


_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def _count_components(points: set, *, four: bool, touching_centre: bool) -> int:
    remaining = set(points)
    count = 0
    while remaining:
        stack = [remaining.pop()]
        component = set(stack)
        while stack:
            y, x = stack.pop()
            for q in list(remaining):
                dy, dx = abs(q[0] - y), abs(q[1] - x)
                if (dy + dx == 1) if four else max(dy, dx) == 1:
                    remaining.discard(q)
                    component.add(q)
                    stack.append(q)
        if not touching_centre or any(abs(y) + abs(x) == 1 for y, x in component):
            count += 1
    return count


_SIMPLE = _simple_point_table()


def _warp(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Topology-preserving warp of binary 2D `true` towards `pred`.

    Flips simple mismatched pixels of `true` until none is left. Pixels of
    one parity class (y % 2, x % 2) are never in each other's 3x3
    neighbourhood, so all simple ones of a class flip at once with the same
    result as flipping them one by one.
    """
    warped = np.pad(true, 1, constant_values=False)
    target = np.pad(pred, 1, constant_values=False)
    height, width = true.shape
    while True:
        flipped = 0
        for oy in (0, 1):
            for ox in (0, 1):
                code = np.zeros((height, width), dtype=np.uint8)
                for k, (dy, dx) in enumerate(_NEIGHBOURS):
                    code |= warped[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width].astype(
                        np.uint8
                    ) << np.uint8(k)
                inner = warped[1:-1, 1:-1]
                flip = (inner != target[1:-1, 1:-1]) & _SIMPLE[code]
                sub = np.zeros_like(flip)
                sub[oy::2, ox::2] = flip[oy::2, ox::2]
                n = int(np.count_nonzero(sub))
                if n:
                    inner[sub] = ~inner[sub]
                    flipped += n
        if not flipped:
            return warped[1:-1, 1:-1].copy()


def warping_error(true: np.ndarray, pred: np.ndarray) -> float:
    """ISBI 2012 warping error (Jain et al. 2010), 2D simple-point warping.

    The true binary image ``T`` is warped towards the prediction ``L`` by
    flipping only simple pixels (pixels whose flip changes no topology:
    no object is split, merged, created or deleted, no hole appears or
    vanishes), as long as a flip removes a disagreement. The error is the
    fraction of pixels where the warped ``T*`` still disagrees with ``L``
    [1]_: boundary shifts cost nothing, topological mistakes (splits,
    merges, spurious objects or holes) cost their pixels.

    Approximation, documented: Jain et al. flip the simple pixels in order
    of the prediction's confidence and Fiji's ``WarpingError`` (used by the
    challenge) checks 3D simple points; here a binary prediction has no
    confidence, so all simple disagreeing pixels are flipped in parallel
    sweeps (order-independent within a sweep, see ``_warp``), with
    foreground 4-connected and background 8-connected. The result is a
    local minimum of the same search; on the same inputs it may differ from
    Fiji's value by the few pixels whose flips depend on the order.

    Parameters
    ----------
    true, pred : ndarray
        Binary images of the same shape, non-zero = cell. 2D, or nD with every
        2D plane (last two axes) warped independently.

    Returns
    -------
    error : float
        Disagreeing pixels after warping / all pixels; in [0, 1].

    References
    ----------
    .. [1] Jain et al. (2010). Boundary learning by optimization with
           topological constraints. CVPR. :DOI:`10.1109/CVPR.2010.5539950`
    """
    true = np.asarray(true) != 0
    pred = np.asarray(pred) != 0
    _check_same_shape("true", true, "pred", pred)
    if true.ndim < 2:
        raise ValueError(f"`true` (shape {true.shape}) must have at least 2 axes (Y, X)")
    if true.size == 0:
        return 0.0
    return _warp_mismatches(true, pred) / true.size


def _warp_mismatches(true: np.ndarray, pred: np.ndarray) -> int:
    planes_t = true.reshape(-1, *true.shape[-2:])
    planes_p = pred.reshape(-1, *pred.shape[-2:])
    return sum(
        int(np.count_nonzero(_warp(t, p) != p)) for t, p in zip(planes_t, planes_p, strict=True)
    )


def isbi_errors(
    probability: np.ndarray,
    true: np.ndarray,
    *,
    thresholds: Sequence[float] | None = None,
    probability_of: str = "cell",
    warping: bool = False,
) -> dict:
    """ISBI 2012 headline errors: the best pixel/Rand(/warping) error over thresholds.

    The challenge scores a probability map by thresholding it, taking the
    connected components (4-connected) of the cell class as objects, and
    reporting ``1 -`` the maximal F-score over the thresholds, i.e. the
    minimal :func:`pixel_error` and :func:`rand_error` [1]_ (and the minimal
    :func:`warping_error`). Stacks are scored plane by plane, the pair and
    pixel counts summed over planes before the F-score (as the Fiji code
    does), so pairs never span two planes.

    Parameters
    ----------
    probability : ndarray of float, shape (Y, X) or (..., Y, X)
        Probability in [0, 1] of `probability_of`.
    true : ndarray, same shape
        Binary ground truth, non-zero = cell interior, 0 = membrane (ISBI
        2012 labels: 255 / 0). Instances = its 4-connected components.
    thresholds : sequence of float, optional
        A pixel is cell where the cell probability is ``> threshold``.
        Default 0.1, 0.2, ..., 0.9.
    probability_of : {"cell", "membrane"}, optional
        What `probability` gives; a membrane map is used as ``1 - probability``.
    warping : bool, optional
        Also compute the warping error (slower: about a second per 512² plane
        and threshold).

    Returns
    -------
    errors : dict
        ``pixel_error``, ``rand_error`` (and ``warping_error``): the minima
        (float); ``pixel_threshold``, ``rand_threshold``
        (``warping_threshold``): where they were reached; ``thresholds`` and
        ``pixel_errors``, ``rand_errors`` (``warping_errors``): every value.

    References
    ----------
    .. [1] Arganda-Carreras et al. (2015). Crowdsourcing the creation of image
           segmentation algorithms for connectomics. Front. Neuroanat. 9:142.
           :DOI:`10.3389/fnana.2015.00142`
    """
    probability = np.asarray(probability)
    if not np.issubdtype(probability.dtype, np.floating):
        raise ValueError(f"`probability` must be a float array, got dtype {probability.dtype}")
    if probability.ndim < 2:
        raise ValueError(
            f"`probability` (shape {probability.shape}) must have at least 2 axes (Y, X)"
        )
    true = np.asarray(true)
    _check_same_shape("probability", probability, "true", true)
    if not np.all(np.isfinite(probability)) or probability.min() < 0 or probability.max() > 1:
        raise ValueError("`probability` must be finite and in [0, 1]")
    if probability_of not in ("cell", "membrane"):
        raise ValueError(f"`probability_of` must be 'cell' or 'membrane', got {probability_of!r}")
    cell = probability if probability_of == "cell" else 1.0 - probability
    thresholds = [float(t) for t in (ISBI_THRESHOLDS if thresholds is None else thresholds)]
    if not thresholds:
        raise ValueError("`thresholds` must not be empty")

    plane_shape = true.shape[-2:]
    true_planes = (true != 0).reshape(-1, *plane_shape)
    true_labels = [mask_to_instances(t) for t in true_planes]
    cell_planes = cell.reshape(-1, *plane_shape)
    result: dict = {"thresholds": thresholds, "pixel_errors": [], "rand_errors": []}
    if warping:
        result["warping_errors"] = []
    for threshold in thresholds:
        pixel = np.zeros(3)
        pairs = np.zeros(3)
        mismatches = 0
        for t_mask, t_labels, c in zip(true_planes, true_labels, cell_planes, strict=True):
            p_mask = c > threshold
            pixel += _pixel_counts(t_mask, p_mask)
            pairs += _rand_counts(t_labels, mask_to_instances(p_mask))
            if warping:
                mismatches += int(np.count_nonzero(_warp(t_mask, p_mask) != p_mask))
        result["pixel_errors"].append(_pixel_error_from_counts(*pixel))
        result["rand_errors"].append(_rand_from_counts(*pairs)["rand_error"])
        if warping:
            result["warping_errors"].append(mismatches / true.size)
    for name in ("pixel", "rand", "warping"):
        if f"{name}_errors" in result:
            values = result[f"{name}_errors"]
            best = int(np.argmin(values))
            result[f"{name}_error"] = float(values[best])
            result[f"{name}_threshold"] = thresholds[best]
    return result


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

"""ISBI 2012: pixel, Rand and warping errors (part of :mod:`napari_unet.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._contingency import (
    ISBI_THRESHOLDS,
    _check_same_shape,
    _contingency,
    _pair,
    _ratio,
    mask_to_instances,
)

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

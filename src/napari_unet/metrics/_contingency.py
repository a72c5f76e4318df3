"""Validation and counting helpers (part of :mod:`napari_unet.metrics`)."""

from __future__ import annotations

import numpy as np

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

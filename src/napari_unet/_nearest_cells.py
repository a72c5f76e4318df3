"""Distances to the two nearest distinct cells, compiled with numba.

A separable exact Euclidean distance transform that keeps, for every pixel, the
two nearest *distinct* labels and their squared distances instead of one. It
is :func:`napari_unet.weights.weight_map`'s fast path; this module imports numba,
so :mod:`napari_unet.weights` imports it only when a weight map is first
computed (``import napari_unet`` does not pay for numba), and uses its SciPy
path when numba cannot be imported (``AVAILABLE`` is False).

**Passes.** The first pass sweeps axis 0 down and up: a pixel's nearest label
along its line is itself (when labelled), else the nearest label of the pixel
before it, one step further; its nearest *other* label is the first of the
previous pixel's two whose id differs. Each later axis then combines, for every
pixel, the two entries ``(label, v)`` of the pixels on its line at offset
``t`` as ``(label, v + (t * spacing)**2)`` and keeps the two smallest with
distinct labels, scanning ``t = 0, 1, 2, ...`` until ``(t * spacing)**2``
exceeds the second value found (or the cutoff squared). The last axis does
this at background pixels only and adds the border term there.

**Why two entries per pixel are enough.** Call a pixel's entries *sound* when
each is a true squared distance to a pixel of that label in the space the
passes have covered so far, and *complete* when for every label ``L`` whose
distance ``d_L`` is within the cutoff either ``L`` is listed with a value
``<= d_L``, or both entries are ``<= d_L``. The first pass gives sound and
complete entries (along one axis, a label's nearest pixel is above or below,
and the sweep's two entries each way have this property). A later pass keeps
them: a label's nearest pixel in the larger space lies on some line position
``x'``, whose entries list it with a value ``<= d_L`` (then its candidate is
``<= d_L``) or hold two other labels that are, and the two smallest distinct
candidates keep that property; stopping the scan when ``(t * s)**2`` exceeds
the second value found drops only candidates larger than both entries. Sound
and complete entries, sorted, are the exact two smallest per-label distances:
the first is ``<= d_1`` by completeness and a true distance by soundness, and
the second is ``<= d_2`` (two distinct labels at most ``d_2`` away are listed)
and ``>= d_2`` (two distinct labels cannot both be nearer than ``d_2``).
Distances beyond the cutoff may come out larger (up to inf), which
:func:`napari_unet.weights.weight_map`'s Notes allow.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from numba import njit
except ImportError:
    # keep the module importable (doctest collection); `weights` checks AVAILABLE
    # and uses its SciPy path, these functions are then never called
    AVAILABLE = False

    def njit(*args, **kwargs):
        return lambda function: function

else:
    AVAILABLE = True

__all__ = ["AVAILABLE", "add_border_term"]


@njit(cache=True, inline="always")
def _insert(l1, l2, v1, v2, label, value):
    """Two nearest distinct ``(l1, v1), (l2, v2)``, ``v1 <= v2``, with one more candidate."""
    if label == l1:
        return l1, l2, min(v1, value), v2
    if value < v1:
        return label, l1, value, v1
    if label == l2:
        return l1, l2, v1, min(v2, value)
    if value < v2:
        return l1, label, v1, value
    return l1, l2, v1, v2


@njit(cache=True, inline="always")
def _entries(in_l, in_v, a, i, b):
    """A pixel's two entries ``(l1, l2, v1, v2)`` in (a, n, b, 2) arrays."""
    return in_l[a, i, b, 0], in_l[a, i, b, 1], in_v[a, i, b, 0], in_v[a, i, b, 1]


@njit(cache=True, inline="always")
def _merge_offset(in_l, in_v, a, i, t, b, h, l1, l2, v1, v2):
    """Merge the entries of the pixels ``t`` before and after ``i`` (offset cost ``h``)."""
    n = in_l.shape[1]
    for p in (i - t, i + t):
        if 0 <= p < n:
            # entries are sorted, and one not below v2 changes nothing
            for k in range(2):
                value = in_v[a, p, b, k] + h
                if value >= v2:
                    break
                l1, l2, v1, v2 = _insert(l1, l2, v1, v2, in_l[a, p, b, k], value)
    return l1, l2, v1, v2


@njit(cache=True)
def _sweep(labels, step):
    """Two nearest distinct labels along axis 0 of (n, m) ``labels``: (n, m, 2) arrays.

    Values are squared distances; label 0 with value inf where there is none.
    """
    n, m = labels.shape
    out_l = np.empty((n, m, 2), dtype=labels.dtype)
    out_v = np.empty((n, m, 2))
    # down: the entries of the pixel above, one step further (distances, not squared)
    for i in range(n):
        for j in range(m):
            c = labels[i, j]
            if i == 0:
                # nothing above: an unlabelled pixel starts with no entries
                out_l[i, j, 0], out_l[i, j, 1] = c, 0
                out_v[i, j, 0], out_v[i, j, 1] = (0.0 if c > 0 else np.inf), np.inf
            elif c > 0:
                k = 0 if out_l[i - 1, j, 0] != c else 1
                out_l[i, j, 0], out_l[i, j, 1] = c, out_l[i - 1, j, k]
                out_v[i, j, 0], out_v[i, j, 1] = 0.0, out_v[i - 1, j, k] + step
            else:
                for k in range(2):
                    out_l[i, j, k] = out_l[i - 1, j, k]
                    out_v[i, j, k] = out_v[i - 1, j, k] + step
    # up, kept for one row at a time and merged into the down entries
    up_l = np.zeros((m, 2), dtype=labels.dtype)
    up_v = np.full((m, 2), np.inf)
    for i in range(n - 1, -1, -1):
        for j in range(m):
            c = labels[i, j]
            if c > 0:
                k = 0 if up_l[j, 0] != c else 1
                up_l[j, 1] = up_l[j, k]
                up_v[j, 1] = up_v[j, k] + step
                up_l[j, 0] = c
                up_v[j, 0] = 0.0
            else:
                up_v[j, 0] += step
                up_v[j, 1] += step
            l1, l2, v1, v2 = out_l[i, j, 0], out_l[i, j, 1], out_v[i, j, 0], out_v[i, j, 1]
            for k in range(2):
                if up_l[j, k] > 0:
                    l1, l2, v1, v2 = _insert(l1, l2, v1, v2, up_l[j, k], up_v[j, k])
            out_l[i, j, 0], out_l[i, j, 1] = l1, l2
            out_v[i, j, 0], out_v[i, j, 1] = v1 * v1, v2 * v2
    return out_l, out_v


@njit(cache=True)
def _scan(in_l, in_v, step, limit):
    """Combine the entries along axis 1 of (a, n, b, 2) arrays (squared distances)."""
    a_n, n, b_n, _ = in_l.shape
    out_l = np.empty_like(in_l)
    out_v = np.empty_like(in_v)
    for a in range(a_n):
        for i in range(n):
            for b in range(b_n):
                l1, l2, v1, v2 = _entries(in_l, in_v, a, i, b)
                for t in range(1, n):
                    h = (t * step) ** 2
                    if h > v2 or h > limit:
                        break
                    l1, l2, v1, v2 = _merge_offset(in_l, in_v, a, i, t, b, h, l1, l2, v1, v2)
                out_l[a, i, b, 0], out_l[a, i, b, 1] = l1, l2
                out_v[a, i, b, 0], out_v[a, i, b, 1] = v1, v2
    return out_l, out_v


@njit(cache=True)
def _scan_border(in_l, in_v, step, labels, weights, w0, sigma, cutoff):
    """Last axis: add the border term to ``weights`` at background pixels.

    (a, n, b, 2) entries, (a, n, b) ``labels`` and float64 ``weights``. A
    pixel's term is skipped when its distance sum exceeds ``cutoff`` (then the
    term is below the tolerance ``cutoff`` was derived from). The scan stops
    early where that is known: once it has passed ``cutoff / 2``, the nearest
    cell of a pixel whose sum is within ``cutoff`` has been found (``d1 <=
    cutoff / 2``), and its second cell is within ``cutoff - d1``.
    """
    a_n, n, b_n, _ = in_l.shape
    half = 0.5 * cutoff
    two_sigma2 = 2.0 * sigma * sigma
    for a in range(a_n):
        for i in range(n):
            for b in range(b_n):
                if labels[a, i, b] != 0:
                    continue
                l1, l2, v1, v2 = _entries(in_l, in_v, a, i, b)
                for t in range(1, n):
                    reach = t * step
                    h = reach * reach
                    if h > v2 or reach > max(half, cutoff - math.sqrt(v1)):
                        break
                    l1, l2, v1, v2 = _merge_offset(in_l, in_v, a, i, t, b, h, l1, l2, v1, v2)
                total = math.sqrt(v1) + math.sqrt(v2)
                if total <= cutoff:
                    weights[a, i, b] += w0 * math.exp(-(total * total) / two_sigma2)


def add_border_term(
    weights: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, ...],
    w0: float,
    sigma: float,
    cutoff: float,
) -> None:
    """Add ``w0 exp(-(d1 + d2)**2 / (2 sigma**2))`` to ``weights`` at background pixels.

    Parameters
    ----------
    weights : (Y, X) or (Z, Y, X) ndarray of float64, C-contiguous
        Updated in place.
    labels : ndarray of int
        Same shape: cells, 0 = background, ids at most ``labels.size``
        (see ``weights._compact``).
    spacing : tuple of float
        Pixel size per axis.
    w0, sigma : float
        The border term's height and width (``sigma`` in ``spacing`` units).
    cutoff : float
        ``border_cutoff(w0, sigma)``: pixels whose distance sum exceeds it get
        no term (it is below the tolerance there).
    """
    shape = labels.shape
    if not (weights.dtype == np.float64 and weights.flags.c_contiguous):
        raise ValueError("`weights` must be a C-contiguous float64 array")
    small = np.int32 if labels.size < np.iinfo(np.int32).max else np.int64
    lab = np.ascontiguousarray(labels, dtype=small)
    ent_l, ent_v = _sweep(lab.reshape(shape[0], -1), float(spacing[0]))
    limit = cutoff * cutoff
    for axis in range(1, len(shape)):
        # view the entries as (a, n, b, 2), the axis in the middle
        view = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]), 2)
        args = (ent_l.reshape(view), ent_v.reshape(view), float(spacing[axis]))
        if axis < len(shape) - 1:
            ent_l, ent_v = _scan(*args, limit)
        else:
            _scan_border(
                *args, lab.reshape(view[:3]), weights.reshape(view[:3]), w0, sigma, cutoff
            )

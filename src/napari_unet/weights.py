"""Pixel-wise loss weights and training targets from instance labels.

The U-Net paper [1]_ (section 3, figure 3) trains with a weight map that
balances the class frequencies and puts a large weight on the thin background
gaps between touching cells, so that the network learns to separate them:

.. math::

    w(x) = w_c(x) + w_0 \\exp\\left(-\\frac{(d_1(x) + d_2(x))^2}{2\\sigma^2}\\right)

This module computes that map exactly (to a stated tolerance) in time that
grows with the number of pixels, and turns instance labels into the semantic
targets (background / cell / separating border) the network is trained on.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
       for Biomedical Image Segmentation", MICCAI 2015.
       :DOI:`10.1007/978-3-319-24574-4_28`
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["border_cutoff", "instances_to_classes", "separation_borders", "weight_map"]

#: Largest absolute error allowed on the border term before rounding to float32.
#: Well below the 1e-4 the tests ask for, so float32 rounding of the output
#: (relative 6e-8) stays the dominant error for any reasonable ``w0``.
BORDER_TOLERANCE = 1e-6

BACKGROUND, CELL, BORDER = 0, 1, 2


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(
            f"`{name}` must be a 2D (Y, X) or 3D (Z, Y, X) array of instance ids, "
            f"got {labels.ndim} dimensions (shape {labels.shape})"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`{name}` must have an integer dtype (0 = background, 1..n = cells), "
            f"got {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"`{name}` must not contain negative ids, got minimum {labels.min()}")
    return labels


def _compact(labels: np.ndarray) -> np.ndarray:
    """Labels as a platform integer array whose largest id is at most its size.

    ``ndimage.find_objects`` returns one entry per id up to the largest, so
    sparse ids such as 2**40 are renumbered first; the order of ids is kept.
    """
    top = int(labels.max()) if labels.size else 0
    if top <= labels.size:
        return labels.astype(np.intp, copy=False)
    ids, inverse = np.unique(labels, return_inverse=True)
    # the background keeps id 0 so that `labels == 0` still means background
    offset = 0 if ids[0] == 0 else 1
    return (inverse.reshape(labels.shape) + offset).astype(np.intp)


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)))
    if len(spacing) != ndim:
        raise ValueError(
            f"`spacing` must have one value per axis of `labels` ({ndim}), "
            f"got {len(spacing)}: {spacing}"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"`spacing` values must be finite and positive, got {spacing}")
    return spacing


def border_cutoff(w0: float, sigma: float, *, tolerance: float = BORDER_TOLERANCE) -> float:
    """Distance sum beyond which the border term is below ``tolerance``.

    Solves ``w0 * exp(-D**2 / (2 sigma**2)) = tolerance`` for ``D``.

    Parameters
    ----------
    w0 : float
        Border weight (non-negative).
    sigma : float
        Border width, in the units of the distances (positive).
    tolerance : float, optional
        Largest border term that may be treated as zero.

    Returns
    -------
    cutoff : float
        ``sigma * sqrt(2 ln(w0 / tolerance))``, or 0 when ``w0 <= tolerance``
        (then the border term never exceeds the tolerance).

    Examples
    --------
    >>> round(border_cutoff(10.0, 5.0), 2)
    28.39
    """
    if w0 <= tolerance:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tolerance))


def _two_nearest(
    labels: np.ndarray, spacing: tuple[float, ...], cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest cell, exact up to ``cutoff``.

    Values above ``cutoff`` may be replaced by larger ones (up to inf); the
    argument is in :func:`weight_map`'s Notes.
    """
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    if cutoff <= 0:
        return d1, d2
    # grow each bounding box by the cutoff, measured per axis in that axis' units
    grow = [math.ceil(cutoff / s) for s in spacing]
    for cell, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        region = tuple(
            slice(max(b.start - g, 0), min(b.stop + g, n))
            for b, g, n in zip(box, grow, labels.shape, strict=True)
        )
        # the whole cell lies inside its box, so distances in the crop are exact
        dist = ndi.distance_transform_edt(labels[region] != cell, sampling=spacing)
        near, second = d1[region], d2[region]
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def _compiled_border_term() -> Callable[..., None] | None:
    """numba's ``add_border_term``, or None when numba cannot be imported.

    Imported on the first weight map, not with the package (numba's import
    costs a few hundred milliseconds).
    """
    from . import _nearest_cells

    return _nearest_cells.add_border_term if _nearest_cells.AVAILABLE else None


def _add_border_term(
    weights: np.ndarray, labels: np.ndarray, spacing: tuple[float, ...], w0: float, sigma: float
) -> None:
    """Add the border term to float64 ``weights`` at the background pixels of ``labels``."""
    cutoff = border_cutoff(w0, sigma)
    if cutoff <= 0 or labels.size == 0:
        return
    compiled = _compiled_border_term()
    if compiled is not None:
        compiled(weights, labels, spacing, w0, sigma, cutoff)
        return
    d1, d2 = _two_nearest(labels, spacing, cutoff)
    near = (labels == 0) & np.isfinite(d2)
    total = d1[near] + d2[near]
    weights[near] += w0 * np.exp(-(total * total) / (2.0 * sigma * sigma))


def _class_weights(
    classes: np.ndarray,
    annotated: np.ndarray | None,
    class_weights: str | Mapping[int, float] | None,
) -> np.ndarray:
    """Per-pixel w_c for a (Y, X) / (Z, Y, X) map of classes 0 and 1."""
    if class_weights is None:
        return np.ones(classes.shape, dtype=np.float64)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"`class_weights` must be 'balanced', None or a dict class -> weight, "
                f"got {class_weights!r}"
            )
        counted = classes if annotated is None else classes[annotated]
        counts = np.bincount(counted.ravel(), minlength=2).astype(np.float64)
        present = np.count_nonzero(counts)
        table = np.ones(2)
        if present:
            with np.errstate(divide="ignore"):
                table = np.where(counts > 0, counts.sum() / (present * counts), 0.0)
        return table[classes]
    if not isinstance(class_weights, Mapping):
        raise ValueError(
            "`class_weights` must be 'balanced', None or a dict class -> weight, "
            f"got {type(class_weights).__name__}"
        )
    missing = {BACKGROUND, CELL} - set(class_weights)
    if missing:
        raise ValueError(
            f"`class_weights` must give a weight for class 0 (background) and 1 (cell); "
            f"missing {sorted(missing)}"
        )
    table = np.array([float(class_weights[BACKGROUND]), float(class_weights[CELL])])
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError(f"`class_weights` values must be finite and >= 0, got {table.tolist()}")
    return table[classes]


def weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Mapping[int, float] | None = "balanced",
    spacing: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The U-Net weight map: class balance plus a border term between cells.

    For a background pixel x,
    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))``, where
    ``d1`` and ``d2`` are the Euclidean distances to the nearest and the
    second-nearest cell. Cell pixels get ``w_c(x)`` only. With fewer than two
    cells the border term is 0.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) ndarray of int
        Cell instances: 0 is background, each positive id one cell. Ids need
        not be consecutive.
    w0 : float, optional
        Height of the border term (the paper uses 10).
    sigma : float, optional
        Width of the border term, in ``spacing`` units (the paper uses about
        5 pixels).
    class_weights : {"balanced"}, dict or None, optional
        ``w_c`` for the two classes, 0 (background) and 1 (cell).
        ``"balanced"``: inverse class frequency over the annotated pixels,
        ``w_c(k) = n / (K * n_k)`` with ``n`` annotated pixels, ``n_k`` of
        them in class ``k`` and ``K`` classes present, so that ``w_c`` averages
        to 1 over the annotated pixels (and is 1 everywhere when both classes
        are equally frequent). A dict ``{0: w_background, 1: w_cell}`` gives
        the weights directly. ``None``: ``w_c = 1``.
    spacing : sequence of float, optional
        Pixel size along each axis, for anisotropic stacks, e.g.
        ``(2.0, 0.5, 0.5)`` for 2 µm between planes and 0.5 µm pixels.
        Distances, and so ``sigma``, are in these units. Default: 1 per axis.
    mask : ndarray of bool, optional
        Annotated pixels, same shape as ``labels``. Pixels outside the mask get
        weight 0, so that a loss ignores them (sparse annotation); class
        frequencies are counted inside the mask only. Distances to cells are
        measured on all of ``labels``.

    Returns
    -------
    weights : ndarray of float32
        Same shape as ``labels``; non-negative.

    Raises
    ------
    ValueError
        For non-integer or negative labels, a wrong number of dimensions,
        a ``mask`` of another shape, a ``spacing`` of the wrong length or with
        non-positive values, ``sigma <= 0``, ``w0 < 0`` or bad ``class_weights``.

    See Also
    --------
    separation_borders, instances_to_classes, napari_unet.losses.weighted_cross_entropy

    Notes
    -----
    **Exactness.** The reference computes one distance transform per cell over
    the whole image and keeps the two smallest values per pixel, which costs
    pixels x cells. Both ways used here look only within
    ``D = border_cutoff(w0, sigma) = sigma * sqrt(2 ln(w0 / tol))``
    (``tol = 1e-6``) of each pixel, so their cost grows with the number of
    pixels (for a fixed cell size and ``sigma``), and the result equals the
    reference up to ``tol`` on the border term (plus float32 rounding of the
    output):

    - With numba installed, a compiled separable distance transform keeps the
      two nearest distinct cells of every pixel (``_nearest_cells``, which
      also argues why two per pixel suffice) and scans at most ``D`` along
      each axis. Where ``d1 + d2 <= D`` both are exact; elsewhere the term,
      below ``tol``, is left out.
    - Without numba, each cell's SciPy distance transform is computed only in
      its bounding box grown by ``D`` along every axis. A pixel outside a
      cell's grown box is farther than ``D`` from it along one axis, hence in
      Euclidean distance; inside the box the distance is exact, because the
      whole cell lies in the box. If the true ``d2(x) <= D``, the two nearest
      cells are both within ``D`` of ``x``, so ``d1`` and ``d2`` are exact.
      Otherwise the computed second distance is a distance to some other cell
      or infinity, both ``>= d2(x) > D``, so both the computed and the true
      border terms lie in ``[0, w0 exp(-D**2 / (2 sigma**2))] = [0, tol]``.

    The bound holds for every ``w0`` and ``sigma`` since ``D`` is derived from
    them. Large ``sigma`` relative to the cell size makes the scans (and the
    run time) grow towards the reference's.

    Examples
    --------
    >>> labels = np.zeros((5, 7), dtype=np.uint16)
    >>> labels[:, :3] = 1
    >>> labels[:, 4:] = 2
    >>> w = weight_map(labels, w0=10.0, sigma=5.0, class_weights=None)
    >>> round(float(w[2, 3]), 4)  # d1 = d2 = 1: 1 + 10 * exp(-4 / 50)
    10.2312
    >>> float(w[2, 0])
    1.0
    """
    labels = _check_labels(labels)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be a positive number, got {sigma}")
    if not (math.isfinite(w0) and w0 >= 0):
        raise ValueError(f"`w0` must be a non-negative number, got {w0}")
    spacing = _check_spacing(spacing, labels.ndim)
    annotated = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != labels.shape:
            raise ValueError(
                f"`mask` (shape {mask.shape}) must have the same shape as "
                f"`labels` (shape {labels.shape})"
            )
        annotated = mask.astype(bool, copy=False)

    labels = _compact(labels)
    background = labels == 0
    weights = _class_weights((~background).astype(np.intp), annotated, class_weights)

    _add_border_term(weights, labels, spacing, w0, sigma)

    if annotated is not None:
        weights[~annotated] = 0.0
    return weights.astype(np.float32)


def _footprint_extremes(labels: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest cell id in each pixel's (2 radius + 1)**ndim box."""
    size = 2 * radius + 1
    absent = labels.max() + 1 if labels.size else 1
    lowest = ndi.minimum_filter(np.where(labels > 0, labels, absent), size=size, mode="nearest")
    highest = ndi.maximum_filter(labels, size=size, mode="nearest")
    lowest[lowest == absent] = 0
    return lowest, highest


def separation_borders(
    labels: np.ndarray, *, radius: int = 1, include_cells: bool = True
) -> np.ndarray:
    """Pixels that separate two different cells (the paper's figure 3c).

    A pixel is on a separation border when its ``(2 radius + 1)**ndim`` box
    (the pixel and its neighbours up to ``radius`` pixels away along every
    axis, diagonals included) contains at least two different cell ids.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) ndarray of int
        Cell instances, 0 = background.
    radius : int, optional
        Neighbourhood radius in pixels (>= 1). With ``radius=1`` background
        gaps of 1 pixel are marked, and where two cells touch, the outermost
        pixel of each cell is, giving a 2-pixel line (see Notes).
    include_cells : bool, optional
        If True (default), also mark cell pixels that have another cell within
        ``radius``: the shared edge of touching cells, which
        :func:`instances_to_classes` carves out of the cells. If False, only
        background pixels (the gaps between close cells) are marked.

    Returns
    -------
    borders : ndarray of bool
        Same shape as ``labels``.

    See Also
    --------
    instances_to_classes, weight_map

    Notes
    -----
    A background pixel is marked when two different cells both lie within
    ``radius`` pixels (Chebyshev distance) of it. A straight gap of ``g``
    background pixels between two cells is marked completely when
    ``g <= radius``, only in its middle when ``radius < g <= 2 radius - 1``,
    and not at all when wider. Cell pixels are marked when another cell is
    within ``radius``, so touching cells lose ``radius`` pixels each along the
    shared edge. The neighbourhood is counted in pixels, not in physical
    units: for anisotropic stacks it is the same along every axis.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2, 2],
    ...                    [1, 1, 2, 2, 2]])
    >>> separation_borders(labels).astype(int)
    array([[0, 1, 1, 0, 0],
           [0, 1, 1, 0, 0]])
    >>> separation_borders(labels, include_cells=False).astype(int)
    array([[0, 0, 1, 0, 0],
           [0, 0, 0, 0, 0]])
    """
    labels = _compact(_check_labels(labels))
    if int(radius) != radius or radius < 1:
        raise ValueError(f"`radius` must be a positive integer, got {radius}")
    lowest, highest = _footprint_extremes(labels, int(radius))
    borders = (lowest > 0) & (lowest != highest)
    if not include_cells:
        borders &= labels == 0
    return borders


def instances_to_classes(
    labels: np.ndarray, *, border_class: bool = True, radius: int = 1
) -> np.ndarray:
    """Semantic training targets from cell instances.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) ndarray of int
        Cell instances, 0 = background.
    border_class : bool, optional
        If True (default), separation borders become class 2, giving three
        classes: 0 background, 1 cell, 2 separating border. If False they
        become background, giving two classes (the paper's setting, where
        annotations leave a background gap between touching cells).
    radius : int, optional
        Border width parameter passed to :func:`separation_borders`.

    Returns
    -------
    classes : ndarray of uint8
        Same shape as ``labels``.

    See Also
    --------
    separation_borders, weight_map

    Notes
    -----
    Border pixels include the cell pixels on an edge shared by two touching
    cells (``separation_borders(labels, radius=radius, include_cells=True)``),
    and those are carved out of the cells: with ``radius=1`` each cell loses
    its one-pixel rim where it touches another cell, so the cell class of
    touching cells never forms a single connected region, and the instances
    can be recovered from a prediction by connected components of the cell
    class, or by a seeded watershed that grows them back over the border.

    Examples
    --------
    >>> labels = np.array([[1, 1, 1, 2, 2, 2],
    ...                    [1, 1, 1, 2, 2, 2]])
    >>> instances_to_classes(labels)
    array([[1, 1, 2, 2, 1, 1],
           [1, 1, 2, 2, 1, 1]], dtype=uint8)
    >>> instances_to_classes(labels, border_class=False)
    array([[1, 1, 0, 0, 1, 1],
           [1, 1, 0, 0, 1, 1]], dtype=uint8)
    """
    labels = _check_labels(labels)
    classes = (labels > 0).astype(np.uint8)
    borders = separation_borders(labels, radius=radius, include_cells=True)
    classes[borders] = BORDER if border_class else BACKGROUND
    return classes

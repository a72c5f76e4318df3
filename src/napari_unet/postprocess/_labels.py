"""Probabilities to instance labels (part of :mod:`napari_unet.postprocess`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_METHODS = ("watershed", "components", "seeded")
_TOLERANCE = 1e-5
# Seeds must be confident interior: at 0.5, blurred thin borders let seeds of
# touching cells join through the border (synthetic touching cells: AP@0.5
# 0.93 at 0.5, 1.0 at 0.7).
_SEED_THRESHOLD = 0.7


def _validate_probs(probs: np.ndarray) -> None:
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(
            f"`probs` must be a float array of probabilities, got dtype {probs.dtype}"
        )
    if probs.ndim < 3:
        raise ValueError(
            f"`probs` (shape {probs.shape}) must have shape (num_classes, Y, X) or "
            "(num_classes, ..., Y, X)"
        )
    if probs.shape[0] not in (2, 3):
        raise ValueError(
            f"`probs` (shape {probs.shape}) must have 2 classes (background, cell) or 3 "
            f"(background, cell, border) on axis 0, got {probs.shape[0]}"
        )
    if probs.size == 0:
        raise ValueError(f"`probs` (shape {probs.shape}) is empty")
    if not np.all(np.isfinite(probs)):
        raise ValueError("`probs` contains NaN or infinite values")
    low, high = float(probs.min()), float(probs.max())
    # Sums of softmax outputs may round just past 1.
    if low < -_TOLERANCE or high > 1.0 + _TOLERANCE:
        raise ValueError(f"`probs` must lie in [0, 1], got values in [{low}, {high}]")


def probabilities_to_labels(
    probs: np.ndarray,
    *,
    method: str = "watershed",
    threshold: float = 0.5,
    seed_threshold: float | None = None,
    min_size: int = 16,
    min_seed_size: int = 4,
    seed_erosion: int = 0,
    split_depth: float = 2.0,
    fill_holes: bool = True,
    spatial_dims: int | None = None,
) -> np.ndarray:
    """Turn class probabilities into instance labels.

    Parameters
    ----------
    probs : ndarray of float, shape (num_classes, *leading, *spatial)
        Probabilities in [0, 1] (up to a rounding tolerance of 1e-5),
        classes on axis 0: 0 = background, 1 = cell
        interior, 2 = separating border (optional). The last
        ``spatial_dims`` axes are labelled together; every index of the
        ``leading`` axes (e.g. T, or Z for independent planes) is labelled on
        its own, e.g. (C, Y, X), (C, Z, Y, X), (C, T, Z, Y, X).
    method : {"watershed", "components"}, optional
        ``"watershed"`` (default) separates touching cells. With 3 classes:
        seeds are the connected components of confident cell interior
        (``probs[1] > seed_threshold``, at least `min_seed_size` pixels),
        flooded by a watershed on ``1 - probs[1]`` restricted to the
        foreground ``probs[1] + probs[2] > threshold``, so border pixels are
        given back to the cells on either side; foreground parts that no
        seed reaches become cells of their own. With 2 classes: the
        foreground ``probs[1] > threshold`` is split by a watershed on its
        distance transform, seeded at its maxima deeper than `split_depth`
        (h-maxima, so a flat ridge is one seed; every component gets at least
        one seed). ``"components"``: connected
        components only, of ``probs[1] > threshold`` (the border class then
        stays background). ``"seeded"``: seeds are the connected components
        of confident cell interior (``probs[1] > seed_threshold``, at least
        `min_seed_size` pixels; smaller ones are flooded by their
        neighbours), grown by a watershed on ``1 - probs[1]`` over the
        foreground (as ``"watershed"`` with 3 classes, and for 2-class
        models too) until they meet, with a one-pixel background line where
        they meet: a gap in a membrane is closed along the probability's
        valley and every cell stays its own 4-connected component
        (membrane models, e.g. ISBI 2012, with a low `threshold`).
    threshold : float, optional
        Foreground threshold in (0, 1).
    seed_threshold : float, optional
        Cell-interior threshold for watershed seeds (3 classes, or
        ``"seeded"``); default
        ``max(threshold, 0.7)``. Raise it when touching cells merge, lower it
        when cells split.
    min_size : int, optional
        Objects smaller than this (pixels or voxels, after hole filling) are
        removed.
    seed_erosion : int, optional
        ``"seeded"``: the confident interior is first eroded by a disc (ball)
        of this radius in pixels, so that two cells joined by a thin
        confident bridge give two seeds; the growth gives the width back.
    min_seed_size : int, optional
        Seeds smaller than this are dropped (3 classes, or ``"seeded"``), so that noise in a
        border does not cut a cell.
    split_depth : float, optional
        2-class watershed: two touching cells are split when the neck between
        them is at least this much (in pixels) narrower than each cell's
        half-width. Larger values split less.
    fill_holes : bool, optional
        Fill holes inside each object (per object, so a gap enclosed by two
        touching cells is not filled).
    spatial_dims : {2, 3}, optional
        Number of trailing axes labelled together: 2 labels every (Y, X)
        plane independently, 3 every (Z, Y, X) volume. Default: all axes
        after the class axis, which must then be 2 or 3.

    Returns
    -------
    labels : ndarray of uint32, shape ``probs.shape[1:]``
        0 = background, 1..N = objects, numbered sequentially over the whole
        array (planes labelled independently never share an id),
        connectivity 1 (4-neighbourhood in 2D, 6 in 3D).

    Raises
    ------
    ValueError
        If `probs` is not a finite float array in [0, 1] with 2 or 3 classes
        on axis 0, or an option is out of range.

    See Also
    --------
    napari_unet.metrics.average_precision : score the result against truth.

    Notes
    -----
    Seeded watershed from confident interiors follows the post-processing of
    border-class (three-class) U-Nets, e.g. Caicedo et al. (2019) for DSB
    2018 nuclei; the border class itself is the U-Net paper's separating
    border [1]_.

    References
    ----------
    .. [1] Ronneberger, Fischer, Brox (2015). U-Net: Convolutional networks
           for biomedical image segmentation. MICCAI.
           :DOI:`10.1007/978-3-319-24574-4_28`

    Examples
    --------
    >>> probs = np.zeros((2, 8, 8))
    >>> probs[1, 1:4, 1:4] = probs[1, 5:8, 5:8] = 1.0
    >>> probs[0] = 1.0 - probs[1]
    >>> labels = probabilities_to_labels(probs, min_size=1, method="components")
    >>> labels.dtype.name, int(labels.max())
    ('uint32', 2)
    """
    probs = np.asarray(probs)
    _validate_probs(probs)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1), got {threshold}")
    if seed_threshold is None:
        seed_threshold = max(threshold, _SEED_THRESHOLD)
    elif not 0.0 < seed_threshold < 1.0:
        raise ValueError(f"`seed_threshold` must be in (0, 1), got {seed_threshold}")
    if min_size < 0 or min_seed_size < 0 or seed_erosion < 0 or not split_depth > 0:
        raise ValueError(
            "`min_size`, `min_seed_size` and `seed_erosion` must be >= 0 and `split_depth` > 0, "
            f"got {min_size}, {min_seed_size}, {seed_erosion}, {split_depth}"
        )
    image_ndim = probs.ndim - 1
    spatial_dims = _resolve_spatial_dims(probs.shape, spatial_dims, "probs")

    out_shape = probs.shape[1:]
    spatial = out_shape[image_ndim - spatial_dims :]
    flat = probs.reshape(probs.shape[0], -1, *spatial)
    labels = np.zeros((flat.shape[1], *spatial), dtype=np.uint32)
    offset = 0
    for index in range(flat.shape[1]):
        part = _label_one(
            flat[:, index],
            method=method,
            threshold=threshold,
            seed_threshold=seed_threshold,
            min_size=min_size,
            min_seed_size=min_seed_size,
            seed_erosion=seed_erosion,
            split_depth=split_depth,
            fill_holes=fill_holes,
        )
        count = int(part.max())
        labels[index] = np.where(part > 0, part.astype(np.uint32) + np.uint32(offset), 0)
        offset += count
    return labels.reshape(out_shape)


def _resolve_spatial_dims(shape: tuple[int, ...], spatial_dims: int | None, name: str) -> int:
    """How many trailing axes of (classes, ...) probabilities form one image."""
    image_ndim = len(shape) - 1
    if spatial_dims is None:
        if image_ndim not in (2, 3):
            raise ValueError(
                f"`{name}` (shape {shape}) has {image_ndim} axes after the class axis: "
                "pass `spatial_dims` (2 or 3) to say how many trailing axes form one image"
            )
        return image_ndim
    if spatial_dims not in (2, 3) or spatial_dims > image_ndim:
        raise ValueError(
            f"`spatial_dims` must be 2 or 3 and at most {image_ndim} for `{name}` of shape "
            f"{shape}, got {spatial_dims}"
        )
    return spatial_dims


def _label_one(
    probs: np.ndarray,
    *,
    method: str,
    threshold: float,
    seed_threshold: float,
    min_size: int,
    min_seed_size: int,
    seed_erosion: int,
    split_depth: float,
    fill_holes: bool,
) -> np.ndarray:
    """Label one image (2D or 3D); returns sequential int32 labels."""
    from skimage.measure import label
    from skimage.segmentation import watershed

    footprint = ndi.generate_binary_structure(probs.ndim - 1, 1)
    cell = probs[1]
    if method == "components":
        labels = label(cell > threshold, connectivity=1)
    elif method == "seeded":
        foreground = (cell + probs[2] if probs.shape[0] == 3 else cell) > threshold
        core = (cell > seed_threshold) & foreground
        if seed_erosion:  # distance to the nearest non-core pixel (image edges are not)
            core = ndi.distance_transform_edt(core) > seed_erosion
        labels = _grow_seeds(
            cell, foreground, core, min_seed_size=min_seed_size, footprint=footprint
        )
    elif probs.shape[0] == 3:
        foreground = (cell + probs[2]) > threshold
        seeds = label((cell > seed_threshold) & foreground, connectivity=1)
        seeds = _remove_small(seeds, min_seed_size)
        labels = watershed(1.0 - cell, markers=seeds, mask=foreground, connectivity=footprint)
        # Foreground that no seed reaches (e.g. a small cell whose interior
        # never got confident) would vanish: keep it as cells of its own.
        orphans = label(foreground & (labels == 0), connectivity=1)
        labels = np.where(orphans > 0, orphans + labels.max(), labels)
    else:
        foreground = cell > threshold
        labels = _split_by_distance(foreground, split_depth=split_depth, footprint=footprint)
    if fill_holes:
        labels = _fill_holes(labels, keep_apart=method == "seeded")
    labels = _remove_small(labels, min_size)
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32, copy=False))[0]


def _grow_seeds(
    cell: np.ndarray,
    foreground: np.ndarray,
    core: np.ndarray,
    *,
    min_seed_size: int,
    footprint: np.ndarray,
) -> np.ndarray:
    """Confident interiors grown over the foreground, a one-pixel line apart."""
    from skimage.measure import label
    from skimage.segmentation import watershed

    seeds = _remove_small(label(core, connectivity=1), min_seed_size)
    labels = watershed(
        1.0 - cell, markers=seeds, mask=foreground, connectivity=footprint, watershed_line=True
    )
    # Foreground parts that hold no seed would vanish: cells of their own.
    # (Not "foreground & labels == 0": that would also fill the lines.)
    parts = label(foreground, connectivity=1)
    seeded = np.zeros(int(parts.max()) + 1, dtype=bool)
    seeded[parts[seeds > 0]] = True
    seeded[0] = True
    orphans = ~seeded[parts]
    labels = np.where(orphans, parts + labels.max(), labels)
    return _largest_pieces(labels)


def _largest_pieces(labels: np.ndarray) -> np.ndarray:
    """Keep each object's largest connected piece (lines can cut off a few pixels)."""
    from skimage.measure import label

    pieces = label(labels > 0, connectivity=1)
    inside = pieces > 0
    span = int(pieces.max()) + 1
    keys, counts = np.unique(
        labels[inside].astype(np.int64) * span + pieces[inside], return_counts=True
    )
    objects, piece = keys // span, keys % span
    order = np.lexsort((-counts, objects))
    first = np.ones(len(order), dtype=bool)
    first[1:] = objects[order][1:] != objects[order][:-1]
    keep = np.zeros(span, dtype=bool)
    keep[piece[order][first]] = True
    keep[0] = True
    return np.where(keep[pieces], labels, 0)


def _split_by_distance(
    foreground: np.ndarray, *, split_depth: float, footprint: np.ndarray
) -> np.ndarray:
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    components = label(foreground, connectivity=1)
    if components.max() == 0:
        return components
    distance = ndi.distance_transform_edt(foreground)
    # h-maxima, not peak_local_max: a flat ridge (an elongated cell) is one
    # regional maximum, where peak_local_max would put several peaks on it.
    markers = label(h_maxima(distance, split_depth), connectivity=2).astype(np.int32)
    # Thin components (half-width below split_depth) have no h-maximum: one
    # seed each at their deepest pixel.
    unseeded = np.setdiff1d(np.arange(1, components.max() + 1), components[markers > 0])
    if len(unseeded):
        next_id = int(markers.max()) + 1
        for k, position in enumerate(ndi.maximum_position(distance, components, unseeded)):
            markers[position] = next_id + k
    return watershed(-distance, markers=markers, mask=foreground, connectivity=footprint)


def _fill_holes(labels: np.ndarray, *, keep_apart: bool = False) -> np.ndarray:
    # Per object, on its bounding box only: cost grows with the objects'
    # sizes, not (number of objects) x (image size).
    out = labels.copy()
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box] == index
        holes = ndi.binary_fill_holes(crop) & ~crop
        if keep_apart:
            # A hole that holds another object keeps its background line
            # around it, so the two stay separate components.
            parts, _ = ndi.label(holes)
            occupied = np.unique(parts[holes & (out[box] != 0)])
            holes &= ~np.isin(parts, occupied[occupied > 0])
        out[box][holes & (out[box] == 0)] = index
    return out


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1 or labels.max() == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    if not small.any():
        return labels
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels

"""Per-plane instances linked into 3D objects across a Z-stack.

A 2D model segments a Z-stack plane by plane, so every plane numbers its
cells on its own and one cell becomes as many ids as planes it spans (onion
rings in napari's 3D view). :func:`link_planes` joins the instances of
neighbouring planes that overlap enough, so one cell keeps one id through the
stack. It is the same idea as the IoU merge of labels across chunk borders
(:func:`napari_unet.postprocess.labels_dask`), applied between planes.

Linking is for a Z axis only: the planes of a time series (T) or channels are
not slices of one object.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["link_overlaps", "link_planes", "match_overlaps", "overlap_counts", "plane_overlaps"]


def plane_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping instance pairs of two label planes and their IoU.

    Parameters
    ----------
    a, b : ndarray of int, same shape
        Instance labels, 0 = background.

    Returns
    -------
    ids_a, ids_b : ndarray of int64, shape (P,)
        The ids of every pair of instances that share at least one pixel.
    iou : ndarray of float64, shape (P,)
        Their intersection over union.
    """
    ids_a, ids_b, inter = overlap_counts(a, b)
    if not len(inter):
        return ids_a, ids_b, np.zeros(0, np.float64)
    area_a = np.bincount(np.asarray(a).ravel().astype(np.int64, copy=False))
    area_b = np.bincount(np.asarray(b).ravel().astype(np.int64, copy=False))
    iou = inter / (area_a[ids_a] + area_b[ids_b] - inter)
    return ids_a, ids_b, iou


def overlap_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping instance pairs of two label planes and their shared pixel counts.

    Parameters
    ----------
    a, b : ndarray of int, same shape
        Instance labels, 0 = background.

    Returns
    -------
    ids_a, ids_b : ndarray of int64, shape (P,)
        The ids of every pair of instances that share at least one pixel,
        sorted by ``ids_a`` then ``ids_b``.
    counts : ndarray of int64, shape (P,)
        The pixels they share. Counts of several regions of the same two
        planes (chunks) add up to the counts of the whole planes.
    """
    a = np.asarray(a).ravel().astype(np.int64, copy=False)
    b = np.asarray(b).ravel().astype(np.int64, copy=False)
    if a.shape != b.shape:
        raise ValueError(f"planes must have the same shape, got {a.shape} and {b.shape}")
    both = (a > 0) & (b > 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    # b's ids numbered 0..n-1 first, so the pair key fits int64 whatever the ids.
    ids_b, b_rank = np.unique(b[both], return_inverse=True)
    pairs, counts = np.unique(a[both] * len(ids_b) + b_rank.ravel(), return_counts=True)
    return pairs // len(ids_b), ids_b[pairs % len(ids_b)], counts.astype(np.int64)


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def _union(parent: np.ndarray, a: int, b: int) -> None:
    """Join the sets of ``a`` and ``b``; the root is the smaller id (the first seen)."""
    ra, rb = _find(parent, a), _find(parent, b)
    parent[max(ra, rb)] = min(ra, rb)


def match_overlaps(
    table: tuple[np.ndarray, np.ndarray, np.ndarray],
    area: np.ndarray,
    *,
    min_iou: float = 0.25,
    min_overlap: float = 0.5,
) -> tuple[list[tuple[int, int]], tuple[np.ndarray, ...]]:
    """One-to-one matches between the instances of two neighbouring planes.

    Parameters
    ----------
    table : (ids_a, ids_b, counts)
        The overlaps of the two planes (:func:`overlap_counts`), with ids
        unique over the stack (the planes' ids apart).
    area : ndarray of int
        Pixels of every instance, indexed by id.
    min_iou, min_overlap : float
        As for :func:`link_planes`.

    Returns
    -------
    matches : list of (int, int)
        The pairs (id in the first plane, id in the second) that are one object.
    covered : (ids_a, ids_b, covered_a, covered_b)
        The share of each instance of a pair that the other covers (what
        the fragment pass of :func:`link_planes` needs).
    """
    ids_a, ids_b, inter = (np.asarray(t) for t in table)
    if len(inter) == 0:
        empty = np.zeros(0, np.float64)
        return [], (ids_a, ids_b, empty, empty)
    area_a = area[ids_a].astype(np.float64)
    area_b = area[ids_b].astype(np.float64)
    iou = inter / (area_a + area_b - inter)
    used_a: set[int] = set()
    used_b: set[int] = set()
    matches = []

    def greedy(score: np.ndarray, minimum: float) -> None:
        for k in np.argsort(-score, kind="stable"):
            if score[k] < minimum:
                break
            ia, ib = int(ids_a[k]), int(ids_b[k])
            if ia not in used_a and ib not in used_b:
                used_a.add(ia)
                used_b.add(ib)
                matches.append((ia, ib))

    greedy(iou, min_iou)
    # A cell's first and last slices are small caps whose IoU with the next
    # slice is low; among the instances still unmatched, join those whose
    # overlap covers most of the smaller one.
    greedy(inter / np.minimum(area_a, area_b), min_overlap)
    return matches, (ids_a, ids_b, inter / area_a, inter / area_b)


def _fragment_targets(
    linked: np.ndarray, covered: list[tuple[np.ndarray, ...]], min_overlap: float
) -> dict[int, int]:
    """For each instance left unlinked on both sides, the neighbour covering it most.

    These are the pieces of a cell that a 2D model cut in one plane: the
    largest piece carried the cell's id, the rest overlap the cell's slices
    above or below. Only singletons move, so they never bridge two objects.
    """
    best: dict[int, tuple[float, int]] = {}
    for ids_a, ids_b, covered_a, covered_b in covered:
        for ids, other, share in ((ids_a, ids_b, covered_a), (ids_b, ids_a, covered_b)):
            for g, j, c in zip(ids.tolist(), other.tolist(), share.tolist(), strict=True):
                if not linked[g] and c >= min_overlap and c > best.get(g, (0.0, 0))[0]:
                    best[g] = (c, j)
    return {g: target for g, (_, target) in best.items()}


def link_overlaps(
    tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    area: np.ndarray,
    *,
    min_iou: float = 0.25,
    min_overlap: float = 0.5,
    absorb_fragments: bool = True,
) -> np.ndarray:
    """The lookup from per-plane ids to 3D objects, from the planes' overlaps alone.

    The engine of :func:`link_planes`, for stacks that are never in memory
    at once (chunked Zarr, lazy napari layers): only the overlap counts of
    neighbouring planes and every instance's area are needed.

    Parameters
    ----------
    tables : list of (ids_a, ids_b, counts)
        For each pair of neighbouring planes (in any order), their overlaps
        (:func:`overlap_counts`, summed over chunks), with ids unique over
        the whole stack: an id names one instance of one plane.
    area : ndarray of int, shape (N + 1,)
        Pixels of every instance, indexed by id (index 0 unused).
    min_iou, min_overlap, absorb_fragments
        As for :func:`link_planes`.

    Returns
    -------
    lookup : ndarray of int32, shape (N + 1,)
        Per-plane id -> object id 1..M (0 -> 0), objects numbered by their
        smallest per-plane id.
    """
    area = np.asarray(area)
    parent = np.arange(len(area), dtype=np.int64)
    linked = np.zeros(len(area), dtype=bool)
    covered = []
    for table in tables:
        matches, shares = match_overlaps(table, area, min_iou=min_iou, min_overlap=min_overlap)
        covered.append(shares)
        for a, b in matches:
            _union(parent, a, b)
            linked[[a, b]] = True
    if absorb_fragments:
        for g, target in _fragment_targets(linked, covered, min_overlap).items():
            _union(parent, g, target)
    roots = np.array([_find(parent, i) for i in range(len(area))], dtype=np.int64)
    # Consecutive ids by the smallest member: the roots are the smallest ids
    # of their chains (see _union).
    present = area > 0
    present[0] = True
    keep = np.unique(roots[present])
    lut = np.zeros(len(area), dtype=np.int32)
    lut[present] = np.searchsorted(keep, roots[present]).astype(np.int32)
    return lut


def link_planes(
    labels: np.ndarray,
    *,
    min_iou: float = 0.25,
    min_overlap: float = 0.5,
    absorb_fragments: bool = True,
    axis: int = 0,
) -> np.ndarray:
    """Link per-plane instances of a stack into 3D objects by overlap.

    Every plane's instances are numbered apart from the other planes'; then,
    for each pair of neighbouring planes, instances are matched one-to-one by
    decreasing IoU (a greedy assignment; for IoU > 0.5 it is the only one
    possible) and pairs with an IoU of at least ``min_iou`` are joined; among
    the instances left unmatched, pairs that overlap by ``min_overlap`` of the
    smaller one (a cell's end caps) are joined the same way; pieces still
    alone join the object that covers them (``absorb_fragments``). The joined
    chains (a union-find over the whole stack) become one id each.

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
        Per-plane instance labels, 0 = background. Ids need not be unique
        across planes, nor consecutive; the same id in two planes is not
        taken as the same object.
    min_iou : float, optional
        Smallest IoU between two instances of neighbouring planes that makes
        them one object, in (0, 1]. One-to-one matching keeps two touching
        cells apart even when a slice of one overlaps both in the next plane.
    min_overlap : float, optional
        Second pass, among the instances the IoU pass left unmatched: the
        share of the smaller instance that must overlap the other, in (0, 1].
        This joins a cell's small end caps to its next slice.
    absorb_fragments : bool, optional
        Last pass: an instance still linked to nothing above or below (a
        piece of a cell that the 2D model cut in one plane) joins the object
        of the neighbouring-plane instance that covers ``min_overlap`` of it
        (the one covering most). Several pieces may join one object here.
    axis : int, optional
        The Z axis of ``labels``; planes are the slices along it. Only 3D
        arrays are accepted: link each stack of a time series separately.

    Returns
    -------
    linked : ndarray of int32, shape of ``labels``
        Objects 1..N, numbered by their first plane (then by their id in that
        plane), 0 = background.

    Raises
    ------
    ValueError
        For an array that is not 3D, a non-integer array, or ``min_iou``
        outside (0, 1].

    Notes
    -----
    Two cells stacked in Z (one ends where the other begins, at the same
    place in the plane) can be joined when the cap of one overlaps the other
    better than its own next slice: planes alone cannot tell them apart, a
    3D model can. On a synthetic anisotropic stack (24 x 160 x 160, planes
    twice as far apart as pixels), perfect per-plane labels give 131
    objects for 139 cells (AP@0.5 0.91); a tiny 2D U-Net's 533-610 per-plane
    ids become 56-67 objects for 59-69 cells (AP@0.5 0.84-0.93).

    Examples
    --------
    >>> stack = np.zeros((3, 4, 4), int)
    >>> stack[:, 1:3, 1:3] = [[[5]], [[1]], [[7]]]
    >>> link_planes(stack)[:, 1, 1]
    array([1, 1, 1], dtype=int32)
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(
            f"`labels` must be one 3D stack (Z, Y, X), got shape {labels.shape}; "
            "link each stack of a time series or channel separately"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must hold integer instance ids, got dtype {labels.dtype}")
    for name, value in (("min_iou", min_iou), ("min_overlap", min_overlap)):
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f"`{name}` must be in (0, 1], got {value}")
    if not -3 <= axis < 3:
        raise ValueError(f"`axis` {axis} is out of range for a 3D stack")
    stack = np.moveaxis(labels, axis, 0)

    # Number every plane's instances apart: plane z's ids map to offset_z + 1..n_z.
    planes, total = [], 0
    for plane in stack:
        ids, inverse = np.unique(plane, return_inverse=True)
        inverse = inverse.reshape(plane.shape).astype(np.int64)
        if ids[0] != 0:
            inverse += 1  # no background in this plane: keep 0 free
        n = len(ids) - 1 if ids[0] == 0 else len(ids)
        planes.append(np.where(inverse > 0, inverse + total, 0))
        total += n
    area = np.bincount(np.concatenate([p.ravel() for p in planes]), minlength=total + 1)
    tables = [overlap_counts(a, b) for a, b in itertools.pairwise(planes)]
    lut = link_overlaps(
        tables,
        area,
        min_iou=min_iou,
        min_overlap=min_overlap,
        absorb_fragments=absorb_fragments,
    )
    out = np.empty(stack.shape, dtype=np.int32)
    for z, plane in enumerate(planes):
        out[z] = lut[plane]
    return np.moveaxis(out, 0, axis)

"""Annotation helpers: tidy painted labels and turn them into training planes.

Pure NumPy/SciPy functions behind the "Annotate cells" widget; nothing here
imports napari or Qt. Painted annotations live in instance label arrays of
shape (Y, X), or (..., Y, X) for stacks and time series, with 0 as
background. The models are 2D, and people paint plane by plane, so every
function that looks at object shape (holes, fragments) works on each (Y, X)
plane independently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "AnnotatedPlane",
    "collect_planes",
    "count_cells",
    "fill_holes",
    "next_label",
    "rectangles_to_mask",
    "relabel",
    "remove_small_fragments",
]


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim < 2:
        raise ValueError(f"`{name}` has shape {labels.shape}; expected (Y, X) or (..., Y, X)")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"`{name}` must hold integer cell ids, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"`{name}` must be >= 0 (0 = background), got {labels.min()}")
    return labels


def _planes(labels: np.ndarray) -> np.ndarray:
    """View of ``labels`` as (n_planes, Y, X)."""
    return labels.reshape(-1, *labels.shape[-2:])


def next_label(labels: np.ndarray) -> int:
    """A cell id not used yet: the largest id plus one.

    Parameters
    ----------
    labels : ndarray of int
        Cell instances, 0 = background.

    Returns
    -------
    label : int
        ``labels.max() + 1`` (1 for an empty image).

    Examples
    --------
    >>> next_label(np.array([[0, 3], [1, 0]]))
    4
    """
    labels = np.asarray(labels)
    return int(labels.max()) + 1 if labels.size else 1


def count_cells(labels: np.ndarray) -> int:
    """Number of distinct non-zero ids in ``labels``.

    Examples
    --------
    >>> count_cells(np.array([[0, 3], [3, 7]]))
    2
    """
    labels = np.asarray(labels)
    if not labels.size:
        return 0
    ids = np.unique(labels)
    return int(np.count_nonzero(ids))


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes inside each cell, plane by plane.

    Only background pixels are filled: a cell painted inside another cell
    keeps its id, and a gap enclosed by two touching cells together (no single
    cell surrounds it) stays background.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (..., Y, X)
        Cell instances, 0 = background.

    Returns
    -------
    filled : ndarray
        Same shape and dtype; ``labels`` is not modified.

    Examples
    --------
    >>> ring = np.zeros((5, 5), int)
    >>> ring[1:4, 1:4] = 2
    >>> ring[2, 2] = 0
    >>> int(fill_holes(ring)[2, 2])
    2
    """
    labels = _check_labels(labels)
    out = labels.copy()
    for plane in _planes(out):
        # find_objects gives each id's bounding box: filling inside the box is
        # enough (a hole lies within its cell's box) and keeps this fast.
        for index, box in enumerate(ndi.find_objects(plane), start=1):
            if box is None:
                continue
            region = plane[box]
            cell = region == index
            holes = ndi.binary_fill_holes(cell) & ~cell & (region == 0)
            region[holes] = index
    return out


def remove_small_fragments(labels: np.ndarray, *, min_size: int = 10) -> np.ndarray:
    """Remove connected pieces of cells smaller than ``min_size`` pixels, plane by plane.

    Stray brush clicks and slivers left over after erasing are typically a
    few pixels; as training targets they teach the network to find cells
    that are not there.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (..., Y, X)
        Cell instances, 0 = background.
    min_size : int, optional
        Pieces (8-connected within one plane) with fewer pixels become
        background. A cell made of one large and one small piece keeps the
        large one.

    Returns
    -------
    cleaned : ndarray
        Same shape and dtype; ``labels`` is not modified.

    Raises
    ------
    ValueError
        If ``min_size`` is negative.

    Examples
    --------
    >>> labels = np.zeros((6, 6), int)
    >>> labels[0:3, 0:3] = 1
    >>> labels[5, 5] = 1
    >>> int(remove_small_fragments(labels, min_size=2)[5, 5])
    0
    """
    labels = _check_labels(labels)
    if min_size < 0:
        raise ValueError(f"`min_size` must be >= 0, got {min_size}")
    out = labels.copy()
    structure = np.ones((3, 3), dtype=bool)
    for plane in _planes(out):
        for index, box in enumerate(ndi.find_objects(plane), start=1):
            if box is None:
                continue
            region = plane[box]
            pieces, n = ndi.label(region == index, structure=structure)
            if n == 0:
                continue
            sizes = np.bincount(pieces.ravel())
            small = np.flatnonzero(sizes < min_size)
            small = small[small > 0]
            if small.size:
                region[np.isin(pieces, small)] = 0
    return out


def relabel(labels: np.ndarray, *, split_disconnected: bool = False) -> np.ndarray:
    """Renumber cells 1..N in order of appearance.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (..., Y, X)
        Cell instances, 0 = background.
    split_disconnected : bool, optional
        Give every 8-connected piece of a cell within a plane its own id
        (useful after painting several cells with the same id by mistake).
        The same id in two planes of a stack then becomes two ids as well.

    Returns
    -------
    relabelled : ndarray
        Same shape; dtype int32 if the ids fit, else int64. ``labels`` is not
        modified.

    Examples
    --------
    >>> relabel(np.array([[0, 7], [7, 3]])).tolist()
    [[0, 1], [1, 2]]
    """
    labels = _check_labels(labels)
    if split_disconnected:
        structure = np.ones((3, 3), dtype=bool)
        pieces = np.zeros(labels.shape, dtype=np.int64)
        flat_out = _planes(pieces)
        offset = 0
        for src, dst in zip(_planes(labels), flat_out, strict=True):
            for index, box in enumerate(ndi.find_objects(src), start=1):
                if box is None:
                    continue
                parts, n = ndi.label(src[box] == index, structure=structure)
                target = dst[box]
                target[parts > 0] = parts[parts > 0] + offset
                offset += n
        labels = pieces
    flat = labels.ravel()
    # np.unique with return_inverse renumbers by value; reorder by first appearance.
    ids, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    new = rank[inverse]
    if ids.size and ids[0] == 0:
        # Background keeps 0; the cells are numbered from 1 in order of appearance.
        zero_rank = rank[0]
        new = np.where(new > zero_rank, new, new + 1)
        new[flat == 0] = 0
    else:
        new = new + 1
    dtype = np.int32 if len(ids) < np.iinfo(np.int32).max else np.int64
    return new.astype(dtype).reshape(labels.shape)


def rectangles_to_mask(rectangles: Sequence[np.ndarray], shape: Sequence[int]) -> np.ndarray:
    """Mark the pixels inside rectangles (or other polygons) as annotated.

    Parameters
    ----------
    rectangles : sequence of ndarray, each of shape (n_vertices, D)
        Vertices in pixel coordinates of an array of ``shape`` (pixel ``i``
        covers ``[i - 0.5, i + 0.5]``, as in napari). ``D == 2``: (Y, X)
        vertices, the region applies to every plane of a stack. ``D ==
        len(shape)``: the leading coordinates (rounded) name the plane the
        region was drawn on; regions outside the stack are ignored.
    shape : sequence of int
        Shape of the label array, (Y, X) or (..., Y, X).

    Returns
    -------
    mask : ndarray of bool, shape ``shape``
        True where annotation is complete.

    Raises
    ------
    ValueError
        For vertices with another number of coordinates.

    Notes
    -----
    Axis-aligned rectangles cover every pixel whose centre lies inside or on
    their edge; other polygons (rotated rectangles) are rasterised with
    :func:`skimage.draw.polygon2mask`.

    Examples
    --------
    >>> box = np.array([[1, 1], [1, 3], [3, 3], [3, 1]])
    >>> int(rectangles_to_mask([box], (5, 5)).sum())
    9
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"`shape` {shape} must have at least 2 axes (Y, X)")
    mask = np.zeros(shape, dtype=bool)
    for number, vertices in enumerate(rectangles):
        vertices = np.asarray(vertices, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] not in (2, len(shape)):
            raise ValueError(
                f"`rectangles`[{number}] has shape {vertices.shape}; expected (n, 2) or "
                f"(n, {len(shape)}) vertices for labels of shape {shape}"
            )
        region = _polygon_plane(vertices[:, -2:], shape[-2:])
        if vertices.shape[1] == 2 or len(shape) == 2:
            mask |= region  # broadcasts over the planes of a stack
            continue
        plane = tuple(int(np.round(c)) for c in vertices[0, :-2])
        if all(0 <= p < s for p, s in zip(plane, shape[:-2], strict=True)):
            mask[plane] |= region
    return mask


def _polygon_plane(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ys, xs = np.unique(vertices[:, 0]), np.unique(vertices[:, 1])
    out = np.zeros(shape, dtype=bool)
    if len(vertices) == 4 and len(ys) <= 2 and len(xs) <= 2:
        # Axis-aligned: every pixel centre within [min, max] (edges included).
        y0, y1 = max(0, int(np.ceil(ys.min()))), min(shape[0] - 1, int(np.floor(ys.max())))
        x0, x1 = max(0, int(np.ceil(xs.min()))), min(shape[1] - 1, int(np.floor(xs.max())))
        if y0 <= y1 and x0 <= x1:
            out[y0 : y1 + 1, x0 : x1 + 1] = True
        return out
    from skimage.draw import polygon2mask

    return polygon2mask(shape, vertices)


def _channel_position(channel_axis: int, n_leading: int) -> int:
    """Where the channel axis sits after the leading axes were indexed away."""
    # Leading axes before the channel axis disappear; the rest keep their order.
    return max(0, channel_axis - n_leading)


@dataclass
class AnnotatedPlane:
    """One (Y, X) plane ready for training.

    Attributes
    ----------
    image : ndarray
        (Y, X) for one channel, or (C, Y, X) with channels first.
    labels : ndarray of int
        (Y, X) cell instances.
    mask : ndarray of bool or None
        (Y, X) annotated pixels; None means the whole plane is annotated.
    index : tuple of int
        Position of the plane along the leading axes of the stack (``()`` for
        a 2D image).
    n_cells : int
        Cells in ``labels`` (inside the mask when there is one).
    """

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None
    index: tuple[int, ...]
    n_cells: int


def collect_planes(
    image: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    channel_axis: int | None = None,
    planes: Sequence[tuple[int, ...]] | None = None,
) -> list[AnnotatedPlane]:
    """Split an annotated image or stack into the (Y, X) planes worth training on.

    Parameters
    ----------
    image : ndarray, shape (..., Y, X) plus an optional channel axis
        Intensities.
    labels : ndarray of int, shape (..., Y, X)
        Cell instances; the shape of ``image`` without its channel axis.
    mask : ndarray of bool, optional
        Annotated pixels, shape of ``labels`` (e.g. from
        :func:`rectangles_to_mask`). Without a mask, a plane counts as
        annotated when it has at least one cell, and all of it is annotated.
        With a mask, a plane counts when its mask is not empty (a region with
        no cells is a valid "background only" example), and pixels outside
        the mask are ignored in training.
    channel_axis : int, optional
        Axis of ``image`` that holds channels (e.g. -1 for RGB).
    planes : sequence of tuple of int, optional
        Only these plane indices (positions along the leading axes), e.g.
        ``[(3,)]`` for plane 3 of a Z-stack; ``[()]`` for a 2D image.

    Returns
    -------
    planes : list of AnnotatedPlane
        Copies (later painting does not change them), channels first.

    Raises
    ------
    ValueError
        If the shapes do not fit, or the labels are not integer ids.

    Examples
    --------
    >>> labels = np.zeros((3, 4, 4), int)
    >>> labels[1, :2, :2] = 5
    >>> [(p.index, p.n_cells) for p in collect_planes(np.ones((3, 4, 4)), labels)]
    [((1,), 1)]
    """
    # Lazy arrays (dask, zarr) keep their type: only the chosen planes are read.
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        image = np.asarray(image)
    labels = _check_labels(labels)
    if channel_axis is not None:
        if not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(
                f"`channel_axis` {channel_axis} is out of range for an image of shape "
                f"{image.shape}"
            )
        channel_axis %= image.ndim
        spatial_shape = tuple(s for i, s in enumerate(image.shape) if i != channel_axis)
    else:
        spatial_shape = tuple(image.shape)
    if spatial_shape != labels.shape:
        raise ValueError(
            f"`labels` (shape {labels.shape}) must have the shape of `image` without its "
            f"channel axis (shape {spatial_shape})"
        )
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(
                f"`mask` (shape {mask.shape}) must have same shape as `labels` "
                f"(shape {labels.shape})"
            )
    leading = labels.shape[:-2]
    wanted = list(np.ndindex(*leading)) if planes is None else [tuple(p) for p in planes]
    out = []
    for index in wanted:
        if len(index) != len(leading) or not all(
            0 <= i < s for i, s in zip(index, leading, strict=True)
        ):
            raise ValueError(f"plane {index} does not exist in labels of shape {labels.shape}")
        plane_labels = np.asarray(labels[index])
        plane_mask = None if mask is None else mask[index]
        if plane_mask is None and not plane_labels.any():
            continue
        if plane_mask is not None and not plane_mask.any():
            continue
        if channel_axis is None:
            plane_image = np.array(image[index])
        else:
            # Index the leading axes around the channel axis, then put channels first.
            selection = [*index, slice(None), slice(None)]
            selection.insert(channel_axis, slice(None))
            plane = np.array(image[tuple(selection)])
            plane_image = np.moveaxis(plane, _channel_position(channel_axis, len(index)), 0)
        counted = plane_labels if plane_mask is None else plane_labels[plane_mask]
        out.append(
            AnnotatedPlane(
                image=plane_image,
                labels=plane_labels.copy(),
                mask=None if plane_mask is None else plane_mask.copy(),
                index=index,
                n_cells=count_cells(counted),
            )
        )
    return out

"""Chunked (Dask) labelling with ids merged across chunk borders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array
from ._labels import _resolve_spatial_dims, probabilities_to_labels

# ---------------------------------------------------------------------------
# Chunked (Dask) labelling with ids merged across chunk borders
# ---------------------------------------------------------------------------


def labels_dask(
    probabilities: dask.array.Array,
    *,
    margin: int | Sequence[int] = 64,
    iou_threshold: float = 0.5,
    spatial_dims: int | None = None,
    compute_lookup: bool = False,
    **kwargs: Any,
) -> dask.array.Array:
    """Instance labels of a chunked probability array, globally unique and merged across chunks.

    Parameters
    ----------
    probabilities : dask.array.Array or array-like, shape (num_classes, *leading, *spatial)
        Float class probabilities as for :func:`probabilities_to_labels`: a Dask
        array (e.g. the output of :func:`napari_unet.tiling.predict_dask`), or
        an array that supports slicing, such as a ``zarr.Array``, which each
        task then reads region by region (the memory-bounded choice; see
        Notes). Any chunking (a Zarr array's own chunks); the class axis is
        merged into one chunk and spatial chunks smaller than ``margin`` are
        merged with a neighbour.
    margin : int or sequence of int, optional
        Context, in pixels, each chunk is labelled with on every side (per
        spatial axis). It should exceed the largest object's diameter (see
        Notes).
    iou_threshold : float, optional
        Two labels of neighbouring chunks are the same object when their
        intersection over union inside the shared overlap exceeds this
        value; must be in [0.5, 1) so that matches are one-to-one.
    spatial_dims : {2, 3}, optional
        As for :func:`probabilities_to_labels`; leading axes are labelled
        plane by plane (or volume by volume) and never merged.
    compute_lookup : bool, optional
        False (default): fully lazy; the id lookup is a task of the graph
        that depends on every chunk, so one ``compute`` may keep many
        chunks' labels or strips in memory until it runs. True: compute the
        lookup now, one row of chunks at a time (each row in parallel on the
        current scheduler), keeping only the strips still to be matched, and
        return an array whose chunks are labelled again when computed. Use
        True for arrays larger than memory, on probabilities that are stored
        (a ``zarr.Array``) rather than predicted lazily, since the
        probabilities are read twice.
    **kwargs
        Passed to :func:`probabilities_to_labels` (``method``, ``threshold``,
        ``seed_threshold``, ``min_size``, ...).

    Returns
    -------
    labels : dask.array.Array of uint32, shape ``probabilities.shape[1:]``
        0 = background, 1..N = objects numbered sequentially over the whole
        array (in the order of the chunk, in C order, where an object is
        first seen), one id per object even where it crosses chunk borders;
        chunks are those of the spatial and leading axes of the (rechunked)
        input.

    Raises
    ------
    ValueError
        If ``probabilities`` is not a float array with 2 or 3 classes on
        axis 0, or an option is out of range (the options of
        :func:`probabilities_to_labels` are checked before anything runs).

    See Also
    --------
    probabilities_to_labels : the in-memory labelling applied to each chunk.
    napari_unet.tiling.predict_dask : chunked probabilities.

    Notes
    -----
    *The merge.* (1) Every chunk is labelled with :func:`probabilities_to_labels`
    together with ``margin`` pixels of each neighbour (``dask.array.overlap``,
    nothing added at the array's borders), so an object crossing a chunk
    border is seen whole by both chunks when it reaches less than ``margin``
    past the border. (2) Local ids are made globally unique by adding each
    chunk's offset (the cumulative count of ids in the chunks before it).
    (3) Two chunks that share a face both labelled the strip of width
    ``2 * margin`` centred on their border; the labels there are compared and
    pairs whose intersection over union *within the strip* exceeds
    ``iou_threshold`` are joined. Matching overlaps instead of linking
    touching labels across the face (the face-adjacency graph of e.g.
    ``dask_image.ndmeasure.label``) keeps touching cells apart that the
    watershed separated. (4) The pairs form a graph whose connected
    components (``scipy.sparse.csgraph``, a union-find) are the objects; each
    gets one final id. (5) Each chunk keeps its labels inside its own
    borders (margins trimmed) and maps them through the lookup with
    ``map_blocks``. Diagonal neighbours need no matching: an object is
    linked through the face neighbours it crosses.

    *Result.* Inside a chunk the labels are exactly those of the chunk with
    its margin. Where the chunk's margin holds all the context the
    labelling of a pixel depends on (for the seeded watershed: the seeds
    and the flooding paths of its object and its neighbours), the result
    equals :func:`probabilities_to_labels` on the whole array, up to the
    numbering.

    *Limits.* An object reaching further than ``margin`` past a chunk border
    is seen cut by the chunk on that side; it is still merged when both
    chunks label the strip alike, but the watershed of a cut object may
    split it differently (its seed may lie outside the margin, so its
    pixels in the strip may be flooded from a neighbouring cell's seed, or
    become a separate fragment); such objects can be split at the chunk
    border or lose pixels to a neighbour. ``min_size`` and hole filling act
    on the part a chunk sees. Raise ``margin`` above the largest object's
    diameter to avoid this.

    *Memory.* A Dask array is overlapped with ``dask.array.overlap``, whose
    blocks are built from slices of neighbouring chunks; the scheduler then
    keeps chunks in memory until their neighbours are done, which can be a
    large part of the array. An array-like that is not a Dask array (a
    ``zarr.Array``) is instead read by each task exactly over its chunk and
    margins (read, label and summarise or relabel in one task); with
    ``compute_lookup=True`` peak memory then follows the chunk size, not the
    array size (``benchmarks/bench_memory.py``).

    Examples
    --------
    >>> import dask.array as da
    >>> probs = np.zeros((2, 8, 8), np.float32)
    >>> probs[1, 2:6, 1:7] = 1.0
    >>> probs[0] = 1.0 - probs[1]
    >>> lazy = labels_dask(da.from_array(probs, chunks=(2, 4, 4)), margin=2, min_size=1)
    >>> np.unique(lazy.compute()).tolist()  # one object across four chunks
    [0, 1]
    """
    import dask.array as da

    probs = _as_dask(probabilities)
    spatial_dims, margins = _check_arguments(probs, margin, iou_threshold, spatial_dims, kwargs)
    spatial = tuple(range(probs.ndim - spatial_dims, probs.ndim))
    probs = probs.rechunk(
        {
            0: -1,
            **{
                ax: _merge_small_chunks(probs.chunks[ax], m)
                for ax, m in zip(spatial, margins, strict=True)
            },
        }
    )
    # Axes of the labels (class axis dropped) that are merged across chunks.
    label_axes = tuple(ax - 1 for ax in spatial)
    options = {"spatial_dims": spatial_dims, **kwargs}
    geometry = {"axes": label_axes, "margins": margins}
    depth = dict(zip(spatial, margins, strict=True))
    if not isinstance(probabilities, da.Array):
        # Each task reads its chunk and margins itself (see Notes, *Memory*).
        source, bounds, parts = _read_summaries(probabilities, probs, depth, geometry, options)
        grid = tuple(len(c) for c in probs.chunks[1:])
        lookup = _lookup(parts, grid, label_axes, iou_threshold, compute_lookup)
        return da.map_blocks(
            _read_label_relabel,
            da.zeros(grid, chunks=1, dtype=np.uint8),
            source,
            lookup,
            bounds=bounds,
            options=options,
            geometry=geometry,
            chunks=probs.chunks[1:],
            dtype=np.uint32,
            meta=np.empty((0,) * (probs.ndim - 1), np.uint32),
        )
    overlapped, labeled, parts = _overlap_summaries(probs, depth, geometry, options)
    lookup = _lookup(parts, labeled.numblocks, label_axes, iou_threshold, compute_lookup)
    return _relabel(probs, overlapped, labeled, lookup, options, geometry, compute_lookup)


def _as_dask(probabilities: Any) -> dask.array.Array:
    """A Dask array of ``probabilities`` (a Zarr array keeps its chunks; else Dask picks)."""
    import dask.array as da

    if isinstance(probabilities, da.Array):
        return probabilities
    native = getattr(probabilities, "chunks", None)
    return da.from_array(
        probabilities,
        chunks=native if isinstance(native, tuple) else "auto",
        meta=np.empty((0,) * np.ndim(probabilities), np.dtype(probabilities.dtype)),
    )


def _check_arguments(
    probs: dask.array.Array,
    margin: int | Sequence[int],
    iou_threshold: float,
    spatial_dims: int | None,
    kwargs: dict[str, Any],
) -> tuple[int, tuple[int, ...]]:
    """Validate :func:`labels_dask`'s arguments; the spatial dimensions and per-axis margins."""
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(
            f"`probabilities` must be a float array of probabilities, got dtype {probs.dtype}"
        )
    if probs.ndim < 3 or probs.shape[0] not in (2, 3):
        raise ValueError(
            f"`probabilities` (shape {probs.shape}) must have shape (num_classes, ..., Y, X) "
            "with 2 or 3 classes on axis 0"
        )
    if 0 in probs.shape:
        raise ValueError(f"`probabilities` (shape {probs.shape}) is empty")
    spatial_dims = _resolve_spatial_dims(probs.shape, spatial_dims, "probabilities")
    margins = (int(margin),) * spatial_dims if np.isscalar(margin) else tuple(map(int, margin))
    if len(margins) != spatial_dims or min(margins) < 1:
        raise ValueError(f"`margin` must be one or {spatial_dims} integers >= 1, got {margin}")
    if not 0.5 <= iou_threshold < 1.0:
        raise ValueError(f"`iou_threshold` must be in [0.5, 1), got {iou_threshold}")
    # Check the labelling options on a tiny array now, not on a worker later.
    probabilities_to_labels(
        np.zeros((probs.shape[0],) + (2,) * spatial_dims, np.float32), **kwargs
    )
    return spatial_dims, margins


def _read_summaries(
    probabilities: Any,
    probs: dask.array.Array,
    depth: dict[int, int],
    geometry: dict[str, Any],
    options: dict[str, Any],
) -> tuple[Any, list, dict]:
    """Per chunk, a task that reads, labels and summarises it: (source, bounds, parts)."""
    import dask

    bounds = _block_bounds(probs.chunks, depth)
    source = dask.delayed(
        probabilities, name=f"napari-unet-probabilities-{uuid.uuid4().hex}", traverse=False
    )
    grid = tuple(len(c) for c in probs.chunks[1:])
    summary_of = dask.delayed(_read_label_summarize, pure=True, nout=2)
    parts = {
        loc: summary_of(source, _region(bounds, (0, *loc)), loc, grid, geometry, options)
        for loc in np.ndindex(*grid)
    }
    return source, bounds, parts


def _overlap_summaries(
    probs: dask.array.Array,
    depth: dict[int, int],
    geometry: dict[str, Any],
    options: dict[str, Any],
) -> tuple[dask.array.Array, dask.array.Array, dict]:
    """The overlapped probabilities, their labels per chunk and each chunk's summary task."""
    import dask
    import dask.array as da

    overlapped = da.overlap.overlap(probs, depth=depth, boundary="none")
    labeled = overlapped.map_blocks(
        _label_block,
        options=options,
        drop_axis=0,
        dtype=np.uint32,
        meta=np.empty((0,) * (probs.ndim - 1), np.uint32),
    )
    grid = labeled.numblocks
    blocks = labeled.to_delayed(optimize_graph=False)
    summary_of = dask.delayed(_summarize_block, pure=True, nout=2)
    parts = {loc: summary_of(blocks[loc], loc, grid, geometry) for loc in np.ndindex(*grid)}
    return overlapped, labeled, parts


def _lookup(
    parts: dict,
    grid: tuple[int, ...],
    label_axes: tuple[int, ...],
    iou_threshold: float,
    compute_lookup: bool,
) -> Any:
    """The delayed id lookup (per chunk, local id -> final id), computed now or lazily."""
    import dask

    # Per chunk, the small part (id count, ids kept) goes to the lookup and the
    # border strips to the pair matching only.
    if compute_lookup:
        tables = _sweep_lookup(parts, grid, label_axes, iou_threshold)
        # A named key: hashing the tables into every task would copy them per chunk.
        return dask.delayed(
            tables, name=f"napari-unet-label-lookup-{uuid.uuid4().hex}", traverse=False
        )
    pairs = [
        (
            int(np.ravel_multi_index(loc, grid)),
            int(np.ravel_multi_index(nxt, grid)),
            dask.delayed(_match_strips, pure=True)(parts[loc][1], parts[nxt][1], k, iou_threshold),
        )
        for loc, nxt, k in _neighbours(grid, label_axes)
    ]
    return dask.delayed(_build_lookup, pure=True)(
        [parts[loc][0] for loc in np.ndindex(*grid)], pairs
    )


def _relabel(
    probs: dask.array.Array,
    overlapped: dask.array.Array,
    labeled: dask.array.Array,
    lookup: Any,
    options: dict[str, Any],
    geometry: dict[str, Any],
    compute_lookup: bool,
) -> dask.array.Array:
    """The final labels of a Dask input: relabel the chunks' labels, or label again per chunk."""
    meta = np.empty((0,) * (probs.ndim - 1), np.uint32)
    if not compute_lookup:
        return labeled.map_blocks(
            _relabel_block,
            lookup,
            geometry=geometry,
            chunks=probs.chunks[1:],
            dtype=np.uint32,
            meta=meta,
        )
    return overlapped.map_blocks(
        _label_and_relabel_block,
        lookup,
        options=options,
        geometry=geometry,
        drop_axis=0,
        chunks=probs.chunks[1:],
        dtype=np.uint32,
        meta=meta,
    )


def _neighbours(
    grid: tuple[int, ...], label_axes: tuple[int, ...]
) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """Face neighbours ``(loc, next loc, k)`` along the ``k``-th merged axis, in C order."""
    out = []
    for loc in np.ndindex(*grid):
        for k, ax in enumerate(label_axes):
            if loc[ax] + 1 < grid[ax]:
                out.append((loc, tuple(i + (j == ax) for j, i in enumerate(loc)), k))
    return out


def _sweep_lookup(
    parts: dict, grid: tuple[int, ...], label_axes: tuple[int, ...], iou_threshold: float
) -> list[np.ndarray]:
    """Compute the lookup row by row, keeping only the strips that are still to be matched.

    A row is the chunks along the last axis; each row's chunks are computed
    together (in parallel on the current scheduler), matched with their
    already computed neighbours, and a chunk's strips are dropped once all
    its forward neighbours are matched: about two rows of strips (a plane of
    rows in 3D) are in memory at any time, whatever the array size.
    """
    import dask

    summaries: dict[tuple[int, ...], dict[str, Any]] = {}
    strips: dict[tuple[int, ...], dict[str, Any]] = {}
    pairs = []
    locs = list(np.ndindex(*grid))
    row_length = grid[-1]
    for first in range(0, len(locs), row_length):
        row = locs[first : first + row_length]
        for loc, (summary, strip) in zip(
            row, dask.compute(*[(parts[loc][0], parts[loc][1]) for loc in row]), strict=True
        ):
            summaries[loc], strips[loc] = summary, strip
        for loc in row:
            for k, ax in enumerate(label_axes):
                if loc[ax] > 0:
                    prev = tuple(i - (j == ax) for j, i in enumerate(loc))
                    pairs.append(
                        (
                            int(np.ravel_multi_index(prev, grid)),
                            int(np.ravel_multi_index(loc, grid)),
                            _match_strips(strips[prev], strips[loc], k, iou_threshold),
                        )
                    )
        last = row[-1]
        for loc in list(strips):
            forward = [
                tuple(i + (j == ax) for j, i in enumerate(loc))
                for ax in label_axes
                if loc[ax] + 1 < grid[ax]
            ]
            if all(nxt <= last for nxt in forward):
                del strips[loc]
    return _build_lookup([summaries[loc] for loc in locs], pairs)


def _block_bounds(chunks: tuple[tuple[int, ...], ...], depth: dict[int, int]) -> list:
    """Per axis and chunk, the (start, stop) of the chunk widened by ``depth`` (clipped)."""
    bounds = []
    for ax, sizes in enumerate(chunks):
        ends = np.cumsum(sizes)
        starts = ends - np.asarray(sizes)
        m = depth.get(ax, 0)
        bounds.append(
            [
                (max(0, int(a) - m), min(int(ends[-1]), int(b) + m))
                for a, b in zip(starts, ends, strict=True)
            ]
        )
    return bounds


def _region(bounds: list, loc: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(*bounds[ax][i]) for ax, i in enumerate(loc))


def _read_label_summarize(
    source: Any,
    region: tuple[slice, ...],
    loc: tuple[int, ...],
    grid: tuple[int, ...],
    geometry: dict[str, Any],
    options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read one chunk with margins, label it and summarise it, in one task."""
    labels = _label_block(np.asarray(source[region]), options=options)
    return _summarize_block(labels, loc, grid, geometry)


def _read_label_relabel(
    _: np.ndarray,
    source: Any,
    tables: list[np.ndarray],
    *,
    bounds: list,
    options: dict[str, Any],
    geometry: dict[str, Any],
    block_info: dict | None = None,
) -> np.ndarray:
    """Read one chunk with margins, label it and map it to the final ids, in one task."""
    info = block_info[0]
    grid = tuple(info["num-chunks"])
    loc = tuple(info["chunk-location"])
    labels = _label_block(np.asarray(source[_region(bounds, (0, *loc))]), options=options)
    table = tables[int(np.ravel_multi_index(loc, grid))]
    return table[labels[_trim(loc, grid, geometry)]]


def _merge_small_chunks(chunks: Sequence[int], minimum: int) -> tuple[int, ...]:
    """Join chunks shorter than ``minimum`` to a neighbour (Dask's overlap needs this)."""
    merged: list[int] = []
    for size in chunks:
        if merged and (size < minimum or merged[-1] < minimum):
            merged[-1] += size
        else:
            merged.append(size)
    return tuple(merged)


def _label_block(block: np.ndarray, *, options: dict[str, Any]) -> np.ndarray:
    """Label one chunk with its margins: (C, *leading, *spatial) -> (*leading, *spatial)."""
    return probabilities_to_labels(block, **options)


def _trim(loc: Sequence[int], grid: Sequence[int], geometry: dict[str, Any]) -> tuple[slice, ...]:
    """The slices that cut a chunk's margins off (none at the array's own borders)."""
    index = [slice(None)] * len(grid)
    for ax, m in zip(geometry["axes"], geometry["margins"], strict=True):
        first, last = loc[ax] == 0, loc[ax] == grid[ax] - 1
        index[ax] = slice(0 if first else m, None if last else -m)
    return tuple(index)


def _strip(labels: np.ndarray, ax: int, width: int, high: bool) -> np.ndarray:
    index = [slice(None)] * labels.ndim
    index[ax] = slice(labels.shape[ax] - width, None) if high else slice(0, width)
    # A copy, never a view: a view would keep the whole chunk's labels alive.
    return labels[tuple(index)].copy()


def _summarize_block(
    labels: np.ndarray, loc: tuple[int, ...], grid: tuple[int, ...], geometry: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the merge needs of one chunk: (its id count and the ids it keeps, its strips).

    The strips are the ``2 * margin`` wide slabs a chunk shares with its
    neighbours; the full labels are dropped after this task.
    """
    low, high = {}, {}
    for k, (ax, m) in enumerate(zip(geometry["axes"], geometry["margins"], strict=True)):
        if loc[ax] > 0:
            low[k] = _strip(labels, ax, 2 * m, high=False)
        if loc[ax] < grid[ax] - 1:
            high[k] = _strip(labels, ax, 2 * m, high=True)
    kept = np.unique(labels[_trim(loc, grid, geometry)])
    return {"count": int(labels.max(initial=0)), "kept": kept[kept > 0]}, {
        "low": low,
        "high": high,
    }


def _match_strips(
    before: dict[str, Any], after: dict[str, Any], axis: int, iou_threshold: float
) -> np.ndarray:
    """Pairs (id in ``before``, id in ``after``) of labels that overlap with IoU > threshold.

    Both strips cover the same pixels: the slab around the border between
    the two chunks, labelled once by each.
    """
    a = before["high"][axis].ravel().astype(np.int64)
    b = after["low"][axis].ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.empty((0, 2), np.int64)
    pairs, inter = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    area_a = np.bincount(a, minlength=int(a.max()) + 1)
    area_b = np.bincount(b, minlength=int(b.max()) + 1)
    iou = inter / (area_a[pairs[0]] + area_b[pairs[1]] - inter)
    # IoU > 0.5 is one-to-one: a label cannot overlap two others by more than half.
    return pairs[:, iou > iou_threshold].T


def _build_lookup(
    summaries: list[dict[str, Any]], pairs: list[tuple[int, int, np.ndarray]]
) -> list[np.ndarray]:
    """Per chunk (C order), a table local id -> final id (index 0 -> 0)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    counts = np.array([s["count"] for s in summaries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    n = int(offsets[-1])
    if n == 0:
        return [np.zeros(c + 1, np.uint32) for c in counts]
    # Node of local id i in chunk k: offsets[k] + i - 1.
    edges = [
        np.stack([offsets[ka] + p[:, 0] - 1, offsets[kb] + p[:, 1] - 1])
        for ka, kb, p in pairs
        if len(p)
    ]
    edges_arr = np.concatenate(edges, axis=1) if edges else np.empty((2, 0), np.int64)
    graph = coo_matrix(
        (np.ones(edges_arr.shape[1], np.int8), (edges_arr[0], edges_arr[1])), shape=(n, n)
    )
    _, component = connected_components(graph, directed=False)
    kept = np.zeros(n, bool)
    for k, s in enumerate(summaries):
        kept[offsets[k] + s["kept"] - 1] = True
    # Number the objects that appear in the output, in the order their first
    # node appears (chunks in C order, then local ids).
    first_node = np.full(component.max() + 1, n, np.int64)
    np.minimum.at(first_node, component[kept], np.flatnonzero(kept))
    shown = np.flatnonzero(first_node < n)
    if len(shown) >= 2**32:
        raise ValueError(f"{len(shown)} objects do not fit uint32 labels")
    final = np.zeros(component.max() + 1, np.uint32)
    final[shown[np.argsort(first_node[shown], kind="stable")]] = np.arange(
        1, len(shown) + 1, dtype=np.uint32
    )
    node_final = final[component]
    return [
        np.concatenate([[0], node_final[offsets[k] : offsets[k + 1]]]).astype(np.uint32)
        for k in range(len(summaries))
    ]


def _relabel_block(
    labels: np.ndarray,
    tables: list[np.ndarray],
    *,
    geometry: dict[str, Any],
    block_info: dict | None = None,
) -> np.ndarray:
    """Trim one labelled chunk's margins and map its ids to the final ones."""
    grid = tuple(block_info[0]["num-chunks"])
    loc = tuple(block_info[0]["chunk-location"])
    table = tables[int(np.ravel_multi_index(loc, grid))]
    return table[labels[_trim(loc, grid, geometry)]]


def _label_and_relabel_block(
    block: np.ndarray,
    tables: list[np.ndarray],
    *,
    options: dict[str, Any],
    geometry: dict[str, Any],
    block_info: dict | None = None,
) -> np.ndarray:
    """Label a chunk with its margins again and map it (the ``compute_lookup`` path)."""
    labels = _label_block(block, options=options)
    info = block_info[0]
    # The probabilities carry the class axis in front; the labels do not.
    grid = tuple(info["num-chunks"])[1:]
    loc = tuple(info["chunk-location"])[1:]
    table = tables[int(np.ravel_multi_index(loc, grid))]
    return table[labels[_trim(loc, grid, geometry)]]

"""Z planes of chunked labels linked into 3D objects: overlaps per chunk, one global relabel.

:func:`segment_chunked` labels every (Y, X) plane with ids unique over the
whole store and merged across chunk borders in the plane
(:func:`~napari_unet.postprocess.labels_dask`). Linking the planes needs
only what :func:`napari_unet.linking.link_overlaps` reads: the overlap
counts of neighbouring planes and every instance's area. Both add up over
(Y, X) chunks, so each task reads one chunk of two neighbouring planes, and
only these small tables meet in memory; a second pass maps every chunk
through the resulting lookup. The result equals :func:`~napari_unet.linking.link_planes`
on the whole stack (up to the numbering: objects are numbered by their
first id).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np


def chunked_z_axis(axes: list[str], config_axes: str | None) -> int | None:
    """The Z axis of chunked labels: the one ``config_axes`` names, else the one named ``z``.

    ``axes`` are the labels' axis names (OME-Zarr names, or those
    :func:`~napari_unet.io.open_chunked` guessed: ``z, y, x`` for 3 axes,
    ``t, z, y, x`` for 4); only a leading axis can be Z.
    """
    if config_axes is not None:
        letters = config_axes.upper().replace("C", "")
        if len(letters) != len(axes):
            raise ValueError(
                f"`axes` {config_axes!r} names {len(letters)} axes besides C, "
                f"the image has {len(axes)}"
            )
        return letters.index("Z") if "Z" in letters else None
    names = [a.lower() for a in axes[:-2]]
    return names.index("z") if "z" in names else None


def _chunk_regions(store: Any) -> list[tuple[slice, ...]]:
    """Every chunk of ``store`` as slices, in C order of the chunk grid."""
    regions = []
    grid = [range(0, n, c) for n, c in zip(store.shape, store.chunks, strict=True)]
    for starts in np.ndindex(*(len(g) for g in grid)):
        regions.append(
            tuple(
                slice(g[i], min(g[i] + c, n))
                for g, i, c, n in zip(grid, starts, store.chunks, store.shape, strict=True)
            )
        )
    return regions


def _chunk_area(store: Any, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = np.unique(np.asarray(store[region]), return_counts=True)
    return ids[ids > 0].astype(np.int64), counts[ids > 0].astype(np.int64)


def _chunk_overlaps(
    store: Any, region: tuple[slice, ...], z: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ..linking import overlap_counts

    below = list(region)
    below[z] = slice(region[z].start + 1, region[z].stop + 1)
    return overlap_counts(np.asarray(store[region]), np.asarray(store[tuple(below)]))


def _summed(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One overlap table from the tables of a plane pair's chunks (counts added)."""
    ids_a = np.concatenate([p[0] for p in parts])
    ids_b = np.concatenate([p[1] for p in parts])
    if len(ids_a) == 0:
        return ids_a, ids_b, ids_a.copy()
    pairs, inverse = np.unique(np.stack([ids_a, ids_b]), axis=1, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=np.concatenate([p[2] for p in parts]))
    return pairs[0], pairs[1], counts.astype(np.int64)


def link_lookup(store: Any, z: int) -> np.ndarray:
    """The lookup per-plane id -> 3D object of a chunked label array, computed chunk by chunk.

    Parameters
    ----------
    store : zarr.Array or array-like, shape (*leading, Y, X)
        Per-plane instance labels with ids unique over the whole array;
        chunks of one plane along the leading axes.
    z : int
        The leading axis whose planes are linked (others, e.g. T, never are).

    Returns
    -------
    lookup : ndarray of uint32, shape (max id + 1,)
    """
    import dask

    from ..linking import link_overlaps

    regions = _chunk_regions(store)
    source = dask.delayed(store, name=f"napari-unet-labels-{uuid.uuid4().hex}", traverse=False)
    areas = [dask.delayed(_chunk_area, pure=True)(source, r) for r in regions]
    # A plane pair is the leading index of its first plane; its chunks' tables add up.
    pairs: dict[tuple[int, ...], list] = {}
    for r in regions:
        if r[z].start + 1 < store.shape[z]:
            key = tuple(s.start for s in r[:-2])
            pairs.setdefault(key, []).append(
                dask.delayed(_chunk_overlaps, pure=True)(source, r, z)
            )
    keys = sorted(pairs)
    areas, tables = dask.compute(areas, [pairs[k] for k in keys])
    top = max((int(ids.max()) for ids, _ in areas if len(ids)), default=0)
    area = np.zeros(top + 1, np.int64)
    for ids, counts in areas:
        np.add.at(area, ids, counts)
    lut = link_overlaps([_summed(parts) for parts in tables], area)
    return lut.astype(np.uint32)


def relabel_in_place(store: Any, lookup: np.ndarray) -> None:
    """Map every chunk of a Zarr array through ``lookup``, chunk by chunk (each task its own)."""
    import dask
    import dask.array as da

    table = dask.delayed(lookup, name=f"napari-unet-link-lookup-{uuid.uuid4().hex}")
    data = da.from_array(store, chunks=store.chunks, asarray=True, lock=False)
    meta = np.empty((0,) * store.ndim, np.uint32)
    mapped = data.map_blocks(_map_block, table, dtype=np.uint32, meta=meta)
    da.store(mapped, store, lock=False)


def _map_block(block: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    return lookup[block]

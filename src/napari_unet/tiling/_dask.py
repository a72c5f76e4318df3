"""Lazy prediction of chunked arrays with Dask (part of :mod:`napari_unet.tiling`)."""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..devices import select_device
from ..errors import RedundantComputeWarning
from ..inference import make_backend

if TYPE_CHECKING:
    import dask.array
from ._plan import _REDUNDANT_LIMIT, _round_up, _spatial_dims
from ._tiler import _mirror_pad, _Tiler


def predict_dask(
    model: nn.Module,
    array: object,
    *,
    channel_axis: int | None = None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    backend: str = "auto",
    precision: str = "auto",
) -> dask.array.Array:
    """Lazily predict the planes of a (possibly larger-than-memory) array with Dask.

    Parameters
    ----------
    model : torch.nn.Module
        A 2D or 3D model, as for :func:`predict_tiled`.
    array : dask.array.Array or array-like, shape (..., Y, X) or (..., Z, Y, X)
        Chunked data (for example from Zarr) or anything ``dask.array.asarray``
        accepts. A 2D model predicts planes (the last two axes) and a 3D
        model volumes (the last three, chunked and overlapped along each);
        leading axes (Z, T, ...) keep their chunks.
    channel_axis : int, optional
        Axis holding ``model.in_channels`` channels (anywhere; the planes or
        volumes are the last two or three other axes); ``None`` for one channel.
    tile_shape, batch_size, device, backend, precision
        As for :func:`predict_tiled`, per chunk. ``device`` and the backend
        are resolved on the worker that computes the chunk.

    Returns
    -------
    probabilities : dask.array.Array of float32, shape (num_classes, ..., Y, X)
        (``(num_classes, ..., Z, Y, X)`` for a 3D model).
        Nothing is computed until the result is (partly) computed or stored;
        each output chunk reads only its input chunk and a margin around it.

    Notes
    -----
    Each chunk is predicted with a margin of real neighbouring pixels equal
    to the tiling margin (the halo, 92 pixels at depth 4, for ``"valid"``
    models; the blending overlap for ``"same"`` models), taken with
    ``dask.array.overlap.overlap``; at the array's own borders the chunk is
    mirror-padded exactly as :func:`predict_tiled` pads the whole image.
    Spatial chunks are made multiples of ``2**depth`` (and larger than the
    margin) so that every chunk sees the same max-pooling grid as the whole
    array. The result therefore equals :func:`predict_tiled` on the whole
    plane, chunk borders included, to floating-point rounding.

    The model enters the task graph once, as a single ``dask.delayed`` key
    that every chunk's task depends on, so a distributed scheduler sends it to
    each worker once, not with every chunk.
    """
    import dask.array as da

    arr = da.asarray(array)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"`array` has dtype {arr.dtype}, expected integer or floating point")
    nd = _spatial_dims(model)
    arr = _channels_before_planes(arr, channel_axis, model, nd)

    margin = _Tiler.margin_of(model)
    d = model.divisor
    # A pixel's value can depend on up to 2**depth - 1 pixels past the margin
    # on its far side (through its bottleneck cell), so chunks take that much
    # more real context (the largest divisor on every axis: a multiple of each).
    depth = tuple(m + d for m in margin)
    spatial = tuple(range(arr.ndim - nd, arr.ndim))
    c_axis = arr.ndim - nd - 1
    arr = arr.rechunk(
        {
            c_axis: -1,
            **{
                ax: _aligned_chunks(arr.shape[ax], max(arr.chunks[ax]), d, g + 1)
                for ax, g in zip(spatial, depth, strict=True)
            },
        }
    )
    _warn_if_small_chunks(arr, spatial, depth, d)
    overlapped = da.overlap.overlap(
        arr, depth=dict(zip(spatial, depth, strict=True)), boundary="none"
    )
    model_key = _model_key(model)
    out = da.map_blocks(
        _predict_block,
        overlapped,
        model_key,
        margin=margin,
        extra=d,
        tile_shape=tile_shape,
        batch_size=batch_size,
        device=device,
        backend=backend,
        precision=precision,
        chunks=(*arr.chunks[:c_axis], (model.num_classes,), *arr.chunks[c_axis + 1 :]),
        dtype=np.float32,
        meta=np.empty((0,) * arr.ndim, dtype=np.float32),
    )
    return da.moveaxis(out, c_axis, 0)


def _channels_before_planes(
    arr: dask.array.Array, channel_axis: int | None, model: nn.Module, nd: int = 2
) -> dask.array.Array:
    """Validate a Dask array; (..., C, Y, X), or (..., C, Z, Y, X) for ``nd`` 3."""
    import dask.array as da

    names = "Y, X" if nd == 2 else "Z, Y, X"
    if channel_axis is None:
        if arr.ndim < nd:
            raise ValueError(f"`array` has shape {arr.shape}; expected (..., {names})")
        arr = da.expand_dims(arr, arr.ndim - nd)
    else:
        if not -arr.ndim <= channel_axis < arr.ndim or arr.ndim < nd + 1:
            raise ValueError(
                f"`channel_axis` {channel_axis} is not an axis of an array of shape "
                f"{arr.shape} with channels, {names}"
            )
        arr = da.moveaxis(arr, channel_axis, -nd - 1)
    if arr.shape[-nd - 1] != model.in_channels:
        raise ValueError(
            f"`array` has {arr.shape[-nd - 1]} channel(s) along `channel_axis`, but the model "
            f"expects {model.in_channels}"
        )
    if 0 in arr.shape:
        raise ValueError(f"`array` of shape {arr.shape} is empty")
    return arr


def _model_key(model: nn.Module) -> object:
    """The model as one named task-graph key, so that it travels once per worker."""
    import dask

    # An explicit name: hashing a model would pickle all its weights.
    return dask.delayed(model, name=f"napari-unet-model-{uuid.uuid4().hex}", traverse=False)


def _predict_block(
    block: np.ndarray,
    model: nn.Module,
    *,
    margin: tuple[int, ...],
    extra: int,
    tile_shape: Sequence[int] | None,
    batch_size: int,
    device: str | torch.device | None,
    backend: str = "eager",
    precision: str = "fp32",
    block_info: dict | None = None,
) -> np.ndarray:
    """Predict one overlapped chunk: (..., C, *spatial) with ``margin + extra`` context."""
    info = block_info[0]
    location, count = info["chunk-location"], info["num-chunks"]
    nd = len(margin)
    crop = [slice(None)] * (block.ndim - nd)
    pads = []
    for ax, m in zip(range(block.ndim - nd, block.ndim), margin, strict=True):
        first, last = location[ax] == 0, location[ax] == count[ax] - 1
        # Tiles start `margin` before the chunk: drop the rest of the leading
        # context. At the array's own borders Dask added none: mirror-pad there
        # as predict_tiled pads the whole image.
        crop.append(slice(0 if first else extra, None))
        pads.append((m if first else 0, m + extra if last else 0))
    planes = block[tuple(crop)]
    planes = planes.reshape(-1, *planes.shape[-nd - 1 :]).astype(np.float32, copy=False)
    if not np.isfinite(planes).all():
        raise ValueError("a chunk of `array` contains NaN or infinite values")
    dev = select_device(device)
    results = []
    run = make_backend(model, backend=backend, precision=precision, device=dev)
    for plane in planes:
        plane = _mirror_pad(plane, pads)
        interior = tuple(s - 2 * m - extra for s, m in zip(plane.shape[1:], margin, strict=True))
        tiler = _Tiler(model, interior, tile_shape, dev, None, run)
        events = tiler.predict(plane, batch_size=batch_size, with_margin=True, trailing=extra)
        results.append(_run_to_result(events))
    return np.stack(results).reshape(
        *block.shape[: -nd - 1], model.num_classes, *results[0].shape[1:]
    )


def _warn_if_small_chunks(
    arr: dask.array.Array, spatial: Sequence[int], depth: Sequence[int], divisor: int
) -> None:
    """Warn when each chunk's context (``depth`` pixels a side) costs > 4x its own pixels."""
    if all(len(arr.chunks[ax]) == 1 for ax in spatial):
        return  # one chunk: nothing to choose
    sizes = [max(arr.chunks[ax]) for ax in spatial]
    factor = math.prod((c + 2 * g) / c for c, g in zip(sizes, depth, strict=True))
    if factor <= _REDUNDANT_LIMIT:
        return
    # Chunks of this side keep the context below 2x the pixels they predict.
    side = _round_up(math.ceil(2 * max(depth) / (2 ** (1 / len(sizes)) - 1)), divisor)
    shape, wanted = "x".join(map(str, sizes)), "x".join([str(side)] * len(sizes))
    warnings.warn(
        f"chunks of {shape} pixels are each predicted with {max(depth)} pixels "
        f"of context on every side: {factor:.1f}x the pixels they keep; chunks of "
        f"{wanted} or larger (e.g. --chunks {side}) waste far less",
        RedundantComputeWarning,
        stacklevel=3,
    )


def _aligned_chunks(length: int, wanted: int, multiple: int, minimum: int) -> tuple[int, ...]:
    """Chunk sizes that are multiples of ``multiple`` and at least ``minimum``.

    Chunks start at multiples of ``multiple`` so every chunk shares the
    max-pooling grid of the whole array; a short remainder joins the last
    chunk because Dask's overlap needs chunks larger than the overlap.
    """
    size = max(_round_up(wanted, multiple), _round_up(minimum, multiple))
    n, rest = divmod(length, size)
    chunks = [size] * n
    if rest:
        if chunks and rest < minimum:
            chunks[-1] += rest
        else:
            chunks.append(rest)
    return tuple(chunks)


def _run_to_result(events: Generator[int, None, np.ndarray]) -> np.ndarray:
    """Run a tile generator to its result, discarding the per-batch counts."""
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value

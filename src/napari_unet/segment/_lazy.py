"""Lazy segmentation for napari: :func:`segment_dask`, one plane per Dask chunk."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..normalize import Normalization
from ._config import (
    SegmentConfig,
    _arranged,
    _axes_channel_axis,
    _labels_of_plane,
    _predict_kwargs,
    _require_2d,
    _setup,
    _z_axis,
)
from ._link_lazy import PlaneLinker

if TYPE_CHECKING:
    import dask.array
    from torch import nn

#: Instance ids of plane ``i`` (linear index over the leading axes, C order)
#: of :func:`segment_dask` are ``i * LAZY_ID_STRIDE + 1 ...``.
LAZY_ID_STRIDE = 2**16


def segment_dask(
    model: Any,
    image: Any,
    *,
    channel_axis: int | None = None,
    config: SegmentConfig | None = None,
    normalization: Any = None,
    linker: PlaneLinker | None = None,
) -> dask.array.Array:
    """Lazy instance labels of every (Y, X) plane of a Dask, Zarr or NumPy array.

    Each plane is computed only when asked for (for example when napari
    shows it), with exactly the steps of :func:`segment` for that plane.

    Parameters
    ----------
    model, channel_axis, config, normalization
        As for :func:`segment` (``tta`` applies; ``probabilities`` does not).
    image : dask.array.Array or array-like, shape (..., Y, X)
        Rechunked so that every chunk holds one whole plane with all channels.
    linker : PlaneLinker, optional
        With ``config.link_planes`` and a Z axis (``config.axes``, else the
        one leading axis of a (Z, Y, X) stack): the object that links the
        planes as they are computed; default: a new one, from
        :func:`lazy_linker`. A viewer keeps it to redraw when
        ``linker.version`` changes.

    Returns
    -------
    labels : dask.array.Array of uint32, the image's shape without channels
        One chunk per plane.

    Notes
    -----
    Plane ``i`` (linear index over the leading axes in C order) uses ids
    ``i * LAZY_ID_STRIDE + 1`` up to ``(i + 1) * LAZY_ID_STRIDE - 1`` (stride
    ``2**16``): at most ``2**16`` planes (checked here) and fewer than
    ``2**16`` cells per plane (checked when a plane is computed). The model
    enters the task graph once, as one named ``dask.delayed`` key.

    With linking (:class:`PlaneLinker`), a plane shows the smallest
    per-plane id of each object's members among the planes computed so far;
    once every plane has been computed, the objects are those of
    :func:`~napari_unet.linking.link_planes` on the whole stack (tested).
    Computed planes are kept by the linker and never predicted twice.
    """
    import dask.array as da

    from ..tiling import _model_key

    net, config, normalization = _setup(model, config, normalization)
    _require_2d(net, "lazy segmentation")
    channel_axis = _axes_channel_axis(config, channel_axis)
    arr, axis = _arranged(net, da.asarray(image), channel_axis)
    if axis is None:
        arr = arr[..., np.newaxis, :, :]
    leading = arr.shape[:-3]
    if math.prod(leading) > 2**32 // LAZY_ID_STRIDE:
        raise ValueError(
            f"{math.prod(leading)} planes: lazy labels support at most "
            f"{2**32 // LAZY_ID_STRIDE} (uint32 ids, {LAZY_ID_STRIDE} per plane)"
        )
    arr = arr.rechunk((1,) * len(leading) + (-1, -1, -1))
    if linker is None and config.link_planes:
        linker = lazy_linker(tuple(leading), config)
    return da.map_blocks(
        _segment_plane_block,
        arr,
        _model_key(net),
        normalization=normalization,
        config=config,
        linker=linker,
        drop_axis=arr.ndim - 3,
        chunks=(*arr.chunks[:-3], *arr.chunks[-2:]),
        dtype=np.uint32,
        meta=np.empty((0,) * (arr.ndim - 1), dtype=np.uint32),
    )


def _segment_plane_block(
    block: np.ndarray,
    model: nn.Module,
    *,
    normalization: Normalization,
    config: SegmentConfig,
    linker: PlaneLinker | None = None,
    block_info: dict | None = None,
) -> np.ndarray:
    """One chunk of :func:`segment_dask`: (1, ..., 1, C, Y, X) -> (1, ..., 1, Y, X)."""
    info = block_info[0]
    location, count = info["chunk-location"][:-3], info["num-chunks"][:-3]
    index = int(np.ravel_multi_index(location, count)) if count else 0
    shape = (*block.shape[:-3], *block.shape[-2:])
    part = None if linker is None else linker.plane(index)
    if part is None:
        part = _plane_labels(block, model, normalization, config, index)
    if linker is not None:
        return linker.add(index, part).reshape(shape)
    out = np.where(part > 0, part + np.uint32(index * LAZY_ID_STRIDE), np.uint32(0))
    return out.astype(np.uint32, copy=False).reshape(shape)


def _plane_labels(
    block: np.ndarray,
    model: nn.Module,
    normalization: Normalization,
    config: SegmentConfig,
    index: int,
) -> np.ndarray:
    """Predict and label one plane: ids ``1 ... n`` with ``n < LAZY_ID_STRIDE``."""
    from ..tiling import predict_tiled

    plane = np.asarray(block).reshape(block.shape[-3:])
    image = normalization(plane, channel_axis=0)
    probs = predict_tiled(model, image, tta=config.tta, **_predict_kwargs(config))
    part = _labels_of_plane(probs, config)
    cells = int(part.max(initial=0))
    if cells >= LAZY_ID_STRIDE:
        raise ValueError(
            f"plane {index} has {cells} cells; lazy labels support fewer than {LAZY_ID_STRIDE}"
        )
    return part


def lazy_linker(leading: tuple[int, ...], config: SegmentConfig) -> PlaneLinker | None:
    """The :class:`PlaneLinker` for lazy labels with these leading axes, or None.

    None when ``config.link_planes`` is off or there is no Z axis with two
    planes or more (``config.axes``; else a (Z, Y, X) stack's one leading axis).
    """
    if not config.link_planes:
        return None
    z = _z_axis(len(leading) + 2, config)
    if z is None or leading[z] < 2:
        return None
    return PlaneLinker(tuple(leading), z, LAZY_ID_STRIDE)

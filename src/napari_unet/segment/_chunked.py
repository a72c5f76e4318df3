"""Chunked segmentation: Zarr, OME-Zarr or large TIFF in, OME-Zarr out."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..axes import find_channel_axis, move_channels
from ..outputs import TMP_SUFFIX, atomic_path
from ._config import (
    SegmentConfig,
    _axes_channel_axis,
    _predict_kwargs,
    _setup,
)
from ._link_chunked import chunked_z_axis, link_lookup, relabel_in_place

if TYPE_CHECKING:
    from torch import nn


@contextlib.contextmanager
def dask_scheduler(spec: str | None) -> Iterator[object]:
    """Run Dask computations on threads, synchronously, or on a dask.distributed cluster.

    Parameters
    ----------
    spec : str, optional
        ``"threads"`` (default), ``"synchronous"``, or a scheduler address
        such as ``"tcp://host:8786"``.

    Yields
    ------
    client : distributed.Client or None
        The connected client (closed afterwards; the cluster keeps running).
    """
    import dask

    if spec in (None, "threads", "synchronous"):
        with dask.config.set(scheduler=spec or "threads"):
            yield None
        return
    if "://" not in spec:
        raise ValueError(
            f"must be threads, synchronous or a scheduler address such as "
            f"tcp://host:8786, got {spec!r}"
        )
    try:
        from distributed import Client
    except ImportError as err:
        raise ValueError(
            f"{spec} needs dask.distributed ({err}); pip install distributed"
        ) from err
    try:
        client = Client(spec, timeout="10s")
    except (OSError, TimeoutError) as err:
        raise ValueError(f"{spec}: cannot connect ({err})") from err
    with client:
        yield client


def _store(array: Any, target: Any, what: str, progress: Callable | None) -> None:
    """Write a Dask array into a Zarr array chunk by chunk (zarr chunks = dask chunks)."""
    import dask.array as da

    array = array.rechunk(target.chunks)
    with progress(what) if progress is not None else contextlib.nullcontext():
        da.store(array, target, lock=False)


def _chunked_input(
    image: Any, net: nn.Module, channel_axis: int | None, chunks: tuple[int, ...] | None
) -> tuple[Any, int | None, list[str], list[float]]:
    """A chunked image arranged for prediction: data, channel axis, axis names, pixel sizes.

    Channels go just before (Y, X), or before (Z, Y, X) for a 3D model;
    leading planes become one chunk each, the channels one chunk, and (Y, X)
    chunks of ``chunks`` pixels (default: the input's chunks clamped to
    256-2048; Z chunks of a 3D model: clamped to 32-256, or ``chunks[0]`` of
    three).
    """
    nd = int(getattr(net, "spatial_dims", 2))
    data, axes, scale = image.data, list(image.axes), list(image.scale)
    names = "(..., Y, X)" if nd == 2 else "(..., Z, Y, X)"
    if data.ndim < nd or not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"expected a numeric {names} array, got {data}")
    axis = find_channel_axis(
        data.shape, net.in_channels, image.channel_axis if channel_axis is None else channel_axis
    )
    if axis is not None:
        if nd == 3:
            import dask.array as da

            data = da.moveaxis(da.asarray(data), axis, -4)
        else:
            data = move_channels(data, axis)
        for names_or_sizes in (axes, scale):
            names_or_sizes.insert(data.ndim - nd - 1, names_or_sizes.pop(axis))
        axis = data.ndim - nd - 1
    if data.ndim - (axis is not None) < nd:
        raise ValueError(f"expected a {names} array for this {nd}D model, got shape {data.shape}")
    leading = [a for a in range(data.ndim - nd) if a != axis]
    spatial = tuple(range(data.ndim - nd, data.ndim))
    sides = tuple(int(min(max(max(data.chunks[ax]), 256), 2048)) for ax in spatial[-2:])
    if chunks is not None:
        sides = tuple(chunks[-2:])
    if nd == 3:
        z = chunks[0] if chunks is not None and len(chunks) == 3 else None
        sides = (z or int(min(max(max(data.chunks[spatial[0]]), 32), 256)), *sides)
    data = data.rechunk(
        {
            **{ax: 1 for ax in leading},
            **({axis: -1} if axis is not None else {}),
            **dict(zip(spatial, sides, strict=True)),
        }
    )
    return data, axis, axes, scale


def _check_chunked(config: SegmentConfig | None, margin: int) -> SegmentConfig:
    """The settings without TTA (an explicit ``tta=True`` fails; a model's choice is dropped)."""
    if config is not None and config.tta:
        raise ValueError(
            "test-time augmentation is not available in chunked mode (Zarr, large TIFF)"
        )
    if margin < 1:
        raise ValueError(f"the labels margin must be >= 1, got {margin}")
    return replace(config or SegmentConfig(), tta=False)


def _margins(net: nn.Module, margin: int) -> tuple[int, ...]:
    """The labelling margin per spatial axis: ``margin`` pixels in (Y, X), as far in Z.

    A 3D model's voxel spacing makes Z planes farther apart: the Z margin
    spans the same distance, in planes (at least one).
    """
    spacing = getattr(net, "spacing", None)
    if getattr(net, "spatial_dims", 2) != 3:
        return (margin, margin)
    if not spacing:
        return (margin,) * 3
    z = max(1, math.ceil(margin * min(spacing[1:]) / spacing[0]))
    return (z, margin, margin)


def _link_axis(config: SegmentConfig, axes: list[str]) -> int | None:
    """The labels' axis whose planes are linked into 3D objects, or None."""
    if not config.link_planes:
        return None
    return chunked_z_axis(axes, config.axes)


def _link_store(target: Any, z: int, what: str, progress: Callable | None) -> None:
    """Link the Z planes of the stored labels (two passes over the store, see _link_chunked)."""
    if target.shape[z] < 2:
        return
    with progress(what) if progress is not None else contextlib.nullcontext():
        relabel_in_place(target, link_lookup(target, z))


def segment_chunked(
    model: Any,
    source: str | os.PathLike,
    labels_path: str | os.PathLike,
    probabilities_path: str | os.PathLike | None = None,
    *,
    channel_axis: int | None = None,
    chunks: tuple[int, ...] | None = None,
    margin: int = 64,
    config: SegmentConfig | None = None,
    normalization: Any = None,
    progress: Callable[[str], contextlib.AbstractContextManager] | None = None,
    info: dict[str, Any] | None = None,
) -> int:
    """Segment a Zarr / OME-Zarr store or TIFF file chunk by chunk into OME-Zarr images.

    Run it inside :func:`dask_scheduler` to choose the Dask scheduler.

    Parameters
    ----------
    model, config, normalization
        As for :func:`segment` (``tta`` is not available here: a model's
        recommended TTA is not applied, an explicit ``tta=True`` fails).
    source : path
        Read with :func:`napari_unet.io.open_chunked` (OME-Zarr: its first level).
    labels_path : path
        The uint32 OME-Zarr label image to write (replaced if it exists).
    probabilities_path : path, optional
        Also keep the float32 probabilities here (classes first); else they
        go to a scratch store beside ``labels_path``, removed at the end.
    channel_axis : int, optional
        Default: the OME-Zarr channel axis, else the rule of
        :func:`~napari_unet.axes.find_channel_axis`.
    chunks : (int, int) or (int, int, int), optional
        Spatial chunk sides for prediction, (Y, X) or, for a 3D model,
        (Z, Y, X); default: the input's chunks clamped to 256-2048 (Z: 32-256).
    margin : int
        Context each chunk is labelled with; should exceed the largest cell.
        For a 3D model, as far in Z as in (Y, X) by the model's voxel
        spacing (``margin * y / z`` planes).
    progress : callable, optional
        Called with a description before each pass over the data; returns a
        context manager wrapped around that pass (e.g. a progress bar).
    info : dict, optional
        Filled with ``linked_axis`` (the labels' axis whose planes were
        linked, or None), ``axes`` (the labels' axis names) and
        ``spatial_dims`` (3: volumes segmented in 3D by a 3D model).

    Returns
    -------
    count : int
        The largest label id written (the number of objects).

    Notes
    -----
    With ``config.link_planes``, the planes of the Z axis (the one
    ``config.axes`` names, else the axis named ``z``: OME-Zarr axes, or
    ``z, y, x`` / ``t, z, y, x`` guessed for 3 / 4 axes) are linked into 3D
    objects after labelling: overlap tables per chunk, then one relabel
    pass over the labels store (:mod:`._link_chunked`); the result equals
    the in-memory linked labels up to the numbering.
    """
    import dask.array as da
    import zarr

    from ..io import create_ome_zarr, open_chunked
    from ..postprocess import labels_dask
    from ..tiling import predict_dask

    config = _check_chunked(config, margin)
    net, config, normalization = _setup(model, config, normalization)
    nd = int(getattr(net, "spatial_dims", 2))
    source, labels_path = Path(source), Path(labels_path)
    channel_axis = _axes_channel_axis(config, channel_axis)
    data, axis, axes, scale = _chunked_input(open_chunked(source), net, channel_axis, chunks)
    leading = [a for a in range(data.ndim - nd) if a != axis]
    label_axes = [axes[a] for a in (*leading, *range(-nd, 0))]
    # A 3D model segments volumes: nothing to link.
    link_z = _link_axis(config, label_axes) if nd == 2 else None
    if info is not None:
        info.update(linked_axis=link_z, axes=label_axes, spatial_dims=nd)
    kwargs = _predict_kwargs(config, backend=False)
    if config.tile is not None:
        kwargs["tile_shape"] = (config.tile,) * nd
    probs = predict_dask(
        net, normalization.apply_dask(data, channel_axis=axis), channel_axis=axis, **kwargs
    )
    lead_axes, lead_scale = [axes[a] for a in leading], [scale[a] for a in leading]
    out_axes, out_scale = label_axes, [*lead_scale, *scale[-nd:]]
    block = (*(1,) * len(lead_axes), *(c[0] for c in probs.chunks[-nd:]))
    # Probabilities go to the output, or to a scratch store beside it: the
    # labels need them twice (the id lookup, then the labels themselves).
    # Both stores are written under temporary names and renamed when complete
    # (outputs.atomic_path): an interrupted run leaves no valid-looking store
    # with unwritten all-zero chunks under a final name.
    scratch = None
    if probabilities_path is None:
        scratch = Path(
            tempfile.mkdtemp(
                prefix=f".{labels_path.stem}.", suffix=TMP_SUFFIX, dir=labels_path.parent
            )
        )
    try:
        with contextlib.ExitStack() as outputs:
            labels_tmp = outputs.enter_context(atomic_path(labels_path, folder=True))
            if probabilities_path is None:
                store_path = scratch / "probabilities.zarr"
            else:
                store_path = outputs.enter_context(atomic_path(probabilities_path, folder=True))
            target = create_ome_zarr(
                store_path,
                shape=probs.shape,
                chunks=(probs.shape[0], *block),
                dtype=np.float32,
                axes=["c", *out_axes],
                scale=[1.0, *out_scale],
                name=f"{labels_path.stem} probabilities",
            )
            _store(probs, target, f"{source.name}: predicting", progress)
            # A zarr.Array, not a Dask array: each labelling task reads its own
            # chunk and margins, so no chunk waits in memory for its neighbours.
            stored = zarr.open_array(str(store_path / "0"), mode="r")
            labels = labels_dask(
                stored,
                margin=_margins(net, margin),
                spatial_dims=nd,
                threshold=config.threshold,
                compute_lookup=True,
                **dict(config.postprocess or {}),
            )
            target = create_ome_zarr(
                labels_tmp,
                shape=labels.shape,
                chunks=block,
                dtype=np.uint32,
                axes=out_axes,
                scale=out_scale,
                name=labels_path.stem,
                label=True,
            )
            _store(labels, target, f"{source.name}: labelling", progress)
            if link_z is not None:
                _link_store(target, link_z, f"{source.name}: linking planes", progress)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return int(da.from_zarr(str(labels_path), component="0").max().compute())

"""Overlap-tile prediction (Ronneberger et al. 2015, figure 2).

Images of any size are predicted tile by tile. Missing context at the image
borders is extrapolated by mirroring. For a ``padding="valid"`` U-Net the
output tiles abut exactly and the result equals one forward pass over the
whole mirror-padded image; for ``padding="same"`` models overlapping tiles are
blended.
"""

from __future__ import annotations

import functools
import itertools
import math
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .devices import select_device
from .errors import RedundantComputeWarning
from .inference import Backend, make_backend
from .progress import Progress, drive

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "choose_tile_shape",
    "iter_predict_stack",
    "iter_predict_tiled",
    "predict_dask",
    "predict_stack",
    "predict_tiled",
]

# Activation memory of a forward pass in inference mode, in float32 values per
# input pixel and per base channel. Measured on the CPU for depth-4 U-Nets
# (peak RSS growth / (input pixels * base_channels)); deeper levels add little
# because they are 4x smaller per level.
_FLOATS_PER_PIXEL_PER_BASE_CHANNEL = 5.5
_CPU_BUDGET_BYTES = 2 * 2**30
_MAX_TILE = 2048
# Tiles computing more than this many input pixels per kept output pixel get a warning.
_REDUNDANT_LIMIT = 4.0


def predict_tiled(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    tta: bool = False,
    overlap: Sequence[int] | int | None = None,
    backend: str | Backend = "auto",
    precision: str = "auto",
    progress: Callable[[int, int], object] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Predict class probabilities for one image of any size, tile by tile.

    Parameters
    ----------
    model : torch.nn.Module
        A 2D or 3D :class:`~napari_unet.models.UNet` (or a model with the same
        shape helpers: ``in_channels``, ``num_classes``, ``padding``, ``halo``,
        ``divisor``, ``output_shape``, ``valid_input_shape``).
    image : ndarray, shape (Y, X) or (C, Y, X); (Z, Y, X) or (C, Z, Y, X)
        Intensities, already normalised the way the model was trained. ``C``
        must equal ``model.in_channels`` (an image without a channel axis is
        one channel). A 3D model (``spatial_dims=3``) takes a volume and
        tiles it in 3D, exactly as below, per axis.
    tile_shape : sequence of 2 (3 for a volume) int, optional
        Input tile shape in pixels. It is rounded up to the nearest valid
        shape. ``None`` picks the largest valid tile that fits the memory
        budget of ``device`` (see :func:`choose_tile_shape`), but no larger
        than the image needs.
    batch_size : int
        Tiles per forward pass.
    device : str or torch.device, optional
        ``None`` picks CUDA, then MPS, then the CPU. The model is moved there.
    tta : bool
        Test-time augmentation: average the predictions for the 8 rotations
        and flips of the image (8 times slower).
    overlap : int or sequence of 2 (3) int, optional
        Only for ``padding="same"`` models: overlap between neighbouring
        tiles in pixels. Default: ``2 * context + 1`` rounded up to
        ``2**depth`` (192 at depth 4), which makes tiling exact (Notes).
    backend : {"auto", "eager", "compile", "onnxruntime"} or Backend
        Inference engine, or a callable from
        :func:`~napari_unet.inference.make_backend` (reuse one across calls to
        pay its set-up once). ``"auto"``: the fastest path whose labels equal
        fp32 eager (ONNX Runtime on the CPU when its export is cached or pays
        back, see :mod:`napari_unet.inference`).
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``"auto"`` is fp32 here (a model's recorded bf16 check is honoured
        through ``make_backend(..., metadata=...)``). Every fp32 backend keeps
        the exactness described in the Notes.
    progress : callable, optional
        Called as ``progress(done, total)`` after every batch of tiles.
    cancel : callable, optional
        Checked after every batch; when it returns True prediction stops
        and :class:`~napari_unet.progress.Cancelled` is raised.

    Returns
    -------
    probabilities : ndarray of float32, shape (num_classes, *spatial)
        Softmax probabilities.

    Raises
    ------
    ValueError
        If the image has the wrong number of dimensions or channels, is empty,
        is not numeric, or holds NaN or infinite values.
    napari_unet.progress.Cancelled
        If ``cancel()`` returned True.

    Notes
    -----
    *Valid padding, exact.* The image is mirror-padded (``np.pad`` with
    ``mode="reflect"``) by the network's halo and cut into input tiles whose
    outputs are placed side by side. A valid U-Net is translation-equivariant
    only for shifts that are multiples of ``2**depth`` (the max-pooling grid),
    and its output size never is one (388 for a 572 input), so each tile
    advances by the largest multiple of ``2**depth`` that fits in its output
    and the few surplus output pixels are dropped. Every output pixel then
    sees exactly the input and pooling grid it would see in one forward pass
    over the whole mirror-padded image, so both agree to floating-point
    rounding, for any tile size.

    *Same padding, blended.* Zero padding at a tile's edge changes the
    output up to the network's ``context`` pixels inside the tile (94 at depth
    4, see :attr:`~napari_unet.models.UNet.context`). Tiles overlap by
    ``overlap`` pixels (default ``2 * context + 1`` rounded up to
    ``2**depth``) and each tile's probabilities are weighted by a separable
    window that is 0 within ``context`` pixels of the tile edge and
    rises linearly to 1 at ``overlap`` pixels; the weighted sum is divided by
    the summed weights. The image is first mirror-padded by ``overlap``. Tile
    positions are multiples of ``2**depth`` (same pooling grid), so with the
    default overlap every pixel is blended only from tile interiors that zero
    padding cannot reach, and the result equals one pass over the whole
    mirror-padded image. A smaller ``overlap`` trades this exactness for
    speed; the blending still leaves no seams.
    """
    events = iter_predict_tiled(
        model,
        image,
        tile_shape=tile_shape,
        batch_size=batch_size,
        device=device,
        tta=tta,
        overlap=overlap,
        backend=backend,
        precision=precision,
    )
    return drive(events, progress=progress, cancel=cancel)


def iter_predict_tiled(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    tta: bool = False,
    overlap: Sequence[int] | int | None = None,
    backend: str | Backend = "auto",
    precision: str = "auto",
    _images: int = 1,
) -> Generator[Progress, None, np.ndarray]:
    """Generator form of :func:`predict_tiled`.

    Yields a :class:`~napari_unet.progress.Progress` event after every batch
    of tiles and returns the probabilities. Closing the generator stops the
    work; this is how the napari widgets cancel.
    """
    return (
        yield from _predict_into(
            model,
            image,
            None,
            tile_shape=tile_shape,
            batch_size=batch_size,
            device=device,
            tta=tta,
            overlap=overlap,
            backend=backend,
            precision=precision,
            _images=_images,
        )
    )


def _predict_into(
    model: nn.Module,
    image: np.ndarray,
    out: np.ndarray | None,
    *,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    tta: bool = False,
    overlap: Sequence[int] | int | None = None,
    backend: str | Backend = "auto",
    precision: str = "auto",
    _images: int = 1,
) -> Generator[Progress, None, np.ndarray]:
    """:func:`iter_predict_tiled` writing into ``out`` (classes, Y, X), or a new array.

    Memory: ``out`` plus tile-sized buffers. The image is neither copied
    nor padded as a whole: each tile is cut from it with the mirror padding
    folded into its indices and converted to float32 on its own.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`model` must be a torch.nn.Module (e.g. from napari_unet.io.load_model), "
            f"got {type(model).__name__}"
        )
    image = _as_channels_first(model, image)
    dev = select_device(device)
    # TTA rotates the planes, so their tiles are planned square for the longest side.
    plan_shape = image.shape[1:]
    if tta:
        plan_shape = (*plan_shape[:-2], max(plan_shape[-2:]), max(plan_shape[-2:]))
    if isinstance(backend, str):
        backend = make_backend(model, backend=backend, precision=precision, device=dev)
    tiler = _Tiler(model, plan_shape, tile_shape, dev, overlap, backend)
    tiler.warn_if_redundant(tile_shape)
    transforms = _DIHEDRAL if tta else _DIHEDRAL[:1]
    total = sum(tiler.count_tiles(forward(image[:1]).shape[1:]) for forward, _ in transforms)
    # A backend that pays a set-up cost decides from the work announced
    # (`_images` same-shaped images for a stack, announced with its first plane).
    if _images and hasattr(backend, "expect"):
        backend.expect(total * _images)
    if out is None:
        out = np.zeros((model.num_classes, *image.shape[1:]), dtype=np.float32)
    elif tta or model.padding == "same":
        out[...] = 0  # these accumulate
    done = 0
    for forward, _ in transforms:
        # forward() gives views: the tiles are read from the transformed image
        # and written into the transformed view of `out`.
        events = tiler.predict_into(
            forward(image), forward(out), batch_size=batch_size, accumulate=len(transforms) > 1
        )
        for n in events:
            done += n
            yield Progress(done, total, "predict")
    if len(transforms) > 1:
        out /= len(transforms)
    return out


def predict_stack(
    model: nn.Module,
    data: np.ndarray,
    *,
    channel_axis: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    cancel: Callable[[], bool] | None = None,
    **kwargs: object,
) -> np.ndarray:
    """Predict every 2D plane of a stack (Z-stack, time series, or both).

    Parameters
    ----------
    model : torch.nn.Module
        A 2D model, as for :func:`predict_tiled`.
    data : ndarray, shape (..., Y, X) with an optional channel axis
        Planes are the last two axes other than the channel axis, so RGB
        images (Y, X, 3) and (Z, C, Y, X) stacks both work. Any number of
        leading axes (Z, T, ...).
    channel_axis : int, optional
        Axis of ``data`` that holds the channels (``model.in_channels`` long),
        anywhere, including last. ``None``: one channel and no channel axis.
    progress, cancel : callable, optional
        As for :func:`predict_tiled`; ``total`` counts tiles of all planes.
    **kwargs
        Passed to :func:`predict_tiled` (``tile_shape``, ``batch_size``,
        ``device``, ``tta``, ``overlap``, ``backend``, ``precision``). The
        backend is set up once for all planes.

    Returns
    -------
    probabilities : ndarray of float32, shape (num_classes, ..., Y, X)
        The leading axes of ``data`` without the channel axis.
    """
    return drive(
        iter_predict_stack(model, data, channel_axis=channel_axis, **kwargs),
        progress=progress,
        cancel=cancel,
    )


def iter_predict_stack(
    model: nn.Module,
    data: np.ndarray,
    *,
    channel_axis: int | None = None,
    **kwargs: object,
) -> Generator[Progress, None, np.ndarray]:
    """Generator form of :func:`predict_stack`; yields after every batch of tiles."""
    data = np.asarray(data)
    if channel_axis is not None:
        if not -data.ndim <= channel_axis < data.ndim:
            raise ValueError(
                f"`channel_axis` {channel_axis} is out of range for data of shape {data.shape}"
            )
        if data.ndim < 3:
            raise ValueError(
                f"`data` has shape {data.shape}; with a `channel_axis` it needs at least "
                "3 axes (channels, Y, X in any order)"
            )
        # A view: planes are taken one at a time, never copied as a whole stack.
        moved = np.moveaxis(data, channel_axis, -3)
        if moved.shape[-3] != model.in_channels:
            raise ValueError(
                f"`data` of shape {data.shape} has {moved.shape[-3]} channel(s) along "
                f"`channel_axis` {channel_axis}, but the model expects {model.in_channels}"
            )
        leading = moved.shape[:-3]
    else:
        if data.ndim < 2:
            raise ValueError(
                f"`data` has shape {data.shape}; expected (..., Y, X) with at least 2 axes"
            )
        moved = data[..., np.newaxis, :, :]
        leading = data.shape[:-2]
    count = math.prod(leading)
    if count == 0:
        raise ValueError(f"`data` of shape {data.shape} holds no planes")

    shape = moved.shape[-2:]
    out = np.empty((model.num_classes, count, *shape), dtype=np.float32)
    backend = kwargs.pop("backend", "auto")
    if isinstance(backend, str):
        backend = make_backend(
            model,
            backend=backend,
            precision=str(kwargs.pop("precision", "auto")),
            device=kwargs.get("device"),
        )
    for index, where in enumerate(np.ndindex(*leading)):
        # Each plane's probabilities go straight into their place in `out`.
        events = _predict_into(
            model,
            moved[where],
            out[:, index],
            backend=backend,
            _images=count if index == 0 else 0,
            **kwargs,
        )
        for event in events:
            yield Progress(
                index * event.total + event.done,
                count * event.total,
                "predict",
                {"plane": index, "planes": count},
            )
    return out.reshape(model.num_classes, *leading, *shape)


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
        A 2D model, as for :func:`predict_tiled`.
    array : dask.array.Array or array-like, shape (..., Y, X)
        Chunked data (for example from Zarr) or anything ``dask.array.asarray``
        accepts. Planes are the last two axes; leading axes (Z, T, ...) keep
        their chunks.
    channel_axis : int, optional
        Axis holding ``model.in_channels`` channels (anywhere; the planes are
        the last two other axes); ``None`` for one channel.
    tile_shape, batch_size, device, backend, precision
        As for :func:`predict_tiled`, per chunk. ``device`` and the backend
        are resolved on the worker that computes the chunk.

    Returns
    -------
    probabilities : dask.array.Array of float32, shape (num_classes, ..., Y, X)
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
    arr = _channels_before_planes(arr, channel_axis, model)

    margin = _Tiler.margin_of(model)
    d = model.divisor
    # A pixel's value can depend on up to 2**depth - 1 pixels past the margin
    # on its far side (through its bottleneck cell), so chunks take that much
    # more real context.
    depth = tuple(m + d for m in margin)
    spatial = (arr.ndim - 2, arr.ndim - 1)
    arr = arr.rechunk(
        {
            arr.ndim - 3: -1,
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
        chunks=(*arr.chunks[:-3], (model.num_classes,), *arr.chunks[-2:]),
        dtype=np.float32,
        meta=np.empty((0,) * arr.ndim, dtype=np.float32),
    )
    return da.moveaxis(out, -3, 0)


def _channels_before_planes(
    arr: dask.array.Array, channel_axis: int | None, model: nn.Module
) -> dask.array.Array:
    """Validate a Dask array and return it as (..., C, Y, X) with C = ``in_channels``."""
    import dask.array as da

    if channel_axis is None:
        if arr.ndim < 2:
            raise ValueError(f"`array` has shape {arr.shape}; expected (..., Y, X)")
        arr = arr[..., np.newaxis, :, :]
    else:
        if not -arr.ndim <= channel_axis < arr.ndim or arr.ndim < 3:
            raise ValueError(
                f"`channel_axis` {channel_axis} is not an axis of an array of shape "
                f"{arr.shape} with channels, Y and X"
            )
        arr = da.moveaxis(arr, channel_axis, -3)
    if arr.shape[-3] != model.in_channels:
        raise ValueError(
            f"`array` has {arr.shape[-3]} channel(s) along `channel_axis`, but the model "
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
    margin: tuple[int, int],
    extra: int,
    tile_shape: Sequence[int] | None,
    batch_size: int,
    device: str | torch.device | None,
    backend: str = "eager",
    precision: str = "fp32",
    block_info: dict | None = None,
) -> np.ndarray:
    """Predict one overlapped chunk: (..., C, Y, X) with ``margin + extra`` context."""
    info = block_info[0]
    location, count = info["chunk-location"], info["num-chunks"]
    crop = [slice(None)] * (block.ndim - 2)
    pads = []
    for ax, m in zip((block.ndim - 2, block.ndim - 1), margin, strict=True):
        first, last = location[ax] == 0, location[ax] == count[ax] - 1
        # Tiles start `margin` before the chunk: drop the rest of the leading
        # context. At the array's own borders Dask added none: mirror-pad there
        # as predict_tiled pads the whole image.
        crop.append(slice(0 if first else extra, None))
        pads.append((m if first else 0, m + extra if last else 0))
    planes = block[tuple(crop)]
    planes = planes.reshape(-1, *planes.shape[-3:]).astype(np.float32, copy=False)
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
    return np.stack(results).reshape(*block.shape[:-3], model.num_classes, *results[0].shape[1:])


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
    side = _round_up(math.ceil(2 * max(depth) / (math.sqrt(2) - 1)), divisor)
    warnings.warn(
        f"chunks of {sizes[0]}x{sizes[1]} pixels are each predicted with {max(depth)} pixels "
        f"of context on every side: {factor:.1f}x the pixels they keep; chunks of "
        f"{side}x{side} or larger (e.g. --chunks {side}) waste far less",
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


def choose_tile_shape(
    model: nn.Module,
    image_shape: Sequence[int],
    device: str | torch.device | None = None,
    *,
    memory_budget: int | None = None,
) -> tuple[int, ...]:
    """The largest valid input tile that fits a memory budget and the image.

    Parameters
    ----------
    model : torch.nn.Module
        A 2D or 3D model with the U-Net shape helpers.
    image_shape : sequence of 2 or 3 int
        (Y, X) of the image, or (Z, Y, X) of the volume, to predict.
    device : str or torch.device, optional
        Where prediction runs; sets the default budget.
    memory_budget : int, optional
        Bytes of activation memory one tile may use. Default: half of the free
        memory on CUDA, 2 GiB on MPS and the CPU.

    Returns
    -------
    tile_shape : tuple of int
        A valid input shape, square (a cube in voxels) unless the image is
        smaller along an axis; for a stack of few planes, the planes' share
        of the budget grows.

    Notes
    -----
    Larger tiles waste less of each tile on the halo (a 572 tile of the paper's
    network keeps 46% of its pixels as output, a 1148 tile 71%), so the
    largest tile that fits is also the fastest.
    """
    dev = select_device(device)
    if memory_budget is None:
        memory_budget = _default_budget(dev)
    nd = _spatial_dims(model)
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != nd:
        raise ValueError(f"`image_shape` must have {nd} axes for this model, got {image_shape}")
    # Models may state their own activation footprint (U-Net++ keeps every
    # node of a level alive: 14.5 floats per pixel and base channel at depth 4).
    floats = getattr(
        model, "floats_per_pixel_per_base_channel", _FLOATS_PER_PIXEL_PER_BASE_CHANNEL
    )
    bytes_per_pixel = 4 * floats * getattr(model, "base_channels", 64)
    pixels = max(memory_budget, 1) / bytes_per_pixel
    side = int(math.sqrt(pixels)) if nd == 2 else int(pixels ** (1.0 / nd))
    caps = [_largest_valid_at_most(model, max(min(side, _MAX_TILE), 1), a) for a in range(nd)]
    if nd == 3:
        # A stack of few planes needs less than a cube's side along Z: the
        # spare budget goes to larger planes.
        z_tile = _tight_tile(model, image_shape[0], caps[0], 0)
        if z_tile < caps[0]:
            side = int(math.sqrt(pixels / z_tile))
            caps[1:] = [_largest_valid_at_most(model, min(side, _MAX_TILE), a) for a in (1, 2)]
    return tuple(  # type: ignore[return-value]
        _tight_tile(model, size, cap, axis)
        for axis, (size, cap) in enumerate(zip(image_shape, caps, strict=True))
    )


# -- internals ---------------------------------------------------------------------------------


def _spatial_dims(model: nn.Module) -> int:
    return int(getattr(model, "spatial_dims", 2))


def _divisor(model: nn.Module, axis: int) -> int:
    divisors = getattr(model, "divisors", None)
    return int(divisors[axis]) if divisors is not None else int(model.divisor)


def _valid_size(model: nn.Module, out: int, axis: int) -> int:
    """Smallest valid input size along ``axis`` whose output is >= ``out``."""
    wanted = [1] * _spatial_dims(model)
    wanted[axis] = out
    return int(model.valid_input_shape(tuple(wanted))[axis])


def _output_size(model: nn.Module, n: int, axis: int) -> int:
    shape = [_valid_size(model, 1, a) for a in range(_spatial_dims(model))]
    shape[axis] = n
    return int(model.output_shape(tuple(shape))[axis])


def _tight_tile(model: nn.Module, size: int, cap: int, axis: int = 0) -> int:
    """The smallest tile that covers ``size`` with as few tiles as ``cap`` needs.

    Tiles that overhang the image waste work: for a 2048-pixel axis, 1148
    tiles (960-pixel steps) need three per axis, while 1212 tiles need two.
    """
    d = _divisor(model, axis)
    if model.padding == "same":
        overlap = _default_overlap(model, axis)
        extent = size + 2 * overlap
        n = max(1, -(-(extent - overlap) // _same_step(model, cap, overlap, axis)))
        tile = max(_round_up(-(-(extent + (n - 1) * overlap) // n), d), overlap + d)
        while (n - 1) * _same_step(model, tile, overlap, axis) + tile < extent:
            tile += d
        return min(cap, tile)
    step = max(d, _output_size(model, cap, axis) // d * d)
    n = max(1, -(-size // step))
    needed = _round_up(-(-size // n), d)
    return min(cap, _valid_size(model, needed, axis))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return _CPU_BUDGET_BYTES


def _largest_valid_at_most(model: nn.Module, side: int, axis: int = 0) -> int:
    """Largest valid input size <= side, or the smallest useful one if none is."""
    d = _divisor(model, axis)
    smallest = _valid_size(model, d, axis)
    if side <= smallest:
        return smallest
    n = _valid_size(model, max(1, side - 2 * model.halo[axis]), axis)
    while n > side:
        n -= d
    return max(n, smallest)


def _context(model: nn.Module, axis: int = 0) -> int:
    contexts = getattr(model, "contexts", None)
    return int(contexts[axis]) if contexts is not None else int(model.context)


def _default_overlap(model: nn.Module, axis: int = 0) -> int:
    """Twice the network's context plus one, rounded to the divisor.

    Then every pixel of an overlap lies at least ``context`` pixels inside
    one of the two tiles, where zero padding at the tile edge cannot reach.
    """
    return _round_up(2 * _context(model, axis) + 1, _divisor(model, axis))


def _same_step(model: nn.Module, tile: int, overlap: int, axis: int = 0) -> int:
    d = _divisor(model, axis)
    return max(d, (tile - overlap) // d * d)


def _as_channels_first(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as (C, Y, X), or (C, Z, Y, X) for a 3D model."""
    image = np.asarray(image)
    channels = model.in_channels
    nd = _spatial_dims(model)
    axes = "Y, X" if nd == 2 else "Z, Y, X"
    expected = f"({axes}) or (1, {axes})" if channels == 1 else f"({channels}, {axes})"
    if image.dtype == np.bool_:
        image = image.view(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(
            f"`image` has dtype {image.dtype}, expected a real numeric dtype "
            "(integer or floating point)"
        )
    received = image.shape
    if image.ndim == nd and channels == 1:
        image = image[np.newaxis]
    if image.ndim != nd + 1 or image.shape[0] != channels:
        hint = ""
        if nd == 2 and image.ndim >= 3 and channels == 1:
            hint = "; for a stack use predict_stack (or a 3D model, spatial_dims=3)"
        raise ValueError(
            f"`image` has shape {image.shape}, expected {expected} for a {nd}D model with "
            f"{channels} input channel{'s' if channels > 1 else ''}" + hint
        )
    if image.size == 0:
        raise ValueError(f"`image` of shape {received} is empty, expected {expected}")
    # Tiles are converted to float32 one at a time; the check runs on blocks of
    # rows so that it needs no image-sized temporary either.
    if image.dtype.kind == "f" or image.dtype.itemsize > 2:
        rows = max(1, 2**22 // max(1, math.prod(image.shape) // image.shape[1]))
        for y in range(0, image.shape[1], rows):
            if not np.isfinite(image[:, y : y + rows].astype(np.float32)).all():
                raise ValueError(
                    f"`image` of shape {received} contains NaN or infinite values; "
                    "replace them (e.g. np.nan_to_num) before predicting"
                )
    return image


class _Tiler:
    """Plans and runs the tiles of one image shape."""

    def __init__(
        self,
        model: nn.Module,
        image_shape: tuple[int, int],
        tile_shape: Sequence[int] | None,
        device: torch.device,
        overlap: Sequence[int] | int | None,
        backend: Backend | None = None,
    ) -> None:
        # Eager channels_last fp32 unless told otherwise (inference.py).
        self.run = backend or make_backend(model, backend="eager", precision="fp32", device=device)
        self.model = model
        self.device = device
        nd = _spatial_dims(model)
        axes = range(nd)
        if tile_shape is None:
            tile = choose_tile_shape(model, image_shape, device)
        else:
            tile = tuple(int(t) for t in tile_shape)
            if len(tile) != nd or min(tile) < 1:
                raise ValueError(f"`tile_shape` must be {nd} positive integers, got {tile_shape}")
        d = tuple(_divisor(model, a) for a in axes)
        if model.padding == "same":
            if overlap is None:
                ov = tuple(_default_overlap(model, a) for a in axes)
            else:
                scalar = np.isscalar(overlap)
                ov = (int(overlap),) * nd if scalar else tuple(int(o) for o in overlap)
                if len(ov) != nd or min(ov) < 0:
                    raise ValueError(f"`overlap` must be 1 or {nd} integers >= 0, got {overlap}")
            # A tile must be larger than its overlap by one pooling cell, so
            # that tiles advance and keep the pooling grid.
            self.tile = tuple(_round_up(max(tile[a], ov[a] + d[a]), d[a]) for a in axes)
            self.overlap = ov
            self.step = tuple(_same_step(model, self.tile[a], ov[a], a) for a in axes)
        else:
            self.tile = self._round_valid_tile(tile)
            out = model.output_shape(self.tile)
            self.step = tuple(out[a] // d[a] * d[a] for a in axes)

    def _round_valid_tile(self, tile: Sequence[int]) -> tuple[int, ...]:
        model = self.model
        # Valid padding: the output must hold at least one pooling cell.
        rounded = []
        for axis, t in enumerate(tile):
            out = max(_divisor(model, axis), t - 2 * model.halo[axis])
            rounded.append(_valid_size(model, out, axis))
        return tuple(rounded)

    def _grid(self, image_shape: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """Tile counts per axis and (before, after) padding per axis."""
        counts, pads = [], []
        for size, tile, step, halo in zip(
            image_shape, self.tile, self.step, self._margin(), strict=True
        ):
            n = max(1, -(-(size + 2 * halo - (tile - step)) // step))
            if self.model.padding == "valid":
                n = max(1, -(-size // step))
            extent = (n - 1) * step + tile
            pads.append((halo, extent - size - halo))
            counts.append(n)
        return counts, pads

    def _margin(self) -> tuple[int, ...]:
        if self.model.padding == "same":
            return self.overlap
        return tuple(self.model.halo)

    @staticmethod
    def margin_of(model: nn.Module) -> tuple[int, ...]:
        """The context a tiler with the default overlap pads each side with."""
        if model.padding == "same":
            return tuple(_default_overlap(model, a) for a in range(_spatial_dims(model)))
        return tuple(model.halo)

    def count_tiles(self, image_shape: Sequence[int]) -> int:
        return math.prod(self._grid(image_shape)[0])

    def predict(
        self,
        image: np.ndarray,
        *,
        batch_size: int,
        with_margin: bool = False,
        trailing: int = 0,
    ) -> Generator[int, None, np.ndarray]:
        """Yields the number of tiles finished per batch; returns (classes, Y, X).

        With ``with_margin=True`` the image already carries :meth:`_margin`
        pixels of real context on every side (a chunk of a larger array with
        its neighbours' pixels), and only the interior is predicted.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        margin = self._margin()
        if with_margin:
            size = tuple(
                s - 2 * m - trailing for s, m in zip(image.shape[1:], margin, strict=True)
            )
            counts, pads = self._grid(size)
            # The context is there already (plus `trailing` pixels after the
            # margin); only the last tiles need filling, and what fills them
            # never reaches the interior.
            padded = _mirror_pad(
                image,
                [(0, max(0, a - m - trailing)) for (_, a), m in zip(pads, margin, strict=True)],
            )
        else:
            size = image.shape[1:]
            counts, pads = self._grid(size)
            padded = _mirror_pad(image, pads)
        padded_t = torch.from_numpy(np.ascontiguousarray(padded))
        positions = [
            tuple(i * s for i, s in zip(index, self.step, strict=True))
            for index in itertools.product(*(range(c) for c in counts))
        ]
        classes = self.model.num_classes
        if self.model.padding == "valid":
            out = np.empty(
                (classes, *(c * s for c, s in zip(counts, self.step, strict=True))),
                dtype=np.float32,
            )
            weights = None
        else:
            out = np.zeros((classes, *padded.shape[1:]), dtype=np.float32)
            weights = np.zeros(padded.shape[1:], dtype=np.float32)
            window = _blend_window(self.tile, self.overlap, self._contexts())

        keep = (slice(None), *(slice(0, s) for s in self.step))
        for batch in _batched(positions, batch_size):
            tiles = torch.stack([padded_t[(slice(None), *_at(pos, self.tile))] for pos in batch])
            probs = self.run(tiles)
            for pos, p in zip(batch, probs, strict=True):
                if weights is None:
                    out[(slice(None), *_at(pos, self.step))] = p[keep]
                else:
                    out[(slice(None), *_at(pos, self.tile))] += p * window
                    weights[_at(pos, self.tile)] += window
            yield len(batch)

        if weights is None:
            return out[(slice(None), *(slice(0, n) for n in size))]
        np.divide(out, weights, out=out, where=weights > 0)
        return out[(slice(None), *(slice(b, b + n) for (b, _), n in zip(pads, size, strict=True)))]

    def _contexts(self) -> list[int]:
        return [_context(self.model, a) for a in range(len(self.tile))]

    def predict_into(
        self, image: np.ndarray, out: np.ndarray, *, batch_size: int, accumulate: bool
    ) -> Generator[int, None, None]:
        """Predict a (C, Y, X) image into ``out`` (classes, Y, X); yields tiles per batch.

        Only tile-sized buffers are made: each tile is cut from ``image``
        (any real dtype, any strides) with the mirror padding folded into its
        indices, and its kept part is written (``accumulate``: added) into
        ``out``. Same-padding blend weights are divided out per tile: their
        sum over tiles is separable, so two 1D sums replace an image-sized one.
        """
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        size = image.shape[1:]
        counts, pads = self._grid(size)
        before = [b for b, _ in pads]
        positions = list(
            itertools.product(
                *(range(0, c * s, s) for c, s in zip(counts, self.step, strict=True))
            )
        )
        same = self.model.padding == "same"
        if same:
            ramps = _blend_ramps(self.tile, self.overlap, self._contexts())
            scales = []
            for ramp, n, step, (b, a), length in zip(
                ramps, counts, self.step, pads, size, strict=True
            ):
                total = np.zeros(b + length + a, dtype=np.float32)
                for i in range(n):
                    total[i * step : i * step + len(ramp)] += ramp
                scales.append((ramp, total))
        for batch in _batched(positions, batch_size):
            tiles = np.stack(
                [
                    self._cut(image, [p - b for p, b in zip(pos, before, strict=True)])
                    for pos in batch
                ]
            )
            probs = self.run(torch.from_numpy(tiles))
            if not np.isfinite(probs).all():
                # Finite but huge intensities (e.g. 1e37) overflow inside the network.
                raise ValueError(
                    "the model's output is not finite (NaN or infinite) for this image, whose "
                    f"largest magnitude is {float(np.abs(tiles).max()):.3g} in the failing tiles: "
                    "normalise the image (e.g. napari_unet.normalize) before predicting, "
                    "or check the model's weights"
                )
            for pos, p in zip(batch, probs, strict=True):
                if same:
                    self._blend_into(out, p, pos, before, size, scales)
                    continue
                kept = [min(s, n - q) for s, n, q in zip(self.step, size, pos, strict=True)]
                if min(kept) <= 0:
                    continue
                target = (slice(None), *_at(pos, kept))
                source = (slice(None), *(slice(0, k) for k in kept))
                if accumulate:
                    out[target] += p[source]
                else:
                    out[target] = p[source]
            yield len(batch)

    def _cut(self, image: np.ndarray, corner: Sequence[int]) -> np.ndarray:
        """The float32 tile at image position ``corner``, mirrored where it overhangs."""
        tile = image
        symmetric = min(image.shape[1:]) == 1  # as _mirror_pad
        # One axis at a time: a slice where the tile lies inside, else the
        # reflected indices (each step copies at most a tile-sized block).
        for axis, (start, length, n) in enumerate(
            zip(corner, self.tile, image.shape[1:], strict=True), start=1
        ):
            if 0 <= start and start + length <= n:
                index: slice | np.ndarray = slice(start, start + length)
            else:
                index = _reflect_indices(start, length, n, symmetric)
            tile = tile[(slice(None),) * axis + (index,)]
        return np.ascontiguousarray(tile, dtype=np.float32)

    def _blend_into(
        self,
        out: np.ndarray,
        p: np.ndarray,
        at: tuple[int, ...],
        before: Sequence[int],
        size: Sequence[int],
        scales: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Add a same-padding tile's weighted probabilities inside the image."""
        parts = []
        for pos, b, n, t, (ramp, total) in zip(at, before, size, self.tile, scales, strict=True):
            lo, hi = max(pos, b), min(pos + t, b + n)
            if lo >= hi:
                return
            norm = total[lo:hi]
            weight = np.divide(
                ramp[lo - pos : hi - pos], norm, where=norm > 0, out=np.zeros_like(norm)
            )
            parts.append((slice(lo - pos, hi - pos), slice(lo - b, hi - b), weight))
        source = (slice(None), *(part[0] for part in parts))
        target = (slice(None), *(part[1] for part in parts))
        out[target] += p[source] * functools.reduce(np.multiply.outer, [w for *_, w in parts])

    def warn_if_redundant(self, tile_shape: Sequence[int] | None) -> None:
        """Warn when a given tile computes > 4x the pixels it keeps (the halo dominates)."""
        if tile_shape is None:
            return
        factor = math.prod(self.tile) / math.prod(self.step)
        if factor <= _REDUNDANT_LIMIT:
            return
        suggested = _largest_valid_at_most(self.model, _MAX_TILE // 4)
        used = "" if tuple(tile_shape) == self.tile else f" (rounded to {self.tile})"
        warnings.warn(
            f"`tile_shape` {tuple(tile_shape)}{used} computes {factor:.1f}x the pixels it "
            f"predicts: the network's context around each {'x'.join(map(str, self.step))} "
            f"output dominates; a tile of {(suggested,) * len(self.step)}, or `tile_shape=None` "
            "(the largest that fits in memory), wastes far less",
            RedundantComputeWarning,
            stacklevel=4,
        )


def _reflect_indices(start: int, length: int, n: int, symmetric: bool) -> np.ndarray:
    """Indices of positions ``start ... start + length - 1`` of a mirror-padded axis.

    As :func:`_mirror_pad`: ``np.pad(mode="reflect")`` is periodic with period
    ``2 * (n - 1)`` (also for pads longer than the axis, which ``np.pad``
    reflects repeatedly), ``mode="symmetric"`` with period ``2 * n``.
    """
    i = np.arange(start, start + length)
    period = 2 * n if symmetric else 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i - (1 if symmetric else 0), i)


def _mirror_pad(image: np.ndarray, pads: Sequence[tuple[int, int]]) -> np.ndarray:
    """``np.pad(mode="reflect")`` that also works when a pad exceeds the image.

    NumPy reflects repeatedly for large pads, but an axis of length 1 cannot
    be reflected; it is repeated instead (the only sensible extrapolation).
    """
    width = [(0, 0), *pads]
    if min(image.shape[1:]) == 1:
        return np.pad(image, width, mode="symmetric")
    return np.pad(image, width, mode="reflect")


def _blend_window(
    tile: Sequence[int], overlap: Sequence[int], context: int | Sequence[int]
) -> np.ndarray:
    """Separable weights: 0 near the tile edge, rising linearly to 1 inside."""
    return functools.reduce(np.multiply.outer, _blend_ramps(tile, overlap, context))


def _at(corner: Sequence[int], extent: Sequence[int]) -> tuple[slice, ...]:
    """The window of ``extent`` starting at ``corner``."""
    return tuple(slice(c, c + e) for c, e in zip(corner, extent, strict=True))


def _blend_ramps(
    tile: Sequence[int], overlap: Sequence[int], context: int | Sequence[int]
) -> list[np.ndarray]:
    """The two 1D factors of :func:`_blend_window`.

    Within ``margin`` pixels of the edge (the network's context, or less when
    the overlap is too small for it) the weight is 0; it then rises linearly
    to 1 at ``overlap`` pixels from the edge.
    """
    contexts = [context] * len(tile) if np.isscalar(context) else list(context)
    ramps = []
    for t, o, c in zip(tile, overlap, contexts, strict=True):
        ramp = np.ones(t, dtype=np.float32)
        if o > 0:
            margin = min(c, (o - 1) // 2)
            rise = np.zeros(o, dtype=np.float32)
            rise[margin:] = np.arange(1, o - margin + 1, dtype=np.float32) / (o - margin)
            ramp[:o] = np.minimum(ramp[:o], rise)
            ramp[-o:] = np.minimum(ramp[-o:], rise[::-1])
        ramps.append(ramp)
    return ramps


def _batched(items: list, n: int) -> Iterator[list]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _rot(k: int, flip: bool) -> tuple[Callable, Callable]:
    def forward(a: np.ndarray) -> np.ndarray:
        a = np.rot90(a, k, axes=(-2, -1))
        return a[..., ::-1] if flip else a

    def inverse(a: np.ndarray) -> np.ndarray:
        a = a[..., ::-1] if flip else a
        return np.rot90(a, -k, axes=(-2, -1))

    return forward, inverse


_DIHEDRAL = [_rot(k, flip) for flip in (False, True) for k in range(4)]

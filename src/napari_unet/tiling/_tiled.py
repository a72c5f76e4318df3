"""Overlap-tile prediction of images and stacks (part of :mod:`napari_unet.tiling`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence

import numpy as np
import torch
from torch import nn

from ..devices import select_device
from ..inference import Backend, make_backend
from ..progress import Progress, drive
from ._plan import _as_channels_first
from ._tiler import _DIHEDRAL, _Tiler


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

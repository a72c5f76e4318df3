"""One segmentation pipeline: model + image + settings -> probabilities -> instance labels.

Every front end calls this module: ``napari-unet predict`` (both its
in-memory and its chunked path), the Predict widget (in-memory and lazy
layers) and Python users. It owns the steps between a model and labels, in
this order:

1. the model: a file, a bundled model name or a module (:func:`load_segmenter`),
   pruned to ``SegmentConfig.level`` for U-Net++;
2. the channel axis (:func:`napari_unet.axes.find_channel_axis`);
3. the model's stored normalisation (:class:`~napari_unet.normalize.Normalization`);
4. exact tiled prediction (:mod:`napari_unet.tiling`);
5. post-processing of every (Y, X) plane into instance labels, with ids
   unique over the whole stack (:mod:`napari_unet.postprocess`).

Three forms share those steps:

- :func:`segment` / :func:`iter_segment`: in memory; ids numbered
  ``1 ... N`` over the whole stack in C order of the planes.
- :func:`segment_dask`: lazy, one plane per Dask chunk, for napari; plane
  ``i`` has ids ``i * LAZY_ID_STRIDE + 1 ...`` (a plane cannot know how many
  cells the planes before it hold without computing them).
- :func:`segment_chunked`: Zarr/TIFF in, OME-Zarr out, chunk by chunk with
  any Dask scheduler; ids merged across chunks by
  :func:`~napari_unet.postprocess.labels_dask`.

For the same model, image and settings, :func:`segment` gives the same
labels and probabilities whichever front end calls it (tested), and each
plane of :func:`segment_dask` is the same partition as :func:`segment`'s.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .axes import find_channel_axis, move_channels
from .normalize import Normalization
from .outputs import TMP_SUFFIX, atomic_path
from .progress import Cancelled, Progress

if TYPE_CHECKING:
    import dask.array
    from torch import nn

__all__ = [
    "LAZY_ID_STRIDE",
    "SegmentConfig",
    "Segmentation",
    "dask_scheduler",
    "iter_segment",
    "load_segmenter",
    "segment",
    "segment_chunked",
    "segment_dask",
]

#: Instance ids of plane ``i`` (linear index over the leading axes, C order)
#: of :func:`segment_dask` are ``i * LAZY_ID_STRIDE + 1 ...``.
LAZY_ID_STRIDE = 2**16


#: The post-processing keywords a model file may recommend (besides the threshold).
_POSTPROCESS_KEYS = (
    "method",
    "seed_threshold",
    "min_size",
    "min_seed_size",
    "split_depth",
    "fill_holes",
)


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of a segmentation run (the same for every front end).

    Parameters
    ----------
    tile : int, optional
        Input tile side in pixels (rounded up to a valid size); None picks
        the largest that fits the device's memory budget.
    tta : bool
        Test-time augmentation: average the 8 rotations and flips (8x slower).
    threshold : float, optional
        Foreground threshold in (0, 1); None: the model's recommendation
        (bundled models store one), else 0.5.
    batch_size : int
        Tiles per forward pass.
    device : str, optional
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    level : int, optional
        U-Net++ only: predict with the network pruned at this level.
    backend : str
        Inference engine (:mod:`napari_unet.inference`): ``"auto"``, ``"eager"``,
        ``"compile"`` or ``"onnxruntime"``. ``"auto"`` may choose ONNX Runtime
        once its export is cached, whose probabilities differ from eager ones
        by float rounding: give ``"eager"`` for bit-identical repeat runs.
    precision : str
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    probabilities : bool
        Keep the probabilities in the result (else None, freeing memory).
    postprocess : mapping, optional
        Further keywords of :func:`~napari_unet.postprocess.probabilities_to_labels`
        (``method``, ``min_size``, ``seed_threshold``, ...); None: the model's
        recommendation (bundled models store one), else the defaults.
        (``method``, ``min_size``, ``seed_threshold``, ...).
    """

    tile: int | None = None
    tta: bool = False
    threshold: float | None = None
    batch_size: int = 1
    device: str | None = "auto"
    level: int | None = None
    backend: str = "auto"
    precision: str = "auto"
    probabilities: bool = True
    postprocess: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.tile is not None and (isinstance(self.tile, bool) or self.tile < 1):
            raise ValueError(f"`tile` must be a positive number of pixels, got {self.tile!r}")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {self.batch_size!r}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"`threshold` must be in (0, 1), got {self.threshold}")
        if {"threshold", "spatial_dims"} & set(self.postprocess or {}):
            raise ValueError("`postprocess` must not set `threshold` or `spatial_dims`")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], **settings: Any) -> SegmentConfig:
        """Settings with the model's recommendations filled in.

        Parameters
        ----------
        metadata : mapping
            A model file's metadata (:func:`napari_unet.io.load_model`).
        **settings
            Fields of :class:`SegmentConfig`; a ``threshold`` or
            ``postprocess`` of None is replaced by the model's recommendation
            (``metadata["pretrained"]["postprocessing"]``), and an unset
            ``level`` by the model's recommended pruning level, if any.
        """
        return cls(**settings).resolve(metadata)

    def resolve(self, metadata: Mapping[str, Any]) -> SegmentConfig:
        """A copy with the unset settings taken from the model's recommendation."""
        from .pretrained import recommended_threshold

        card = (metadata.get("pretrained") or {}).get("postprocessing") or {}
        changes: dict[str, Any] = {}
        if self.threshold is None:
            changes["threshold"] = recommended_threshold(dict(metadata))
        if self.level is None and card.get("level") is not None:
            changes["level"] = int(card["level"])
        if self.postprocess is None:
            # e.g. em-membranes: cells are the 4-connected components ("method": "components").
            changes["postprocess"] = {k: card[k] for k in _POSTPROCESS_KEYS if k in card}
        return replace(self, **changes) if changes else self


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    labels : ndarray of uint32
        The image's shape without the channel axis; 0 = background, ids
        ``1 ... N`` over the whole stack.
    probabilities : ndarray of float32 or None
        ``(num_classes, *labels.shape)``; None unless ``config.probabilities``.
    config : SegmentConfig
        The settings used, with the model's recommendations filled in.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    config: SegmentConfig


def load_segmenter(model: Any, *, level: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The model and its metadata, from a file, a bundled name or a module.

    Parameters
    ----------
    model : str, path-like, nn.Module or (nn.Module, dict)
        A model file (``.safetensors`` or bioimage.io package), a bundled
        model name (``"nuclei"``, see :func:`napari_unet.pretrained.list_pretrained`),
        a module, or a module with its metadata as :func:`~napari_unet.io.load_model`
        returns them.
    level : int, optional
        Prune a U-Net++ to this level.

    Returns
    -------
    model : nn.Module
        On the CPU, in eval mode.
    metadata : dict
        Empty for a bare module.

    Raises
    ------
    FileNotFoundError
        If a path does not exist and is no bundled name.
    ValueError
        If the file is not a model file, ``level`` does not fit the model,
        or the model is not 2D.
    """
    if isinstance(model, tuple):
        net, metadata = model[0], dict(model[1] or {})
    elif isinstance(model, (str, os.PathLike)):
        from .io.models import load_model
        from .pretrained import resolve_model

        net, metadata = load_model(resolve_model(model), device=None)
    else:
        net, metadata = model, {}
    if level is not None:
        if not hasattr(net, "prune"):
            raise ValueError(
                f"a pruning level applies to U-Net++ models; this is {type(net).__name__}"
            )
        net = net.prune(level)
    if getattr(net, "spatial_dims", 2) != 2:
        raise ValueError("segmentation supports 2D models only")
    return net, metadata


def _setup(
    model: Any, config: SegmentConfig | None, normalization: Any
) -> tuple[nn.Module, SegmentConfig, Normalization]:
    net, metadata = load_segmenter(model)
    config = (config or SegmentConfig()).resolve(metadata)
    if config.level is not None:
        net, _ = load_segmenter(net, level=config.level)
    if normalization is None:
        normalization = metadata.get("normalization")
    if not isinstance(normalization, Normalization):
        normalization = Normalization.from_dict(normalization)
    return net, config, normalization


def _predict_kwargs(config: SegmentConfig, *, backend: bool = True) -> dict[str, Any]:
    """The tiling keywords of a configuration (one place for every path)."""
    kwargs: dict[str, Any] = {
        "tile_shape": None if config.tile is None else (config.tile, config.tile),
        "batch_size": config.batch_size,
        "device": config.device,
    }
    if backend:  # predict_dask chooses its own engine per chunk
        kwargs.update(backend=config.backend, precision=config.precision)
    return kwargs


def _labels_of_plane(probs: np.ndarray, config: SegmentConfig) -> np.ndarray:
    """Instance labels ``1 ... n`` of one (classes, Y, X) plane: the one post-processing step."""
    from .postprocess import probabilities_to_labels

    return probabilities_to_labels(
        probs, threshold=config.threshold, spatial_dims=2, **dict(config.postprocess or {})
    )


def _iter_label_planes(
    probs: np.ndarray, config: SegmentConfig
) -> Generator[Progress, None, np.ndarray]:
    """Labels of every plane of (classes, ..., Y, X) probabilities, ids unique over the stack."""
    labels = np.zeros(probs.shape[1:], dtype=np.uint32)
    planes = list(np.ndindex(*probs.shape[1:-2]))
    offset = 0
    for number, index in enumerate(planes, start=1):
        part = _labels_of_plane(probs[(slice(None), *index)], config)
        labels[index] = np.where(part > 0, part + np.uint32(offset), 0)
        offset += int(part.max(initial=0))
        yield Progress(number, len(planes), "labels")
    return labels


def _arranged(net: nn.Module, data: Any, channel_axis: int | None) -> tuple[Any, int | None]:
    """``data`` with its channels just before (Y, X), and that axis (None: one channel)."""
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"the image (dtype {data.dtype}) is not a real-valued numeric image")
    axis = find_channel_axis(data.shape, net.in_channels, channel_axis)
    if axis is None:
        return data, None
    data = move_channels(data, axis)
    return data, data.ndim - 3


def iter_segment(
    model: Any,
    image: Any,
    *,
    channel_axis: int | None = None,
    config: SegmentConfig | None = None,
    normalization: Any = None,
) -> Generator[Progress, None, Segmentation]:
    """Generator form of :func:`segment`: yields :class:`~napari_unet.progress.Progress` often.

    Stages: ``"load"``, ``"normalize"``, ``"predict"`` (after every batch of
    tiles; ``info`` has ``plane`` and ``planes``) and ``"labels"`` (after
    every plane). Closing the generator stops the work; nothing is returned.
    """
    net, config, normalization = _setup(model, config, normalization)
    yield Progress(0, 1, "load")
    data, axis = _arranged(net, np.asarray(image), channel_axis)
    normalized = normalization(data, channel_axis=axis)
    yield Progress(0, 1, "normalize")
    from .tiling import iter_predict_stack

    probs = yield from iter_predict_stack(
        net, normalized, channel_axis=axis, tta=config.tta, **_predict_kwargs(config)
    )
    del normalized
    labels = yield from _iter_label_planes(probs, config)
    return Segmentation(labels, probs if config.probabilities else None, config)


def segment(
    model: Any,
    image: Any,
    *,
    channel_axis: int | None = None,
    config: SegmentConfig | None = None,
    normalization: Any = None,
    progress: Callable[[Progress], object] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Segmentation:
    """Segment an image, Z-stack or time series into instance labels.

    Parameters
    ----------
    model : str, path-like, nn.Module or (nn.Module, dict)
        As for :func:`load_segmenter`.
    image : array-like, shape (..., Y, X)
        With an optional channel axis (``model.in_channels`` long) anywhere
        but on Y; every (Y, X) plane of the other axes is segmented.
    channel_axis : int, optional
        The channel axis; None: found by :func:`napari_unet.axes.find_channel_axis`.
    config : SegmentConfig, optional
        Settings; default ``SegmentConfig()`` with the model's recommendations.
    normalization : Normalization or dict, optional
        Overrides the model file's stored normalisation.
    progress : callable, optional
        Called with every :class:`~napari_unet.progress.Progress` event.
    cancel : callable, optional
        Checked after every event; True stops the run and raises
        :class:`~napari_unet.progress.Cancelled`.

    Returns
    -------
    Segmentation
        ``labels`` (uint32, the image's shape without channels) and
        ``probabilities`` (float32, classes first) or None.

    Examples
    --------
    >>> from napari_unet.models import UNet
    >>> net = UNet(depth=1, base_channels=2, padding="same")
    >>> image = np.random.default_rng(0).random((2, 32, 32))
    >>> result = segment(net, image, config=SegmentConfig(device="cpu"))
    >>> result.labels.shape, result.probabilities.shape
    ((2, 32, 32), (2, 2, 32, 32))
    """
    events = iter_segment(
        model, image, channel_axis=channel_axis, config=config, normalization=normalization
    )
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)
        if cancel is not None and cancel():
            events.close()
            raise Cancelled(f"cancelled by the user during {event.stage}")


def segment_dask(
    model: Any,
    image: Any,
    *,
    channel_axis: int | None = None,
    config: SegmentConfig | None = None,
    normalization: Any = None,
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
    """
    import dask.array as da

    from .tiling import _model_key

    net, config, normalization = _setup(model, config, normalization)
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
    return da.map_blocks(
        _segment_plane_block,
        arr,
        _model_key(net),
        normalization=normalization,
        config=config,
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
    block_info: dict | None = None,
) -> np.ndarray:
    """One chunk of :func:`segment_dask`: (1, ..., 1, C, Y, X) -> (1, ..., 1, Y, X)."""
    from .tiling import predict_tiled

    info = block_info[0]
    location, count = info["chunk-location"][:-3], info["num-chunks"][:-3]
    index = int(np.ravel_multi_index(location, count)) if count else 0
    plane = np.asarray(block).reshape(block.shape[-3:])
    image = normalization(plane, channel_axis=0)
    probs = predict_tiled(model, image, tta=config.tta, **_predict_kwargs(config))
    part = _labels_of_plane(probs, config)
    cells = int(part.max(initial=0))
    if cells >= LAZY_ID_STRIDE:
        raise ValueError(
            f"plane {index} has {cells} cells; lazy labels support fewer than {LAZY_ID_STRIDE}"
        )
    out = np.where(part > 0, part + np.uint32(index * LAZY_ID_STRIDE), np.uint32(0))
    return out.astype(np.uint32, copy=False).reshape(*block.shape[:-3], *block.shape[-2:])


# -- chunked: Zarr / OME-Zarr / large TIFF in, OME-Zarr out -------------------------------------


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
    image: Any, net: nn.Module, channel_axis: int | None, chunks: tuple[int, int] | None
) -> tuple[Any, int | None, list[str], list[float]]:
    """A chunked image arranged for prediction: data, channel axis, axis names, pixel sizes.

    Channels go just before (Y, X); leading planes become one chunk each,
    the channels one chunk, and (Y, X) chunks of ``chunks`` pixels (default:
    the input's chunks clamped to 256-2048).
    """
    data, axes, scale = image.data, list(image.axes), list(image.scale)
    if data.ndim < 2 or not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"expected a numeric (..., Y, X) array, got {data}")
    axis = find_channel_axis(
        data.shape, net.in_channels, image.channel_axis if channel_axis is None else channel_axis
    )
    if axis is not None:
        data = move_channels(data, axis)
        for names in (axes, scale):
            names.insert(data.ndim - 3, names.pop(axis))
        axis = data.ndim - 3
    leading = [a for a in range(data.ndim - 2) if a != axis]
    spatial = (data.ndim - 2, data.ndim - 1)
    sides = chunks or tuple(int(min(max(max(data.chunks[ax]), 256), 2048)) for ax in spatial)
    data = data.rechunk(
        {
            **{ax: 1 for ax in leading},
            **({axis: -1} if axis is not None else {}),
            **dict(zip(spatial, sides, strict=True)),
        }
    )
    return data, axis, axes, scale


def segment_chunked(
    model: Any,
    source: str | os.PathLike,
    labels_path: str | os.PathLike,
    probabilities_path: str | os.PathLike | None = None,
    *,
    channel_axis: int | None = None,
    chunks: tuple[int, int] | None = None,
    margin: int = 64,
    config: SegmentConfig | None = None,
    normalization: Any = None,
    progress: Callable[[str], contextlib.AbstractContextManager] | None = None,
) -> int:
    """Segment a Zarr / OME-Zarr store or TIFF file chunk by chunk into OME-Zarr images.

    Run it inside :func:`dask_scheduler` to choose the Dask scheduler.

    Parameters
    ----------
    model, config, normalization
        As for :func:`segment` (``tta`` is not available here).
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
    chunks : (int, int), optional
        Spatial chunk sides for prediction; default: the input's chunks
        clamped to 256-2048.
    margin : int
        Context each chunk is labelled with; should exceed the largest cell.
    progress : callable, optional
        Called with a description before each pass over the data; returns a
        context manager wrapped around that pass (e.g. a progress bar).

    Returns
    -------
    count : int
        The largest label id written (the number of objects).
    """
    import dask.array as da
    import zarr

    from .io import create_ome_zarr, open_chunked
    from .postprocess import labels_dask
    from .tiling import predict_dask

    net, config, normalization = _setup(model, config, normalization)
    if config.tta:
        raise ValueError(
            "test-time augmentation is not available in chunked mode (Zarr, large TIFF)"
        )
    if margin < 1:
        raise ValueError(f"the labels margin must be >= 1, got {margin}")
    source, labels_path = Path(source), Path(labels_path)
    data, axis, axes, scale = _chunked_input(open_chunked(source), net, channel_axis, chunks)
    leading = [a for a in range(data.ndim - 2) if a != axis]
    probs = predict_dask(
        net,
        normalization.apply_dask(data, channel_axis=axis),
        channel_axis=axis,
        **_predict_kwargs(config, backend=False),
    )
    lead_axes, lead_scale = [axes[a] for a in leading], [scale[a] for a in leading]
    out_axes, out_scale = [*lead_axes, *axes[-2:]], [*lead_scale, *scale[-2:]]
    block = (*(1,) * len(lead_axes), probs.chunks[-2][0], probs.chunks[-1][0])
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
                margin=margin,
                spatial_dims=2,
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
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return int(da.from_zarr(str(labels_path), component="0").max().compute())

"""In-memory segmentation: :func:`segment` and its generator twin :func:`iter_segment`."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import numpy as np

from ..progress import Progress, drive
from ..scale import (
    _NO_RESCALE,
    choose_zoom,
    estimate_diameter,
    rescale_image,
    restore_probabilities,
    scale_factor,
    zoom_passes,
)
from ..tuning import scaled_sizes
from ._config import (
    Segmentation,
    SegmentConfig,
    _arranged,
    _axes_channel_axis,
    _labels_of_plane,
    _predict_kwargs,
    _setup,
    _z_axis,
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


def _link_z(labels: np.ndarray, config: SegmentConfig) -> tuple[np.ndarray, int | None]:
    """Per-plane labels with the planes of the Z axis linked into 3D objects (ids 1..N).

    Also returns the axis linked (None: none).
    """
    z = _z_axis(labels.ndim, config)
    if not config.link_planes or z is None or labels.shape[z] < 2:
        return labels, None
    from ..linking import link_planes

    stacks = np.moveaxis(labels, z, -3)  # (..., Z, Y, X): each T on its own
    out = np.zeros(stacks.shape, dtype=np.uint32)
    offset = 0
    for index in np.ndindex(*stacks.shape[:-3]):
        linked = link_planes(stacks[index]).astype(np.uint32)
        out[index] = np.where(linked > 0, linked + np.uint32(offset), 0)
        offset += int(linked.max(initial=0))
    return np.moveaxis(out, -3, z), z


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
    channel_axis = _axes_channel_axis(config, channel_axis)
    data, axis = _arranged(net, np.asarray(image), channel_axis)
    normalized = normalization(data, channel_axis=axis)
    yield Progress(0, 1, "normalize")
    if getattr(net, "spatial_dims", 2) == 3:
        return (yield from _segment_volume(net, normalized, axis, config))
    from ..tiling import iter_predict_stack

    # One engine for the diameter estimate and all planes: its set-up is paid once.
    kwargs = _engine_kwargs(net, config)
    factor, info, seen = yield from _diameter_step(net, normalized, axis, config, kwargs)
    shape = normalized.shape[-2:]
    if seen is not None:  # the estimate already predicted the whole image at this zoom
        probs = seen
    else:
        if factor != 1.0:
            normalized = rescale_image(normalized, factor)
        probs = yield from iter_predict_stack(
            net, normalized, channel_axis=axis, tta=config.tta, **kwargs
        )
        if factor != 1.0:
            probs = restore_probabilities(probs, shape)
    info.update(_engine_info(kwargs["backend"]))
    del normalized
    if factor != 1.0:
        config = replace(config, postprocess=scaled_sizes(config.postprocess or {}, factor))
    labels = yield from _iter_label_planes(probs, config)
    labels, info["linked_axis"] = _link_z(labels, config)
    return Segmentation(labels, probs if config.probabilities else None, config, info)


def _segment_volume(
    net: Any, volume: np.ndarray, axis: int | None, config: SegmentConfig
) -> Generator[Progress, None, Segmentation]:
    """A 3D model: one (Z, Y, X) volume, tiled in 3D and labelled in 3D."""
    from ..postprocess import probabilities_to_labels
    from ..tiling import iter_predict_tiled

    if axis is not None:
        volume = np.moveaxis(volume, axis, 0)
    if volume.ndim != (3 if axis is None else 4):
        raise ValueError(
            f"a 3D model segments one (Z, Y, X) volume (channels apart), got shape "
            f"{volume.shape}; pass each volume of a time series on its own"
        )
    kwargs = _engine_kwargs(net, config)
    if config.tile is not None:
        kwargs["tile_shape"] = (config.tile,) * 3
    probs = yield from iter_predict_tiled(net, volume, tta=config.tta, **kwargs)
    labels = probabilities_to_labels(
        probs, threshold=config.threshold, spatial_dims=3, **dict(config.postprocess or {})
    )
    yield Progress(1, 1, "labels")
    info = {
        "diameter": None,
        "factor": 1.0,
        "spatial_dims": 3,
        **_engine_info(kwargs["backend"]),
    }
    return Segmentation(labels, probs if config.probabilities else None, config, info)


def _engine_kwargs(net: Any, config: SegmentConfig) -> dict[str, Any]:
    """The tiling keywords with the inference engine built once (not per call or plane)."""
    from ..inference import make_backend

    kwargs = _predict_kwargs(config)
    kwargs["backend"] = make_backend(
        net, backend=kwargs["backend"], precision=kwargs.pop("precision"), device=config.device
    )
    return kwargs


def _engine_info(engine: Any) -> dict[str, str]:
    """Which engine and precision ran (``auto`` says what it chose)."""
    return {"backend": str(engine.name), "precision": str(engine.precision)}


def _diameter_step(
    net: Any,
    normalized: np.ndarray,
    axis: int | None,
    config: SegmentConfig,
    kwargs: dict[str, Any],
) -> Generator[Progress, None, tuple[float, dict[str, Any], np.ndarray | None]]:
    """The zoom that gives the objects the model's size, what was used, and the
    probabilities of the whole image at that zoom when the estimate made them."""
    diameter = config.diameter
    if diameter == "default":
        instance = config.num_classes == 3 and config.model_diameter is not None
        diameter = "auto" if instance else None
    if diameter is None or config.model_diameter is None:
        return 1.0, {"diameter": None, "factor": 1.0}, None
    from ..tiling import predict_tiled

    # Estimated (or checked) on one plane (the middle one of a stack), with its channels.
    lead = normalized.shape[: normalized.ndim - (2 if axis is None else 3)]
    plane = normalized[tuple(n // 2 for n in lead)]

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_tiled(net, x, **kwargs)

    def label(probs: np.ndarray, factor: float) -> np.ndarray:
        options = scaled_sizes(config.postprocess or {}, factor)
        return _labels_of_plane(probs, replace(config, postprocess=options))

    if diameter != "auto":
        typed = float(diameter)
        factor = scale_factor(typed, config.model_diameter, config.model_diameter_range)
        shrink = config.model_diameter / typed
        # choose_zoom never shrinks by less than _NO_RESCALE: no pass to check then.
        if factor != 1.0 or shrink > 1.0 - _NO_RESCALE:
            return factor, {"diameter": typed, "factor": factor, "estimated": False}, None
        # Objects larger than the model's size but within its trained range: as with
        # "auto", shrink only where the network is surer of its objects than at zoom 1
        # (the network reads some such sizes well as they are and fragments others).
        yield Progress(0, 1, "diameter")
        found = {"diameter": typed, **zoom_passes(predict, label, plane, (shrink, 1.0))}
        estimated = False
    else:
        yield Progress(0, 1, "diameter")
        found = estimate_diameter(predict, label, plane, config.model_diameter)
        estimated = True
    yield Progress(1, 1, "diameter", {"diameter": found["diameter"]})
    if not np.isfinite(found["diameter"]):
        return 1.0, {"diameter": None, "factor": 1.0, "estimated": True}, None
    factor = choose_zoom(found, config.model_diameter, config.model_diameter_range)
    info = {"diameter": round(found["diameter"], 2), "factor": factor, "estimated": estimated}
    single = normalized.shape == plane.shape and not config.tta
    return factor, info, found["probabilities"].get(factor) if single else None


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
    return drive(events, on_event=progress, cancel=cancel)

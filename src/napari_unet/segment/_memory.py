"""In-memory segmentation: :func:`segment` and its generator twin :func:`iter_segment`."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..progress import Cancelled, Progress
from ._config import (
    Segmentation,
    SegmentConfig,
    _arranged,
    _labels_of_plane,
    _predict_kwargs,
    _setup,
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
    from ..tiling import iter_predict_stack

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

"""How much memory a prediction needs, and whether it fits in what is available.

The command line predicts an image in memory when the run fits, and chunk by
chunk (Dask, Zarr) otherwise; :func:`choose_in_memory` decides from
:func:`estimate_prediction_memory` against :func:`available_memory` rather
than from the file size alone.

The figures below were measured with ``tracemalloc`` (NumPy buffers) on
2048² and 4096² uint8 images, 2-class models (docs/guarantees.md, "Memory").
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

__all__ = [
    "available_memory",
    "choose_in_memory",
    "estimate_prediction_memory",
]

# Peak bytes per pixel of the default percentile Normalization while it runs
# (float64 percentile work on a uint8 image; its float32 result is 4 of them).
_NORMALIZE_PEAK_BYTES = 20
# Peak bytes per pixel of probabilities_to_labels (2 classes: distance
# transform, h-maxima and watershed; 3 classes use less), measured 117 on a
# 2048² image with 2190 cells, plus about 8 MiB whatever the size (222 bytes
# per pixel on 256², 142 on 512², 122 on 1024²).
_LABELS_PEAK_BYTES = 120
_LABELS_FIXED_BYTES = 8 * 2**20
# Activation memory of a forward pass, float32 values per tile pixel and base
# channel (tiling.py measured 5.5 for the U-Net; U-Net++ states its own).
_FLOATS_PER_PIXEL_PER_BASE_CHANNEL = 5.5
_UNKNOWN_AVAILABLE = 2 * 2**30


def estimate_prediction_memory(
    shape: Sequence[int],
    model: nn.Module,
    *,
    dtype: Any = np.uint8,
    channel_axis: int | None = None,
    tile_shape: Sequence[int] | None = None,
    batch_size: int = 1,
    labels: bool = True,
    probabilities: bool = False,
) -> int:
    """Peak bytes of an in-memory prediction (read, normalise, predict, label, write).

    Parameters
    ----------
    shape : sequence of int
        Shape of the input array, (..., Y, X) with an optional channel axis.
    model : torch.nn.Module
        A 2D model with the U-Net shape helpers (``num_classes``,
        ``in_channels``, ``base_channels``).
    dtype : dtype, optional
        The input's pixel type (its bytes are held for the whole run).
    channel_axis : int, optional
        Axis of ``shape`` holding the channels; ``None`` for one channel.
    tile_shape : sequence of 2 int, optional
        As for :func:`~napari_unet.tiling.predict_tiled`; ``None``: the tile
        it would choose on the CPU.
    batch_size : int, optional
        Tiles per forward pass.
    labels : bool, optional
        Include :func:`~napari_unet.postprocess.probabilities_to_labels`.
    probabilities : bool, optional
        Include a copy of the probabilities made for writing them.

    Returns
    -------
    nbytes : int
        Estimated peak memory in bytes.

    Notes
    -----
    In-memory prediction (:func:`~napari_unet.tiling.predict_stack`) holds the
    input, its normalised float32 copy (4 bytes per pixel and channel), one
    float32 probability array (4 bytes per pixel and class) and tile-sized
    buffers; the image is never padded or copied as a whole. Normalising
    peaks at about 20 bytes per pixel while it runs, and labelling at about
    120, which therefore sets the peak of a whole run.

    Examples
    --------
    >>> from napari_unet.models import UNet
    >>> net = UNet(depth=2, base_channels=4)
    >>> estimate_prediction_memory((4096, 4096), net, labels=False) // 2**20
    412
    """
    from .tiling import choose_tile_shape

    shape = tuple(int(s) for s in shape)
    if channel_axis is not None:
        channels = shape[channel_axis]
        spatial = shape[: channel_axis % len(shape)] + shape[channel_axis % len(shape) + 1 :]
    else:
        channels, spatial = 1, shape
    pixels = math.prod(spatial)
    image_pixels = pixels * channels
    plane = spatial[-int(getattr(model, "spatial_dims", 2)) :]  # a 3D model tiles volumes
    classes = int(model.num_classes)
    tile = tile_shape or choose_tile_shape(model, plane, "cpu")
    floats = getattr(
        model, "floats_per_pixel_per_base_channel", _FLOATS_PER_PIXEL_PER_BASE_CHANNEL
    )
    per_tile_pixel = 4 * (floats * getattr(model, "base_channels", 64) + channels + 2 * classes)
    tiles = int(batch_size * math.prod(tile) * per_tile_pixel)
    held = image_pixels * np.dtype(dtype).itemsize
    normalize = pixels * _NORMALIZE_PEAK_BYTES * channels
    probs = pixels * 4 * classes
    predict = image_pixels * 4 + probs + tiles
    label = probs + (pixels * _LABELS_PEAK_BYTES + _LABELS_FIXED_BYTES if labels else 0)
    write = probs + pixels * 4 + (probs if probabilities else 0)
    return int(held + max(normalize, predict, label, write))


def available_memory() -> int | None:
    """Bytes this process can still allocate: free RAM, within a cgroup limit if set.

    Reads ``MemAvailable`` (psutil where installed, else ``/proc/meminfo``)
    and the cgroup v2/v1 limit minus usage (containers, Slurm jobs); the
    smaller counts. None when neither can be read.
    """
    candidates = []
    try:
        import psutil

        candidates.append(int(psutil.virtual_memory().available))
    except ImportError:
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        candidates.append(int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass
    limit = _cgroup_free()
    if limit is not None:
        candidates.append(limit)
    return min(candidates) if candidates else None


def _cgroup_free() -> int | None:
    pairs = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ]
    for limit_file, usage_file in pairs:
        if not os.path.exists(limit_file):
            continue
        try:
            with open(limit_file, encoding="ascii") as fh:
                text = fh.read().strip()
            if text == "max":
                return None
            limit = int(text)
            if limit >= 2**60:  # cgroup v1 "unlimited"
                return None
            with open(usage_file, encoding="ascii") as fh:
                usage = int(fh.read().strip())
            return max(0, limit - usage)
        except (OSError, ValueError):
            return None
    return None


def choose_in_memory(
    shape: Sequence[int],
    model: nn.Module,
    *,
    available: int | None = None,
    fraction: float = 0.5,
    **kwargs: Any,
) -> bool:
    """True when an in-memory prediction fits; False: predict chunk by chunk.

    Parameters
    ----------
    shape, model
        As for :func:`estimate_prediction_memory`.
    available : int, optional
        Bytes available; default :func:`available_memory` (2 GiB if unknown).
    fraction : float, optional
        Share of ``available`` a run may plan to use (the rest is headroom
        for the allocator, the model and other programs).
    **kwargs
        Passed to :func:`estimate_prediction_memory` (``dtype``,
        ``channel_axis``, ``tile_shape``, ``batch_size``, ...).

    Examples
    --------
    >>> from napari_unet.models import UNet
    >>> net = UNet(depth=2, base_channels=4)
    >>> choose_in_memory((1024, 1024), net, available=8 * 2**30)
    True
    >>> choose_in_memory((16000, 16000), net, available=8 * 2**30)
    False
    """
    if available is None:
        available = available_memory()
    if available is None:
        available = _UNKNOWN_AVAILABLE
    needed = estimate_prediction_memory(shape, model, **kwargs)
    return needed <= fraction * available

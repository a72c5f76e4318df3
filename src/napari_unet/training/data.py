"""Training data: samples split into planes, checked, sized, split for validation, padded.

A :class:`_Plane` holds one normalised training plane (or volume) with its
cached targets and weight map, padded by the model's halo so that every
tile position sees the mirrored context prediction sees.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..errors import DataWarning, InputError
from ..normalize import Normalization
from ..scale import rescale_image, scale_factor
from ..tiling import _mirror_pad
from ..weights import instances_to_classes, weight_map
from .config import TrainConfig

_PAPER_TILE = 572
# Tiles are drawn around annotated pixels, found through a coarse map of
# blocks of this size (cheap to store, and works for sparse annotation).
_BLOCK = 16


@dataclass
class Sample:
    """One annotated image.

    Parameters
    ----------
    image : ndarray
        (Y, X); (C, Y, X) with channels first; a stack of planes (Z, Y, X);
        or a multi-channel stack (C, Z, Y, X). For a 2D model every (Y, X)
        plane is a training image of its own; a 3D model (``spatial_dims=3``)
        trains on 3D tiles of each volume.
    labels : ndarray of int
        Cell instances, 0 = background: (Y, X), or (Z, Y, X) for a stack.
    mask : ndarray of bool, optional
        Annotated pixels, same shape as ``labels``; pixels outside are
        ignored by the loss (sparse annotation: in a volume, e.g. a few
        planes or a sub-volume annotated completely). Default: all annotated.
    """

    image: np.ndarray
    labels: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class _Plane:
    """One (Y, X) training plane, normalised, with cached targets and weights.

    Arrays are padded by the model's halo (plus enough to hold a whole tile):
    the image by mirroring, as at prediction; targets with weight 0.
    """

    image: np.ndarray  # (C, Yp, Xp) float32
    classes: np.ndarray  # (Yp, Xp) uint8
    weights: np.ndarray  # (Yp, Xp) float32
    blocks: np.ndarray  # (n, 2) int: corners of _BLOCK-sized blocks with annotated pixels
    shape: tuple[int, int]  # unpadded (Y, X)
    offset: tuple[int, int]  # where the unpadded plane starts in the padded arrays


@dataclass
class _ValPlane:
    image: np.ndarray  # (C, Y, X) float32, normalised
    classes: np.ndarray  # (Y, X) uint8
    weights: np.ndarray  # (Y, X) float32
    masked: bool
    labels: np.ndarray | None = None  # (Y, X) instances, for choosing the post-processing


def _as_sample(item: Any, index: int) -> Sample:
    if isinstance(item, Sample):
        return item
    if isinstance(item, Mapping):
        return Sample(item["image"], item["labels"], item.get("mask"))
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return Sample(*item)
    raise ValueError(
        f"sample {index} must be a Sample, a dict with 'image'/'labels'[/'mask'] or a tuple "
        f"(image, labels[, mask]), got {type(item).__name__}"
    )


def _split_planes(
    samples: Sequence[Any],
    in_channels: int,
    name: str,
    files: Sequence[str] = (),
    spatial_dims: int = 2,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Validate samples and split them into (C, Y, X) image / (Y, X) label planes.

    For a 3D model (``spatial_dims=3``) every sample is one (C, Z, Y, X) /
    (Z, Y, X) volume instead.
    """
    planes = []
    for index, item in enumerate(samples):
        sample = _as_sample(item, index)
        image = np.asarray(sample.image)
        labels = np.asarray(sample.labels)
        where = f"`{name}`[{index}]" + (f" ({files[index]})" if index < len(files) else "")
        if labels.ndim not in (2, 3):
            raise ValueError(
                f"{where}: labels have shape {labels.shape}, expected (Y, X) or (Z, Y, X)"
            )
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise ValueError(
                f"{where}: labels must be integer instance ids, got dtype {labels.dtype}"
            )
        if labels.size and labels.min() < 0:
            raise ValueError(f"{where}: labels must be >= 0 (0 = background)")
        if not (np.issubdtype(image.dtype, np.number) and not np.iscomplexobj(image)):
            raise ValueError(f"{where}: image must be real-valued, got dtype {image.dtype}")
        _check_finite(image, where)
        if image.ndim == labels.ndim:
            image = image[np.newaxis]  # one channel
        if image.ndim != labels.ndim + 1 or image.shape[1:] != labels.shape:
            raise ValueError(
                f"{where}: image (shape {image.shape}) does not fit labels (shape "
                f"{labels.shape}); expected an image of shape {labels.shape} or "
                f"(C, {', '.join(map(str, labels.shape))}) with channels first"
            )
        if image.shape[0] != in_channels:
            raise ValueError(
                f"{where}: image has {image.shape[0]} channel(s) (shape {image.shape}), the "
                f"model expects {in_channels}"
            )
        mask = None
        if sample.mask is not None:
            mask = np.asarray(sample.mask).astype(bool, copy=False)
            if mask.shape != labels.shape:
                raise ValueError(
                    f"{where}: `mask` (shape {mask.shape}) must have the shape of the labels "
                    f"(shape {labels.shape})"
                )
        labels = labels.astype(np.int64 if labels.dtype != np.bool_ else np.uint8, copy=False)
        if spatial_dims == 3:
            if labels.ndim != 3:
                raise ValueError(
                    f"{where}: a 3D model trains on volumes; labels have shape {labels.shape}, "
                    "expected (Z, Y, X)"
                )
            planes.append((image, labels, mask))
        elif labels.ndim == 2:
            planes.append((image, labels, mask))
        else:
            for z in range(labels.shape[0]):
                planes.append((image[:, z], labels[z], None if mask is None else mask[z]))
    return planes


def _check_finite(image: np.ndarray, where: str) -> None:
    # A NaN pixel would only show up later as a NaN loss, blamed on the learning rate.
    if image.dtype.kind != "f":
        return
    bad = ~np.isfinite(image)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{where}: the image has {int(bad.sum())} NaN or infinite pixel(s) (the first at "
            f"index {first}); replace them (e.g. np.nan_to_num) or fix the file before training"
        )


def _check_classes(
    planes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], name: str
) -> None:
    """Refuse labels with nothing to learn; warn about planes without cells or background."""
    no_cells, no_background = [], []
    for index, (_, labels, mask) in enumerate(planes):
        annotated = labels if mask is None else labels[mask]
        if annotated.size == 0:
            continue
        if not annotated.any():
            no_cells.append(index)
        elif annotated.all():
            no_background.append(index)
    annotated_planes = sum(1 for _, labels, mask in planes if mask is None or mask.any())
    for which, what, fix in (
        (no_cells, "no cells (every label is 0)", "annotate cells with ids > 0"),
        (no_background, "no background (no label is 0)", "mark background as 0"),
    ):
        if not which:
            continue
        if len(which) == annotated_planes:
            raise InputError(
                f"the labels of `{name}` have {what} on every plane: there is nothing to learn; "
                f"{fix}, or check that the label files belong to the images"
            )
        shown = ", ".join(map(str, which[:10])) + (" ..." if len(which) > 10 else "")
        warnings.warn(
            f"{len(which)} of {annotated_planes} planes of `{name}` have {what}: plane(s) "
            f"{shown}. Training goes on; check that the label files belong to the images",
            DataWarning,
            stacklevel=3,
        )


def _targets(
    labels: np.ndarray,
    mask: np.ndarray | None,
    config: TrainConfig,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    classes = instances_to_classes(labels, border_class=config.border_class)
    weights = weight_map(
        labels,
        w0=config.w0,
        sigma=config.sigma,
        class_weights=config.class_weights,
        mask=mask,
        spacing=spacing,
    )
    return classes, weights


def _prepare_plane(
    image: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray | None,
    norm: Normalization,
    config: TrainConfig,
    tile: tuple[int, ...],
    halo: tuple[int, ...],
    spacing: Sequence[float] | None = None,
) -> _Plane:
    classes, weights = _targets(labels, mask, config, spacing)
    image = norm(image, channel_axis=0)
    pads = []
    for size, t, h in zip(labels.shape, tile, halo, strict=True):
        # Output pixels can reach every image pixel; pad further if the tile is larger.
        before = h
        after = max(h, t - size - before)
        pads.append((before, after))
    image = _mirror_pad(image, pads)  # as prediction pads
    classes = np.pad(classes, pads)
    weights = np.pad(weights, pads)  # zero weight: padding never enters the loss
    annotated = weights > 0
    counts = [-(-s // _BLOCK) for s in annotated.shape]
    padded = np.zeros([n * _BLOCK for n in counts], dtype=bool)
    padded[tuple(slice(0, s) for s in annotated.shape)] = annotated
    split = [v for n in counts for v in (n, _BLOCK)]
    inner = tuple(range(1, 2 * len(counts), 2))
    blocks = np.argwhere(padded.reshape(split).any(axis=inner)) * _BLOCK
    return _Plane(
        np.ascontiguousarray(image, dtype=np.float32),
        classes,
        weights,
        blocks,
        tuple(labels.shape),
        tuple(p[0] for p in pads),
    )


def _normalise_size(
    planes: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    diameters: Sequence[float],
    target: float,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Rescale each plane so its objects' median diameter is ``target`` pixels.

    Planes without objects (nan diameter) stay as they are.
    """
    out = []
    for (image, labels, mask), diameter in zip(planes, diameters, strict=True):
        factor = scale_factor(diameter, target) if math.isfinite(diameter) else 1.0
        if factor != 1.0:
            image = rescale_image(image, factor)
            labels = rescale_image(labels, factor, order=0)
            if mask is not None:
                mask = rescale_image(mask.astype(np.uint8), factor, order=0).astype(bool)
        out.append((image, labels, mask))
    return out


def _model_diameter(config: TrainConfig, diameters: Sequence[float]) -> float | None:
    """The ``object_diameter`` a model trained with these settings records."""
    if config.object_diameter is not None:
        return float(config.object_diameter)
    finite = [d for d in diameters if math.isfinite(d)]
    return round(float(np.median(finite)), 2) if finite else None


def _diameter_range(config: TrainConfig, diameters: Sequence[float]) -> list[float] | None:
    """Object diameters the model saw in training: predicted as they are, others rescaled."""
    if config.object_diameter is not None:
        low, high = config.zoom_range or (0.95, 1.05)
        return [round(config.object_diameter * low, 2), round(config.object_diameter * high, 2)]
    finite = [d for d in diameters if math.isfinite(d)]
    if not finite:
        return None
    return [round(float(np.percentile(finite, q)), 2) for q in (10, 90)]


def _default_tile(model: nn.Module, planes: Sequence[tuple]) -> tuple[int, ...]:
    nd = planes[0][1].ndim
    smallest = tuple(min(p[1].shape[axis] for p in planes) for axis in range(nd))
    if nd == 3:
        # Volumes: about 64 output voxels per axis (what a CPU trains in
        # seconds per step; pass `tile_shape` for larger tiles on a GPU).
        if model.padding == "same":
            return tuple(
                max(d, min(64, s // d * d)) for d, s in zip(model.divisors, smallest, strict=True)
            )
        return model.valid_input_shape(tuple(min(64, s) for s in smallest))
    if model.padding == "same":
        return tuple(
            max(model.divisor, min(512, s // model.divisor * model.divisor)) for s in smallest
        )
    paper_out = model.output_shape((_PAPER_TILE, _PAPER_TILE)) if model.depth == 4 else None
    if paper_out is not None:
        out = tuple(min(o, s) for o, s in zip(paper_out, smallest, strict=True))
    else:
        # Other depths: the valid tile nearest 572 whose output fits the image.
        guess = model.valid_input_shape(tuple(max(1, _PAPER_TILE - 2 * h) for h in model.halo))
        out = tuple(min(o, s) for o, s in zip(model.output_shape(guess), smallest, strict=True))
    return model.valid_input_shape(out)


def _check_tile(model: nn.Module, tile: Sequence[int]) -> tuple[int, ...]:
    tile = tuple(int(t) for t in tile)
    nd = getattr(model, "spatial_dims", 2)
    if len(tile) != nd:
        axes = "(Y, X)" if nd == 2 else "(Z, Y, X)"
        raise ValueError(f"`tile_shape` must have {nd} values {axes}, got {tile}")
    if not model.is_valid_input_shape(tile):
        nearest = model.valid_input_shape(model.output_shape_lower_bound(tile))
        raise ValueError(
            f"`tile_shape` {tile} is not a valid input shape for this model; the nearest "
            f"valid one is {nearest}"
        )
    return tile


def _channels_of(sample: Sample) -> int:
    image = np.asarray(sample.image)
    labels = np.asarray(sample.labels)
    return 1 if image.ndim == labels.ndim else int(image.shape[0])


def split_validation(planes: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out ``fraction`` of the planes (at least 1, at most all but 1) for validation.

    Returns ``(training planes, validation planes)``, each in the input order;
    ``seed`` chooses which planes are held out.
    """
    if len(planes) < 2:
        raise ValueError(f"`val_fraction` {fraction} needs at least 2 planes, got {len(planes)}")
    order = np.random.default_rng(seed).permutation(len(planes))
    n_val = min(len(planes) - 1, max(1, round(fraction * len(planes))))
    return [planes[i] for i in sorted(order[n_val:])], [planes[i] for i in sorted(order[:n_val])]

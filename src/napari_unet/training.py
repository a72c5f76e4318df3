"""The training engine: samples in, a trained model file out.

Training follows the U-Net paper [1]_: each iteration draws a random valid
input tile from an annotated image, deforms it elastically together with its
targets and weight map, and takes one optimiser step on the weighted
cross-entropy (SGD with momentum 0.99 and one large tile per batch by
default). Weight maps are computed once per image and cached.

The loop is a generator, :func:`train_iter`, that yields
:class:`~napari_unet.progress.Progress` events after every iteration; the
napari widget runs it in a ``thread_worker`` and the command line and
:func:`train` drive it directly. Either way a cancel stops within one
iteration and leaves the last good model on disk.

References
----------
.. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks
       for Biomedical Image Segmentation", MICCAI 2015.
       :DOI:`10.1007/978-3-319-24574-4_28`
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from ._modelfile import load_checkpoint, load_model, save_model
from .devices import select_device
from .errors import DataWarning, InputError
from .losses import hybrid_loss, soft_dice_loss, weighted_cross_entropy
from .models import UNet
from .normalize import Normalization
from .outputs import check_outputs
from .progress import Progress
from .scale import object_diameter, rescale_image, scale_factor
from .tensortable import optimizer_kind
from .weights import instances_to_classes, weight_map

__all__ = [
    "Sample",
    "TrainConfig",
    "TrainResult",
    "checkpoint_paths",
    "train",
    "train_iter",
]

_LOSSES = {"ce": weighted_cross_entropy, "dice": soft_dice_loss, "hybrid": hybrid_loss}
_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("constant", "cosine", "poly", "step")
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
class TrainConfig:
    """Training settings; stored as JSON in the model file.

    Parameters
    ----------
    iterations : int
        Optimiser steps.
    tile_shape : tuple of int, optional
        Input tile (Y, X), or (Z, Y, X) for a 3D model, a valid input shape
        of the model (3D default: about 64 output voxels per axis). Default: the
        paper's 572 x 572 (512 for ``padding="same"`` models), shrunk to the
        smallest image when that is smaller.
    batch_size : int
        Tiles per step. The paper uses one large tile; batches of smaller
        tiles are an option (mind batch norm, which needs more than one).
    optimizer : {"sgd", "adam"}
        ``"sgd"``: SGD with ``momentum`` (the paper: 0.99, so that many
        previously seen tiles contribute to each update).
    lr : float, optional
        Peak learning rate. Default: 0.01 for SGD, 0.001 for Adam.
    momentum : float
        SGD momentum (Adam keeps its usual betas 0.9 and 0.999).
    weight_decay : float
        L2 penalty.
    lr_schedule : {"constant", "cosine", "poly", "step"}
        Decay over ``iterations``: cosine to 0, polynomial ``(1 - t)**0.9``,
        or a tenfold drop at 2/3 of the run; after ``warmup`` linear warm-up
        iterations.
    warmup : int
        Iterations of linear learning-rate warm-up.
    loss : {"auto", "ce", "dice", "hybrid"}
        Weighted cross-entropy (the U-Net paper), soft Dice, or both (the
        U-Net++ paper's hybrid loss). ``"auto"``: the hybrid loss for models
        with deep supervision (U-Net++), averaged over every head, else the
        weighted cross-entropy.
    border_class : bool
        Three classes (background, cell, separating border) if True, else two.
    w0, sigma : float
        Border term of the weight map (the paper: 10 and 5 pixels).
    class_weights : {"balanced"} or None
        Class-balancing term of the weight map.
    elastic : bool
        Elastic deformation (the paper: a 3 x 3 grid of random displacements
        with a standard deviation of 10 pixels).
    elastic_grid, elastic_sigma : int, float
        Its grid and displacement standard deviation (pixels).
    flips : bool
        Random 90-degree rotations and mirroring.
    grey_values : bool
        Random brightness, contrast and gamma changes.
    intensity : bool
        Stronger intensity augmentation, for models that must work on
        images of any brightness: wider gamma and contrast, a background
        offset, Gaussian noise and a smooth gain field (dim objects beside
        bright ones). Adds to ``grey_values``.
    object_diameter : float, optional
        Size normalisation: every plane is rescaled so the median diameter
        of its objects (:func:`napari_unet.scale.object_diameter`) is this
        many pixels, and the model file records it as the model's
        ``object_diameter``; prediction then rescales images to it. Default:
        no rescaling, and the model records the median diameter of its
        training labels.
    zoom_range : (float, float), optional
        Random zoom of each tile (log-uniform in this range), so the model
        tolerates objects somewhat off its training size. Default: none.
    choose_postprocessing : bool
        At the end, choose the post-processing (threshold, watershed or
        connected components, seed and size limits) on the fully annotated
        validation planes and store it in the model files
        (:func:`napari_unet.tuning.choose_postprocessing`).
    postprocessing_metric : {"auto", "dsb", "ap50", "rand", "pixel"}
        What that choice maximises; ``"auto"``: the DSB score with the
        border class (instances), else the ISBI Rand error (cells).
    normalization : {"image", "dataset", "none"}
        Scope of the percentile normalisation (see
        :class:`~napari_unet.normalize.Normalization`).
    norm_low, norm_high : float
        Its percentiles (1 and 99.8).
    val_every : int
        Validate every this many iterations (and at the end), when there is
        validation data.
    val_fraction : float
        Share of the training planes held out for validation when no
        validation samples are given.
    monitor : str
        Validation value that picks the best model; smaller is better
        (``"val_loss"``, ``"pixel_error"`` or ``"rand_error"``).
    checkpoint_every : int
        Write the last model every this many iterations (and at the end and
        on cancel).
    seed : int
        Seeds tile positions, augmentation and dropout: on the CPU the same
        seed gives the same weights.
    device : str
        ``"auto"`` (CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda"``, ...
    amp : bool
        Mixed precision on CUDA (bfloat16 where supported, else float16 with
        gradient scaling); ignored elsewhere.
    cpu_bf16 : bool
        bfloat16 autocast for the training steps on the CPU (opt-in; needs
        AVX-512 BF16 or AMX). Loss and validation stay float32; see
        docs/performance.md for its speed-up and convergence on ISBI.
    distributed : bool
        Data-parallel training over the processes ``torchrun`` started
        (``DistributedDataParallel``; see :mod:`napari_unet.distributed`).
        ``batch_size`` stays the global batch: each of the N ranks trains on
        its ``batch_size / N`` share of the same tiles a single process
        would draw. Only rank 0 writes files.
    """

    iterations: int = 1000
    tile_shape: tuple[int, ...] | None = None
    batch_size: int = 1
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.99
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup: int = 0
    loss: str = "auto"
    border_class: bool = True
    w0: float = 10.0
    sigma: float = 5.0
    class_weights: str | None = "balanced"
    elastic: bool = True
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    flips: bool = True
    grey_values: bool = True
    intensity: bool = False
    object_diameter: float | None = None
    zoom_range: tuple[float, float] | None = None
    choose_postprocessing: bool = True
    postprocessing_metric: str = "auto"
    normalization: str = "image"
    norm_low: float = 1.0
    norm_high: float = 99.8
    val_every: int = 100
    val_fraction: float = 0.0
    monitor: str = "val_loss"
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_bf16: bool = False
    distributed: bool = False

    def __post_init__(self) -> None:
        if self.tile_shape is not None:
            self.tile_shape = tuple(int(t) for t in self.tile_shape)
        if self.zoom_range is not None:
            self.zoom_range = tuple(float(z) for z in self.zoom_range)
            if len(self.zoom_range) != 2 or not 0 < self.zoom_range[0] <= self.zoom_range[1]:
                raise ValueError(
                    f"`zoom_range` must be (low, high), 0 < low <= high, got {self.zoom_range}"
                )
        if self.object_diameter is not None and not (
            self.object_diameter > 0 and math.isfinite(self.object_diameter)
        ):
            raise ValueError(
                f"`object_diameter` must be a positive number of pixels or None, got "
                f"{self.object_diameter!r}"
            )
        for name in ("iterations", "batch_size", "val_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        if self.warmup < 0:
            raise ValueError(f"`warmup` must be >= 0, got {self.warmup}")
        if self.lr is None:
            self.lr = 1e-3 if self.optimizer == "adam" else 0.01
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"`lr` must be a positive number, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {self.val_fraction}")
        for name, allowed in (
            ("optimizer", _OPTIMIZERS),
            ("lr_schedule", _SCHEDULES),
            ("loss", ("auto", *_LOSSES)),
            ("monitor", ("val_loss", "pixel_error", "rand_error")),
            ("postprocessing_metric", ("auto", "dsb", "ap50", "rand", "pixel")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}")
        # Checks the normalisation settings.
        self.make_normalization()

    @property
    def num_classes(self) -> int:
        """Classes the model must output: 3 with the border class, else 2."""
        return 3 if self.border_class else 2

    def make_normalization(self) -> Normalization:
        """The (unfitted) :class:`~napari_unet.normalize.Normalization` these settings ask for."""
        return Normalization(self.normalization, self.norm_low, self.norm_high)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        data = asdict(self)
        for name in ("tile_shape", "zoom_range"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            For unknown keys (a typo should not silently fall back to a default).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig settings {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : nn.Module
        The model as it was at the last completed iteration (in eval mode).
    iterations : int
        Completed iterations (counting those of a resumed run).
    cancelled : bool
        True if the run was stopped early by ``cancel``.
    best_path, last_path : Path or None
        The files written (None without ``out``). ``best_path`` holds the
        best model by ``config.monitor`` when there was validation data, and
        the last model otherwise.
    best : dict or None
        ``{"iteration", "monitor", "value", "metrics"}`` of the best validation.
    history : list of dict
        One entry per validation: iteration, loss and metrics.
    losses : list of float
        Training loss per iteration of this run.
    metadata : dict
        What was stored in the model files (the ``training`` entry and more).
    """

    model: nn.Module
    iterations: int
    cancelled: bool
    best_path: Path | None
    last_path: Path | None
    best: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def written(self) -> list[Path]:
        """The model files this run wrote (empty if it stopped before any was)."""
        return [p for p in (self.best_path, self.last_path) if p is not None]


def checkpoint_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The two files a run with ``out`` writes: ``(best, last)``.

    ``out`` itself receives the best model (weights and metadata, what
    ``predict`` uses), and ``<stem>.last<suffix>`` beside it the last one,
    with the optimiser state for resuming.

    Examples
    --------
    >>> [p.name for p in checkpoint_paths("runs/cells.safetensors")]
    ['cells.safetensors', 'cells.last.safetensors']
    """
    out = Path(out)
    suffix = out.suffix or ".safetensors"
    return out, out.with_name(f"{out.stem if out.suffix else out.name}.last{suffix}")


# -- samples -----------------------------------------------------------------------------------


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
    mode = "reflect" if min(labels.shape) > 1 else "symmetric"
    image = np.pad(image, [(0, 0), *pads], mode=mode)
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


# -- augmentation ------------------------------------------------------------------------------


def _augmentation(config: TrainConfig, square: bool) -> Any:
    """The augmentation pipeline the settings ask for (an ``augment.Compose``)."""
    from . import augment
    from .augment_zoom_gain import RandomGainField, RandomZoom

    transforms: list = []
    if config.flips:
        transforms.append(augment.RandomFlip())
        if square:  # odd quarter turns would change a non-square tile's shape
            transforms.append(augment.RandomRot90())
    if config.zoom_range is not None:
        transforms.append(RandomZoom(config.zoom_range))
    if config.elastic:
        transforms.append(
            augment.ElasticDeform(grid=config.elastic_grid, sigma=config.elastic_sigma)
        )
    if config.grey_values:
        # Around the normalised [0, 1] range: mild contrast, brightness and gamma changes.
        transforms.append(augment.RandomContrast(contrast=(0.75, 1.25), brightness=(-0.1, 0.1)))
        transforms.append(augment.RandomGamma(gamma_range=(0.7, 1.5)))
    if config.intensity:
        # Dim, low-contrast, offset and noisy versions of the normalised image.
        transforms.append(RandomGainField((0.25, 1.0), p=0.5))
        transforms.append(augment.RandomGamma(gamma_range=(0.5, 2.0), p=0.5))
        transforms.append(
            augment.RandomContrast(contrast=(0.4, 1.2), brightness=(-0.15, 0.25), p=0.5)
        )
        transforms.append(augment.GaussianNoise(std=(0.0, 0.08), p=0.5))
    return augment.Compose(transforms)


def _augment_sample(image: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> Any:
    from .augment import Sample as AugmentSample

    return AugmentSample(image, classes, weights)


# -- the loop ----------------------------------------------------------------------------------


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _lr_factor(config: TrainConfig) -> Callable[[int], float]:
    total = config.iterations

    def factor(step: int) -> float:
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        t = min(1.0, (step - config.warmup) / max(1, total - config.warmup))
        if config.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if config.lr_schedule == "poly":
            return (1.0 - t) ** 0.9
        if config.lr_schedule == "step":
            return 0.1 if t >= 2 / 3 else 1.0
        return 1.0

    return factor


def _autocast(device: torch.device, config: TrainConfig) -> tuple[Any, torch.dtype | None]:
    if device.type == "cpu" and config.cpu_bf16:
        from .inference import bf16_supported

        if not bf16_supported(device):
            raise ValueError(
                "`cpu_bf16` needs a CPU with AVX-512 BF16 or AMX; this one has neither "
                "(set cpu_bf16=False)"
            )
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), torch.bfloat16
    if device.type != "cuda" or not config.amp:
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype


class _Batcher:
    """Draws augmented batches of tiles; all randomness comes from the seeded generators.

    Each slot ``k`` of the global batch has its own generator (plane,
    position and augmentation of tile ``k`` in every iteration): slot 0 is
    seeded with ``seed`` (so a batch of one draws what it always drew), slot
    ``k > 0`` with ``(seed, k)``. A rank that owns slots ``rank * b .. rank *
    b + b - 1`` (``b = batch_size / world_size``) therefore draws exactly the
    tiles a single process with the whole batch draws.
    """

    def __init__(
        self,
        planes: list[_Plane],
        model: nn.Module,
        tile: tuple[int, int],
        config: TrainConfig,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.planes = planes
        self.tile = tile
        self.out = model.output_shape(tile)
        self.margin = tuple((t - o) // 2 for t, o in zip(tile, self.out, strict=True))
        self.config = config
        per_rank = config.batch_size // world_size
        # SeedSequence entropy must be >= 0.
        self.rngs = [
            np.random.default_rng(seed if k == 0 else [seed % 2**64, k])
            for k in range(rank * per_rank, (rank + 1) * per_rank)
        ]
        self.augment = _augmentation(config, tile[-2] == tile[-1])
        # Planes are drawn in proportion to their annotated area.
        sizes = np.array([max(1, len(p.blocks)) for p in planes], dtype=np.float64)
        self.p = sizes / sizes.sum()

    def _position(self, plane: _Plane, rng: np.random.Generator) -> tuple[int, ...]:
        """Tile corner whose output window contains a random annotated pixel."""
        corner = []
        block = plane.blocks[rng.integers(len(plane.blocks))] if len(plane.blocks) else None
        for axis, (size, t, o, m) in enumerate(
            zip(plane.image.shape[1:], self.tile, self.out, self.margin, strict=True)
        ):
            if block is None:
                corner.append(int(rng.integers(size - t + 1)))
                continue
            pixel = int(block[axis]) + int(rng.integers(_BLOCK))
            # Output window [c + m, c + m + o) must contain `pixel`; the tile must fit.
            lo = max(0, pixel - m - o + 1)
            hi = min(size - t, pixel - m)
            corner.append(int(rng.integers(lo, hi + 1)) if hi >= lo else max(0, min(lo, size - t)))
        return tuple(corner)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, classes, weights = [], [], []
        inner = tuple(slice(m, m + o) for m, o in zip(self.margin, self.out, strict=True))
        for rng in self.rngs:
            plane = self.planes[int(rng.choice(len(self.planes), p=self.p))]
            corner = self._position(plane, rng)
            window = tuple(slice(c, c + t) for c, t in zip(corner, self.tile, strict=True))
            image = torch.from_numpy(plane.image[(slice(None), *window)])
            cls = torch.from_numpy(plane.classes[window])
            w = torch.from_numpy(plane.weights[window])
            image, cls, w = self.augment.apply(_augment_sample(image, cls, w), rng)
            images.append(image)
            classes.append(cls[inner])
            weights.append(w[inner])
        return (
            torch.stack(images).float().contiguous(),
            torch.stack(classes).long(),
            torch.stack(weights).float(),
        )


def _validate(
    model: nn.Module,
    planes: list[_ValPlane],
    device: torch.device,
    cancel: Callable[[], bool] | None,
) -> Generator[Progress, None, dict[str, float] | None]:
    """Weighted loss on all validation planes, ISBI pixel and Rand errors on unmasked ones.

    Returns None if ``cancel`` asked to stop.
    """
    from .metrics import isbi_errors
    from .tiling import iter_predict_tiled

    total_loss = total_weight = 0.0
    pixel_curves, rand_curves = [], []
    for index, plane in enumerate(planes):
        # Eager: the weights change between validations, so an export would never pay back.
        events = iter_predict_tiled(model, plane.image, device=device, backend="eager")
        while True:
            try:
                next(events)
            except StopIteration as stop:
                probs = stop.value
                break
        chosen = np.take_along_axis(probs, plane.classes[np.newaxis].astype(np.intp), 0)[0]
        nll = -np.log(np.clip(chosen, 1e-7, 1.0))
        total_loss += float((plane.weights * nll).sum())
        total_weight += float(plane.weights.sum())
        if not plane.masked and plane.classes.ndim == 2:  # the ISBI errors are 2D measures
            errors = isbi_errors(np.clip(probs[1], 0.0, 1.0), plane.classes == 1)
            pixel_curves.append(errors["pixel_errors"])
            rand_curves.append(errors["rand_errors"])
        yield Progress(index + 1, len(planes), "validate")
        if cancel is not None and cancel():
            return None
    metrics = {"val_loss": total_loss / max(total_weight, 1e-12)}
    if pixel_curves:
        # Mean error curve over planes, then its minimum over thresholds (ISBI style).
        metrics["pixel_error"] = float(np.min(np.mean(pixel_curves, axis=0)))
        metrics["rand_error"] = float(np.min(np.mean(rand_curves, axis=0)))
    return metrics


def _choose_postprocessing(
    model: nn.Module, planes: list[_ValPlane], device: torch.device, config: TrainConfig
) -> Generator[Progress, None, dict[str, Any] | None]:
    """Post-processing settings chosen on the fully annotated validation planes."""
    from .tiling import predict_tiled
    from .tuning import choose_postprocessing

    usable = [p for p in planes if not p.masked and p.labels is not None]
    if not usable:
        return None
    probabilities = []
    for index, plane in enumerate(usable):
        probabilities.append(predict_tiled(model, plane.image, device=device))
        yield Progress(index + 1, len(usable), "postprocessing")
    metric = config.postprocessing_metric
    if metric == "auto":
        metric = "dsb" if config.border_class else "rand"
    labels = [p.labels for p in usable]
    return choose_postprocessing(probabilities, labels, metric=metric)


def train_iter(
    samples: Sequence[Any],
    *,
    model: nn.Module | str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    val_samples: Sequence[Any] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    cancel: Callable[[], bool] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Generator form of :func:`train`: yields progress events, returns the result.

    Events: ``stage="prepare"`` while weight maps are computed (one per
    plane), ``"train"`` after every iteration (``info``: ``loss``, ``lr``,
    ``it_per_s``, ``eta_s``, ``data_s`` and ``step_s``, the seconds spent
    preparing the batch and in forward/backward/step, and after a
    validation the metrics), and ``"validate"`` per validation plane.

    Closing the generator (what napari's Stop button does) writes the last
    model, as ``cancel`` does, before the generator exits.

    See :func:`train` for the parameters.
    """
    config = TrainConfig() if config is None else config
    torch.manual_seed(config.seed)  # model initialisation (when built here) and dropout
    if config.distributed:
        from . import distributed as ddp

        device = ddp.init(config.device)
        world, rank = ddp.world_size(), ddp.rank()
        if config.batch_size % world:
            raise ValueError(
                f"`batch_size` {config.batch_size} (the global batch) must be divisible by "
                f"the {world} processes of distributed training"
            )
    else:
        device = select_device(config.device)
        world, rank = 1, 0
    main = rank == 0
    user_cancel = cancel

    def cancel() -> bool:
        # Every rank must stop at the same iteration, or the others would wait
        # forever in the next all-reduce: a stop anywhere stops all.
        flag = user_cancel is not None and bool(user_cancel())
        return ddp.any_rank(flag, device) if world > 1 else flag

    started = time.perf_counter()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

    best_path = last_path = None
    if out is not None:
        best_path, last_path = checkpoint_paths(out)
        for path in (best_path, last_path):
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if not best_path.parent.is_dir():
            raise FileNotFoundError(f"folder {best_path.parent} for `out` does not exist")
        # Before any work: a read-only or full --out must not be found after training.
        check_outputs([best_path, last_path], overwrite=overwrite, create=False)

    # Model: fresh, given, or from a file (fine-tuning / resuming).
    optimizer_state = None
    start = 0
    provenance = None
    norm = config.make_normalization()
    if model is None:
        first = _as_sample(samples[0], 0) if len(samples) else None
        channels = 1 if first is None else _channels_of(first)
        model = UNet(in_channels=channels, num_classes=config.num_classes)
    elif isinstance(model, (str, os.PathLike)):
        source = Path(model)
        model, stored, optimizer_state = load_checkpoint(source)
        # The pretrained weights expect the intensities they were trained on.
        norm = Normalization.from_dict(stored.get("normalization"))
        previous = stored.get("training") or {}
        provenance = {
            "file": source.name,
            "created": stored.get("created"),
            "iterations": previous.get("iteration"),
        }
        if resume and optimizer_state is not None:
            if optimizer_kind(optimizer_state) != config.optimizer:
                raise ValueError(
                    f"cannot resume: {source} holds {optimizer_kind(optimizer_state)} optimiser "
                    f"state, the run asks for {config.optimizer!r}; resume with the same "
                    "optimiser or fine-tune instead (resume=False)"
                )
            start = int(previous.get("iteration") or 0)
            if start >= config.iterations:
                raise ValueError(
                    f"{source} already has {start} iterations; ask for more than that "
                    f"(`iterations` is {config.iterations}) to resume"
                )
        else:
            optimizer_state = None
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be an nn.Module, a model file or None, got {model!r}")
    spatial_dims = int(getattr(model, "spatial_dims", 2))
    # Distances of the weight map's border term follow the voxel size of a 3D model.
    spacing = getattr(model, "spacing", None) if spatial_dims == 3 else None
    if model.num_classes != config.num_classes:
        raise ValueError(
            f"`model` outputs {model.num_classes} classes, but border_class="
            f"{config.border_class} needs {config.num_classes}; build the model with "
            f"num_classes={config.num_classes} or change `border_class`"
        )

    files = [str(f) for f in (data_info or {}).get("files", ())]
    planes = _split_planes(samples, model.in_channels, "samples", files, spatial_dims)
    if not planes:
        raise ValueError("`samples` is empty: training needs at least one annotated image")
    _check_classes(planes, "samples")
    if val_samples is not None:
        val_planes = _split_planes(
            val_samples, model.in_channels, "val_samples", spatial_dims=spatial_dims
        )
    elif config.val_fraction > 0:
        if len(planes) < 2:
            raise ValueError(
                f"`val_fraction` {config.val_fraction} needs at least 2 planes, got {len(planes)}"
            )
        order = np.random.default_rng(config.seed).permutation(len(planes))
        n_val = min(len(planes) - 1, max(1, round(config.val_fraction * len(planes))))
        val_planes = [planes[i] for i in sorted(order[:n_val])]
        planes = [planes[i] for i in sorted(order[n_val:])]
    else:
        val_planes = []
    diameters = [object_diameter(labels) for _, labels, _ in planes]
    if config.object_diameter is not None:
        planes = _normalise_size(planes, diameters, config.object_diameter)
        val_planes = _normalise_size(
            val_planes, [object_diameter(p[1]) for p in val_planes], config.object_diameter
        )
    model_diameter = _model_diameter(config, diameters)

    tile = (
        _check_tile(model, config.tile_shape)
        if config.tile_shape is not None
        else _default_tile(model, planes)
    )
    halo = tuple(model.halo)
    if norm.scope == "dataset" and norm.lo is None:
        norm = norm.fit([p[0] for p in planes])

    prepared: list[_Plane] = []
    total_prep = len(planes) + len(val_planes)
    for image, labels, mask in planes:
        prepared.append(_prepare_plane(image, labels, mask, norm, config, tile, halo, spacing))
        yield Progress(len(prepared), total_prep, "prepare")
        if cancel is not None and cancel():
            # Nothing trained yet: no file is written.
            return TrainResult(model.eval(), start, True, None, None, None)
    if not any(len(p.blocks) for p in prepared):
        raise ValueError("no annotated pixels: every `mask` is empty")
    validation: list[_ValPlane] = []
    for image, labels, mask in val_planes:
        classes, weights = _targets(labels, mask, config, spacing)
        validation.append(
            _ValPlane(norm(image, channel_axis=0), classes, weights, mask is not None, labels)
        )
        yield Progress(len(prepared) + len(validation), total_prep, "prepare")
        if cancel is not None and cancel():
            return TrainResult(model.eval(), start, True, None, None, None)

    model.to(device).train()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if validation:
            # Validation (iter_predict_tiled) switches the weights to channels_last;
            # switch now, so DDP builds its gradient buckets for that layout.
            model.to(
                memory_format=torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
            )
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = _make_optimizer(model, config)
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"cannot resume: the stored optimiser state does not fit {config.optimizer!r} "
                f"({err}); fine-tune instead (resume=False)"
            ) from err
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config), last_epoch=start - 1 if start else -1
    )
    autocast, amp_dtype = _autocast(device, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    # Deep supervision (U-Net++): the model returns every head while training,
    # through forward() so that DistributedDataParallel sees the whole graph.
    deep = bool(getattr(model, "deep_supervision", False)) and hasattr(model, "return_heads")
    loss_name = config.loss if config.loss != "auto" else ("hybrid" if deep else "ce")
    loss_fn = _LOSSES[loss_name]
    if deep:
        model.return_heads = True
    batcher = _Batcher(
        prepared, model, tile, config, config.seed + start, rank=rank, world_size=world
    )

    history: list[dict[str, Any]] = []
    losses: list[float] = []
    best: dict[str, Any] | None = None
    metrics: dict[str, float] = {}
    iteration = start
    saved_best = False
    saved_last = False
    postprocessing: dict[str, Any] | None = None

    def metadata(finished: bool, cancelled: bool) -> dict[str, Any]:
        return {
            "classes": ["background", "cell", "border"][: config.num_classes],
            "normalization": norm.to_dict(),
            "object_diameter": model_diameter,
            "object_diameter_range": _diameter_range(config, diameters),
            "postprocessing": postprocessing,
            **({"spacing": list(spacing or (1.0, 1.0, 1.0))} if spatial_dims == 3 else {}),
            "training": {
                "config": config.to_dict(),
                "tile_shape": list(tile),
                "iteration": iteration,
                "finished": finished,
                "cancelled": cancelled,
                "started": created,
                "elapsed_s": round(time.perf_counter() - started, 2),
                "device": device.type,
                **({"world_size": world} if config.distributed else {}),
                "planes": len(prepared),
                "val_planes": len(validation),
                "data": dict(data_info or {}),
                "metrics": dict(metrics),
                "best": best,
                "fine_tuned_from": provenance,
                "package_version": __version__,
            },
        }

    def save(finished: bool = False, cancelled: bool = False) -> None:
        nonlocal saved_best
        if out is None or not main:
            return
        nonlocal saved_last
        meta = metadata(finished, cancelled)
        save_model(
            model,
            last_path,
            metadata=meta,
            overwrite=True,
            optimizer_state=optimizer.state_dict(),
        )
        saved_last = True
        # Without validation (or before the first one) the best model is the last one.
        if not validation or not saved_best:
            save_model(model, best_path, metadata=meta, overwrite=True)

    cancelled = False
    ema = None
    try:
        while iteration < config.iterations:
            t0 = time.perf_counter()
            images, targets, weights = batcher.next()
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            weights = weights.to(device, non_blocking=True)
            t1 = _sync(device)
            with autocast():
                outputs = net(images)
            heads = outputs if isinstance(outputs, list | tuple) else [outputs]
            loss = sum(loss_fn(h.float(), targets, weights) for h in heads) / len(heads)
            if world > 1 and loss_name == "ce":
                # The weighted CE is sum(w * ce) / sum(w) over the batch, and DDP
                # averages gradients over ranks: scale each rank's loss by its share
                # of the global weight so that the average is the gradient of the
                # global batch's loss.
                local = weights.float().sum()
                total = ddp.sum_all(local).clamp_min(torch.finfo(torch.float32).tiny)
                loss = loss * (local * world / total)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            # The same global loss on every rank (so all raise on NaN together).
            value = (
                float(ddp.sum_all(loss.detach()) / world) if world > 1 else float(loss.detach())
            )
            t2 = _sync(device)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"the training loss became {value} at iteration {iteration + 1}; lower the "
                    f"learning rate (`lr` = {config.lr}). "
                    + (
                        f"The last good model is kept in {last_path}"
                        if saved_last
                        else "No model file was written (none was saved before this iteration)"
                    )
                )
            iteration += 1
            losses.append(value)
            seconds = time.perf_counter() - t0
            ema = seconds if ema is None else 0.9 * ema + 0.1 * seconds
            info: dict[str, Any] = {
                "loss": value,
                "lr": optimizer.param_groups[0]["lr"],
                "it_per_s": 1.0 / ema,
                "eta_s": ema * (config.iterations - iteration),
                "data_s": t1 - t0,
                "step_s": t2 - t1,
            }
            if validation and (
                iteration % config.val_every == 0 or iteration == config.iterations
            ):
                scores = yield from _validate(model, validation, device, cancel)
                model.train()
                if scores is None:  # cancelled during validation
                    cancelled = True
                    break
                metrics = scores
                history.append({"iteration": iteration, "loss": value, **metrics})
                info.update(metrics)
                score = metrics.get(config.monitor, metrics["val_loss"])
                if best is None or score < best["value"]:
                    best = {
                        "iteration": iteration,
                        "monitor": config.monitor if config.monitor in metrics else "val_loss",
                        "value": score,
                        "metrics": dict(metrics),
                    }
                    if out is not None and main:
                        save_model(
                            model,
                            best_path,
                            metadata=metadata(iteration == config.iterations, False),
                            overwrite=True,
                        )
                        saved_best = True
            if iteration % config.checkpoint_every == 0 and iteration < config.iterations:
                save()
            yield Progress(iteration, config.iterations, "train", info)
            if cancel is not None and cancel():
                cancelled = True
                break
    except GeneratorExit:
        # Closed from outside (napari's Stop): keep what was trained so far.
        save(cancelled=True)
        raise
    if validation and config.choose_postprocessing and not cancelled and main:
        postprocessing = yield from _choose_postprocessing(model, validation, device, config)
        if out is not None and saved_best and best["iteration"] == iteration:
            save_model(model, best_path, metadata=metadata(True, False), overwrite=True)
        elif out is not None and saved_best:
            # The best file holds other weights: choose for those too.
            kept, kept_meta = load_model(best_path)
            kept_meta["postprocessing"] = yield from _choose_postprocessing(
                kept, validation, device, config
            )
            save_model(kept, best_path, metadata=kept_meta, overwrite=True)
    save(finished=not cancelled, cancelled=cancelled)
    if world > 1:
        ddp.barrier()  # rank 0's files are complete when train returns on any rank
    model.eval()
    if deep:
        model.return_heads = False
    return TrainResult(
        model=model,
        iterations=iteration,
        cancelled=cancelled,
        best_path=best_path,
        last_path=last_path,
        best=best,
        history=history,
        losses=losses,
        metadata=metadata(not cancelled, cancelled),
    )


def _sync(device: torch.device) -> float:
    # Timings are only honest once queued GPU work has finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _channels_of(sample: Sample) -> int:
    image = np.asarray(sample.image)
    labels = np.asarray(sample.labels)
    return 1 if image.ndim == labels.ndim else int(image.shape[0])


def train(
    samples: Sequence[Any],
    *,
    model: nn.Module | str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    val_samples: Sequence[Any] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a U-Net on annotated images.

    Parameters
    ----------
    samples : sequence of Sample, tuple or dict
        Training images with instance labels and optional masks (see
        :class:`Sample`); tuples ``(image, labels[, mask])`` work too.
    model : nn.Module, path or None, optional
        The network to train. None builds the paper's U-Net (``UNet()`` with
        ``config.num_classes`` outputs). A path to a model file fine-tunes it:
        training starts from its weights, and its normalisation is kept.
    config : TrainConfig, optional
        Training settings; default ``TrainConfig()``.
    val_samples : sequence, optional
        Validation images (or use ``config.val_fraction``).
    out : path, optional
        Model file to write; see :func:`checkpoint_paths` for the two files.
        None keeps the model in memory only.
    overwrite : bool, optional
        Replace existing output files; by default they are an error.
    resume : bool, optional
        With a ``model`` file that holds an optimiser state (a ``.last``
        checkpoint), continue its run: restore the optimiser and count
        iterations from where it stopped, up to ``config.iterations``.
    progress : callable, optional
        Called with every :class:`~napari_unet.progress.Progress` event
        (``event.info`` has the loss, learning rate, it/s, ETA and, after
        validation, the metrics).
    cancel : callable, optional
        Checked after every iteration; True stops training.
    data_info : mapping, optional
        Provenance of the data (file names, source), stored in the model file.

    Returns
    -------
    result : TrainResult
        The model, the files, the best validation and the loss history.
        After a cancel ``result.cancelled`` is True; this is not an error:
        the model trained so far is returned and saved.

    Raises
    ------
    ValueError
        For malformed samples, a model whose channels or classes do not fit
        the data and settings, or an invalid tile shape.
    FileExistsError
        If an output file exists and ``overwrite`` is False.
    FloatingPointError
        If the loss diverges (NaN); the last checkpoint stays on disk.

    Notes
    -----
    *Cancel.* ``cancel`` is checked after every iteration (and the
    generator form can be closed at any yield). The run then writes the
    model of the last completed iteration to both files (atomically, so an
    interruption during the write keeps the previous file) and returns
    normally with ``cancelled=True``, so that the caller can use the model.
    Closing :func:`train_iter` writes the files the same way.

    *Checkpoints.* ``out`` holds the best model by ``config.monitor``
    (smaller is better) when there is validation data, else the last one;
    ``<stem>.last.safetensors`` the last one with the optimiser state. Both
    are written every ``config.checkpoint_every`` iterations, at the end and
    on cancel; the best one whenever validation improves.

    *Reproducibility.* Tile positions, augmentations and dropout are
    seeded by ``config.seed`` (and the model is built after seeding), so on
    the CPU the same seed and data give bit-identical weights.
    """
    events = train_iter(
        samples,
        model=model,
        config=config,
        val_samples=val_samples,
        out=out,
        overwrite=overwrite,
        resume=resume,
        cancel=cancel,
        data_info=data_info,
    )
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)

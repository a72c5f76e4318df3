"""Training settings (:class:`TrainConfig`), the result of a run and its files."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from ..losses import hybrid_loss, soft_dice_loss, weighted_cross_entropy
from ..normalize import Normalization

_LOSSES = {"ce": weighted_cross_entropy, "dice": soft_dice_loss, "hybrid": hybrid_loss}
_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("constant", "cosine", "poly", "step")


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
    postprocessing_metric : {"auto", "dsb", "ap50", "rand", "pixel", "isbi"}
        What that choice maximises; ``"auto"``: the DSB score with the
        border class (instances), else the sum of the ISBI Rand and pixel
        errors (cells; ``"isbi"``).
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
            ("postprocessing_metric", ("auto", "dsb", "ap50", "rand", "pixel", "isbi")),
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

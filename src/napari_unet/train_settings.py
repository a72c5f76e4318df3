"""Training settings in one place: presets, defaults, the network to build, resuming.

Both front ends (``napari-unet train`` and the Train widget) turn their
values into a network and a :class:`~napari_unet.training.TrainConfig` here,
so they share every default:

- :data:`PRESETS` / :func:`training_preset`: ``"gpu"`` is the paper's
  settings (depth 4, 64 base channels, 572 px tiles, SGD, 1000 iterations),
  ``"cpu"`` the demo's (depth 3, 16 base channels, 124 px tiles, Adam, 300
  iterations), which gives usable cells in minutes on a laptop.
- :func:`default_val_every`: how often to validate and save a checkpoint.
- :class:`ModelSpec`: the architecture and its arguments; :meth:`ModelSpec.build`.
- :func:`make_run`: front-end values -> ``(ModelSpec, TrainConfig)``.
- :func:`resume_state`: continue an unfinished run, or fine-tune a finished model.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from .training import TrainConfig

__all__ = [
    "PRESETS",
    "ModelSpec",
    "ResumeState",
    "default_val_every",
    "make_run",
    "resume_state",
    "training_preset",
]

#: Preset name -> the settings it fixes (everything else has one default).
#: ``tile`` None: the automatic tile (572 px for the paper's network).
PRESETS: dict[str, dict[str, Any]] = {
    # Ronneberger et al. (2015): 64 channels at the first level, 4 poolings, SGD.
    "gpu": {"depth": 4, "base_channels": 64, "tile": None, "optimizer": "sgd", "iterations": 1000},
    # The demo's network: usable cells in minutes on 2 CPU cores (about 0.2 s per iteration).
    "cpu": {"depth": 3, "base_channels": 16, "tile": 124, "optimizer": "adam", "iterations": 300},
}


def training_preset(name: str) -> dict[str, Any]:
    """A copy of a preset's settings (``"gpu"`` or ``"cpu"``).

    Examples
    --------
    >>> training_preset("cpu")["base_channels"]
    16
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def default_val_every(iterations: int) -> int:
    """Validation (and checkpoint) interval: every 10 % of the run, at most every 100 iterations.

    Examples
    --------
    >>> default_val_every(1000), default_val_every(30), default_val_every(5)
    (100, 3, 1)
    """
    return max(1, min(100, int(iterations) // 10))


@dataclass(frozen=True)
class ModelSpec:
    """A network to build: registry name and constructor arguments.

    Parameters
    ----------
    architecture : str
        ``"unet"`` or ``"unetplusplus"`` (names stored in model files).
    in_channels, num_classes, depth, base_channels : int
    padding : str
        U-Net only (``"valid"``, the paper, or ``"same"``); U-Net++ is always same.
    batch_norm : bool
    spatial_dims : int
        2, or 3 for a 3D network trained on volumes.
    spacing : tuple of float, optional
        Voxel size (Z, Y, X) of a 3D U-Net (anisotropic pooling, stored in
        the model file); None: isotropic.
    """

    architecture: str = "unet"
    in_channels: int = 1
    num_classes: int = 3
    depth: int = 4
    base_channels: int = 64
    padding: str = "valid"
    batch_norm: bool = False
    spatial_dims: int = 2
    spacing: tuple[float, ...] | None = None

    def arguments(self) -> dict[str, Any]:
        """The constructor arguments (``padding`` and ``spacing`` only for the U-Net)."""
        arguments = asdict(self)
        del arguments["architecture"]
        if self.architecture != "unet":
            del arguments["padding"]
        if self.spatial_dims == 2:
            del arguments["spatial_dims"]  # as before volumes: 2D arguments unchanged
        if self.architecture != "unet" or self.spacing is None:
            del arguments["spacing"]
        else:
            arguments["spacing"] = [float(v) for v in self.spacing]
        return arguments

    def build(self, *, seed: int | None = None) -> nn.Module:
        """The untrained network; ``seed`` makes its initial weights reproducible.

        Raises
        ------
        ValueError
            An unknown architecture or arguments that do not fit it.
        """
        from ._modelfile import build_model

        if seed is not None:
            import torch

            torch.manual_seed(seed)
        return build_model(self.architecture, self.arguments())


@dataclass
class ResumeState:
    """What training from an existing model file means.

    Attributes
    ----------
    resume : bool
        True: continue the unfinished run (weights, optimiser, iteration);
        False: fine-tune the weights with a new run.
    iteration : int or None
        Iterations the file was trained for.
    metadata : dict
        The file's metadata.
    """

    resume: bool
    iteration: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


def resume_state(path: str | os.PathLike) -> ResumeState:
    """Resume or fine-tune: an unfinished checkpoint with optimiser state resumes.

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing or not a model file.
    """
    from ._modelfile import load_checkpoint

    _, stored, optimizer_state = load_checkpoint(path)
    previous = stored.get("training") or {}
    resume = optimizer_state is not None and not previous.get("finished", True)
    return ResumeState(resume, previous.get("iteration"), stored)


def make_run(
    *,
    preset: str = "gpu",
    in_channels: int = 1,
    architecture: str = "unet",
    classes: int = 3,
    padding: str = "valid",
    batch_norm: bool = False,
    depth: int | None = None,
    base_channels: int | None = None,
    iterations: int | None = None,
    tile: int | None = None,
    optimizer: str | None = None,
    val_every: int | None = None,
    checkpoint_every: int | None = None,
    augment: bool = True,
    dims: int = 2,
    spacing: tuple[float, ...] | None = None,
    **config: Any,
) -> tuple[ModelSpec, TrainConfig]:
    """Front-end training values -> the network to build and the training configuration.

    Parameters
    ----------
    preset : {"gpu", "cpu"}
        Fills ``depth``, ``base_channels``, ``iterations``, ``tile`` and
        ``optimizer`` when they are None (:data:`PRESETS`).
    in_channels : int
        Channels of the training images.
    architecture, classes, padding, batch_norm, depth, base_channels
        The network (:class:`ModelSpec`); ``classes`` 3 adds the separating-border class.
    iterations, tile, optimizer : optional
        ``tile`` is the input tile side in pixels.
    val_every, checkpoint_every : int, optional
        Default :func:`default_val_every`; checkpoints follow validation.
    augment : bool
        Elastic deformation, flips and grey-value changes together.
    dims : {2, 3}
        3: a 3D U-Net trained on (Z, Y, X) volumes (``napari-unet train
        --dims 3``); ``tile`` is then a cube's side, and without one the
        training picks about 64 output voxels per axis (the presets' tile
        sides are for planes).
    spacing : tuple of float, optional
        Voxel size (Z, Y, X) of the volumes, for a 3D U-Net's pooling.
    **config
        Further :class:`~napari_unet.training.TrainConfig` fields (``lr``,
        ``batch_size``, ``w0``, ``device``, ...).

    Returns
    -------
    spec : ModelSpec
    config : TrainConfig

    Raises
    ------
    ValueError
        A value out of range (from :class:`~napari_unet.training.TrainConfig`).

    Examples
    --------
    >>> spec, config = make_run(preset="cpu", iterations=200)
    >>> spec.base_channels, config.tile_shape, config.val_every, config.checkpoint_every
    (16, (124, 124), 20, 20)
    """
    from .training import TrainConfig

    chosen = training_preset(preset)
    if classes not in (2, 3):
        raise UsageError(f"classes must be 2 or 3, got {classes}")
    spec = ModelSpec(
        architecture=architecture,
        in_channels=int(in_channels),
        num_classes=int(classes),
        depth=chosen["depth"] if depth is None else int(depth),
        base_channels=chosen["base_channels"] if base_channels is None else int(base_channels),
        padding=padding,
        batch_norm=bool(batch_norm),
        spatial_dims=int(dims),
        spacing=None if spacing is None else tuple(float(v) for v in spacing),
    )
    if dims not in (2, 3):
        raise UsageError(f"dims must be 2 or 3, got {dims}")
    iterations = chosen["iterations"] if iterations is None else int(iterations)
    if tile is None and dims == 2 and chosen["tile"] is not None:
        tile = chosen["tile"]
        if spec.architecture != "unet" or spec.padding == "same":
            # Same-padding networks take multiples of 2**depth: the preset's side rounded up.
            step = 2**spec.depth
            tile = -(-tile // step) * step
    val_every = default_val_every(iterations) if val_every is None else val_every
    train_config = TrainConfig(
        iterations=iterations,
        tile_shape=None if tile is None else (int(tile),) * int(dims),
        optimizer=chosen["optimizer"] if optimizer is None else optimizer,
        border_class=classes == 3,
        elastic=augment,
        flips=augment,
        grey_values=augment,
        val_every=val_every,
        checkpoint_every=val_every if checkpoint_every is None else checkpoint_every,
        **config,
    )
    return spec, train_config

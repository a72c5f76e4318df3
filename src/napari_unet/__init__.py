"""napari-unet: the U-Net (Ronneberger et al., 2015) and U-Net++ for napari.

The core library (models, tiling, weights, losses, augmentation, metrics,
training) never imports napari or Qt; the widgets in ``napari_unet._widgets``
are thin layers on top of it.

Submodules are imported lazily so that ``import napari_unet`` (which napari
does to read the plugin manifest) stays fast and does not load PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "UNet": "napari_unet.models",
    "predict_tiled": "napari_unet.tiling",
    "predict_stack": "napari_unet.tiling",
    "Cancelled": "napari_unet.progress",
    "select_device": "napari_unet.devices",
    "train": "napari_unet.training",
    "TrainConfig": "napari_unet.training",
    "save_model": "napari_unet.io",
    "load_model": "napari_unet.io",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")

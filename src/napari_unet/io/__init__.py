"""Files in and out: images, label images, chunked stores and model files.

- :mod:`napari_unet.io.images`: ``read_image``, ``write_image``,
  ``list_images``, ``pair_by_stem``, ``read_labels``.
- :mod:`napari_unet.io.chunked`: ``open_chunked`` / ``create_ome_zarr`` (Zarr,
  OME-Zarr, large TIFF read and written chunk by chunk).
- :mod:`napari_unet.io.models`: ``load_model`` / ``read_metadata`` for every
  model format (napari-unet safetensors files, bioimage.io packages),
  ``save_model``, ``load_checkpoint``, and the bundled models.

Names are imported on first use, so reading an image never imports PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> module that defines it (imported on first use).
_LAZY = {
    **dict.fromkeys(
        (
            "IMAGE_SUFFIXES",
            "files_by_stem",
            "is_colour_file",
            "list_images",
            "pair_by_stem",
            "read_image",
            "read_labels",
            "write_image",
        ),
        "napari_unet.io.images",
    ),
    **dict.fromkeys(
        ("ChunkedImage", "create_ome_zarr", "is_zarr", "open_chunked"), "napari_unet.io.chunked"
    ),
    **dict.fromkeys(
        (
            "ModelFileError",
            "list_pretrained",
            "load_checkpoint",
            "load_model",
            "load_pretrained",
            "read_metadata",
            "save_model",
        ),
        "napari_unet.io.models",
    ),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_unet.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

"""Model files of every format behind one ``load_model`` / ``read_metadata``.

napari-unet's own format (safetensors weights with JSON metadata, never
unpickled) is read by :mod:`napari_unet._modelfile`; bioimage.io model
packages exported by napari-unet (a folder or ``.zip`` with ``rdf.yaml``) by
:mod:`napari_unet.export`. This module chooses between them, so that neither
has to know the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._modelfile import ModelFileError, load_checkpoint, save_model
from ..pretrained import list_pretrained, load_pretrained

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ModelFileError",
    "list_pretrained",
    "load_checkpoint",
    "load_model",
    "load_pretrained",
    "read_metadata",
    "save_model",
]


def _is_package(path: Path) -> bool:
    from ..export import is_bioimageio_package

    return is_bioimageio_package(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a model file or bioimage.io package, without building the model.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        If it is not a napari-unet model file or package, or its metadata
        breaks the schema.
    """
    from .. import _modelfile

    if _is_package(Path(path)):
        from ..export import read_bioimageio_metadata

        return read_bioimageio_metadata(path)
    return _modelfile.read_metadata(path)


def load_model(
    path: str | os.PathLike, *, device: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a napari-unet model file or a bioimage.io package exported by napari-unet.

    Parameters
    ----------
    path : str or path-like
        A ``.safetensors`` model file (:func:`napari_unet._modelfile.load_model`),
        or a bioimage.io package, folder or ``.zip`` with ``rdf.yaml``
        (:func:`napari_unet.export.load_bioimageio`).
    device : str or torch.device, optional
        Where to put the model; None leaves it on the CPU.

    Returns
    -------
    model : nn.Module
        In eval mode.
    metadata : dict
        The stored JSON document.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        (an ``InputError``) if the file is pickle-based, not a napari-unet
        model, truncated or corrupt; nothing in it is ever executed.
    """
    from .. import _modelfile

    # Checked first: a zip package would otherwise be refused as a torch.save archive.
    if _is_package(Path(path)):
        from ..export import load_bioimageio

        return load_bioimageio(path, device=device)
    return _modelfile.load_model(path, device=device)

"""Bundled default models, trained by the project on public data.

Two models ship inside the package, in
``napari_unet/models/pretrained/<name>.safetensors`` (the project's model file
format: weights plus JSON metadata, read without running code):

``nuclei``
    Fluorescence nuclei (2D, one channel), trained on the greyscale
    fluorescence images of the Data Science Bowl 2018 (CC0). Three classes
    (background, nucleus, separating border), so touching nuclei come out
    as separate objects.
``em-membranes``
    Neurites in serial-section electron microscopy, the U-Net paper's task,
    trained on ISBI 2012 slices 00-19. Two classes (membrane, cell).

Their training data, licences, the commands that reproduce them and their
measured accuracy are in ``docs/models.md``; the metadata of each file holds
the same under ``"pretrained"``.

Examples
--------
>>> from napari_unet.pretrained import list_pretrained, load_pretrained
>>> "nuclei" in list_pretrained()
True
>>> model, meta = load_pretrained("nuclei")
>>> meta["classes"]
['background', 'cell', 'border']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Not at run time: the Predict dock lists the bundled models without importing PyTorch.
    from torch import nn

__all__ = [
    "PRETRAINED_DIR",
    "list_pretrained",
    "load_pretrained",
    "pretrained_path",
    "recommended_threshold",
    "resolve_model",
]

#: Folder of the bundled model files.
PRETRAINED_DIR: Path = Path(__file__).resolve().parent / "models" / "pretrained"
_SUFFIX = ".safetensors"


def list_pretrained() -> list[str]:
    """Names of the bundled models, sorted.

    Returns
    -------
    names : list of str
        Each name loads with :func:`load_pretrained` and is accepted by
        ``napari-unet predict --model NAME``.

    See Also
    --------
    load_pretrained

    Examples
    --------
    >>> list_pretrained()
    ['em-membranes', 'nuclei']
    """
    return sorted(
        path.name[: -len(_SUFFIX)]
        for path in PRETRAINED_DIR.glob(f"*{_SUFFIX}")
        if ".last" not in path.name
    )


def pretrained_path(name: str) -> Path:
    """The file of a bundled model.

    Parameters
    ----------
    name : str
        A name from :func:`list_pretrained`.

    Returns
    -------
    path : Path
        ``napari_unet/models/pretrained/<name>.safetensors``.

    Raises
    ------
    ValueError
        If ``name`` is not a bundled model (the message lists those that are).
    """
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a string, got {type(name).__name__}")
    names = list_pretrained()
    if name not in names:
        raise ValueError(
            f"`name` {name!r} is not a bundled model; choose from {', '.join(names) or 'none'}"
        )
    return PRETRAINED_DIR / f"{name}{_SUFFIX}"


def load_pretrained(name: str, *, device: str | None = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a bundled model by name.

    Parameters
    ----------
    name : str
        ``"nuclei"`` or ``"em-membranes"`` (see :func:`list_pretrained`).
    device : str, optional
        Where to put the model (``"cpu"``, ``"cuda"``, ...); None leaves it
        on the CPU.

    Returns
    -------
    model : nn.Module
        The network with its trained weights, in eval mode.
    metadata : dict
        The model file's JSON metadata: ``classes``, ``normalization``
        (apply it to images before prediction), ``training`` (the full
        recipe) and ``pretrained`` (description, data, licence, citations,
        measured accuracy).

    Raises
    ------
    ValueError
        If ``name`` is not a bundled model.

    See Also
    --------
    napari_unet.io.load_model : load any model file.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_unet.normalize import Normalization
    >>> from napari_unet.tiling import predict_tiled
    >>> model, meta = load_pretrained("nuclei")
    >>> image = np.zeros((64, 64), dtype=np.uint8)
    >>> data = Normalization.from_dict(meta["normalization"])(image, channel_axis=None)
    >>> predict_tiled(model, data).shape
    (3, 64, 64)
    """
    from ._modelfile import load_model

    return load_model(pretrained_path(name), device=device)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A model file from a path or the name of a bundled model.

    What ``napari-unet predict --model`` and the Predict widget accept: an
    existing file is taken as it is (so a local file called ``nuclei`` wins
    over the bundled model); otherwise a bundled model's name gives its file.

    Parameters
    ----------
    name_or_path : str or path-like
        A model file, or a name from :func:`list_pretrained`.

    Returns
    -------
    path : Path
        The model file to load with :func:`napari_unet.io.load_model`.

    Raises
    ------
    FileNotFoundError
        If ``name_or_path`` is neither an existing file nor a bundled model;
        the message lists the bundled names.

    Examples
    --------
    >>> resolve_model("nuclei").name
    'nuclei.safetensors'
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = os.fspath(name_or_path)
    if name in list_pretrained():
        return pretrained_path(name)
    raise FileNotFoundError(
        f"model {name!r} is neither a file nor a bundled model "
        f"({', '.join(list_pretrained()) or 'none installed'})"
    )


def recommended_threshold(metadata: dict, default: float = 0.5) -> float:
    """The foreground threshold a model file recommends for post-processing.

    The post-processing chosen on the model's validation images
    (``metadata["postprocessing"]["threshold"]``, :mod:`napari_unet.tuning`)
    wins; older bundled files store one in
    ``metadata["pretrained"]["postprocessing"]["threshold"]``; other models
    get ``default``.

    Parameters
    ----------
    metadata : dict
        The metadata :func:`napari_unet.io.load_model` returns.
    default : float
        The threshold when the file recommends none.

    Returns
    -------
    threshold : float
        In (0, 1).
    """
    chosen = (metadata.get("postprocessing") or {}).get("threshold")
    if isinstance(chosen, int | float) and 0.0 < chosen < 1.0:
        return float(chosen)
    card = metadata.get("pretrained") or {}
    value = (card.get("postprocessing") or {}).get("threshold", default)
    return float(value)

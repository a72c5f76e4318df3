"""What every writer starts from: the model resolved, the output checked, an example input.

The model argument (a file or a model with its metadata) becomes a CPU copy and
its metadata document; the valid input sizes come from the network; the example
input is the user's sample cropped to a valid size, or a seeded synthetic image.

Shared by :mod:`napari_unet.export.bioimageio` and :mod:`napari_unet.export.onnx`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .._modelfile import FORMAT_NAME, _document, load_model
from ..models.registry import architecture_name
from ..outputs import check_output
from ._reader import is_bioimageio_package

_INSTALL_HINT = "install the export extra: pip install 'napari-unet-cells[export]'"
_SPATIAL_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


def _resolve(
    model: str | os.PathLike | tuple[nn.Module, Mapping[str, Any]],
) -> tuple[nn.Module, dict[str, Any]]:
    """A CPU, eval-mode copy of the model and its full metadata document."""
    if isinstance(model, (str, os.PathLike)):
        loaded, document = load_model(model, device="cpu")
        return loaded.eval(), document
    if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module)):
        raise ValueError(
            "`model` must be a model file path or a (model, metadata) tuple, got "
            f"{type(model).__name__}"
        )
    net, metadata = model
    net = copy.deepcopy(net).cpu().eval()
    metadata = dict(metadata or {})
    if metadata.get("format") == FORMAT_NAME:
        # A document from load_model(): keep it, provided it describes this network.
        name = architecture_name(net)
        if metadata.get("architecture") != name or metadata.get("arguments") != net.config():
            raise ValueError(
                f"`metadata` describes {metadata.get('architecture')!r} "
                f"{metadata.get('arguments')}, but `model` is {name!r} {net.config()}"
            )
        return net, json.loads(json.dumps(metadata))
    return net, _document(net, metadata)


def _check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out)
    if out.is_symlink():
        check_output(out, overwrite=overwrite)  # refuses links at an output name
    if not out.parent.is_dir():
        raise FileNotFoundError(f"`out`: folder {out.parent} does not exist")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
        if out.is_dir() and any(out.iterdir()) and not is_bioimageio_package(out):
            # Never delete a folder that is not a package we could have written.
            raise FileExistsError(
                f"{out} is a non-empty folder that is not a bioimage.io package; "
                "refusing to replace it"
            )
    return out


def _synthetic_input(model: nn.Module) -> np.ndarray:
    """A seeded smooth image with blob-like structures, (C, *spatial), float32."""
    from scipy import ndimage

    wanted = (64, 64) if model.spatial_dims == 2 else (16, 32, 32)
    shape = model.valid_input_shape(wanted)
    rng = np.random.default_rng(0)
    channels = []
    for _ in range(model.in_channels):
        noise = rng.random(shape)
        smooth = ndimage.gaussian_filter(noise, sigma=3.0, mode="reflect")
        # Stretch, so the percentile normalisation sees a real intensity range.
        smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-12)
        channels.append(1000.0 * smooth + 100.0 * rng.random(shape))
    return np.stack(channels).astype(np.float32)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _size_rule(model: nn.Module, axis: int = -1) -> tuple[int, int, int]:
    """(min, step, halo) of one spatial axis (default the last, X): valid sizes are
    ``min + k * step``. Per axis, because an anisotropic 3D network pools Z fewer times."""
    minimum = model.valid_input_shape((1,) * model.spatial_dims)[axis]
    return minimum, model.divisors[axis], model.halo[axis]


def _largest_valid(model: nn.Module, size: int, axis: int = -1) -> int | None:
    minimum, step, _ = _size_rule(model, axis)
    if size < minimum:
        return None
    return minimum + (size - minimum) // step * step


def _sample_input(model: nn.Module, sample: np.ndarray) -> np.ndarray:
    """The user's sample as (C, *spatial) float32, centre-cropped to a valid size."""
    sample = np.asarray(sample)
    if not np.issubdtype(sample.dtype, np.number) or np.iscomplexobj(sample):
        raise ValueError(f"`sample` must be a real-valued image, got dtype {sample.dtype}")
    dims = model.spatial_dims
    if sample.ndim == dims:
        sample = sample[np.newaxis]
    if sample.ndim != dims + 1 or sample.shape[0] != model.in_channels:
        raise ValueError(
            f"`sample` has shape {sample.shape}; the model expects "
            f"({model.in_channels}, {', '.join(_SPATIAL_AXES[dims]).upper()})"
            + (f" or ({', '.join(_SPATIAL_AXES[dims]).upper()})" if model.in_channels == 1 else "")
        )
    # Keep test tensors small: they are stored in the package and run by every validator.
    caps = (256, 256) if dims == 2 else (32, 128, 128)
    slices = [slice(None)]
    for axis, (n, cap) in enumerate(zip(sample.shape[1:], caps, strict=True)):
        size = _largest_valid(model, min(n, cap), axis)
        if size is None:
            minimum = model.valid_input_shape((1,) * dims)
            raise ValueError(
                f"`sample` (shape {sample.shape}) is too small: the spatial axes need at "
                f"least {minimum} pixels for this model"
            )
        start = (n - size) // 2
        slices.append(slice(start, start + size))
    return np.ascontiguousarray(sample[tuple(slices)], dtype=np.float32)

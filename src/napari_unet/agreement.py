"""How closely a fast inference path agrees with fp32 eager, recorded for a model file.

:func:`inference_check` compares backends and precisions of
:mod:`napari_unet.inference` with fp32 eager on a model's check image. Its
result goes in the model file's metadata under ``inference_check``; with
``precision="auto"`` a reduced precision is then used only where it agreed
(see :func:`napari_unet.inference.default_precision`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .devices import select_device
from .postprocess import probabilities_to_labels
from .tiling import predict_tiled

__all__ = ["inference_check"]


def inference_check(
    model: nn.Module,
    image: np.ndarray,
    *,
    paths: tuple[tuple[str, str], ...] = (("onnxruntime", "fp32"), ("eager", "bf16")),
    device: str | torch.device | None = "cpu",
    tile_shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Compare inference paths with fp32 eager on one (normalised) image.

    The result is meant for a model file's metadata under ``inference_check``;
    :func:`make_backend` with ``precision="auto"`` then uses bf16 where it
    agreed.

    Parameters
    ----------
    model : torch.nn.Module
        A 2D napari-unet model.
    image : ndarray, shape (Y, X) or (C, Y, X)
        The model's check image, normalised as for prediction.
    paths : tuple of (backend, precision)
        Paths to compare; those the machine cannot run are recorded with an
        ``"error"``.
    device : str or torch.device, optional
        Where to run.
    tile_shape : tuple of 2 int, optional
        As for :func:`~napari_unet.tiling.predict_tiled`.

    Returns
    -------
    check : dict
        ``{"reference": "eager/fp32", "image_shape": [...], "device": ...,
        "torch": ..., "paths": {"backend/precision": {"class_agreement",
        "max_abs_diff", "instances", "instance_change"}}}``; the reference's
        instance count is ``"instances"``.
    """
    dev = select_device(device)
    ref = predict_tiled(
        model, image, backend="eager", precision="fp32", device=dev, tile_shape=tile_shape
    )
    ref_classes = ref.argmax(axis=0)
    ref_count = int(probabilities_to_labels(ref, spatial_dims=2).max(initial=0))
    results: dict[str, Any] = {}
    for backend, precision in paths:
        name = f"{backend}/{precision}"
        try:
            probs = predict_tiled(
                model, image, backend=backend, precision=precision, device=dev,
                tile_shape=tile_shape,
            )  # fmt: skip
        except (ValueError, ImportError) as err:
            results[name] = {"error": str(err)}
            continue
        count = int(probabilities_to_labels(probs, spatial_dims=2).max(initial=0))
        results[name] = {
            "class_agreement": float(np.mean(probs.argmax(axis=0) == ref_classes)),
            "max_abs_diff": float(np.abs(probs - ref).max()),
            "instances": count,
            "instance_change": (count - ref_count) / max(ref_count, 1),
        }
    return {
        "reference": "eager/fp32",
        "instances": ref_count,
        "image_shape": list(np.shape(image)),
        "device": dev.type,
        "torch": torch.__version__,
        "paths": results,
    }

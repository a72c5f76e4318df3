"""Validation during training, and the post-processing chosen at its end."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import Progress
from .config import TrainConfig
from .data import _ValPlane


def _validate(
    model: nn.Module,
    planes: list[_ValPlane],
    device: torch.device,
    cancel: Callable[[], bool] | None,
) -> Generator[Progress, None, dict[str, float] | None]:
    """Weighted loss on all validation planes, ISBI pixel and Rand errors on unmasked ones.

    Returns None if ``cancel`` asked to stop.
    """
    from ..metrics import isbi_errors
    from ..tiling import iter_predict_tiled

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
    from ..tiling import predict_tiled
    from ..tuning import choose_postprocessing

    usable = [p for p in planes if not p.masked and p.labels is not None]
    if not usable:
        return None
    probabilities = []
    for index, plane in enumerate(usable):
        probabilities.append(predict_tiled(model, plane.image, device=device))
        yield Progress(index + 1, len(usable), "postprocessing")
    metric = config.postprocessing_metric
    if metric == "auto":
        metric = "dsb" if config.border_class else "isbi"
    labels = [p.labels for p in usable]
    return choose_postprocessing(probabilities, labels, metric=metric)


def _inference_check(
    model: nn.Module, planes: list[_ValPlane], device: torch.device
) -> dict[str, Any] | None:
    """How bf16 inference agrees with fp32 on the largest 2D validation plane.

    Written into the model file (``inference_check``) so that prediction with
    ``precision="auto"`` uses bf16 only where it kept the fp32 labels
    (:func:`napari_unet.inference.default_precision`). ONNX Runtime is not
    checked here: its export would cost more than the check, and ``auto``
    compares it with eager on the first tiles anyway.
    """
    from ..agreement import inference_check

    flat = [p for p in planes if p.image.ndim == 3]  # (C, Y, X): 2D planes only
    if not flat:
        return None
    image = max(flat, key=lambda p: p.image[0].size).image
    return inference_check(model, image, paths=(("eager", "bf16"),), device=device)

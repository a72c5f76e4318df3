"""Training presets for the Train widget, chosen by the device, and a rough time estimate.

The paper's settings (depth 4, 64 base channels, 572 px tiles, SGD with
momentum 0.99, many iterations) need a GPU: on a 2-core CPU they showed an
ETA near an hour. The CPU preset is the demo's network (depth 3, 16 base
channels, 124 px tiles, Adam, 300 iterations), which gives usable cells in
minutes. Both come from :func:`napari_unet.train_settings.training_preset`
(shared with the command line).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["PRESET_TEXT", "default_preset", "estimate_seconds", "has_cuda", "preset_values"]

PRESET_TEXT = {
    "cpu": "CPU: quick, minutes",
    "gpu": "GPU: the paper's settings",
}

# Seconds per iteration ~ overhead + cost * tile**2 * base**2 * (depth + 1), fitted to two
# runs on 2 CPU cores (the demo's network: ~0.2 s/it; depth 4, 32 channels, 572 px: ~3 s/it).
_CPU_OVERHEAD_S = 0.17
_CPU_COST_S = 1.7e-9
_CPU_THREADS = 2
# A mid-range CUDA GPU is roughly fifty times faster on these convolutions.
_GPU_SPEEDUP = 50.0


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def default_preset() -> str:
    """ "gpu" when CUDA is available, else "cpu"."""
    return "gpu" if has_cuda() else "cpu"


def preset_values(name: str) -> dict[str, Any]:
    """Depth, base channels, tile (0 = automatic, 572 px), optimiser and iterations.

    From :data:`napari_unet.train_settings.PRESETS`, shared with ``napari-unet train --preset``.
    """
    from ..train_settings import training_preset

    values = training_preset(name)
    values["tile"] = values.get("tile") or 0
    return values


@dataclass
class Estimate:
    value: float
    gpu: bool


def estimate_seconds(
    iterations: int, *, tile: int, base_channels: int, depth: int, gpu: bool
) -> Estimate:
    """Rough training time (s) before Start; the ETA during training is measured."""
    threads = max(1, min(os.cpu_count() or 1, 16))
    cost = _CPU_COST_S * tile**2 * base_channels**2 * (depth + 1) * _CPU_THREADS / threads
    per_iteration = _CPU_OVERHEAD_S + cost
    if gpu:
        per_iteration = 0.02 + cost / _GPU_SPEEDUP
    return Estimate(iterations * per_iteration, gpu)

"""The optimiser, its learning-rate schedule and the training precision."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .config import TrainConfig


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _lr_factor(config: TrainConfig) -> Callable[[int], float]:
    total = config.iterations

    def factor(step: int) -> float:
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        t = min(1.0, (step - config.warmup) / max(1, total - config.warmup))
        if config.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if config.lr_schedule == "poly":
            return (1.0 - t) ** 0.9
        if config.lr_schedule == "step":
            return 0.1 if t >= 2 / 3 else 1.0
        return 1.0

    return factor


def _autocast(device: torch.device, config: TrainConfig) -> tuple[Any, torch.dtype | None]:
    if device.type == "cpu" and config.cpu_bf16:
        from ..inference import bf16_supported

        if not bf16_supported(device):
            raise ValueError(
                "`cpu_bf16` needs a CPU with AVX-512 BF16 or AMX; this one has neither "
                "(set cpu_bf16=False)"
            )
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), torch.bfloat16
    if device.type != "cuda" or not config.amp:
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype

"""bf16 autocast training steps on the CPU against fp32 (issue 17, ``TrainConfig.cpu_bf16``).

One training step as the engine runs it (forward under the engine's autocast,
weighted cross-entropy in fp32, backward, Adam), U-Net depth 4, valid padding,
a batch of one 252x252 ISBI 2012 tile (random numbers when
../shared/data/isbi2012 is absent), at three widths. The machine is shared,
so fp32 and bf16 are timed in paired rounds (fp32 steps, then bf16 steps, on
models with the same starting weights); the ratio is the median of the
per-round ratios. One thread: on two cores shared with other sessions (load
about 10), two OpenMP threads made a base-32 step 8 s instead of 0.7 s on one
thread, and per-round ratios spread from 0.5x to 3.4x; one thread measures
the arithmetic, not the scheduler. The loss of the first step (same weights, same batch) shows
how far bf16 moves the forward pass. Loss curves and the validation metric
of a whole run are from ``benchmarks/isbi_train.py [--cpu-bf16]``
(docs/performance.md). CUDA AMP goes through the same code path
(``amp=True``) and is not measured here (no GPU in this session).
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import Row
from napari_unet.inference import bf16_supported
from napari_unet.losses import weighted_cross_entropy
from napari_unet.models import UNet
from napari_unet.training import TrainConfig
from napari_unet.training.optim import _autocast

ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
TILE = 252


def _batch(model: UNet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out = model.output_shape((TILE, TILE))
    image = None
    if (ISBI / "images" / "slice_00.png").is_file():
        from napari_unet.io import read_image

        image = read_image(ISBI / "images" / "slice_00.png").astype(np.float32)[:TILE, :TILE]
        image = (image - image.mean()) / (image.std() + 1e-6)
    else:
        image = np.random.default_rng(0).normal(size=(TILE, TILE)).astype(np.float32)
    rng = np.random.default_rng(1)
    targets = torch.from_numpy(rng.integers(0, 2, size=(1, *out))).long()
    weights = torch.ones(1, *out)
    return torch.from_numpy(image)[None, None], targets, weights


def _stepper(model: UNet, bf16: bool):
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast, _ = _autocast(torch.device("cpu"), TrainConfig(device="cpu", cpu_bf16=bf16))
    losses: list[float] = []

    def step(images, targets, weights) -> None:
        with autocast():
            logits = model(images)
        loss = weighted_cross_entropy(logits.float(), targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    return step, losses


def _row(base: int, rounds: int, steps: int) -> Row:
    torch.manual_seed(0)
    model = UNet(num_classes=2, depth=4, base_channels=base, dropout=0.0)
    batch = _batch(model)
    fp32, fp32_losses = _stepper(model, bf16=False)
    bf16, bf16_losses = _stepper(model, bf16=True)
    fp32(*batch)
    bf16(*batch)  # first steps: same weights, same batch
    first = (fp32_losses[0], bf16_losses[0])
    ratios, times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            fp32(*batch)
        a = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        for _ in range(steps):
            bf16(*batch)
        b = (time.perf_counter() - start) / steps
        ratios.append(a / b)
        times.append((a, b))
    row = Row(
        name=(
            f"training step base {base}, {TILE} tile (first loss fp32 {first[0]:.4f} / bf16 "
            f"{first[1]:.4f}; 1 thread; rounds {min(ratios):.2f}-{max(ratios):.2f}x; "
            f"load {os.getloadavg()[0]:.1f})"
        ),
        baseline="fp32 step",
        baseline_value=statistics.median(t[0] for t in times),
        ours_value=statistics.median(t[1] for t in times),
        unit="s/step",
        ratio=statistics.median(ratios),
    )
    print(f"  {row.name}: {row.ratio:.2f}x", file=sys.stderr, flush=True)
    return row


def run(quick: bool = False) -> list[Row]:
    if not bf16_supported("cpu"):
        print("  (this CPU has no native bf16: skipped)", file=sys.stderr)
        return []
    widths = (8,) if quick else (16, 32, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [_row(base, rounds=3 if quick else 5, steps=2) for base in widths]
    finally:
        torch.set_num_threads(threads)

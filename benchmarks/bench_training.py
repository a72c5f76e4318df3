"""Training throughput: is the data pipeline a bottleneck?

Each training iteration draws a tile, deforms it elastically with its targets
and weights, flips/rotates it and changes its grey values, then runs the
forward and backward pass and the optimiser step. This benchmark runs
:func:`napari_unet.training.train_iter` on the CPU at the paper's tile size
(572 x 572 input, 388 x 388 output) and compares

- baseline: the time of forward + loss + backward + optimiser step alone
  (``info["step_s"]``, measured inside the loop), with
- ours: the wall-clock time of a whole iteration (batch drawing and
  augmentation, transfer, the step, progress bookkeeping),

so ``ratio = baseline / ours`` is the share of each iteration spent in the
model; the goal is >= 0.90 (less than 10% outside the model).

Models: the paper's network (depth 4, 64 base channels, 31 M parameters) and
a reduced width (16 base channels), which is 20x faster per step and so the
harder test for the pipeline. ``--quick`` uses 8 base channels only. Data:
ISBI 2012 slices when ``../shared/data/isbi2012`` exists, else synthetic
cells.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from _common import Row
from napari_unet.models import UNet
from napari_unet.training import TrainConfig, train_iter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def _samples() -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    if DATA.is_dir():
        from napari_unet.io import read_image
        from napari_unet.metrics import mask_to_instances

        samples = [
            (
                read_image(DATA / "images" / f"slice_{i:02d}.png"),
                mask_to_instances(read_image(DATA / "labels" / f"slice_{i:02d}.png")),
            )
            for i in range(4)
        ]
        return samples, "ISBI"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    samples = []
    for _ in range(4):
        labels = np.zeros((512, 512), dtype=np.int32)
        for i, (cy, cx) in enumerate(rng.integers(20, 492, (60, 2)), start=1):
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 225) & (labels == 0)] = i
        image = (labels > 0) * 100.0 + rng.normal(50, 10, labels.shape)
        samples.append((image.astype(np.float32), labels))
    return samples, "synthetic"


def _measure(base_channels: int, iterations: int, samples: list) -> tuple[float, float]:
    """Mean seconds per iteration: (forward/backward/step only, whole iteration)."""
    torch.manual_seed(0)
    model = UNet(num_classes=3, base_channels=base_channels)
    config = TrainConfig(
        iterations=iterations + 1, tile_shape=(572, 572), device="cpu", checkpoint_every=10**6
    )
    step, wall = [], []
    last = None
    for event in train_iter(samples, model=model, config=config):
        if event.stage != "train":
            continue
        now = time.perf_counter()
        if event.done > 1:  # the first iteration warms up allocators and kernels
            step.append(event.info["step_s"])
            wall.append(now - last)
        last = now
    return float(np.mean(step)), float(np.mean(wall))


def run(quick: bool) -> list[Row]:
    samples, source = _samples()
    cases = [(8, 4)] if quick else [(16, 10), (64, 3)]
    rows = []
    for base_channels, iterations in cases:
        step, wall = _measure(base_channels, iterations, samples)
        label = "paper width 64" if base_channels == 64 else f"reduced width {base_channels}"
        rows.append(
            Row(
                name=f"train iteration, tile 572, {label} ({source})",
                baseline="fwd+bwd+step only",
                baseline_value=step,
                ours_value=wall,
                unit="s/iteration",
                ratio=step / wall,
                goal=">= 0.90 (< 10% outside the model)",
            )
        )
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import format_table

    print(format_table(run(quick="--quick" in sys.argv)))

"""Overlap-tile prediction throughput against a bare forward pass.

The goal (issue 2) is that tiling costs nothing: ``predict_tiled`` on a
2048x2048 image must produce output megapixels at least as fast as one bare
forward pass of the same network on the paper's 572x572 tile (388x388 out).
Large, tight tiles waste less of each tile on the halo than 572 tiles do.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import Row, best_of
from napari_unet.models import UNet
from napari_unet.tiling import choose_tile_shape, predict_tiled


def run(quick: bool = False) -> list[Row]:
    torch.manual_seed(0)
    base = 16 if quick else 64  # 64: the paper's network, 31.03 M parameters
    size = 1024 if quick else 2048
    # Both sides use the memory layout predict_tiled uses, so the ratio
    # measures tiling alone.
    model = UNet(base_channels=base).eval().to(memory_format=torch.channels_last)

    tile = torch.randn(1, 1, 572, 572).to(memory_format=torch.channels_last)
    out_px = model.output_shape((572, 572))
    with torch.inference_mode():
        bare_s = best_of(lambda: model(tile), repeat=3)
    bare_mpx_s = out_px[0] * out_px[1] / 1e6 / bare_s

    image = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    start = time.perf_counter()
    predict_tiled(model, image, device="cpu")
    tiled_s = time.perf_counter() - start
    tiled_mpx_s = size * size / 1e6 / tiled_s
    chosen = choose_tile_shape(model, (size, size), "cpu")

    return [
        Row(
            name=f"predict_tiled {size}x{size}, base {base} (tiles {chosen[0]})",
            baseline="bare forward 572x572",
            baseline_value=bare_mpx_s,
            ours_value=tiled_mpx_s,
            unit="output Mpx/s",
            ratio=tiled_mpx_s / bare_mpx_s,
            goal=">= 1.0x",
        )
    ]

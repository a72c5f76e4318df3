"""In-memory prediction holds one output array plus tile buffers (issue 18, item 8).

``predict_stack`` and ``predict_tiled`` on a uint8 image (4096² by default,
1024² with --quick) with a tiny 2-class U-Net and 512² tiles. NumPy's peak
allocation during the call is read with ``tracemalloc`` (the model's
activations are PyTorch's and not counted: they are tile-sized). The
baseline is the smallest possible footprint, the float32 probability array
the call returns (8 bytes per pixel for 2 classes): a ratio of 1.0 means
nothing image-sized besides the result was allocated. Before issue 18 the
same calls peaked at 25 (tiled) and 33 (stack) bytes per pixel.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from _common import Row

# Eager PyTorch: the "auto" backend may switch to ONNX Runtime by timing.
EAGER = {"backend": "eager", "precision": "fp32"}


def _peak(fn) -> tuple[int, int]:
    tracemalloc.start()
    try:
        result = fn()
        return tracemalloc.get_traced_memory()[1], result.nbytes
    finally:
        tracemalloc.stop()


def run(quick: bool = False) -> list[Row]:
    from napari_unet.models import UNet
    from napari_unet.tiling import predict_stack, predict_tiled

    side = 1024 if quick else 4096
    torch.manual_seed(0)
    rows = []
    image = np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)
    cases = [
        (
            "predict_tiled",
            "valid",
            lambda net: predict_tiled(net, image, tile_shape=(512, 512), **EAGER),
        ),
        (
            "predict_stack",
            "valid",
            lambda net: predict_stack(net, image, tile_shape=(512, 512), **EAGER),
        ),
        (
            "predict_stack",
            "same",
            lambda net: predict_stack(net, image, tile_shape=(512, 512), **EAGER),
        ),
    ]
    for name, padding, call in cases:
        net = UNet(depth=2, base_channels=4, dropout=0.0, padding=padding).eval()
        peak, output = _peak(lambda call=call, net=net: call(net))
        rows.append(
            Row(
                name=f"{name} ({padding}) {side}² uint8: NumPy peak, bytes/pixel",
                baseline="its output array",
                baseline_value=output / image.size,
                ours_value=peak / image.size,
                unit="B/px",
                ratio=output / peak,
                goal=">= 0.9 (was 0.24-0.32)",
            )
        )
    return rows

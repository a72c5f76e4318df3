"""Time the bundled models on a 512 x 512 image on the CPU.

Reports, per model, the median over repeats of (a) ``predict_tiled`` (the
network, with the model's own tiling and mirror padding) and (b) the whole
``napari-unet predict`` path for one image: normalisation, prediction and
``probabilities_to_labels``. The image is the shipped DSB 2018 crop mirrored
to 512 x 512 (labelling time depends on the content). Usage::

    python benchmarks/pretrained/time_inference.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from napari_unet._sample_data_real import load_dsb_nuclei
from napari_unet.normalize import Normalization
from napari_unet.postprocess import probabilities_to_labels
from napari_unet.pretrained import list_pretrained, load_pretrained
from napari_unet.tiling import predict_tiled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # A real image: the shipped DSB crop, mirrored to the requested size.
    crop, _, _ = load_dsb_nuclei()
    reps = -(-args.size // crop.shape[0])
    image = np.pad(crop, [(0, crop.shape[0] * (reps - 1))] * 2, mode="symmetric")
    image = np.ascontiguousarray(image[: args.size, : args.size])
    for name in list_pretrained():
        model, meta = load_pretrained(name)
        normalize = Normalization.from_dict(meta.get("normalization"))
        params = sum(p.numel() for p in model.parameters())
        net, full = [], []
        for _ in range(args.repeats + 1):  # the first run warms up
            t0 = time.perf_counter()
            data = normalize(image, channel_axis=None)
            t1 = time.perf_counter()
            probs = predict_tiled(model, data, device="cpu")
            t2 = time.perf_counter()
            probabilities_to_labels(probs, spatial_dims=2)
            t3 = time.perf_counter()
            net.append(t2 - t1)
            full.append(t3 - t0)
        print(
            f"{name}: {params:,} parameters; {args.size}x{args.size} on {args.threads} "
            f"thread(s): network {np.median(net[1:]):.3f} s, with normalisation and "
            f"labelling {np.median(full[1:]):.3f} s (median of {args.repeats})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Choose the foreground threshold of the nuclei model on *training* images.

``napari-unet predict --threshold T`` labels the pixels whose nucleus-plus-
border probability exceeds ``T`` (seeds: nucleus probability above
``max(T, 0.7)``). The weight map's class balancing makes the model generous
with foreground, so objects come out too large at 0.5. This script predicts
every 7th training image of the prepared DSB split (31 images; the held-out
validation images are never looked at), and prints the mean DSB average
precision at each threshold. The shipped recommendation (0.8) is the best of
this sweep. Usage::

    python benchmarks/pretrained/sweep_threshold.py MODEL [--data /tmp/dsb_grey]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.io import load_model
from napari_unet.metrics import average_precision
from napari_unet.normalize import Normalization
from napari_unet.postprocess import probabilities_to_labels
from napari_unet.tiling import predict_tiled

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=Path("/tmp/dsb_grey"))
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    model, meta = load_model(args.model)
    normalize = Normalization.from_dict(meta["normalization"])
    files = sorted((args.data / "train" / "images").glob("*.tif"))[::7]
    probs, truths = [], []
    for path in files:
        image = tifffile.imread(path)
        probs.append(predict_tiled(model, normalize(image, channel_axis=None), device="cpu"))
        truths.append(tifffile.imread(args.data / "train" / "labels" / path.name))
    rows = []
    for threshold in THRESHOLDS:
        scores = [
            average_precision(t, probabilities_to_labels(p, threshold=threshold, spatial_dims=2))
            for p, t in zip(probs, truths, strict=True)
        ]
        row = {
            "threshold": threshold,
            "ap50": float(np.mean([s["ap"][0] for s in scores])),
            "ap75": float(np.mean([s["ap"][5] for s in scores])),
            "mean_ap": float(np.mean([s["mean_ap"] for s in scores])),
        }
        rows.append(row)
        print(
            f"threshold {threshold:.2f}: AP@0.5 {row['ap50']:.3f}  AP@0.75 {row['ap75']:.3f}  "
            f"mean AP {row['mean_ap']:.3f}  ({len(files)} training images)",
            flush=True,
        )
    if args.json:
        report = {"model": str(args.model), "images": [p.stem for p in files], "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

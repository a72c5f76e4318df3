"""ISBI 2012 pixel and Rand errors of probability maps, as the challenge scores them.

Reads the cell-probability maps that ``napari-unet predict --probabilities``
writes (``DIR/<name>.tif``, float32, classes first: 0 = membrane/background,
1 = cell), pairs them by name with the binary ground truth (255 = cell,
0 = membrane), and reports ``1 -`` the maximal F-score over thresholds of the
pixel similarity and of the foreground-restricted Rand index
(:func:`napari_unet.metrics.isbi_errors`), with the pair and pixel counts
pooled over all slices before the F-score, as the challenge's Fiji script
does. Per-slice values (each at its own best threshold) go to the JSON file
as well.

Usage::

    python benchmarks/pretrained/evaluate_em.py --probabilities DIR/probabilities \
        --gt ../shared/data/isbi2012/labels --slices 20-24 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_unet.io import read_image
from napari_unet.metrics import isbi_errors

# The challenge's Fiji script steps the threshold finely; 0.05 steps from 0.05 to 0.95.
THRESHOLDS = [round(t, 2) for t in np.arange(0.05, 0.951, 0.05)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probabilities", type=Path, required=True, help="folder of maps")
    parser.add_argument("--gt", type=Path, required=True, help="folder of binary labels")
    parser.add_argument("--slices", default="20-24", help="slice range, e.g. 20-24")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    first, last = (int(v) for v in args.slices.split("-"))
    names = [f"slice_{i:02d}" for i in range(first, last + 1)]
    cells, truths, rows = [], [], []
    for name in names:
        probs = read_image(args.probabilities / f"{name}.tif").astype(np.float64)
        truth = read_image(args.gt / f"{name}.png")
        cell = np.clip(probs[1], 0.0, 1.0)
        errors = isbi_errors(cell, truth, thresholds=THRESHOLDS)
        rows.append(
            {
                "name": name,
                "pixel_error": errors["pixel_error"],
                "pixel_threshold": errors["pixel_threshold"],
                "rand_error": errors["rand_error"],
                "rand_threshold": errors["rand_threshold"],
            }
        )
        print(
            f"{name}: pixel error {errors['pixel_error']:.4f} (t={errors['pixel_threshold']}), "
            f"Rand error {errors['rand_error']:.4f} (t={errors['rand_threshold']})"
        )
        cells.append(cell)
        truths.append(truth)
    pooled = isbi_errors(np.stack(cells), np.stack(truths), thresholds=THRESHOLDS)
    print(
        f"all {len(names)} slices: pixel error {pooled['pixel_error']:.4f} "
        f"(threshold {pooled['pixel_threshold']}), Rand error {pooled['rand_error']:.4f} "
        f"(threshold {pooled['rand_threshold']})"
    )
    if args.json:
        report = {
            "probabilities": str(args.probabilities),
            "gt": str(args.gt),
            "thresholds": THRESHOLDS,
            "pixel_error": pooled["pixel_error"],
            "pixel_threshold": pooled["pixel_threshold"],
            "rand_error": pooled["rand_error"],
            "rand_threshold": pooled["rand_threshold"],
            "pixel_errors": pooled["pixel_errors"],
            "rand_errors": pooled["rand_errors"],
            "slices": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

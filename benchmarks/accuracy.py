"""Out-of-the-box accuracy of the bundled models, through the prediction pipeline.

What a user gets with no settings: the bundled ``nuclei`` model on the 48
held-out DSB 2018 greyscale images (``nuclei_validation_ids.txt``), at their
own size and rescaled by 0.5x and 2x (nuclei of other sizes), with the
object diameter estimated (``auto``) and given (the true median diameter);
the bundled ``em-membranes`` model on ISBI 2012 slices 20-24 (its validation
slices). Prints AP@0.5 and the DSB score (mean AP over IoU 0.5-0.95, mean
over images) for nuclei, the Rand and pixel errors (counts pooled over the
slices) for membranes. Nothing is asserted: a regression shows in the table.
Without ``../shared/data`` it says so and exits 0.

Usage::

    python benchmarks/accuracy.py                       # everything
    python benchmarks/accuracy.py --task nuclei --scales 1 --limit 8
    python benchmarks/accuracy.py --model nuclei=/path/to/other.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SPLIT = ROOT / "src" / "napari_unet" / "models" / "pretrained" / "nuclei_validation_ids.txt"


def segment_image(
    model: Any, meta: dict[str, Any], image: np.ndarray, diameter: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels of one greyscale image, the way the prediction pipeline makes them."""
    try:
        from napari_unet.segment import SegmentConfig, segment
    except ImportError:
        segment = None
    if segment is not None and "diameter" in getattr(SegmentConfig, "__dataclass_fields__", {}):
        config = SegmentConfig.from_metadata(meta, diameter=diameter, device="cpu")
        result = segment((model, meta), image, config=config)
        return result.labels, dict(getattr(result, "info", {}) or {})
    # Until the pipeline module takes a diameter: the same steps, composed here.
    from napari_unet.normalize import Normalization
    from napari_unet.postprocess import probabilities_to_labels
    from napari_unet.scale import predict_at_diameter
    from napari_unet.tiling import predict_tiled
    from napari_unet.tuning import postprocessing_options

    data = Normalization.from_dict(meta.get("normalization"))(image, channel_axis=None)

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_tiled(model, x, device="cpu")

    def label(probs: np.ndarray, factor: float) -> np.ndarray:
        options = postprocessing_options(meta, factor=factor)
        return probabilities_to_labels(probs, spatial_dims=2, **options)

    _, labels, info = predict_at_diameter(
        predict,
        label,
        data,
        model_diameter=meta.get("object_diameter"),
        diameter=diameter,
        size_range=meta.get("object_diameter_range"),
    )
    return labels, info


def _load(name: str, override: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    from napari_unet._modelfile import load_model
    from napari_unet.pretrained import pretrained_path

    return load_model(override.get(name) or pretrained_path(name))


def nuclei_rows(
    model_file: dict[str, str],
    scales: list[float],
    limit: int | None,
    modes: tuple[str, ...] = ("auto", "given", "none"),
) -> list:
    import tifffile

    from napari_unet.io import read_image
    from napari_unet.scale import object_diameter, rescale_image
    from napari_unet.tuning import score_labels

    model, meta = _load("nuclei", model_file)
    ids = [
        line.strip()
        for line in SPLIT.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ][:limit]
    rows = []
    for scale in scales:
        images, truths = [], []
        for image_id in ids:
            image = read_image(DATA / "dsb2018" / "images" / f"{image_id}.png")[..., 0]
            truth = tifffile.imread(DATA / "dsb2018" / "labels" / f"{image_id}.tif")
            images.append(rescale_image(image, scale) if scale != 1 else image)
            truths.append(rescale_image(truth, scale, order=0) if scale != 1 else truth)
        for mode in modes:
            preds, used = [], []
            started = time.perf_counter()
            for image, truth in zip(images, truths, strict=True):
                diameter = {"auto": "auto", "none": None}.get(mode, object_diameter(truth))
                labels, info = segment_image(model, meta, image, diameter)
                preds.append(labels)
                used.append(info.get("diameter"))
            found = [u for u in used if u is not None]
            rows.append(
                {
                    "task": "nuclei",
                    "scale": scale,
                    "diameter": mode,
                    "images": len(ids),
                    "ap50": score_labels(truths, preds, "ap50"),
                    "dsb": score_labels(truths, preds, "dsb"),
                    "median_diameter_used": float(np.median(found)) if found else None,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(_format(rows[-1]), flush=True)
            if meta.get("object_diameter") is None:
                break  # the model cannot rescale: one row is enough
    return rows


def membrane_rows(model_file: dict[str, str]) -> list:
    from napari_unet.io import read_image
    from napari_unet.tuning import score_labels

    model, meta = _load("em-membranes", model_file)
    images, truths = [], []
    for index in range(20, 25):
        images.append(read_image(DATA / "isbi2012" / "images" / f"slice_{index:02d}.png"))
        cells = read_image(DATA / "isbi2012" / "labels" / f"slice_{index:02d}.png") > 0
        truths.append(ndi.label(cells)[0])
    started = time.perf_counter()
    preds = [segment_image(model, meta, image, None)[0] for image in images]
    from napari_unet.segment import SegmentConfig

    used = SegmentConfig.from_metadata(meta, diameter=None)
    row = {
        "task": "em-membranes",
        "scale": 1.0,
        "diameter": "none",
        "method": (used.postprocess or {}).get("method", "watershed"),
        "tta": used.tta,
        "images": len(images),
        "rand_error": score_labels(truths, preds, "rand"),
        "pixel_error": score_labels(truths, preds, "pixel"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(_format(row), flush=True)
    return [row]


def _format(row: dict[str, Any]) -> str:
    values = "  ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in row.items()
        if k != "task"
    )
    return f"{row['task']:>13}  {values}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("all", "nuclei", "em-membranes"), default="all")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 2.0])
    parser.add_argument("--limit", type=int, default=None, help="first N nuclei images only")
    parser.add_argument(
        "--modes", nargs="+", default=["auto", "given", "none"], choices=["auto", "given", "none"]
    )
    parser.add_argument(
        "--model", action="append", default=[], help="NAME=FILE: score FILE instead of NAME"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: no data at {DATA} (ISBI 2012 / DSB 2018, see its MANIFEST.md)")
        return 0
    model_file = dict(item.split("=", 1) for item in args.model)
    rows = []
    if args.task in ("all", "nuclei"):
        rows += nuclei_rows(model_file, args.scales, args.limit, tuple(args.modes))
    if args.task in ("all", "em-membranes"):
        rows += membrane_rows(model_file)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

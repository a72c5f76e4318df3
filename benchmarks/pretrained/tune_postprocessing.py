"""Choose a model's post-processing on its validation images and store it in the file.

``napari_unet.training`` does this at the end of every run with validation
data; this script does it for a model file trained before that (the bundled
``em-membranes``), or again. It predicts the validation images, searches the
post-processing (:func:`napari_unet.tuning.choose_postprocessing`: threshold,
connected components, watershed or seeded growth, seed and size limits) for
the task's metric, with and without test-time augmentation (``--tta``: both,
keeping TTA only where it scores better), prints the choice and writes the
model file again (atomically) with it in the metadata (``postprocessing``,
``tta`` included), and with ``object_diameter`` (the median diameter of the
training labels) when the file has none. Weights unchanged.

Usage::

    python benchmarks/pretrained/tune_postprocessing.py em-membranes \
        --out src/napari_unet/models/pretrained/em-membranes.safetensors
    python benchmarks/pretrained/tune_postprocessing.py nuclei --data /tmp/dsb_grey --out X
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_unet._modelfile import load_model, save_model
from napari_unet.io import read_image
from napari_unet.normalize import Normalization
from napari_unet.pretrained import resolve_model
from napari_unet.scale import object_diameter, rescale_image, scale_factor
from napari_unet.tiling import predict_tiled
from napari_unet.tuning import choose_postprocessing

ROOT = Path(__file__).resolve().parents[2]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012"
# Keys that save_model sets from the model itself.
_RESERVED = {"format", "format_version", "architecture", "arguments", "package_version"}
_RECIPE = (
    "method",
    "threshold",
    "seed_threshold",
    "min_seed_size",
    "seed_erosion",
    "min_size",
    "split_depth",
)


def isbi(indices: range) -> tuple[list, list]:
    images, truths = [], []
    for index in indices:
        images.append(read_image(ISBI / "images" / f"slice_{index:02d}.png"))
        truths.append(ndi.label(read_image(ISBI / "labels" / f"slice_{index:02d}.png") > 0)[0])
    return images, truths


def dsb(folder: Path) -> tuple[list, list]:
    import tifffile

    paths = sorted((folder / "images").glob("*.tif"))
    images = [tifffile.imread(p) for p in paths]
    truths = [tifffile.imread(folder / "labels" / p.name) for p in paths]
    return images, truths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="bundled name or model file")
    parser.add_argument("--data", type=Path, help="nuclei: prepare_dsb.py output folder")
    parser.add_argument("--out", type=Path, required=True, help="model file to write")
    parser.add_argument("--metric", default=None, help="default: isbi (em), dsb (nuclei)")
    parser.add_argument(
        "--tta", action="store_true", help="also try test-time augmentation (8x the prediction)"
    )
    args = parser.parse_args(argv)
    path = resolve_model(args.model)
    model, meta = load_model(path)
    em = model.num_classes == 2
    if em:
        if not ISBI.is_dir():
            print(f"no ISBI data at {ISBI}", file=sys.stderr)
            return 1
        images, truths = isbi(range(20, 25))
        train_truths = isbi(range(0, 20))[1]
    else:
        images, truths = dsb(args.data / "val")
        train_truths = dsb(args.data / "train")[1]
    if meta.get("object_diameter") is None:
        diameters = [object_diameter(t) for t in train_truths]
        meta["object_diameter"] = round(float(np.nanmedian(diameters)), 2)
    norm = Normalization.from_dict(meta.get("normalization"))
    inputs, labels = [], []
    for image, truth in zip(images, truths, strict=True):
        factor = 1.0 if em else scale_factor(object_diameter(truth), meta["object_diameter"])
        if factor != 1.0:  # tuned where the model predicts: at its object size
            image = rescale_image(image, factor)
            truth = rescale_image(truth, factor, order=0)
        inputs.append(norm(image, channel_axis=None))
        labels.append(truth)
    metric = args.metric or ("isbi" if em else "dsb")
    choices = []
    for tta in (False, True) if args.tta else (False,):
        probabilities = [predict_tiled(model, x, device="cpu", tta=tta) for x in inputs]
        choices.append({**choose_postprocessing(probabilities, labels, metric=metric), "tta": tta})
        print(json.dumps(choices[-1]), flush=True)
    error = metric in ("rand", "pixel", "isbi")
    # Ties keep the cheaper prediction (no TTA).
    chosen = (
        min(choices, key=lambda c: c["score"]) if error else max(choices, key=lambda c: c["score"])
    )
    chosen["chosen_on"] = "ISBI 2012 slices 20-24" if em else f"{len(images)} validation images"
    print(json.dumps(chosen))
    meta["postprocessing"] = chosen
    if meta.get("pretrained"):  # the card shows the same recipe
        meta["pretrained"]["postprocessing"] = {
            k: chosen[k] for k in (*_RECIPE, "tta") if chosen.get(k) is not None
        }
    meta = {k: v for k, v in meta.items() if k not in _RESERVED}
    save_model(model, args.out, metadata=meta, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

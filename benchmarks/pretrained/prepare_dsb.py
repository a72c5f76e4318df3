"""Prepare the DSB 2018 greyscale fluorescence images for ``napari-unet train``.

The bundled ``nuclei`` model is trained on the greyscale fluorescence images
of the Data Science Bowl 2018 stage1_train set (community-fixed, CC0; see
``/work/shared/data/MANIFEST.md``). The published PNGs are RGBA; this script
writes single-channel TIFFs and their instance labels into::

    OUT/train/images/<id>.tif   uint8 (Y, X)
    OUT/train/labels/<id>.tif   uint16 instances, 0 = background
    OUT/val/images/<id>.tif
    OUT/val/labels/<id>.tif

An image is *greyscale fluorescence* when its three colour channels are equal
everywhere and its nuclei are brighter on average than its background (this
leaves out the 13 greyscale brightfield images, whose nuclei are dark). The
validation images are those listed in
``src/napari_unet/models/pretrained/nuclei_validation_ids.txt``; the rest are
for training. ``--write-split`` draws a new list (seeded) instead; the
shipped list was drawn with the defaults.

Usage::

    python benchmarks/pretrained/prepare_dsb.py --out /tmp/dsb_grey
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.io import read_image

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "dsb2018"
SPLIT = ROOT / "src" / "napari_unet" / "models" / "pretrained" / "nuclei_validation_ids.txt"


def greyscale_fluorescence_ids(data: Path = DATA) -> list[str]:
    """Ids of the images whose colour channels agree and whose nuclei are bright.

    Parameters
    ----------
    data : Path
        The ``dsb2018`` folder (``images/<id>.png``, ``labels/<id>.tif``).

    Returns
    -------
    ids : list of str
        Sorted image ids.
    """
    ids = []
    for path in sorted((data / "images").glob("*.png")):
        rgb = read_image(path)[..., :3]
        if not (rgb == rgb[..., :1]).all():
            continue  # colour: brightfield or stained tissue
        grey = rgb[..., 0].astype(np.float64)
        labels = tifffile.imread(data / "labels" / f"{path.stem}.tif")
        if grey[labels > 0].mean() > grey[labels == 0].mean():
            ids.append(path.stem)
    return ids


def read_split(path: Path = SPLIT) -> list[str]:
    """The validation ids of a split file (one id per line, ``#`` comments)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def draw_split(ids: list[str], n_val: int, seed: int) -> list[str]:
    """``n_val`` ids drawn at random (seeded) from ``ids``, sorted."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(sorted(ids), size=n_val, replace=False).tolist())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--data", type=Path, default=DATA, help="the dsb2018 folder")
    parser.add_argument(
        "--write-split",
        action="store_true",
        help=f"draw a new validation list and write it to {SPLIT.name}",
    )
    parser.add_argument("--n-val", type=int, default=48, help="validation images (new split)")
    parser.add_argument("--seed", type=int, default=2018, help="seed of the new split")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"DSB 2018 data not found at {args.data}", file=sys.stderr)
        return 1

    ids = greyscale_fluorescence_ids(args.data)
    if args.write_split:
        val = draw_split(ids, args.n_val, args.seed)
        header = (
            "# Held-out validation images of the bundled `nuclei` model: DSB 2018 stage1_train\n"
            "# (community-fixed) greyscale fluorescence images, never used for training.\n"
            f"# Drawn by benchmarks/pretrained/prepare_dsb.py --write-split --n-val "
            f"{args.n_val} --seed {args.seed} from {len(ids)} such images.\n"
        )
        SPLIT.write_text(header + "\n".join(val) + "\n", encoding="utf-8")
        print(f"wrote {SPLIT} ({len(val)} ids)")
    val = set(read_split())
    unknown = sorted(val - set(ids))
    if unknown:
        print(f"validation ids not among the greyscale images: {unknown[:3]}", file=sys.stderr)
        return 1

    counts = {"train": 0, "val": 0}
    for part in counts:
        for kind in ("images", "labels"):
            (args.out / part / kind).mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        part = "val" if image_id in val else "train"
        grey = read_image(args.data / "images" / f"{image_id}.png")[..., 0]
        labels = tifffile.imread(args.data / "labels" / f"{image_id}.tif")
        tifffile.imwrite(args.out / part / "images" / f"{image_id}.tif", grey)
        tifffile.imwrite(
            args.out / part / "labels" / f"{image_id}.tif",
            labels.astype(np.uint16),
            compression="zlib",
        )
        counts[part] += 1
    print(
        f"{len(ids)} greyscale fluorescence images: {counts['train']} for training, "
        f"{counts['val']} for validation, in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

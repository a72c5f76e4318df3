"""Train a 3D U-Net on synthetic anisotropic volumes and score it against a linked 2D U-Net.

Usage::

    python benchmarks/volume_train.py OUT_DIR [--iterations 1500] [--iterations-2d 3000]
        [--annotated-planes N] [--only-3d]

Three 16x96x96 training volumes (planes twice as far apart as pixels,
touching cells of varied brightness; ``synthetic_cells``) train a 3D U-Net
(depth 2, 8 base channels, batch norm, anisotropic pooling, Adam) on 3D
tiles, and a 2D U-Net (depth 3, 8 base channels) on planes of two other
volumes. Both are scored on held-out volumes (the bundled 12x160x160 3D
sample and two 16x128x128 stacks): the 3D model through ``segment`` as a
volume, the 2D model through ``segment`` with ``link_planes=True``. Prints
object counts, AP@0.5, AP@0.75 and SEG. One CPU thread: about 0.6-2.5 s per
3D iteration on a busy 2-core machine. ``--annotated-planes N``: partial
annotation, as in the Train dock: only N evenly spaced planes of each
training volume keep their labels, and a mask leaves the other planes out
of the loss.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_unet._sample_data import synthetic_cells
from napari_unet.io import load_model
from napari_unet.metrics import average_precision, seg_score
from napari_unet.models import UNet
from napari_unet.segment import SegmentConfig, segment
from napari_unet.training import TrainConfig, train

SPACING = (2.0, 1.0, 1.0)
TEST = {2016: (12, 160, 160), 7: (16, 128, 128), 8: (16, 128, 128)}


def partial(image: np.ndarray, labels: np.ndarray, planes: int) -> dict:
    """A volume with only ``planes`` evenly spaced planes annotated (the rest masked out)."""
    mask = np.zeros(labels.shape, bool)
    mask[np.linspace(0, labels.shape[0] - 1, planes).round().astype(int)] = True
    return {"image": image, "labels": np.where(mask, labels, 0), "mask": mask}


def train_3d(out: Path, iterations: int, planes: int | None = None) -> Path:
    samples = [synthetic_cells((16, 96, 96), spacing=SPACING, seed=s) for s in (201, 202, 203)]
    if planes:
        samples = [partial(image, labels, planes) for image, labels in samples]
    model = UNet(
        num_classes=3,
        depth=2,
        base_channels=8,
        batch_norm=True,
        dropout=0.0,
        spatial_dims=3,
        spacing=SPACING,
    )
    config = TrainConfig(
        iterations=iterations,
        tile_shape=model.valid_input_shape((8, 32, 32)),
        batch_size=2,
        optimizer="adam",
        lr=3e-3,
        lr_schedule="cosine",
        device="cpu",
        checkpoint_every=50,
        w0=5.0,
        sigma=3.0,
    )
    path = out / ("unet3d.safetensors" if not planes else f"unet3d-{planes}planes.safetensors")
    train(samples, model=model, config=config, out=path, overwrite=True)
    return path


def train_2d(out: Path, iterations: int) -> Path:
    samples = [synthetic_cells((12, 128, 128), spacing=SPACING, seed=s) for s in (101, 102)]
    model = UNet(
        num_classes=3, depth=3, base_channels=8, padding="same", batch_norm=True, dropout=0.0
    )
    config = TrainConfig(
        iterations=iterations,
        tile_shape=(96, 96),
        batch_size=4,
        optimizer="adam",
        lr=3e-3,
        lr_schedule="cosine",
        device="cpu",
        checkpoint_every=100,
    )
    path = out / "unet2d.safetensors"
    train(samples, model=model, config=config, out=path, overwrite=True)
    return path


def score(name: str, labels: np.ndarray, truth: np.ndarray) -> str:
    labels = labels.astype(np.int64)
    ap = average_precision(truth, labels, thresholds=[0.5, 0.75])["ap"]
    return (
        f"{name}: {labels.max()} objects, AP@0.5 {ap[0]:.3f}, AP@0.75 {ap[1]:.3f}, "
        f"SEG {seg_score(truth, labels):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--iterations-2d", type=int, default=3000)
    parser.add_argument("--annotated-planes", type=int, default=None)
    parser.add_argument("--only-3d", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "3D U-Net" + (
        f" ({args.annotated_planes} planes annotated)" if args.annotated_planes else ""
    )
    models = {
        name: (load_model(train_3d(args.out, args.iterations, args.annotated_planes)), False),
    }
    if not args.only_3d:
        models["2D U-Net + link_planes"] = (
            load_model(train_2d(args.out, args.iterations_2d)),
            True,
        )
    for seed, shape in TEST.items():
        image, truth = synthetic_cells(shape, spacing=SPACING, seed=seed)
        print(f"volume seed {seed} {shape}: {truth.max()} cells")
        for name, (model, link) in models.items():
            config = SegmentConfig(device="cpu", link_planes=link)
            print("  " + score(name, segment(model, image, config=config).labels, truth))


if __name__ == "__main__":
    main()

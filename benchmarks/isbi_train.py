"""Train a small U-Net on ISBI 2012 slices 00-19, validate on 20-24.

A fixed-length run that fits a laptop CPU in a few minutes, for the figures
in docs/performance.md. Usage::

    python benchmarks/isbi_train.py                   # the reported run
    python benchmarks/isbi_train.py --iterations 50   # a quick look

It prints the ISBI 2012 pixel error and Rand error (the minimum over cell
probability thresholds 0.1 ... 0.9, as the challenge scores them) on the five
validation slices, the training time and the settings. The data are read
from ``../shared/data/isbi2012`` beside the repository (see
``/work/shared/data/MANIFEST.md``); binary labels (255 = cell, 0 = membrane)
become instances by connected components.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet.io import read_image
from napari_unet.metrics import isbi_errors, mask_to_instances
from napari_unet.models import UNet
from napari_unet.tiling import predict_tiled
from napari_unet.training import TrainConfig, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def load(indices: range, data: Path = DATA) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, instance labels) for ``slice_NN.png`` with NN in ``indices``."""
    samples = []
    for i in indices:
        image = read_image(data / "images" / f"slice_{i:02d}.png")
        labels = read_image(data / "labels" / f"slice_{i:02d}.png")
        samples.append((image, mask_to_instances(labels)))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--tile", type=int, default=572, help="input tile side (valid size)")
    parser.add_argument("--optimizer", default="adam", choices=("sgd", "adam"))
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--val-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also save the model here")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast training steps")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"ISBI 2012 data not found at {DATA}", file=sys.stderr)
        return 1

    torch.manual_seed(args.seed)
    model = UNet(num_classes=2, depth=args.depth, base_channels=args.base_channels)
    config = TrainConfig(
        iterations=args.iterations,
        tile_shape=(args.tile, args.tile),
        optimizer=args.optimizer,
        lr=args.lr,
        lr_schedule=args.schedule,
        # ISBI cells never touch (membranes separate them): two classes, as in the paper.
        border_class=False,
        val_every=args.val_every,
        checkpoint_every=args.val_every,
        seed=args.seed,
        device="cpu",
        cpu_bf16=args.cpu_bf16,
    )
    train_samples = load(range(20))
    val_samples = load(range(20, 25))

    def report(event) -> None:
        if event.stage == "train" and (event.done % 50 == 0 or "val_loss" in event.info):
            info = event.info
            extra = "".join(
                f" {k}={info[k]:.4f}"
                for k in ("val_loss", "pixel_error", "rand_error")
                if k in info
            )
            print(
                f"it {event.done:5d}/{event.total} loss={info['loss']:.4f} "
                f"{info['it_per_s']:.2f} it/s eta {info['eta_s']:.0f}s{extra}",
                file=sys.stderr,
                flush=True,
            )

    start = time.perf_counter()
    result = train(
        train_samples,
        model=model,
        config=config,
        val_samples=val_samples,
        out=args.out,
        overwrite=True,
        progress=report,
        data_info={"dataset": "ISBI 2012 slices 00-19", "validation": "slices 20-24"},
    )
    seconds = time.perf_counter() - start

    # Final scores of the last model on the validation slices, scored as the challenge does.
    norm = result.metadata["normalization"]
    from napari_unet.normalize import Normalization

    normalize = Normalization.from_dict(norm)
    cell = np.stack(
        [
            predict_tiled(result.model, normalize(image, channel_axis=None), device="cpu")[1]
            for image, _ in val_samples
        ]
    )
    truth = np.stack([labels > 0 for _, labels in val_samples])
    errors = isbi_errors(np.clip(cell, 0, 1), truth)
    params = sum(p.numel() for p in result.model.parameters())
    print(
        f"ISBI 2012, train slices 00-19, validate 20-24\n"
        f"model: UNet depth={args.depth} base_channels={args.base_channels} valid padding, "
        f"{params / 1e6:.2f} M parameters, 2 classes\n"
        f"training: {result.iterations} iterations, tile {args.tile}x{args.tile}, batch 1, "
        f"{args.optimizer} lr={args.lr} {args.schedule}, seed {args.seed}, "
        f"{torch.get_num_threads()} CPU threads{', bf16 autocast' if args.cpu_bf16 else ''}\n"
        f"time: {seconds:.0f} s ({result.iterations / seconds:.2f} it/s incl. validation)\n"
        f"pixel error: {errors['pixel_error']:.4f} (threshold {errors['pixel_threshold']})\n"
        f"Rand error:  {errors['rand_error']:.4f} (threshold {errors['rand_threshold']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

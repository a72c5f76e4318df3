"""Retrain the bundled ``nuclei`` model size-normalised, with intensity augmentation.

Fine-tunes the shipped weights (fresh Adam, cosine schedule) on the 216 DSB
2018 greyscale training images, each rescaled so its nuclei have a median
diameter of ``--diameter`` pixels (the model then records
``object_diameter``), with random zoom (0.75-1.33) and the stronger intensity
augmentation (gain field, gamma, contrast, background offset, noise). The 48
validation images of ``nuclei_validation_ids.txt`` are never trained on.
Progress goes to stdout every 25 iterations; ``OUT.last.safetensors`` is
written every ``--checkpoint-every`` iterations, so a stopped run is usable.

Usage (after ``prepare_dsb.py --out DATA``)::

    OMP_NUM_THREADS=1 python benchmarks/pretrained/train_nuclei_sized.py \
        --data DATA --out runs/nuclei-sized.safetensors --iterations 6000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import tifffile

from napari_unet.models import UNet
from napari_unet.pretrained import pretrained_path
from napari_unet.training import TrainConfig, train_iter


def _read(folder: Path) -> list[tuple]:
    images = sorted((folder / "images").glob("*.tif"))
    return [
        (tifffile.imread(p), tifffile.imread(folder / "labels" / p.name).astype("int32"))
        for p in images
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/dsb_grey"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--init", default="nuclei", help="file or bundled name to start from; 'scratch': new"
    )
    parser.add_argument("--base-channels", type=int, default=16, help="width of a new model")
    parser.add_argument(
        "--no-intensity", action="store_true", help="only the default grey-value augmentation"
    )
    parser.add_argument(
        "--loss", choices=("ce", "hybrid"), default="ce", help="hybrid: cross-entropy + soft Dice"
    )
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast training steps")
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument(
        "--diameter", type=float, default=20.0, help="px; 0: no size normalisation (native)"
    )
    parser.add_argument("--zoom", type=float, nargs=2, default=(0.75, 1.33))
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--val-every", type=int, default=2000)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if not (args.data / "train").is_dir():
        print(f"no prepared DSB data at {args.data}; run prepare_dsb.py", file=sys.stderr)
        return 1
    if args.init == "scratch":
        init = UNet(
            in_channels=1,
            num_classes=3,
            depth=4,
            base_channels=args.base_channels,
            padding="same",
            batch_norm=True,
        )
    else:
        init = Path(args.init) if Path(args.init).is_file() else pretrained_path(args.init)
    config = TrainConfig(
        iterations=args.iterations,
        tile_shape=(256, 256),
        batch_size=4,
        optimizer="adam",
        lr=args.lr,
        lr_schedule="cosine",
        warmup=100,
        loss=args.loss,
        intensity=not args.no_intensity,
        object_diameter=args.diameter or None,
        zoom_range=None if tuple(args.zoom) == (1.0, 1.0) else tuple(args.zoom),
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        device="cpu",
        cpu_bf16=args.cpu_bf16,
        seed=args.seed,
    )
    train, val = _read(args.data / "train"), _read(args.data / "val")
    started = time.perf_counter()
    steps = train_iter(
        train,
        model=init,
        config=config,
        val_samples=val,
        out=args.out,
        overwrite=True,
        data_info={"train": "DSB 2018 greyscale, 216 images", "val": "48 held out"},
    )
    try:
        while True:
            event = next(steps)
            info = event.info or {}
            if event.stage == "train" and (event.done % 25 == 0 or "val_loss" in info):
                extra = {k: round(v, 4) for k, v in info.items() if k not in ("lr",)}
                print(
                    f"{time.perf_counter() - started:8.0f}s it {event.done} lr {info['lr']:.2e}"
                    f" {extra}",
                    flush=True,
                )
            elif event.stage == "prepare" and event.done == event.total:
                print(f"{time.perf_counter() - started:8.0f}s prepared {event.total}", flush=True)
    except StopIteration as stop:
        result = stop.value
    print(f"done: {result.iterations} iterations in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``napari-unet train``: train a model on folders of images and label images.

A front over :func:`napari_unet.training.train`, with the files read by
:func:`napari_unet.datasets.load_samples` and the network and configuration
made by :func:`napari_unet.train_settings.make_run` (the defaults the Train
widget uses too).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import NapariUnetError
from ._errors import EXIT_INTERRUPTED, EXIT_OUTPUT, EXIT_USAGE, CommandError
from ._progress import ProgressBar


def add_parser(subparsers: Any, parents: list) -> None:
    parser = subparsers.add_parser(
        "train",
        parents=parents,
        help="train a model on annotated images",
        description=(
            "Train a U-Net on images and instance label images, matched by file name.\n"
            "Writes MODEL (the best model by validation, or the last without validation)\n"
            "and MODEL's .last file (the last model with the optimiser state, for --resume).\n"
            "Ctrl-C stops after the current iteration and keeps the model trained so far;\n"
            "a second Ctrl-C aborts at once (the last checkpoint on disk stays intact)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_arguments(parser)
    _add_model_arguments(parser)
    _add_training_arguments(parser)
    parser.set_defaults(run=run)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--images", required=True, metavar="DIR", help="training images")
    data.add_argument("--labels", required=True, metavar="DIR", help="instance label images")
    data.add_argument(
        "--masks", metavar="DIR", help="annotated-pixel masks (non-zero = annotated)"
    )
    data.add_argument("--val-images", metavar="DIR", help="validation images")
    data.add_argument("--val-labels", metavar="DIR", help="validation label images")
    data.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this share of the training planes for validation (default 0)",
    )
    data.add_argument(
        "--binary-labels",
        action="store_true",
        help="labels are binary (e.g. ISBI 2012: 255 = cell, 0 = membrane): instances are "
        "their 4-connected components",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="MODEL", help="model file (.safetensors)")
    out.add_argument("--overwrite", action="store_true", help="replace existing model files")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    arch = parser.add_argument_group("model (ignored with --resume)")
    # Checked when the model is built, so that --help does not import PyTorch.
    arch.add_argument(
        "--model", default="unet", help="architecture: unet (default) or unetplusplus"
    )
    arch.add_argument(
        "--preset",
        default="gpu",
        choices=("gpu", "cpu"),
        help="gpu (default): the paper's settings (depth 4, 64 base channels, 572 px tiles, "
        "SGD, 1000 iterations); cpu: the demo's (depth 3, 16 base channels, 124 px tiles, "
        "Adam, 300 iterations; minutes without a GPU). The Train widget has the same presets; "
        "the options below override them",
    )
    arch.add_argument(
        "--depth", type=int, help="poolings (default from --preset: 4, the paper (gpu); 3 (cpu))"
    )
    arch.add_argument(
        "--base-channels", type=int, help="default from --preset: 64 (gpu, the paper), 16 (cpu)"
    )
    arch.add_argument(
        "--padding",
        default="valid",
        choices=("valid", "same"),
        help="U-Net only: valid (the paper, default) or same; U-Net++ is always same",
    )
    arch.add_argument("--batch-norm", action="store_true", help="batch normalisation")
    arch.add_argument(
        "--classes",
        type=int,
        default=3,
        choices=(2, 3),
        help="3: background, cell, separating border (default); 2: background, cell",
    )
    arch.add_argument(
        "--dims",
        type=int,
        default=2,
        choices=(2, 3),
        help="2 (default): a 2D network trained on planes; 3: a 3D U-Net trained on (Z, Y, X) "
        "volumes (each label TIFF is one volume; --tile is then a cube's side)",
    )
    arch.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="with --dims 3: voxel spacing (e.g. 2 1 1 for planes twice as far apart as "
        "pixels); the network pools only in-plane while Z is coarser, and the model file "
        "records it",
    )


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    opt = parser.add_argument_group("training")
    opt.add_argument(
        "--iterations", type=int, metavar="N", help="default from --preset: 1000 (gpu), 300 (cpu)"
    )
    opt.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help="input tile side (default from --preset: automatic, 572 for the paper's network "
        "(gpu); 124 (cpu))",
    )
    opt.add_argument("--batch-size", type=int, default=1)
    opt.add_argument(
        "--optimizer", choices=("sgd", "adam"), help="default from --preset: sgd (gpu), adam (cpu)"
    )
    opt.add_argument("--lr", type=float, help="learning rate (default 0.01 SGD, 0.001 Adam)")
    opt.add_argument(
        "--schedule", default="constant", choices=("constant", "cosine", "poly", "step")
    )
    opt.add_argument(
        "--loss",
        default="auto",
        choices=("auto", "ce", "dice", "hybrid"),
        help="auto (default): weighted cross-entropy for U-Net, the hybrid loss on every "
        "head for U-Net++",
    )
    opt.add_argument(
        "--val-every",
        type=int,
        metavar="N",
        help="validate and save a checkpoint every N iterations (default: every 10%% of "
        "the run, at most 100)",
    )
    opt.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    opt.add_argument(
        "--object-diameter",
        type=float,
        metavar="PX",
        help="rescale every training image so its objects have this median diameter (px); "
        "prediction then rescales images to it (default: the labels' own size, recorded "
        "in the model file)",
    )
    opt.add_argument(
        "--zoom",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="random zoom range of the augmentation (e.g. 0.75 1.33), for size robustness",
    )
    opt.add_argument(
        "--intensity-augment",
        action="store_true",
        help="stronger intensity augmentation (gamma, contrast, background offset, noise, "
        "uneven brightness) so dim objects beside bright ones are found",
    )
    opt.add_argument(
        "--no-choose-postprocessing",
        action="store_true",
        help="do not choose the post-processing (threshold, watershed or connected "
        "components, sizes) on the validation images at the end of training",
    )
    opt.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    opt.add_argument(
        "--resume",
        metavar="MODEL",
        help="start from this model file: continue its run if it is an unfinished .last "
        "checkpoint, else fine-tune its weights",
    )
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--quiet", action="store_true", help="no progress bar")
    opt.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training on the processes torchrun starts (torchrun "
        "--nproc_per_node N -m napari_unet.cli train ... --distributed); --batch-size is "
        "the global batch, split across them; only rank 0 prints and writes files",
    )


def _check_distributed(args: argparse.Namespace) -> bool:
    """Whether this process prints and writes (rank 0, or not distributed)."""
    if not args.distributed:
        return True
    from .. import distributed

    if not (distributed.is_distributed() or distributed.env_ready()):
        raise CommandError(
            "--distributed needs the torchrun environment: start with `torchrun "
            "--nproc_per_node N -m napari_unet.cli train ... --distributed`",
            code=EXIT_USAGE,
        )
    return distributed.rank() == 0


def _config(args: argparse.Namespace, in_channels: int) -> tuple[Any, Any]:
    from ..train_settings import make_run

    try:
        return make_run(
            preset=args.preset,
            in_channels=in_channels,
            architecture=args.model,
            classes=args.classes,
            padding=args.padding,
            batch_norm=args.batch_norm,
            depth=args.depth,
            base_channels=args.base_channels,
            iterations=args.iterations,
            val_every=args.val_every,
            augment=not args.no_augment,
            tile=args.tile,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            lr_schedule=args.schedule,
            loss=args.loss,
            val_fraction=args.val_fraction,
            seed=args.seed,
            device=args.device,
            distributed=args.distributed,
            dims=args.dims,
            spacing=tuple(args.spacing) if args.spacing else None,
            object_diameter=args.object_diameter,
            zoom_range=tuple(args.zoom) if args.zoom else None,
            intensity=args.intensity_augment,
            choose_postprocessing=not args.no_choose_postprocessing,
        )
    except ValueError as err:
        raise CommandError(str(err), code=EXIT_USAGE) from err


def _model(args: argparse.Namespace, spec: Any, main_rank: bool) -> tuple[Any, bool]:
    """The model to train (a file to resume or fine-tune, or a new network) and resume."""
    if not args.resume:
        try:
            # The initial weights are part of a reproducible run.
            return spec.build(seed=args.seed), False
        except ValueError as err:
            raise CommandError(str(err), code=EXIT_USAGE) from err
    from ..pretrained import resolve_model
    from ..train_settings import resume_state

    try:
        path = resolve_model(args.resume)
        state = resume_state(path)
    except (FileNotFoundError, ValueError) as err:
        raise CommandError(f"--resume: {err}") from err
    if main_rank:
        what = "resuming" if state.resume else "fine-tuning"
        iterations = "?" if state.iteration is None else state.iteration
        print(f"{what} from {args.resume} ({iterations} iterations)")
    return path, state.resume


def _summary(result: Any) -> str:
    best = result.best
    summary = f"{result.iterations} iterations"
    if best:
        summary += f"; best {best['monitor']} {best['value']:.4f} at iteration {best['iteration']}"
        extra = {k: v for k, v in best["metrics"].items() if k != best["monitor"]}
        summary += "".join(f", {k} {v:.4f}" for k, v in extra.items())
    # Only files this run wrote: none when it was stopped before training began.
    files = " and ".join(str(p) for p in result.written)
    return f"wrote {files} ({summary})" if files else f"no model file written ({summary})"


class _StopOnCtrlC:
    """First Ctrl-C: stop after this iteration (the model is kept); second: abort now."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this iteration (Ctrl-C again to abort now)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> _StopOnCtrlC:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C then raises KeyboardInterrupt
            self.previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run(args: argparse.Namespace) -> int:
    from ..datasets import load_samples
    from ..outputs import check_outputs
    from ..training import checkpoint_paths, train

    if bool(args.val_images) != bool(args.val_labels):
        raise CommandError("--val-images and --val-labels go together", code=EXIT_USAGE)
    main_rank = _check_distributed(args)
    args.quiet = args.quiet or not main_rank
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CommandError(f"--out: folder {out.parent} does not exist", code=EXIT_OUTPUT)
    check_outputs(checkpoint_paths(out), overwrite=args.overwrite, create=False)
    names = ("--images", "--labels", "--masks")
    samples, files = load_samples(
        args.images, args.labels, args.masks, binary=args.binary_labels, names=names
    )
    val_samples, val_files = None, []
    if args.val_images:
        val_names = ("--val-images", "--val-labels", "--masks")
        val_samples, val_files = load_samples(
            args.val_images, args.val_labels, binary=args.binary_labels, names=val_names
        )
    first = samples[0]
    channels = 1 if first.image.ndim == first.labels.ndim else int(first.image.shape[0])
    spec, config = _config(args, channels)
    model, resume = _model(args, spec, main_rank)
    bar = ProgressBar(args.quiet)
    try:
        with _StopOnCtrlC() as stop:
            result = train(
                samples,
                model=model,
                config=config,
                val_samples=val_samples,
                out=out,
                overwrite=args.overwrite,
                resume=resume,
                progress=bar.train_event,
                cancel=stop,
                data_info={
                    "images": str(args.images),
                    "labels": str(args.labels),
                    "files": files,
                    "val_files": val_files,
                    "binary_labels": bool(args.binary_labels),
                },
            )
    except NapariUnetError:
        raise  # carries its own exit code
    except FileExistsError as err:
        raise CommandError(str(err), code=EXIT_OUTPUT) from err
    except ValueError as err:  # an option that does not fit the data or the model
        raise CommandError(str(err), code=EXIT_USAGE) from err
    except (FileNotFoundError, FloatingPointError) as err:
        raise CommandError(str(err)) from err
    finally:
        bar.close()
        if args.distributed:
            from .. import distributed

            distributed.cleanup()
    if not main_rank:
        return EXIT_INTERRUPTED if result.cancelled else 0
    print(_summary(result))
    if result.cancelled:
        print(
            f"napari-unet train: interrupted after {result.iterations} iterations; "
            + (
                "the model trained so far is saved"
                if result.written
                else "nothing was trained yet, so no model file was written"
            ),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0

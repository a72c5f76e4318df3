"""The training loop: a run's phases (:class:`_Run`), :func:`train_iter` and :func:`train`.

:func:`train_iter` reads as the run's outline: open the outputs and the
model, load and prepare the data, then step, validate and checkpoint until
the last iteration or a cancel, and finish (post-processing, files, result).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from .._modelfile import load_checkpoint, load_model, save_model
from ..devices import select_device
from ..models import UNet
from ..normalize import Normalization
from ..outputs import check_outputs
from ..progress import Progress, drive
from ..scale import object_diameter
from ..tensortable import optimizer_kind
from .batches import _Batcher
from .config import _LOSSES, TrainConfig, TrainResult, checkpoint_paths
from .data import (
    _as_sample,
    _channels_of,
    _check_classes,
    _check_tile,
    _default_tile,
    _diameter_range,
    _model_diameter,
    _normalise_size,
    _Plane,
    _prepare_plane,
    _split_planes,
    _targets,
    _ValPlane,
    split_validation,
)
from .optim import _autocast, _lr_factor, _make_optimizer
from .validation import _choose_postprocessing, _inference_check, _validate


def _sync(device: torch.device) -> float:
    # Timings are only honest once queued GPU work has finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class _Run:
    """One training run: the state ``train_iter``'s phases share, and the phases.

    In order: :meth:`open_outputs`, :meth:`open_model`, :meth:`load_data`,
    :meth:`prepare` (weight maps), :meth:`start` (optimiser, loss, batches),
    then per iteration :meth:`step`, :meth:`validate` when due and
    :meth:`checkpoint`, and at the end :meth:`finish`.
    """

    def __init__(
        self,
        config: TrainConfig,
        cancel: Callable[[], bool] | None,
        data_info: Mapping[str, Any] | None,
    ) -> None:
        self.config = config
        torch.manual_seed(config.seed)  # model initialisation (when built here) and dropout
        self.ddp: Any = None
        if config.distributed:
            from .. import distributed as ddp

            self.ddp = ddp
            self.device = ddp.init(config.device)
            self.world, self.rank = ddp.world_size(), ddp.rank()
            if config.batch_size % self.world:
                raise ValueError(
                    f"`batch_size` {config.batch_size} (the global batch) must be divisible by "
                    f"the {self.world} processes of distributed training"
                )
        else:
            self.device = select_device(config.device)
            self.world, self.rank = 1, 0
        self.main = self.rank == 0
        self.user_cancel = cancel
        self.data_info = data_info
        self.started = time.perf_counter()
        self.created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.out: str | os.PathLike | None = None
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        self.optimizer_state: dict | None = None
        self.start_iteration = 0
        self.provenance: dict[str, Any] | None = None
        self.norm = config.make_normalization()
        self.history: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.best: dict[str, Any] | None = None
        self.metrics: dict[str, float] = {}
        self.saved_best = self.saved_last = self.cancelled = False
        self.check: dict[str, Any] | None = None  # inference_check, at the end
        self.postprocessing: dict[str, Any] | None = None
        self.ema: float | None = None

    def cancel(self) -> bool:
        # Every rank must stop at the same iteration, or the others would wait
        # forever in the next all-reduce: a stop anywhere stops all.
        flag = self.user_cancel is not None and bool(self.user_cancel())
        return self.ddp.any_rank(flag, self.device) if self.world > 1 else flag

    # -- set-up ----------------------------------------------------------------------------

    def open_outputs(self, out: str | os.PathLike | None, overwrite: bool) -> None:
        """Refuse existing or unwritable output files before any work."""
        self.out = out
        if out is None:
            return
        self.best_path, self.last_path = checkpoint_paths(out)
        for path in (self.best_path, self.last_path):
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if not self.best_path.parent.is_dir():
            raise FileNotFoundError(f"folder {self.best_path.parent} for `out` does not exist")
        # Before any work: a read-only or full --out must not be found after training.
        check_outputs([self.best_path, self.last_path], overwrite=overwrite, create=False)

    def open_model(
        self, model: nn.Module | str | os.PathLike | None, samples: Sequence[Any], resume: bool
    ) -> None:
        """The model: fresh, given, or from a file (fine-tuning / resuming)."""
        config = self.config
        if model is None:
            first = _as_sample(samples[0], 0) if len(samples) else None
            channels = 1 if first is None else _channels_of(first)
            model = UNet(in_channels=channels, num_classes=config.num_classes)
        elif isinstance(model, (str, os.PathLike)):
            model = self._load(Path(model), resume)
        if not isinstance(model, nn.Module):
            raise ValueError(f"`model` must be an nn.Module, a model file or None, got {model!r}")
        self.model = model
        self.spatial_dims = int(getattr(model, "spatial_dims", 2))
        # Distances of the weight map's border term follow the voxel size of a 3D model.
        self.spacing = getattr(model, "spacing", None) if self.spatial_dims == 3 else None
        if model.num_classes != config.num_classes:
            raise ValueError(
                f"`model` outputs {model.num_classes} classes, but border_class="
                f"{config.border_class} needs {config.num_classes}; build the model with "
                f"num_classes={config.num_classes} or change `border_class`"
            )

    def _load(self, source: Path, resume: bool) -> nn.Module:
        config = self.config
        model, stored, optimizer_state = load_checkpoint(source)
        # The pretrained weights expect the intensities they were trained on.
        self.norm = Normalization.from_dict(stored.get("normalization"))
        previous = stored.get("training") or {}
        self.provenance = {
            "file": source.name,
            "created": stored.get("created"),
            "iterations": previous.get("iteration"),
        }
        if not (resume and optimizer_state is not None):
            return model
        if optimizer_kind(optimizer_state) != config.optimizer:
            raise ValueError(
                f"cannot resume: {source} holds {optimizer_kind(optimizer_state)} optimiser "
                f"state, the run asks for {config.optimizer!r}; resume with the same "
                "optimiser or fine-tune instead (resume=False)"
            )
        start = int(previous.get("iteration") or 0)
        if start >= config.iterations:
            raise ValueError(
                f"{source} already has {start} iterations; ask for more than that "
                f"(`iterations` is {config.iterations}) to resume"
            )
        self.optimizer_state, self.start_iteration = optimizer_state, start
        return model

    def load_data(self, samples: Sequence[Any], val_samples: Sequence[Any] | None) -> None:
        """Training and validation planes, their object sizes, the tile and normalisation."""
        config, model = self.config, self.model
        files = [str(f) for f in (self.data_info or {}).get("files", ())]
        planes = _split_planes(samples, model.in_channels, "samples", files, self.spatial_dims)
        if not planes:
            raise ValueError("`samples` is empty: training needs at least one annotated image")
        _check_classes(planes, "samples")
        if val_samples is not None:
            val_planes = _split_planes(
                val_samples, model.in_channels, "val_samples", spatial_dims=self.spatial_dims
            )
        elif config.val_fraction > 0:
            planes, val_planes = split_validation(planes, config.val_fraction, config.seed)
        else:
            val_planes = []
        self.diameters = [object_diameter(labels) for _, labels, _ in planes]
        if config.object_diameter is not None:
            planes = _normalise_size(planes, self.diameters, config.object_diameter)
            val_planes = _normalise_size(
                val_planes, [object_diameter(p[1]) for p in val_planes], config.object_diameter
            )
        self.model_diameter = _model_diameter(config, self.diameters)
        self.tile = (
            _check_tile(model, config.tile_shape)
            if config.tile_shape is not None
            else _default_tile(model, planes)
        )
        if self.norm.scope == "dataset" and self.norm.lo is None:
            self.norm = self.norm.fit([p[0] for p in planes])
        self.planes, self.val_planes = planes, val_planes

    def prepare(self) -> Generator[Progress, None, bool]:
        """Targets and weight maps of every plane; returns False if cancelled."""
        halo = tuple(self.model.halo)
        self.prepared: list[_Plane] = []
        self.validation: list[_ValPlane] = []
        total = len(self.planes) + len(self.val_planes)
        for image, labels, mask in self.planes:
            self.prepared.append(
                _prepare_plane(
                    image, labels, mask, self.norm, self.config, self.tile, halo, self.spacing
                )
            )
            yield Progress(len(self.prepared), total, "prepare")
            if self.cancel():
                return False
        if not any(len(p.blocks) for p in self.prepared):
            raise ValueError("no annotated pixels: every `mask` is empty")
        for image, labels, mask in self.val_planes:
            classes, weights = _targets(labels, mask, self.config, self.spacing)
            self.validation.append(
                _ValPlane(
                    self.norm(image, channel_axis=0), classes, weights, mask is not None, labels
                )
            )
            yield Progress(len(self.prepared) + len(self.validation), total, "prepare")
            if self.cancel():
                return False
        return True

    def stopped(self) -> TrainResult:
        """The result of a run cancelled before training: nothing trained, no file written."""
        return TrainResult(self.model.eval(), self.start_iteration, True, None, None, None)

    def start(self) -> None:
        """Device, data parallelism, optimiser, schedule, precision, loss and batches."""
        config, model = self.config, self.model
        model.to(self.device).train()
        self.net = model
        if self.world > 1:
            self._distribute()
        self.optimizer = _make_optimizer(self.model, config)
        if self.optimizer_state is not None:
            try:
                self.optimizer.load_state_dict(self.optimizer_state)
            except (ValueError, KeyError) as err:
                raise ValueError(
                    f"cannot resume: the stored optimiser state does not fit "
                    f"{config.optimizer!r} ({err}); fine-tune instead (resume=False)"
                ) from err
        for group in self.optimizer.param_groups:
            group["initial_lr"] = config.lr
        start = self.start_iteration
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_factor(config), last_epoch=start - 1 if start else -1
        )
        self.autocast, amp_dtype = _autocast(self.device, config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        # Deep supervision (U-Net++): the model returns every head while training,
        # through forward() so that DistributedDataParallel sees the whole graph.
        model = self.model
        self.deep = bool(getattr(model, "deep_supervision", False)) and hasattr(
            model, "return_heads"
        )
        self.loss_name = (
            config.loss if config.loss != "auto" else ("hybrid" if self.deep else "ce")
        )
        self.loss_fn = _LOSSES[self.loss_name]
        if self.deep:
            model.return_heads = True
        self.batcher = _Batcher(
            self.prepared,
            model,
            self.tile,
            config,
            config.seed + start,
            rank=self.rank,
            world_size=self.world,
        )
        self.iteration = start

    def _distribute(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        if self.validation:
            # Validation (iter_predict_tiled) switches the weights to channels_last;
            # switch now, so DDP builds its gradient buckets for that layout.
            self.model.to(
                memory_format=torch.channels_last
                if self.spatial_dims == 2
                else torch.channels_last_3d
            )
        self.net = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )

    # -- the loop --------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """One optimiser step on the next batch; returns the ``info`` of its event."""
        device, world = self.device, self.world
        t0 = time.perf_counter()
        images, targets, weights = self.batcher.next()
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        weights = weights.to(device, non_blocking=True)
        t1 = _sync(device)
        with self.autocast():
            outputs = self.net(images)
        heads = outputs if isinstance(outputs, list | tuple) else [outputs]
        loss = sum(self.loss_fn(h.float(), targets, weights) for h in heads) / len(heads)
        if world > 1 and self.loss_name == "ce":
            # The weighted CE is sum(w * ce) / sum(w) over the batch, and DDP
            # averages gradients over ranks: scale each rank's loss by its share
            # of the global weight so that the average is the gradient of the
            # global batch's loss.
            local = weights.float().sum()
            total = self.ddp.sum_all(local).clamp_min(torch.finfo(torch.float32).tiny)
            loss = loss * (local * world / total)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # The same global loss on every rank (so all raise on NaN together).
        value = (
            float(self.ddp.sum_all(loss.detach()) / world) if world > 1 else float(loss.detach())
        )
        t2 = _sync(device)
        self._check_loss(value)
        self.iteration += 1
        self.losses.append(value)
        seconds = time.perf_counter() - t0
        self.ema = seconds if self.ema is None else 0.9 * self.ema + 0.1 * seconds
        return {
            "loss": value,
            "lr": self.optimizer.param_groups[0]["lr"],
            "it_per_s": 1.0 / self.ema,
            "eta_s": self.ema * (self.config.iterations - self.iteration),
            "data_s": t1 - t0,
            "step_s": t2 - t1,
        }

    def _check_loss(self, value: float) -> None:
        if math.isfinite(value):
            return
        raise FloatingPointError(
            f"the training loss became {value} at iteration {self.iteration + 1}; lower the "
            f"learning rate (`lr` = {self.config.lr}). "
            + (
                f"The last good model is kept in {self.last_path}"
                if self.saved_last
                else "No model file was written (none was saved before this iteration)"
            )
        )

    def validation_due(self) -> bool:
        iterations = self.config.iterations
        return bool(self.validation) and (
            self.iteration % self.config.val_every == 0 or self.iteration == iterations
        )

    def validate(self, info: dict[str, Any]) -> Generator[Progress, None, bool]:
        """Validate, keep the best model; returns False if cancelled during validation."""
        config = self.config
        scores = yield from _validate(self.model, self.validation, self.device, self.cancel)
        self.model.train()
        if scores is None:
            return False
        self.metrics = scores
        self.history.append({"iteration": self.iteration, "loss": info["loss"], **scores})
        info.update(scores)
        score = scores.get(config.monitor, scores["val_loss"])
        if self.best is None or score < self.best["value"]:
            self.best = {
                "iteration": self.iteration,
                "monitor": config.monitor if config.monitor in scores else "val_loss",
                "value": score,
                "metrics": dict(scores),
            }
            if self.out is not None and self.main:
                save_model(
                    self.model,
                    self.best_path,
                    metadata=self.metadata(self.iteration == config.iterations, False),
                    overwrite=True,
                )
                self.saved_best = True
        return True

    def checkpoint(self) -> None:
        """Write the last model every ``checkpoint_every`` iterations (the end saves anyway)."""
        if (
            self.iteration % self.config.checkpoint_every == 0
            and self.iteration < self.config.iterations
        ):
            self.save()

    # -- files and the end -----------------------------------------------------------------

    def metadata(self, finished: bool, cancelled: bool) -> dict[str, Any]:
        config = self.config
        return {
            "classes": ["background", "cell", "border"][: config.num_classes],
            "normalization": self.norm.to_dict(),
            "object_diameter": self.model_diameter,
            "object_diameter_range": _diameter_range(config, self.diameters),
            "postprocessing": self.postprocessing,
            **({"inference_check": self.check} if self.check else {}),
            **(
                {"spacing": list(self.spacing or (1.0, 1.0, 1.0))}
                if self.spatial_dims == 3
                else {}
            ),
            "training": {
                "config": config.to_dict(),
                "tile_shape": list(self.tile),
                "iteration": self.iteration,
                "finished": finished,
                "cancelled": cancelled,
                "started": self.created,
                "elapsed_s": round(time.perf_counter() - self.started, 2),
                "device": self.device.type,
                **({"world_size": self.world} if config.distributed else {}),
                "planes": len(self.prepared),
                "val_planes": len(self.validation),
                "data": dict(self.data_info or {}),
                "metrics": dict(self.metrics),
                "best": self.best,
                "fine_tuned_from": self.provenance,
                "package_version": __version__,
            },
        }

    def save(self, finished: bool = False, cancelled: bool = False) -> None:
        """Write the last model (with the optimiser state), and the best one until validated."""
        if self.out is None or not self.main:
            return
        meta = self.metadata(finished, cancelled)
        save_model(
            self.model,
            self.last_path,
            metadata=meta,
            overwrite=True,
            optimizer_state=self.optimizer.state_dict(),
        )
        self.saved_last = True
        # Without validation (or before the first one) the best model is the last one.
        if not self.validation or not self.saved_best:
            save_model(self.model, self.best_path, metadata=meta, overwrite=True)

    def record_inference_check(self) -> Generator[Progress, None, None]:
        """Write how bf16 agrees with fp32 into the model files (``precision="auto"`` reads it).

        The last file gets it with the final save; the best file, when it holds
        other weights, gets its own check.
        """
        if not (self.validation and self.main and not self.cancelled):
            return
        self.check = _inference_check(self.model, self.validation, self.device)
        yield Progress(1, 1, "validate")
        if self.check is None or self.out is None or not self.saved_best:
            return
        if self.best["iteration"] == self.iteration:
            save_model(
                self.model, self.best_path, metadata=self.metadata(True, False), overwrite=True
            )
            return
        kept, kept_meta = load_model(self.best_path)
        kept_meta["inference_check"] = _inference_check(kept, self.validation, self.device)
        save_model(kept, self.best_path, metadata=kept_meta, overwrite=True)

    def finish(self) -> Generator[Progress, None, TrainResult]:
        """Choose the post-processing, write the files and return the result."""
        config, model, device = self.config, self.model, self.device
        if self.validation and config.choose_postprocessing and not self.cancelled and self.main:
            self.postprocessing = yield from _choose_postprocessing(
                model, self.validation, device, config
            )
            if (
                self.out is not None
                and self.saved_best
                and self.best["iteration"] == self.iteration
            ):
                save_model(
                    model, self.best_path, metadata=self.metadata(True, False), overwrite=True
                )
            elif self.out is not None and self.saved_best:
                # The best file holds other weights: choose for those too.
                kept, kept_meta = load_model(self.best_path)
                kept_meta["postprocessing"] = yield from _choose_postprocessing(
                    kept, self.validation, device, config
                )
                save_model(kept, self.best_path, metadata=kept_meta, overwrite=True)
        yield from self.record_inference_check()
        cancelled = self.cancelled
        self.save(finished=not cancelled, cancelled=cancelled)
        if self.world > 1:
            self.ddp.barrier()  # rank 0's files are complete when train returns on any rank
        model.eval()
        if self.deep:
            model.return_heads = False
        return TrainResult(
            model=model,
            iterations=self.iteration,
            cancelled=cancelled,
            best_path=self.best_path,
            last_path=self.last_path,
            best=self.best,
            history=self.history,
            losses=self.losses,
            metadata=self.metadata(not cancelled, cancelled),
        )


def train_iter(
    samples: Sequence[Any],
    *,
    model: nn.Module | str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    val_samples: Sequence[Any] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    cancel: Callable[[], bool] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Generator form of :func:`train`: yields progress events, returns the result.

    Events: ``stage="prepare"`` while weight maps are computed (one per
    plane), ``"train"`` after every iteration (``info``: ``loss``, ``lr``,
    ``it_per_s``, ``eta_s``, ``data_s`` and ``step_s``, the seconds spent
    preparing the batch and in forward/backward/step, and after a
    validation the metrics), and ``"validate"`` per validation plane.

    Closing the generator (what napari's Stop button does) writes the last
    model, as ``cancel`` does, before the generator exits.

    See :func:`train` for the parameters.
    """
    run = _Run(TrainConfig() if config is None else config, cancel, data_info)
    run.open_outputs(out, overwrite)
    run.open_model(model, samples, resume)
    run.load_data(samples, val_samples)
    if not (yield from run.prepare()):
        return run.stopped()
    run.start()
    try:
        while run.iteration < run.config.iterations:
            info = run.step()
            if run.validation_due() and not (yield from run.validate(info)):
                run.cancelled = True  # during validation
                break
            run.checkpoint()
            yield Progress(run.iteration, run.config.iterations, "train", info)
            if run.cancel():
                run.cancelled = True
                break
    except GeneratorExit:
        # Closed from outside (napari's Stop): keep what was trained so far.
        run.save(cancelled=True)
        raise
    return (yield from run.finish())


iter_train = train_iter


def train(
    samples: Sequence[Any],
    *,
    model: nn.Module | str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    val_samples: Sequence[Any] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a U-Net on annotated images.

    Parameters
    ----------
    samples : sequence of Sample, tuple or dict
        Training images with instance labels and optional masks (see
        :class:`Sample`); tuples ``(image, labels[, mask])`` work too.
    model : nn.Module, path or None, optional
        The network to train. None builds the paper's U-Net (``UNet()`` with
        ``config.num_classes`` outputs). A path to a model file fine-tunes it:
        training starts from its weights, and its normalisation is kept.
    config : TrainConfig, optional
        Training settings; default ``TrainConfig()``.
    val_samples : sequence, optional
        Validation images (or use ``config.val_fraction``).
    out : path, optional
        Model file to write; see :func:`checkpoint_paths` for the two files.
        None keeps the model in memory only.
    overwrite : bool, optional
        Replace existing output files; by default they are an error.
    resume : bool, optional
        With a ``model`` file that holds an optimiser state (a ``.last``
        checkpoint), continue its run: restore the optimiser and count
        iterations from where it stopped, up to ``config.iterations``.
    progress : callable, optional
        Called with every :class:`~napari_unet.progress.Progress` event
        (``event.info`` has the loss, learning rate, it/s, ETA and, after
        validation, the metrics).
    cancel : callable, optional
        Checked after every iteration; True stops training.
    data_info : mapping, optional
        Provenance of the data (file names, source), stored in the model file.

    Returns
    -------
    result : TrainResult
        The model, the files, the best validation and the loss history.
        After a cancel ``result.cancelled`` is True; this is not an error:
        the model trained so far is returned and saved.

    Raises
    ------
    ValueError
        For malformed samples, a model whose channels or classes do not fit
        the data and settings, or an invalid tile shape.
    FileExistsError
        If an output file exists and ``overwrite`` is False.
    FloatingPointError
        If the loss diverges (NaN); the last checkpoint stays on disk.

    Notes
    -----
    *Cancel.* ``cancel`` is checked after every iteration (and the
    generator form can be closed at any yield). The run then writes the
    model of the last completed iteration to both files (atomically, so an
    interruption during the write keeps the previous file) and returns
    normally with ``cancelled=True``, so that the caller can use the model.
    Closing :func:`train_iter` writes the files the same way.

    *Checkpoints.* ``out`` holds the best model by ``config.monitor``
    (smaller is better) when there is validation data, else the last one;
    ``<stem>.last.safetensors`` the last one with the optimiser state. Both
    are written every ``config.checkpoint_every`` iterations, at the end and
    on cancel; the best one whenever validation improves.

    *Reproducibility.* Tile positions, augmentations and dropout are
    seeded by ``config.seed`` (and the model is built after seeding), so on
    the CPU the same seed and data give bit-identical weights.
    """
    events = train_iter(
        samples,
        model=model,
        config=config,
        val_samples=val_samples,
        out=out,
        overwrite=overwrite,
        resume=resume,
        cancel=cancel,
        data_info=data_info,
    )
    return drive(events, on_event=progress)

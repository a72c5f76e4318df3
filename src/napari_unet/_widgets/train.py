"""The "Train" dock widget: train or fine-tune a U-Net on the session's training set.

Training runs the engine's generator (:func:`napari_unet.training.train_iter`)
in a napari ``thread_worker``. The dock shows progress with ETA and a live
loss plot. Stop asks the engine to finish the current iteration, write the
model trained so far and return, so the file on disk is always complete and
the model is listed in the Predict widget right away.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from ..progress import Progress
from ._choices import architectures, build_model, device_choices
from ._layers import elide
from ._lifetime import JobError, StoppableWorker, report_error, stopper, watch_close
from ._plot import LinePlot
from ._presets import (
    PRESET_TEXT,
    default_preset,
    estimate_seconds,
    has_cuda,
    preset_values,
)
from ._session import TrainedModel, session_for
from ._ui import ScrollDock, format_seconds, set_progress
from ._warmup import is_ready, warm_up_soon, when_ready

if TYPE_CHECKING:
    import napari

    from ..training import TrainResult

__all__ = ["TrainWidget", "train_job"]

#: How often the dock redraws during training; events in between are only recorded.
REDRAW_S = 0.1
#: Seconds the dock waits, when it is closed mid-run, for the engine to save and stop.
CLOSE_WAIT_S = 10.0
DEFAULT_OUT = Path.home() / "napari-unet-models"


def train_job(
    samples: list[dict[str, Any]],
    *,
    model: dict[str, Any] | Path,
    config: Any,
    out: Path,
    stop: threading.Event,
    done: threading.Event,
    data_info: dict[str, Any],
) -> Generator[Progress, None, TrainResult]:
    """The worker's generator: build the model, then run the training engine.

    Parameters
    ----------
    samples : list of dict
        ``{"image", "labels", "mask"}`` planes (from the training set).
    model : dict or Path
        Arguments for :func:`build_model` (``architecture`` plus constructor
        arguments), or a model file to fine-tune.
    config : TrainConfig
    out : Path
        The model file to write (plus ``<stem>.last.safetensors``).
    stop : threading.Event
        Set by the Stop button; the engine checks it after every iteration
        (and every prepared or validated plane), saves and returns.
    done : threading.Event
        Set when the generator ends, however it ends.
    data_info : dict
        Provenance stored in the model file.
    """
    from ..training import train_iter

    try:
        # Building a large U-Net takes a moment (weight init): not on the GUI thread.
        network = build_model(**model) if isinstance(model, dict) else model
        yield Progress(0, 1, "build")
        result = yield from train_iter(
            samples,
            model=network,
            config=config,
            out=out,
            cancel=stop.is_set,
            data_info=data_info,
        )
    except RuntimeError as err:
        raise JobError(str(err)) from err
    finally:
        done.set()
    return result


class TrainWidget(ScrollDock):
    """Train a U-Net on the annotated planes collected in "Annotate cells".

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # The engine's first-use imports, in the background while the user reads the dock
        # (see _warmup: in the worker after Start they stalled the GUI for up to 1 s).
        warm_up_soon("train", self.native)
        #: PyTorch is imported: the architectures, devices and tile checks can be shown
        #: (until then the dock is built without them; see _warmup.when_ready).
        self._ready = is_ready("train")
        self._preset_chosen = False
        self._viewer = viewer
        self._session = session_for(viewer)
        # Shared with the destroy handler, which must not read attributes of this object
        # (the garbage collector may have cleared them by the time Qt reports the deletion).
        self._flags = {"alive": True}
        #: The running worker (None when idle); tests wait on its ``finished``.
        self.worker: Any = None
        #: The last run's result (a TrainResult), once it returned.
        self.result: Any = None
        # One pair of events for the widget's lifetime (cleared for each run), so that the
        # destroy handler can hold them directly.
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._losses: list[float] = []
        self._last_redraw = 0.0
        self._started = 0.0
        self._out: Path | None = None
        self._tile_check_now = False
        self._tile_timer = QTimer(self.native)
        self._tile_timer.setSingleShot(True)
        self._tile_timer.setInterval(0)
        self._tile_timer.timeout.connect(self._check_tile_now)

        self._build_network_fields()
        self._build_training_fields()
        self._build_controls()
        self._lay_out()
        self._connect()
        self._on_finetune_changed()
        self._update_set_info()
        self._update_weights_info()
        self.apply_preset()
        self._update_tile_info()
        if not self._ready:
            when_ready("train", self._on_ready, self.native)

    def _on_ready(self) -> None:
        """PyTorch is imported: offer every architecture and device, the GPU preset on CUDA."""
        if not self._alive:
            return
        self._ready = True
        self._arch.choices = list(architectures())
        device = self._device.value
        self._device.choices = device_choices()
        if device in self._device.choices:
            self._device.value = device
        if not self._preset_chosen and self._preset.value != default_preset():
            self._preset.value = default_preset()  # applies it
        self._update_tile_info()
        self._update_estimate()

    # -- construction --------------------------------------------------------------------------

    def _build_network_fields(self) -> None:
        """The training-set and network fields."""
        self._set_info = Label(value="")
        self._val_percent = SpinBox(label="validation planes (%)", min=0, max=50, value=0)
        names = list(architectures()) if self._ready else ["U-Net"]
        self._arch = ComboBox(label="architecture", choices=names)
        self._depth = SpinBox(label="depth", min=1, max=6, value=4)
        self._base = SpinBox(label="base channels", min=1, max=256, value=32)
        self._padding = ComboBox(label="padding", choices=["valid", "same"], value="valid")
        self._border_class = CheckBox(text="separating-border class (3 classes)", value=True)

    def _build_training_fields(self) -> None:
        """The training fields: tile, iterations, optimiser, device, preset and output."""
        self._tile = SpinBox(label="tile size (0 = auto)", min=0, max=2048, value=0)
        self._tile_info = Label(value="")
        self._iterations = SpinBox(label="iterations", min=1, max=1_000_000, value=1000)
        self._optimizer = ComboBox(
            label="optimiser",
            choices=[("SGD, momentum 0.99 (paper)", "sgd"), ("Adam", "adam")],
            value="sgd",
        )
        self._lr = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=0.001, value=0.01)
        self._lr.native.setDecimals(6)
        devices = device_choices() if self._ready else [("auto (best available)", "auto")]
        if not self._ready:
            devices.append(("CPU", "cpu"))  # GPUs are listed once PyTorch is imported
        self._device = ComboBox(label="device", choices=devices, value="auto")
        self._preset = ComboBox(
            label="preset",
            choices=[(PRESET_TEXT[name], name) for name in PRESET_TEXT],
            value=default_preset() if self._ready else "cpu",
        )
        self._estimate = Label(value="")
        self._weights_info = Label(value="")
        self._out_dir = FileEdit(label="output folder", mode="d", value=DEFAULT_OUT)
        self._name = LineEdit(label="model name", value="cells")
        self._finetune = CheckBox(text="fine-tune an existing model", value=False)
        self._finetune_file = FileEdit(
            label="model to fine-tune", mode="r", filter="*.safetensors"
        )

    def _build_controls(self) -> None:
        """Start, Stop, the progress bar, the status line and the loss plot."""
        self._start = PushButton(text="Start training")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self._status = Label(value="")
        self.plot = LinePlot("training loss", "iteration", log_y=True)
        self.plot.add_series("loss", "#7a8cff", width=1.0)
        self.plot.add_series("smoothed", "#ffb000", width=2.0)
        self.plot.add_series("validation", "#3ddc84", width=2.0, markers=True)

    def _lay_out(self) -> None:
        buttons = Container(
            widgets=[self._start, self._stop_button], layout="horizontal", labels=False
        )
        self.set_content(
            [
                Label(value="<b>Training set</b>"),
                self._set_info,
                self._val_percent,
                self._preset,
                self._estimate,
                Label(value="<b>Network</b>"),
                self._finetune,
                self._finetune_file,
                self._arch,
                self._depth,
                self._base,
                self._padding,
                self._border_class,
                Label(value="<b>Training</b>"),
                self._tile,
                self._tile_info,
                self._iterations,
                self._optimizer,
                self._lr,
                self._device,
                self._weights_info,
                self._out_dir,
                self._name,
            ]
        )
        # Start, Stop and progress stay in view; the loss plot takes the height left.
        self.plot.setMinimumHeight(140)
        self.set_footer([buttons, self._progress, self._status], stretch=self.plot)
        self._progress.native.setFormat("")

    def _connect(self) -> None:
        self._finetune.changed.connect(self._on_finetune_changed)
        self._optimizer.changed.connect(self._on_optimizer_changed)
        self._preset.changed.connect(self.apply_preset)
        self._preset.changed.connect(self._on_preset_chosen)
        for widget in (self._depth, self._base, self._tile, self._iterations, self._device):
            widget.changed.connect(self._update_estimate)
        for widget in (self._arch, self._depth, self._padding, self._tile):
            widget.changed.connect(self._update_tile_info)
        self._start.changed.connect(self.start)
        self._stop_button.changed.connect(self.stop)
        self._session.training_set.changed.connect(self._update_set_info)
        self._session.weights_changed.connect(self._update_weights_info)
        self._watcher = watch_close(
            self.native, self.stop, stopper(self._stop, self._done, self._flags, CLOSE_WAIT_S)
        )

    # -- display -------------------------------------------------------------------------------

    def _update_set_info(self) -> None:
        if self._alive:
            self._set_info.value = self._session.training_set.summary()

    def _update_weights_info(self) -> None:
        if self._alive:
            self._weights_info.value = (
                f"border weights: {self._session.weights.describe()} (set in Weight map)"
            )

    def _on_finetune_changed(self, *_: Any) -> None:
        fine = self._finetune.value
        self._finetune_file.visible = fine
        # A fine-tuned model keeps its architecture: those fields do not apply.
        for widget in (self._arch, self._depth, self._base, self._padding, self._border_class):
            widget.enabled = not fine
        self._update_tile_info()

    def _on_preset_chosen(self, *_: Any) -> None:
        if not self._ready:
            self._preset_chosen = True  # the user's choice: kept when PyTorch is ready

    def apply_preset(self, *_: Any) -> None:
        """Fill the network and training fields from the chosen preset."""
        values = preset_values(self._preset.value)
        self._depth.value = values["depth"]
        self._base.value = values["base_channels"]
        self._tile.value = values["tile"]
        self._optimizer.value = values["optimizer"]
        self._iterations.value = values["iterations"]
        self._update_estimate()

    def _update_estimate(self, *_: Any) -> None:
        if not self._alive:
            return
        tile = int(self._tile.value) or 572
        seconds = estimate_seconds(
            int(self._iterations.value),
            tile=tile,
            base_channels=int(self._base.value),
            depth=int(self._depth.value),
            gpu=self._device.value == "cuda"
            or (self._device.value == "auto" and self._ready and has_cuda()),
        )
        where = "on the GPU" if seconds.gpu else "on this CPU"
        self._estimate.value = (
            f"Estimated training time: about {format_seconds(seconds.value)} {where} "
            "(rough; measured once running)"
        )

    def _on_optimizer_changed(self, value: str) -> None:
        # The engine's defaults: 0.01 for SGD with momentum 0.99, 0.001 for Adam.
        self._lr.value = 0.001 if value == "adam" else 0.01

    def _shape_model(self) -> Any:
        """A tiny model with the chosen architecture, for its shape rules only."""
        if self._finetune.value:
            from ..io import ModelFileError, read_metadata
            from ..models.registry import build_model as build_stored

            path = Path(self._finetune_file.value)
            try:
                meta = read_metadata(path)
            except (OSError, ModelFileError):
                return None
            arguments = dict(meta["arguments"])
            arguments["base_channels"] = 1
            return build_stored(meta["architecture"], arguments)
        return build_model(
            self._arch.value, depth=self._depth.value, base_channels=1, padding=self._padding.value
        )

    def valid_tile(self) -> int | None:
        """The tile the engine will use: the chosen size rounded up to a valid one, or None."""
        if not self._tile.value:
            return None
        model = self._shape_model()
        if model is None:
            return None
        side = int(self._tile.value)
        if model.is_valid_input_shape((side, side)):
            return side
        return int(model.valid_input_shape(model.output_shape_lower_bound((side, side)))[0])

    def _update_tile_info(self, *_: Any) -> None:
        if not self._alive:
            return
        if not self._tile.value:
            self._tile_info.value = "tile: automatic (572 px for the paper's network)"
            return
        if not self._ready or not self._tile_check_now:
            # Building the shape model (torch modules) took a third of the Train tab's first
            # show: it runs on a later event-loop turn, once for a burst of changes (a preset).
            self._tile_info.value = "checking the tile size ..."
            if self._ready:
                self._tile_timer.start()
            return
        model = self._shape_model()
        tile = self.valid_tile()
        if model is None or tile is None:
            self._tile_info.value = ""
            return
        out = model.output_shape((tile, tile))[0]
        self._tile_info.value = f"valid tile {tile} px, output {out} px"

    def _check_tile_now(self) -> None:
        if not self._alive:
            return
        self._tile_check_now = True
        try:
            self._update_tile_info()  # a subclass may show something else (3D tiles)
        finally:
            self._tile_check_now = False

    # -- running -------------------------------------------------------------------------------

    def _output_path(self) -> Path:
        """A new file in the output folder; never an existing one."""
        from ..training import checkpoint_paths

        folder = Path(self._out_dir.value).expanduser()
        name = (self._name.value or "model").strip().replace("/", "_")
        path = folder / f"{name}.safetensors"
        if any(p.exists() for p in checkpoint_paths(path)):
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = folder / f"{name}-{stamp}.safetensors"
            number = 2
            while any(p.exists() for p in checkpoint_paths(path)):
                path = folder / f"{name}-{stamp}-{number}.safetensors"
                number += 1
        return path

    def start(self) -> Any:
        """Validate the settings and start training in a worker thread.

        Returns
        -------
        worker : GeneratorWorker or None
            None if something is missing (an error notification says what).
        """
        if self.worker is not None:
            show_info("Train: already training; stop it first.")
            return None
        training_set = self._session.training_set
        val_fraction = self._val_percent.value / 100
        if not self._check_training_set(training_set, val_fraction):
            return None
        fine_path = Path(self._finetune_file.value) if self._finetune.value else None
        if fine_path is not None and not fine_path.is_file():
            show_error("Train: choose the model file to fine-tune.")
            return None
        folder = Path(self._out_dir.value).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            show_error(f"Train: cannot use output folder {folder}: {err}")
            return None
        channels = training_set[0].channels
        border_class = self._border_class.value
        if fine_path is not None:
            border_class = _fine_tune_border_class(fine_path, channels)
            if border_class is None:
                return None
        config = self._train_config(border_class, val_fraction)
        if config is None:
            return None
        model: dict[str, Any] | Path = fine_path or {
            "architecture": self._arch.value,
            "in_channels": channels,
            "num_classes": config.num_classes,
            "depth": int(self._depth.value),
            "base_channels": int(self._base.value),
            "padding": self._padding.value,
        }
        return self._launch(training_set, model, config)

    def _check_training_set(self, training_set: Any, val_fraction: float) -> bool:
        """Whether the training set can be trained on (an error notification says why not)."""
        if not len(training_set):
            show_error(
                "Train: the training set is empty. In 'Annotate cells', paint some cells and "
                "press 'Add to training set'."
            )
            return False
        if training_set.n_cells == 0:
            show_error("Train: the training set has no cells; paint at least one cell.")
            return False
        if val_fraction and len(training_set) < 2:
            show_error("Train: validation needs at least 2 planes in the training set.")
            return False
        return True

    def _train_config(self, border_class: bool, val_fraction: float) -> Any:
        """The TrainConfig of the dock's settings, or None (an error notification says why)."""
        from ..train_settings import default_val_every
        from ..training import TrainConfig

        iterations = int(self._iterations.value)
        tile = self.valid_tile()
        try:
            return TrainConfig(
                iterations=iterations,
                tile_shape=None if tile is None else (tile, tile),
                optimizer=self._optimizer.value,
                lr=float(self._lr.value),
                border_class=border_class,
                w0=self._session.weights.w0,
                sigma=self._session.weights.sigma,
                class_weights=self._session.weights.class_weights,
                val_fraction=val_fraction,
                # The command line's defaults: validate and save every 10 % (at most 100 it).
                val_every=default_val_every(iterations),
                checkpoint_every=default_val_every(iterations),
                device=self._device.value,
            )
        except ValueError as err:
            show_error(f"Train: {err}")
            return None

    def _launch(self, training_set: Any, model: dict[str, Any] | Path, config: Any) -> Any:
        """Start the training worker and set the dock to its running state."""
        out = self._output_path()
        data_info = {
            "source": "napari",
            "planes": [entry.describe() for entry in training_set],
            "object_diameter_px": _median_diameter(training_set),
        }
        self._stop.clear()
        self._done.clear()
        worker = thread_worker(
            train_job,
            start_thread=False,
            worker_class=StoppableWorker,
            # Our "errored" handler reports the error (see _report_error) and stops
            # superqt from re-raising it in the event loop.
            connect={"errored": self._on_errored},
        )(
            training_set.samples(),
            model=model,
            config=config,
            out=out,
            stop=self._stop,
            done=self._done,
            data_info=data_info,
        )
        worker.stop_event = self._stop
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.result = None
        self._out = out
        self._losses = []
        self.plot.clear()
        self._started = time.perf_counter()
        self._last_redraw = 0.0
        set_progress(self._progress, 0)
        self._progress.native.setFormat("")
        self._status.value = "building the network ..."
        self._start.enabled = False
        self._stop_button.enabled = True
        worker.start()
        return worker

    def stop(self) -> None:
        """Stop after the current iteration; the model trained so far is saved and kept."""
        if self.worker is None:
            return
        self.worker.quit()  # a StoppableWorker: sets self._stop
        if self._alive:
            self._status.value = "stopping after this iteration ..."
            self._stop_button.enabled = False

    def _on_progress(self, event: Progress) -> None:
        if event.stage == "train":
            loss = event.info.get("loss")
            if loss is not None:
                self._losses.append(float(loss))
                self.plot.append("loss", event.done, loss)
                previous = self.plot.points("smoothed")[1]
                smooth = loss if not previous else 0.9 * previous[-1] + 0.1 * loss
                self.plot.append("smoothed", event.done, smooth)
            if "val_loss" in event.info:
                self.plot.append("validation", event.done, event.info["val_loss"])
        if not self._alive:
            return
        now = time.perf_counter()
        if now - self._last_redraw < REDRAW_S and event.done < event.total:
            return  # record every event, redraw at most ten times a second
        self._last_redraw = now
        if event.stage == "train":
            info = event.info
            set_progress(self._progress, int(1000 * event.done / max(event.total, 1)))
            # Iteration and ETA inside the bar, so the status line does not wrap.
            bar = f"{event.done}/{event.total}"
            if "eta_s" in info:
                bar += f" · ETA {format_seconds(info['eta_s'])}"
            self._progress.native.setFormat(bar)
            text = f"loss {info.get('loss', 0):.4f}"
            if "it_per_s" in info:
                text += f" · {info['it_per_s']:.1f} it/s"
            metrics = [f"{k} {info[k]:.4f}" for k in ("val_loss", "rand_error") if k in info]
            if metrics:
                text += "\n" + ", ".join(metrics)
            self._status.value = text
            self.plot.update()
        elif event.stage == "prepare":
            self._status.value = f"computing weight maps: plane {event.done}/{event.total}"
        elif event.stage == "validate":
            self._status.value = f"validating: plane {event.done}/{event.total}"

    def _on_returned(self, result: TrainResult) -> None:
        self.result = result
        path = result.best_path
        checkpoint = _checkpoint_note(result)
        if path is not None and Path(path).is_file():
            self._session.add_model(
                TrainedModel(Path(path).stem, Path(path), checkpoint, not result.cancelled)
            )
        if not self._alive:
            return
        self.plot.update()
        if path is None:
            self._status.value = "stopped before the first iteration; no model was written"
            return
        state = "Stopped" if result.cancelled else "Finished"
        listed = (
            "It is listed in Predict (not chosen there: the run was stopped early)."
            if result.cancelled
            else "Predict now uses it."
        )
        set_progress(
            self._progress, int(1000 * result.iterations / max(self._iterations.value, 1))
        )
        self._status.value = (
            f"{state} at iteration {result.iterations} in "
            f"{format_seconds(time.perf_counter() - self._started)}; saved the "
            f"{checkpoint} as {elide(Path(path).name)}. {listed}"
        )
        show_info(f"Train: {state.lower()}; saved {elide(Path(path).name)}")

    def _on_errored(self, err: Exception) -> None:
        report_error(err)
        if self._alive:
            self._status.value = f"failed: {err}"

    def _on_finished(self) -> None:
        self.worker = None
        if self._alive:
            self._start.enabled = True
            self._stop_button.enabled = False

    @property
    def _alive(self) -> bool:
        return self._flags["alive"]


def _fine_tune_border_class(fine_path: Path, channels: int) -> bool | None:
    """Whether a model to fine-tune has 3 classes; None if unusable (an error says why)."""
    from ..io import ModelFileError, read_metadata

    try:
        meta = read_metadata(fine_path)
    except (OSError, ModelFileError) as err:
        show_error(f"Train: {err}")
        return None
    if int(meta.get("in_channels") or 1) != channels:
        show_error(
            f"Train: {fine_path.name} expects {meta.get('in_channels')} channel(s), the "
            f"training set has {channels}."
        )
        return None
    return int(meta.get("num_classes") or 2) == 3


def _median_diameter(training_set: Any) -> float | None:
    """Median diameter (px) of the annotated cells, as of discs of the same area."""
    import numpy as np

    areas = []
    for entry in training_set:
        labels = entry.labels if entry.mask is None else np.where(entry.mask, entry.labels, 0)
        counts = np.bincount(labels.ravel().astype(np.int64))[1:]
        areas.append(counts[counts > 0])
    found = np.concatenate(areas) if areas else np.zeros(0)
    return round(float(2 * np.sqrt(np.median(found) / np.pi)), 1) if found.size else None


def _checkpoint_note(result: TrainResult) -> str:
    """Which weights the saved file holds: "best checkpoint, iteration 48 of 60"."""
    best = (result.best or {}).get("iteration")
    if best is not None and best != result.iterations:
        return f"best checkpoint, iteration {best} of {result.iterations}"
    state = "stopped" if result.cancelled else "finished"
    return f"{state} at iteration {result.iterations}"

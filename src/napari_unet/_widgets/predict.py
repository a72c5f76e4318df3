"""The "Predict" dock widget: segment an image, stack or time series with a model file."""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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
from napari.layers import Image
from napari.qt import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from ..progress import Progress
from ._diameter import measure_diameter, parse_diameter
from ._layers import (
    GREY,
    RGB,
    colour_for_model,
    compact_labels,
    elide,
    layers_of,
    model_channel_choices,
    on_layer_list_change,
    resolve_channel_axis,
    result_name,
    spatial_shape,
    spatial_transform,
    unique_name,
)
from ._lazy_link import link_text, watch_linker
from ._lifetime import JobError, report_error, watch_close
from ._model_text import describe_model, technical_details
from ._session import session_for
from ._ui import ScrollDock, format_seconds, set_progress
from ._warmup import freeze_heap, warm_up_soon, when_ready

if TYPE_CHECKING:
    import napari

__all__ = ["PredictWidget", "parse_diameter", "predict_job"]

_FROM_FILE = "__file__"
# Share of the progress bar for the network; the rest is labelling the planes.
_NETWORK_SHARE = 0.9


def predict_job(
    model_path: Path,
    data: Any,
    *,
    channel_axis: int | None,
    tile: int | None,
    tta: bool,
    threshold: float,
    device: str,
    keep_probabilities: bool,
    backend: str = "auto",
    precision: str = "auto",
    diameter: float | str | None = "default",
    info: dict[str, Any] | None = None,
    link_planes: bool = False,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray | None]]:
    """Model file + image -> (labels, probabilities), yielding progress often.

    :func:`napari_unet.segment.iter_segment`, the pipeline ``napari-unet
    predict`` and Python users call too: the model file's stored
    normalisation, exact tiled prediction plane by plane, then instance
    labels per plane (ids unique over the whole stack).

    Parameters
    ----------
    model_path : Path
        A napari-unet model file.
    data : array-like
        (..., Y, X) with an optional channel axis; read here (in the worker),
        so lazy arrays do not block the GUI.
    channel_axis : int or None
        Axis of ``data`` with the channels.
    tile : int or None
        Input tile side; None picks one automatically.
    tta : bool
        Test-time augmentation (8 rotations and flips).
    threshold : float
        Foreground threshold of :func:`~napari_unet.postprocess.probabilities_to_labels`.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    keep_probabilities : bool
        Return the probabilities as well (else None, freeing the memory).
    backend, precision : str
        Inference engine and precision (:class:`~napari_unet.segment.SegmentConfig`).
    diameter : float, "auto", "default" or None
        Typical object diameter in the image, pixels (``SegmentConfig.diameter``).
    info : dict, optional
        Filled with ``Segmentation.info`` (the diameter used, whether estimated).
    link_planes : bool
        Link the planes of a (Z, Y, X) stack into 3D objects
        (``SegmentConfig.link_planes``).

    Returns
    -------
    labels : ndarray of uint32, shape of ``data`` without the channel axis
    probabilities : ndarray of float32 (classes first) or None
    """
    from ..segment import SegmentConfig, iter_segment

    config = SegmentConfig(
        tile=tile,
        tta=tta,
        threshold=threshold,
        device=device,
        backend=backend,
        precision=precision,
        link_planes=link_planes,
        probabilities=keep_probabilities,
        diameter=diameter,
    )
    result = yield from iter_segment(model_path, data, channel_axis=channel_axis, config=config)
    if info is not None:
        info.update(result.info or {})
    return result.labels, result.probabilities


def layer_job(
    model_path: Path,
    data: Any,
    *,
    name: str,
    colour: str | None,
    link: bool = False,
    channels: int,
    channel_axis: int | None,
    **options: Any,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray | None]]:
    """The worker's generator: read the layer's data, check it, then :func:`predict_job`.

    Reading (a memory-mapped or lazily loaded file), the colour conversion
    and the finiteness check all run here, in the worker, so that the GUI
    never waits for them; the errors name the layer, not an internal array.
    """
    yield Progress(0, 1, "read")
    data = np.asarray(data)
    if colour is not None:
        data, channel_axis = colour_for_model(data, colour, channels)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise ValueError(
            f"'{elide(name)}' contains NaN or infinite values. Replace them first, "
            "e.g. in the napari console: layer.data = np.nan_to_num(layer.data)."
        )
    try:
        labels, probs = yield from predict_job(
            model_path, data, channel_axis=channel_axis, **options
        )
    except RuntimeError as err:
        raise JobError(str(err)) from err
    if link and labels.ndim == 3:
        from ..linking import link_planes

        yield Progress(0, 1, "linking planes")
        labels = link_planes(labels, axis=0).astype(np.uint32, copy=False)
    return compact_labels(labels), probs


class PredictWidget(ScrollDock):
    """Run a model over an image layer and add the cells as a new Labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        warm_up_soon("predict", self.native)  # first-use imports in the background (see _warmup)
        #: PyTorch and the model-file reader are imported (see _warmup.when_ready).
        self._ready = False

        self._viewer = viewer
        self._session = session_for(viewer)
        self._alive = True
        #: The running worker (None when idle); tests wait on its ``finished``.
        self.worker: Any = None
        self._started = 0.0
        self._job: dict[str, Any] = {}

        self._model = ComboBox(label="model", choices=self._model_choices)
        self._model_file = FileEdit(label="model file", mode="r", filter="*.safetensors")
        self._model_info = Label(value="")
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._channel_axis = ComboBox(label="channels", choices=self._channel_choices)
        self._tile = SpinBox(label="tile size (0 = auto)", min=0, max=4096, value=0)
        self._tta = CheckBox(text="test-time augmentation (8x slower)", value=False)
        self._threshold = FloatSpinBox(
            label="cell threshold", min=0.01, max=0.95, step=0.05, value=0.5
        )
        self._probabilities = CheckBox(text="also add probabilities", value=False)
        self._diameter = LineEdit(label="object diameter (px)", value="")
        self._diameter.native.setPlaceholderText("auto")
        self._diameter.tooltip = (
            "Typical cell diameter in this image, in pixels: the image is rescaled to the "
            "model's training size. Empty: the model's default (estimated when the model "
            "records its object size); 'none': no rescaling. Measure fills it in from a line "
            "drawn across a cell or from painted cells."
        )
        self._measure = PushButton(text="Measure")
        self._measure.tooltip = (
            "Measure the diameter on the selected layer: a Shapes layer with lines drawn "
            "across cells, or a Labels layer with painted cells."
        )
        diameter_row = Container(
            widgets=[self._diameter, self._measure],
            layout="horizontal",
            labels=False,
            label="object diameter (px)",
        )
        diameter_row.margins = (0, 0, 0, 0)
        self._link = CheckBox(text=link_text(()), value=False)
        self._link.tooltip = (
            "One id per cell through the stack, by overlap between neighbouring planes "
            "(linking.link_planes). Leave it off when the leading axis is time."
        )
        # The GPUs are listed once PyTorch is imported (_on_ready); the CPU is always there.
        self._device = ComboBox(label="device", choices=["auto", "cpu"])
        self._run = PushButton(text="Predict")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self._status = Label(value="")
        buttons = Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False)
        self.set_content(
            [
                self._model,
                self._model_file,
                self._model_info,
                self._image,
                self._channel_axis,
                self._tile,
                self._tta,
                self._threshold,
                self._probabilities,
                diameter_row,
                self._link,
                self._device,
            ]
        )
        self.set_footer([buttons, self._progress, self._status])
        self._progress.native.setFormat("")
        self._model.changed.connect(self._on_model_changed)
        self._model_file.changed.connect(self._on_model_changed)
        self._image.changed.connect(self._on_image_changed)
        self._run.changed.connect(self.start)
        self._measure.changed.connect(self.measure_diameter)
        self._cancel.changed.connect(self.cancel)
        self._session.models_changed.connect(self._on_session_models)
        on_layer_list_change(viewer, self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self._watcher = watch_close(self.native, self.cancel, self._on_destroyed)
        self._on_model_changed()
        self._on_image_changed()
        when_ready("predict", self._on_ready, self.native)

    def _on_ready(self) -> None:
        """PyTorch is imported: list the devices and read the chosen model file."""
        if not self._alive:
            return
        from ..devices import available_devices

        self._ready = True
        value = self._device.value
        self._device.choices = ["auto", *available_devices()]
        if value in self._device.choices:
            self._device.value = value
        self._on_model_changed()
        self._on_image_changed()

    # -- choices -------------------------------------------------------------------------------

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from ..pretrained import list_pretrained, pretrained_path

        # Models trained in this session first (the newest is the default),
        # then the bundled ones: with nothing trained yet, `nuclei` is the default.
        trained = [
            (f"{m.name} (this session{m.note and ', '}{m.note})", m.path)
            for m in self._session.models
        ]
        names = sorted(list_pretrained(), key=lambda name: name != "nuclei")
        bundled = [(f"{name} (bundled)", pretrained_path(name)) for name in names]
        return [*trained, *bundled, ("model file below", _FROM_FILE)]

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return layers_of(self._viewer, Image)

    def _channel_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        image = self._image.value if hasattr(self, "_image") else None
        path = self.model_path() if hasattr(self, "_model_file") else None
        if not getattr(self, "_ready", False):
            path = None  # reading the model file imports PyTorch: after the warm-up
        return model_channel_choices(image, None if path is None else _model_channels(path))

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._alive:
            self.reset_choices()

    def _on_session_models(self) -> None:
        if not self._alive:
            return
        self._model.reset_choices()
        newest = self._session.models[0] if self._session.models else None
        # A run the user stopped early is listed, not chosen: the current choice stays.
        if newest is not None and newest.finished:
            self._model.value = newest.path

    def _on_destroyed(self) -> None:
        # vars(): the garbage collector may already have cleared this object's attributes.
        self._alive = False
        worker = vars(self).get("worker")
        if worker is not None:
            worker.quit()

    def model_path(self) -> Path | None:
        """The chosen model file, or None."""
        if self._model.value == _FROM_FILE:
            path = Path(self._model_file.value)
            return path if path.is_file() else None
        return Path(self._model.value)

    def _on_model_changed(self, *_: Any) -> None:
        self._model_file.visible = self._model.value == _FROM_FILE
        path = self.model_path()
        if path is None:
            self._model_info.value = ""
        elif not self._ready:
            self._model_info.value = "reading the model ..."
        else:
            meta, error = _read_model_metadata(path)
            self._model_info.value = (
                f"cannot read: {error}" if meta is None else describe_model(meta)
            )
            self._model_info.tooltip = "" if meta is None else technical_details(meta)
            if meta is not None:
                from ..pretrained import recommended_threshold

                self._threshold.value = recommended_threshold(meta)
                # e.g. em-membranes: TTA chosen on its validation slices
                self._tta.value = bool((meta.get("postprocessing") or {}).get("tta", False))
        self._suggest_channel_axis()

    def _on_image_changed(self, *_: Any) -> None:
        self._channel_axis.reset_choices()
        self._suggest_channel_axis()
        image = self._image.value
        shape: tuple[int, ...] = ()
        if image is not None:
            axis = resolve_channel_axis(image, self._channel_axis.value)
            shape = spatial_shape(image, axis)
        spatial = len(shape)
        # On for a (Z, Y, X) stack; a (T, Y, X) series: the user turns it off.
        self._link.value = spatial == 3
        self._link.enabled = spatial == 3
        self._link.text = link_text(shape)

    def _on_layer_removed(self, event: Any) -> None:
        """The image being predicted was removed: stop, and add nothing later."""
        image = self._job.get("image")
        if self._alive and self.worker is not None and image is not None and event.value == image:
            self.cancel()
            self._job["removed"] = True

    def _suggest_channel_axis(self) -> None:
        """Offer (and choose) only the channel options that fit the chosen model."""
        self._channel_axis.reset_choices()
        choices = self._channel_axis.choices
        if choices and self._channel_axis.value not in choices:
            self._channel_axis.value = choices[0]

    def measure_diameter(self) -> float | None:
        """Fill the diameter field from the selected Shapes (lines) or Labels (cells) layer."""
        try:
            value, source = measure_diameter(
                self._viewer.layers.selection.active, self._image.value
            )
        except ValueError as err:
            show_error(f"Predict: {err}")
            return None
        self._diameter.value = f"{value:.1f}"
        self._status.value = f"object diameter {value:.1f} px, measured on {source}"
        return value

    # -- running -------------------------------------------------------------------------------

    def start(self) -> Any:
        """Validate the inputs and start prediction in a worker thread.

        Returns
        -------
        worker : GeneratorWorker or None
            None if the inputs were invalid (an error notification says why), or
            for a Dask/Zarr-backed image: then a lazy Labels layer is added at
            once and no worker runs (see ``_add_lazy``).
        """
        if self.worker is not None:
            show_info("Predict: already running; cancel it first.")
            return None
        path = self.model_path()
        image = self._image.value
        if path is None:
            show_error("Predict: choose a model file (or train one in the Train widget).")
            return None
        if image is None:
            show_error("Predict: choose an image layer.")
            return None
        data = image.data[0] if image.multiscale else image.data
        choice = self._channel_axis.value
        axis = resolve_channel_axis(image, choice)
        channels = _model_channels(path)
        have = 1 if axis is None else int(data.shape[axis])
        colour = None
        if getattr(image, "rgb", False) and choice == GREY:
            colour, have = GREY, 1
        elif getattr(image, "rgb", False) and channels == 3 and have == 4:
            colour, have = RGB, 3  # alpha dropped
        if channels is None:
            show_error(f"Predict: {elide(path.name)} is not a napari-unet model file.")
            return None
        if channels != have:
            show_error(
                f"Predict: the model expects {channels} channel(s), '{elide(image.name)}' has "
                f"{have} with channels = {self._channel_axis.native.currentText()}; choose the "
                "channel axis (or a model trained on such images)."
            )
            return None
        diameter = parse_diameter(self._diameter.value)
        if isinstance(diameter, ValueError):
            show_error(f"Predict: {diameter}")
            return None
        if len(spatial_shape(image, axis)) < 2:
            show_error(f"Predict: '{image.name}' needs at least two spatial axes (Y, X).")
            return None
        self._job = {
            "image": image,
            "axis": axis,
            "probabilities": self._probabilities.value,
            "model": path,
            "colour": colour,
            "info": {},
        }
        if _is_lazy(data):
            if colour is not None:
                data, _ = colour_for_model(data, colour, channels)
                axis = None if colour == GREY else axis
            self._add_lazy(path, image, data, axis)
            return None
        worker = thread_worker(
            layer_job,
            start_thread=False,
            # Our "errored" handler reports the error (see _report_error) and stops
            # superqt from re-raising it in the event loop.
            connect={"errored": self._on_errored},
        )(
            path,
            data,
            name=image.name,
            colour=colour,
            channels=channels,
            channel_axis=axis,
            tile=self._tile.value or None,
            tta=self._tta.value,
            threshold=float(self._threshold.value),
            device=self._device.value,
            keep_probabilities=self._probabilities.value,
            link=bool(self._link.value and self._link.enabled),
            diameter=diameter,
            info=self._job["info"],
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._started = time.perf_counter()
        self._set_running(True)
        self._status.value = "loading the model ..."
        if colour == GREY:
            show_info(f"Predict: '{elide(image.name)}' is converted to grey for this model.")
        worker.start()
        return worker

    def _add_lazy(self, path: Path, image: Image, data: Any, axis: int | None) -> None:
        """Add a lazy Labels layer for a Dask/Zarr-backed image: nothing is computed here.

        napari computes the planes the user looks at (one dask chunk per
        plane, see :func:`~napari_unet.segment.segment_dask`, which also
        documents the id scheme: plane ``i`` has ids ``i * 2**16 + 1 ...``).
        Probabilities are not added for lazy images: a second lazy layer would
        run the network a second time for every plane shown.
        """
        from ..segment import SegmentConfig, lazy_linker, segment_dask

        try:
            config = SegmentConfig(
                tile=self._tile.value or None,
                tta=self._tta.value,
                threshold=float(self._threshold.value),
                device=self._device.value,
                link_planes=bool(self._link.value and self._link.enabled),
            )
            leading = tuple(n for i, n in enumerate(data.shape) if i != axis)[:-2]
            linker = lazy_linker(leading, config)
            labels = segment_dask(path, data, channel_axis=axis, config=config, linker=linker)
        except (OSError, ValueError) as err:
            show_error(f"Predict: {err}")
            return
        transform = spatial_transform(image, resolve_channel_axis(image, self._channel_axis.value))
        layer = self._viewer.add_labels(
            labels,
            name=unique_name(self._viewer, result_name(image.name)),
            # Linked planes: napari's chunk cache would keep ids from before a link; the
            # linker keeps the planes, so a redraw never predicts again.
            cache=linker is None,
            **transform,
        )
        note = ""
        if linker is not None:
            # Linked as neighbouring planes are computed (segment.PlaneLinker).
            watch_linker(self._viewer, layer, linker, self.native)
            note = "; Z planes linked as their neighbours are computed"
        if self._probabilities.value:
            note += " (probabilities are not added for lazy images)"
        set_progress(self._progress, 0)
        self._status.value = f"lazy: planes are computed as you browse -> '{layer.name}'{note}"

    def cancel(self) -> None:
        """Stop prediction at the next batch of tiles; no layer is added."""
        if self.worker is not None:
            self._status.value = "cancelling ..."
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running
        self._cancel.enabled = running

    def _on_progress(self, event: Progress) -> None:
        if not self._alive:
            return
        if event.stage == "predict":
            fraction = _NETWORK_SHARE * event.done / max(event.total, 1)
            plane = event.info.get("plane")
            where = (
                f"plane {plane + 1}/{event.info['planes']}, "
                if plane is not None and event.info.get("planes", 1) > 1
                else ""
            )
            text = f"{where}tile batch {event.done}/{event.total}"
        elif event.stage == "labels":
            fraction = _NETWORK_SHARE + (1 - _NETWORK_SHARE) * event.done / max(event.total, 1)
            text = f"labelling cells: plane {event.done}/{event.total}"
        else:
            fraction, text = 0.0, f"{event.stage} ..."
        elapsed = time.perf_counter() - self._started
        if fraction > 0.02:
            text += f" · ETA {format_seconds(elapsed * (1 - fraction) / fraction)}"
        set_progress(self._progress, int(1000 * fraction))
        self._status.value = text

    def _on_returned(self, result: tuple[np.ndarray, np.ndarray | None]) -> None:
        if not self._alive:
            return
        labels, probs = result
        image = self._job["image"]
        if image not in self._viewer.layers:
            self._status.value = f"'{elide(image.name)}' was removed; no layer was added"
            return
        transform = spatial_transform(image, self._job["axis"])
        n = int(labels.max(initial=0))
        # napari runs a full gc.collect() when a layer is added: 0.6 s after a first
        # prediction (the modules and objects it created); frozen objects are skipped.
        freeze_heap()
        layer = self._viewer.add_labels(
            labels, name=unique_name(self._viewer, result_name(image.name)), **transform
        )
        if probs is not None:
            names = ["cell", "border"][: probs.shape[0] - 1]
            for k, name in enumerate(names, start=1):
                self._viewer.add_image(
                    probs[k],
                    name=unique_name(self._viewer, result_name(image.name, f"{name} probability")),
                    colormap="magma" if name == "cell" else "cyan",
                    contrast_limits=(0.0, 1.0),
                    blending="additive",
                    visible=name == "cell",
                    **transform,
                )
        # A progress bar repaints at once when its value changes: the report waits for the next
        # event-loop turn, so that this turn only adds the layers (two short stalls, not one).
        self._job["report"] = (n, layer.name, time.perf_counter() - self._started)
        QTimer.singleShot(0, self._report_result)

    def _report_result(self) -> None:
        """The run's last step after its layers were added: progress, status, then idle."""
        report = self._job.pop("report", None)
        if report is not None and self._alive:
            self._show_report(*report)
        if self._job.pop("finished", False):
            self._end_run()

    def _show_report(self, n: int, name: str, seconds: float) -> None:
        set_progress(self._progress, 1000)
        grey = " (converted to grey)" if self._job.get("colour") == GREY else ""
        info = self._job.get("info") or {}
        if info.get("estimated") and info.get("diameter"):
            grey += f", objects ~{float(info['diameter']):.0f} px (estimated)"
            # Shown in the empty field too, so it can be kept or corrected for the next run.
            self._diameter.native.setPlaceholderText(f"auto (last: {info['diameter']:.0f} px)")
        if info.get("backend"):  # the engine that ran (what "auto" chose)
            grey += f" [{info['backend']} {info['precision']}]"
        self._status.value = (
            f"{n} cells found{grey} in {format_seconds(seconds)} -> '{elide(name)}'"
        )

    def _on_aborted(self) -> None:
        if self._alive:
            image = self._job.get("image")
            self._status.value = (
                f"'{elide(image.name)}' was removed from the viewer; prediction cancelled"
                if self._job.get("removed") and image is not None
                else "cancelled; no layer was added"
            )
            set_progress(self._progress, 0)

    def _on_errored(self, err: Exception) -> None:
        if isinstance(err, (ValueError, OSError)):
            # A problem with the input: the message says what to do; no traceback.
            show_error(f"Predict: {err}")
        else:
            report_error(err)
        if self._alive:
            self._status.value = f"failed: {err}"

    def _on_finished(self) -> None:
        if "report" in self._job:
            self._job["finished"] = True  # the run ends once its result is reported
            return
        self._end_run()

    def _end_run(self) -> None:
        self.worker = None
        if self._alive:
            self._set_running(False)


def _is_lazy(data: Any) -> bool:
    """A Dask or Zarr array: predicted lazily, plane by plane, never loaded whole."""
    if isinstance(data, np.ndarray):
        return False
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask comes with napari
        da = None
    if da is not None and isinstance(data, da.Array):
        return True
    return type(data).__module__.split(".")[0] == "zarr"


def _model_channels(path: Path) -> int | None:
    from ..io import ModelFileError, read_metadata

    try:
        meta = read_metadata(path)
    except (OSError, ModelFileError):
        return None
    return int(meta.get("in_channels") or meta["arguments"].get("in_channels") or 1)


def _read_model_metadata(path: Path) -> tuple[dict | None, str]:
    """The model file's metadata and no error, or None and what went wrong."""
    from ..io import ModelFileError, read_metadata

    try:
        return read_metadata(path), ""
    except (OSError, ModelFileError) as err:
        return None, str(err)

"""The "Weight map" dock widget: a live preview of the U-Net loss weights while painting."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ._layers import (
    add_in_background,
    current_plane,
    layer_spacing,
    layers_of,
    on_layer_list_change,
    unique_name,
)
from ._session import session_for
from ._ui import ScrollDock
from ._warmup import freeze_heap, warm_up_soon

if TYPE_CHECKING:
    import napari

__all__ = ["WeightMapWidget"]

#: Pause after the last edit before recomputing: painting stays fluid, and the
#: preview follows within a third of a second.
DEBOUNCE_MS = 300


class WeightMapWidget(ScrollDock):
    """Preview w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / 2 sigma^2) for a labels layer.

    The map is recomputed (debounced) whenever the labels change or the
    viewer moves to another plane; for stacks only the plane on screen is
    computed. The settings are shared with the Train widget.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        warm_up_soon("annotate", self.native)  # SciPy, for the first preview
        # napari's full gc.collect() on every added layer then skips the objects alive
        # now (the imported libraries): the preview layers appear faster (see _warmup).
        freeze_heap()
        self._viewer = viewer
        self._session = session_for(viewer)
        self._alive = True
        self._watched: Labels | None = None
        self._weights_layer: Image | None = None
        self._borders_layer: Image | None = None
        self._hid_borders = False
        #: Milliseconds the last update took (weight map + borders + layer update).
        self.last_ms = float("nan")
        self.updates = 0
        #: The running preview worker (None when idle); tests wait on it.
        self.worker: Any = None
        self._generation = 0
        self._pending = False

        weights = self._session.weights
        # Nothing is chosen (and computed) until the user picks a layer.
        self._labels = ComboBox(
            label="cell labels", choices=self._labels_choices, nullable=True, value=None
        )
        self._w0 = FloatSpinBox(label="w0 (border weight)", min=0.0, max=100.0, step=1.0)
        self._w0.value = weights.w0
        self._sigma = FloatSpinBox(label="σ (border width, px)", min=0.5, max=50.0, step=0.5)
        self._sigma.value = weights.sigma
        self._balance = ComboBox(
            label="class balance",
            choices=[("balanced (inverse frequency)", "balanced"), ("none", None)],
            value=weights.class_weights,
        )
        self._show_borders = CheckBox(text="show separating borders", value=True)
        self._live = CheckBox(text="update while painting", value=True)
        # A 3D U-Net's weights are 3D (distances in voxel spacing): a volume, not a plane.
        self._volume = CheckBox(text="whole volume in 3D (as a 3D U-Net learns)", value=False)
        self._update = PushButton(text="Update now")
        self._info = Label(value="Choose a labels layer with painted cells.")
        self.set_content(
            [
                self._labels,
                self._w0,
                self._sigma,
                self._balance,
                self._show_borders,
                self._live,
                self._volume,
                self._update,
                self._info,
            ]
        )

        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_preview)

        self._labels.changed.connect(self._on_labels_changed)
        for widget in (self._w0, self._sigma, self._balance):
            widget.changed.connect(self._on_settings_changed)
        self._show_borders.changed.connect(self.schedule)
        self._volume.changed.connect(self.schedule)
        self._update.changed.connect(self.update_preview)
        viewer.dims.events.current_step.connect(self._on_step)
        on_layer_list_change(viewer, self._on_layers_changed)
        self.native.destroyed.connect(self._on_destroyed)
        self._on_labels_changed()

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return layers_of(self._viewer, Labels)

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._alive:
            self.reset_choices()

    def _on_destroyed(self, *_: Any) -> None:
        self._alive = False
        # vars(): the garbage collector may already have cleared this object's attributes.
        if vars(self).get("_watched") is not None:
            self._watch(None)

    def _watch(self, layer: Labels | None) -> None:
        """Follow edits of ``layer`` (and stop following the previous one)."""
        if self._watched is not None:
            for event in (self._watched.events.data, self._watched.events.paint):
                event.disconnect(self._on_edit)
        self._watched = layer
        if layer is not None:
            layer.events.data.connect(self._on_edit)
            layer.events.paint.connect(self._on_edit)

    def _on_labels_changed(self, *_: Any) -> None:
        if not self._alive:
            return
        self._watch(self._labels.value)
        self._volume.visible = self._labels.value is not None and self._labels.value.ndim == 3
        self.schedule()

    def _on_settings_changed(self, *_: Any) -> None:
        balance = self._balance.value
        self._session.set_weights(float(self._w0.value), float(self._sigma.value), balance)
        self.schedule()

    def _on_edit(self, event: Any = None) -> None:
        if self._alive and self._live.value:
            self._generation += 1  # a computation running now is out of date: drop its result
            self.schedule()

    def _on_step(self, event: Any = None) -> None:
        layer = self._labels.value
        if self._alive and layer is not None and layer.ndim > 2 and not self._in_3d(layer):
            self.schedule()

    def _in_3d(self, layer: Labels) -> bool:
        return bool(self._volume.value) and layer.ndim == 3

    def schedule(self, *_: Any) -> None:
        """Recompute after :data:`DEBOUNCE_MS` without further edits."""
        if self._alive:
            self._timer.start()

    def update_preview(self, *, block: bool = False) -> Any:
        """Compute the weight map of the plane on screen and show it as an Image layer.

        The computation runs in a worker thread (a 2048 x 2048 plane with
        9,000 cells takes seconds); only the layer update runs on the GUI
        thread. A request while a computation runs is queued, and the result
        of a computation that was overtaken by an edit is dropped.

        Parameters
        ----------
        block : bool
            Compute on the calling thread and show the result before
            returning (scripts, the demo).

        Returns
        -------
        worker : FunctionWorker or None
            The worker started now (None when blocking, queued or idle).
        """
        if not self._alive:
            return None
        layer = self._labels.value
        if layer is None:
            return None
        self._generation += 1
        if self.worker is not None and not block:
            self._pending = True  # started again, with fresh data, when this one returns
            return None
        # Read (copied) in the worker, not here: a paint stroke during the copy bumps the
        # generation (_on_edit), so a torn read is never shown: its result is dropped.
        volume = self._in_3d(layer)
        plane = () if volume else current_plane(self._viewer, layer)
        data = layer.data
        request = {
            "layer": layer,
            "plane": plane,
            "generation": self._generation,
            "start": time.perf_counter(),
        }
        settings = {
            "w0": float(self._w0.value),
            "sigma": float(self._sigma.value),
            "class_weights": self._balance.value,
            "borders": bool(self._show_borders.value),
            "spacing": layer_spacing(layer) if volume else None,
        }
        if block:
            try:
                self._on_computed(request, _compute(data, plane, **settings), defer=False)
            except ValueError as err:
                self._on_error(err)
            return None
        from napari.qt import thread_worker

        worker = thread_worker(_compute, start_thread=False, connect={"errored": self._on_error})(
            data, plane, **settings
        )
        worker.returned.connect(lambda result: self._on_computed(request, result))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._info.value = "computing the weight map ..."
        worker.start()
        return worker

    def _on_finished(self) -> None:
        self.worker = None
        if self._alive and self._pending:
            self._pending = False
            self.update_preview()

    def _on_error(self, err: BaseException) -> None:
        if self._alive:
            show_error(f"Weight map: {err}")
            self._info.value = f"failed: {err}"

    def _on_computed(
        self, request: dict[str, Any], result: dict[str, Any], *, defer: bool = True
    ) -> None:
        """Show a computed preview, unless it is stale."""
        layer = request["layer"]
        if (
            not self._alive
            or request["generation"] != self._generation
            or layer != self._labels.value
            or layer not in self._viewer.layers
        ):
            return  # stale: the labels were edited (or another layer chosen) meanwhile
        weights, borders = result["weights"], result["borders"]
        n = weights.ndim  # 3 for a whole volume, else the plane's 2
        transform = {"scale": tuple(layer.scale)[-n:], "translate": tuple(layer.translate)[-n:]}
        top = result["top"]
        freeze_heap()  # napari's gc.collect() on adding a layer then skips what exists now
        self._weights_layer = self._show(
            self._weights_layer,
            weights,
            f"{layer.name} weight map",
            colormap="inferno",
            contrast_limits=(0.0, max(top, 1e-6)),
            opacity=0.8,
            **transform,
        )
        adding = self._borders_layer is None or self._borders_layer not in self._viewer.layers
        if borders is not None and adding and defer:
            # Adding a 2048 x 2048 layer costs napari most of a second on 2 cores (layer
            # controls, visual): the second layer waits for the next event-loop turn, so the
            # GUI stalls for one layer at a time.
            QTimer.singleShot(0, lambda: self._finish(request, result, transform))
            return
        self._finish(request, result, transform)

    def _finish(
        self, request: dict[str, Any], result: dict[str, Any], transform: dict[str, Any]
    ) -> None:
        layer = request["layer"]
        if not self._alive or layer not in self._viewer.layers:
            return
        self._update_borders_layer(layer, result["borders"], transform)
        self._report(request, result)

    def _update_borders_layer(
        self, layer: Labels, borders: np.ndarray | None, transform: dict[str, Any]
    ) -> None:
        if borders is not None:
            if self._borders_layer is not None and self._hid_borders:
                self._borders_layer.visible = True  # shown again after we hid it
            self._hid_borders = False
            self._borders_layer = self._show(
                self._borders_layer,
                borders,
                f"{layer.name} separating borders",
                colormap="cyan",
                contrast_limits=(0, 1),
                blending="additive",
                **transform,
            )
        elif self._borders_layer is not None and self._borders_layer in self._viewer.layers:
            self._borders_layer.visible = False
            self._hid_borders = True

    def _report(self, request: dict[str, Any], result: dict[str, Any]) -> None:
        top = result["top"]
        self.last_ms = 1000 * (time.perf_counter() - request["start"])
        self.updates += 1
        plane = request["plane"]
        where = f"plane {', '.join(map(str, plane))}, " if plane else ""
        if result.get("planes") is not None:
            where = f"whole volume (3D; the {result['planes']} planes with labels), "
        self._info.value = (
            f"{where}{result['n_cells']} cells, w(x) from {result['bottom']:.2f} to {top:.2f} "
            f"({self.last_ms:.0f} ms)"
        )

    def _show(self, existing: Image | None, data: np.ndarray, name: str, **kwargs: Any) -> Image:
        """Update our preview layer in place, or add a new one (never someone else's)."""
        if existing is not None and existing in self._viewer.layers:
            existing.data = data
            # Each assignment refreshes the layer: only what changed.
            for key in ("scale", "translate", "contrast_limits"):
                if tuple(getattr(existing, key)) != tuple(kwargs[key]):
                    setattr(existing, key, kwargs[key])
            if not existing.name.startswith(name):
                # Another labels layer was chosen: the preview follows, under its name.
                existing.name = unique_name(self._viewer, name)
            return existing
        # The user's labels layer stays the active one (they paint on it).
        return add_in_background(
            self._viewer,
            lambda: self._viewer.add_image(data, name=unique_name(self._viewer, name), **kwargs),
        )


def _compute(
    data: Any,
    plane: tuple[int, ...],
    *,
    w0: float,
    sigma: float,
    class_weights: str | None,
    borders: bool,
    spacing: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """The worker's part: read the plane, then weight map, borders and the dock's numbers."""
    from ..weights import separation_borders, weight_map  # SciPy: here, not with the dock

    labels = np.array(data[plane] if plane else data)
    mask = None
    if spacing is not None:
        # As the Train dock's 3D default: the planes with labels are annotated, the rest
        # unknown (weight 0, and not counted in the class balance).
        mask = np.zeros(labels.shape, bool)
        mask[labels.any(axis=(1, 2))] = True
    weights = weight_map(
        labels, w0=w0, sigma=sigma, class_weights=class_weights, spacing=spacing, mask=mask
    )
    return {
        "weights": weights,
        "borders": separation_borders(labels).astype(np.uint8) if borders else None,
        "top": float(weights.max()) if weights.size else 1.0,
        "bottom": float(weights.min()) if weights.size else 0.0,
        "n_cells": int(np.count_nonzero(np.unique(labels))),
        "planes": None if mask is None else int(mask.any(axis=(1, 2)).sum()),
    }

"""The "Annotate cells" dock widget: paint cells, mark finished regions, build a training set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info, show_warning

from ._layers import (
    channel_axis_choices,
    current_plane,
    elide,
    layers_of,
    on_layer_list_change,
    rectangles_for,
    resolve_channel_axis,
    spatial_shape,
    spatial_transform,
    unique_name,
)
from ._session import TrainingEntry, session_for
from ._ui import ScrollDock, heading
from ._warmup import warm_up_soon

if TYPE_CHECKING:
    import napari

__all__ = ["IMAGE_KEY", "AnnotateWidget", "labels_name", "made_for"]

#: Key in a labels layer's metadata naming the image layer it annotates.
IMAGE_KEY = "napari_unet_image"

#: Key that gives the selected labels layer a fresh cell id (napari's own "M" does too,
#: but complains when the current id is unused; "N" simply moves on).
NEW_CELL_KEY = "n"


class AnnotateWidget(ScrollDock):
    """Paint cell instances on an image and collect them into the training set.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are annotated; its session's training set is
        shared with the Train widget.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        warm_up_soon("annotate", self.native)  # SciPy, for the tidy-up tools and the training set
        self._viewer = viewer
        self._session = session_for(viewer)
        self._alive = True
        self._auto_layers: set[int] = set()
        #: The running "Add to training set" worker (None when idle); tests wait on it.
        self.worker: Any = None
        #: id(labels layer) -> edits seen while a collection ran (see start_adding).
        self._edits: dict[int, int] = {}
        #: id(labels layer) -> its largest cell id, for "new cell id after every stroke".
        self._top_ids: dict[int, int] = {}

        self._image = ComboBox(label="image", choices=self._image_choices)
        self._channel_axis = ComboBox(label="channels", choices=self._channel_choices)
        self._labels = ComboBox(
            label="cell labels", choices=self._labels_choices, nullable=True, value=None
        )
        self._pair_info = Label(value="")
        self._confirm = PushButton(text="Use these labels with this image")
        #: (image name, labels name) pairs the user confirmed although the labels were
        #: made for another image (or no known one).
        self._confirmed: set[tuple[str, str]] = set()
        self._new_labels = PushButton(text="New cell labels layer")
        self._brush = SpinBox(label="brush size", min=1, max=200, value=5)
        self._auto_new_id = CheckBox(text="new cell id after every stroke", value=False)
        self._hint = Label(
            value=f"Paint one cell, press <b>{NEW_CELL_KEY.upper()}</b> for the next id."
        )
        self._regions = ComboBox(
            label="finished regions", choices=self._regions_choices, nullable=True
        )
        self._new_regions = PushButton(text="New region layer (draw rectangles)")
        self._min_size = SpinBox(label="min fragment (px)", min=0, max=100000, value=10)
        self._current_only = CheckBox(text="current plane only", value=False)
        self._fill = PushButton(text="Fill holes")
        self._fragments = PushButton(text="Remove fragments")
        self._relabel = PushButton(text="Relabel 1..N")
        self._add = PushButton(text="Add to training set")
        self._entries = Select(label="training set", choices=self._entry_choices)
        self._remove = PushButton(text="Remove selected")
        self._clear = PushButton(text="Clear")
        self._summary = Label(value="")

        tidy = Container(
            widgets=[self._fill, self._fragments, self._relabel], layout="horizontal", labels=False
        )
        edit = Container(widgets=[self._remove, self._clear], layout="horizontal", labels=False)
        self.set_content(
            [
                heading("1. Image and cell labels"),
                self._image,
                self._channel_axis,
                self._labels,
                self._pair_info,
                self._confirm,
                self._new_labels,
                self._brush,
                self._auto_new_id,
                self._hint,
                heading("2. Where annotation is complete (optional)"),
                self._regions,
                self._new_regions,
                heading("3. Tidy up"),
                self._min_size,
                self._current_only,
                tidy,
                heading("4. Training set"),
                self._add,
                self._entries,
                edit,
                self._summary,
            ]
        )
        self._entries.native.setMinimumHeight(80)
        self._entries.native.setMaximumHeight(160)
        self._image.changed.connect(self._on_image_changed)
        self._labels.changed.connect(self._on_labels_changed)
        self._channel_axis.changed.connect(self._on_channels_changed)
        self._confirm.changed.connect(self.confirm_pair)
        self._brush.changed.connect(self._on_brush_changed)
        self._new_labels.changed.connect(self.create_labels_layer)
        self._new_regions.changed.connect(self.create_regions_layer)
        self._fill.changed.connect(lambda: self.tidy("fill"))
        self._fragments.changed.connect(lambda: self.tidy("fragments"))
        self._relabel.changed.connect(lambda: self.tidy("relabel"))
        self._add.changed.connect(self.start_adding)
        self._remove.changed.connect(self._remove_selected)
        self._clear.changed.connect(self._session.training_set.clear)
        self._session.training_set.changed.connect(self._refresh_entries)
        on_layer_list_change(viewer, self._on_layers_changed)
        self.native.destroyed.connect(self._on_destroyed)
        self._on_image_changed()
        self._refresh_entries()

    # -- choices -------------------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return layers_of(self._viewer, Image)

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """Labels layers of the chosen image's size (those made for it first)."""
        image = self._image.value if hasattr(self, "_image") else None
        if image is None:
            return layers_of(self._viewer, Labels)
        shape = self._spatial_shape(image)
        fitting = [
            (name, layer)
            for name, layer in layers_of(self._viewer, Labels)
            if tuple(layer.data.shape) == shape
        ]
        return sorted(fitting, key=lambda choice: not made_for(choice[1], image))

    def _spatial_shape(self, image: Image) -> tuple[int, ...]:
        axis = self._channel_axis.value if hasattr(self, "_channel_axis") else None
        return spatial_shape(image, resolve_channel_axis(image, axis))

    def _regions_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return layers_of(self._viewer, Shapes)

    def _channel_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return channel_axis_choices(self._image.value if hasattr(self, "_image") else None)

    def _entry_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        return [
            (f"{i + 1}. {entry.describe()}", i)
            for i, entry in enumerate(self._session.training_set)
        ]

    def _on_layers_changed(self, event: Any = None) -> None:
        if self._alive:
            self.reset_choices()
            self._on_channels_changed()

    def _on_destroyed(self, *_: Any) -> None:
        self._alive = False

    def _on_image_changed(self, *_: Any) -> None:
        self._channel_axis.reset_choices()
        self._on_channels_changed()
        image = self._image.value
        stack = image is not None and len(self._spatial_shape(image)) == 3
        # A cell of a volume keeps its id through the planes (one object for a 3D U-Net).
        self._hint.value = (
            f"Paint one cell, press <b>{NEW_CELL_KEY.upper()}</b> for the next id."
            + (
                " A cell keeps its id through the planes: on the next plane, pick it (<b>L</b>, "
                "click the cell) and paint on (<b>P</b>)."
                if stack
                else ""
            )
        )

    def _on_channels_changed(self, *_: Any) -> None:
        """Offer the labels made for the image; never keep another image's labels silently."""
        if not self._alive:
            return
        self._labels.reset_choices()
        image, labels = self._image.value, self._labels.value
        if image is not None and (labels is None or not self.is_paired(image, labels)):
            own = [layer for _, layer in self._labels_choices() if made_for(layer, image)]
            self._labels.value = own[0] if own else None
        self._update_pair_info()

    def is_paired(self, image: Image, labels: Labels) -> bool:
        """Whether ``labels`` annotates ``image``: made for it, or confirmed by the user."""
        return made_for(labels, image) or (image.name, labels.name) in self._confirmed

    def confirm_pair(self) -> None:
        """Use the chosen labels layer with the chosen image although it was made for another."""
        image, labels = self._image.value, self._labels.value
        if image is not None and labels is not None:
            self._confirmed.add((image.name, labels.name))
        self._update_pair_info()

    def _update_pair_info(self) -> None:
        image, labels = self._image.value, self._labels.value
        unconfirmed = (
            image is not None and labels is not None and not self.is_paired(image, labels)
        )
        self._confirm.visible = unconfirmed
        if image is None:
            text = ""
        elif labels is None:
            text = (
                f"No cell labels made for '{elide(image.name)}' yet: press <b>New cell labels "
                "layer</b> (or choose a labels layer of the same size and confirm it)."
            )
        elif unconfirmed:
            owner = labels.metadata.get(IMAGE_KEY)
            made = f"made for '{elide(owner)}'" if owner else "not made for this image"
            text = (
                f"'{elide(labels.name)}' is {made}. Confirm that it annotates "
                f"'{elide(image.name)}':"
            )
        else:
            text = ""
        self._pair_info.value = text
        self._pair_info.visible = bool(text)

    def _on_labels_changed(self, *_: Any) -> None:
        layer = self._labels.value
        if layer is not None:
            self._prepare_labels_layer(layer, set_mode=False)
        self._update_pair_info()

    def _on_brush_changed(self, value: int) -> None:
        layer = self._labels.value
        if layer is not None:
            layer.brush_size = value

    # -- actions -------------------------------------------------------------------------------

    def create_labels_layer(self) -> Labels | None:
        """Add an empty instance Labels layer matching the chosen image ("<image> cells")."""
        image = self._image.value
        if image is None:
            show_error("Annotate cells: open an image first (File > Open, or a sample).")
            return None
        axis = resolve_channel_axis(image, self._channel_axis.value)
        shape = spatial_shape(image, axis)
        data = np.zeros(shape, dtype=np.int32)
        layer = self._viewer.add_labels(
            data,
            name=unique_name(self._viewer, labels_name(image.name)),
            metadata={IMAGE_KEY: image.name},
            **spatial_transform(image, axis),
        )
        # A brush of about 1/64 of the image side suits cells of a few tens of pixels.
        self._brush.value = int(np.clip(min(shape[-2:]) // 64, 3, 20))
        self._labels.value = layer
        self._prepare_labels_layer(layer, set_mode=True)
        return layer

    def _prepare_labels_layer(self, layer: Labels, *, set_mode: bool) -> None:
        """Paint mode, brush size, the new-cell key and the auto-new-id hook."""
        # SciPy (through annotation) is imported on first use, not with the dock: see _warmup.
        if set_mode:
            from .. import annotation

            layer.mode = "paint"
            layer.selected_label = annotation.next_label(layer.data)
            self._viewer.layers.selection.active = layer
        layer.brush_size = self._brush.value

        def new_cell(target: Labels) -> None:
            from .. import annotation

            target.selected_label = annotation.next_label(target.data)

        layer.bind_key(NEW_CELL_KEY, new_cell, overwrite=True)
        if id(layer) not in self._auto_layers:
            self._auto_layers.add(id(layer))
            layer.events.paint.connect(self._on_paint)
            layer.events.data.connect(self._forget_top_id)

    def _forget_top_id(self, event: Any) -> None:
        self._top_ids.pop(id(event.source), None)  # the data was replaced: measure it again

    def _on_paint(self, event: Any) -> None:
        from .. import annotation

        if not self._alive or not self._auto_new_id.value:
            return
        layer = event.source
        if layer.mode == "erase":
            return
        # One stroke = one cell: move on to an id that is not used yet. The largest id is
        # measured once per layer (a pass over a whole stack per stroke stalled the GUI),
        # then raised by each stroke's id; replacing the data measures it again.
        painted = int(layer.selected_label)
        top = self._top_ids.get(id(layer))
        top = max(int(np.max(layer.data)) if top is None else top, painted)
        self._top_ids[id(layer)] = top
        layer.selected_label = max(painted + 1, 1)
        if layer.selected_label <= top:
            layer.selected_label = annotation.next_label(layer.data)

    def create_regions_layer(self) -> Shapes | None:
        """Add a Shapes layer for rectangles that mark fully annotated regions."""
        labels = self._labels.value or self._image.value
        if labels is None:
            show_error("Annotate cells: choose an image or a labels layer first.")
            return None
        base = (self._image.value or labels).name
        layer = self._viewer.add_shapes(
            name=unique_name(self._viewer, f"{base} finished regions"),
            ndim=labels.ndim,  # napari's ndim leaves out an RGB colour axis
            face_color="transparent",
            edge_color="yellow",
            edge_width=2,
            scale=labels.scale,
            translate=labels.translate,
        )
        layer.mode = "add_rectangle"
        self._regions.value = layer
        show_info(
            "Draw rectangles around regions where every cell is painted; the rest of the "
            "image is ignored in training."
        )
        return layer

    def tidy(self, action: str) -> None:
        """Apply a tidy-up action ("fill", "fragments" or "relabel") to the labels layer."""
        from .. import annotation

        layer = self._labels.value
        if layer is None:
            show_error("Annotate cells: choose a cell labels layer to tidy up.")
            return
        data = np.asarray(layer.data)
        functions = {
            "fill": annotation.fill_holes,
            "fragments": lambda a: annotation.remove_small_fragments(
                a, min_size=self._min_size.value
            ),
            "relabel": annotation.relabel,
        }
        if self._current_only.value and data.ndim > 2:
            plane = current_plane(self._viewer, layer)
            out = data.copy()
            result = functions[action](data[plane])
            if action == "relabel":
                # Keep ids unique in the stack: renumber above the other planes' ids.
                others = data.copy()
                others[plane] = 0
                result = np.where(result > 0, result + int(others.max()), 0)
            out[plane] = result
        else:
            out = functions[action](data)
        layer.data = out.astype(data.dtype, copy=False)

    def add_to_training_set(self) -> int:
        """Copy the annotated planes of the chosen layers into the training set.

        Runs on the calling thread (scripts, tests); the dock's button does the
        same with the planes collected in a worker (:meth:`start_adding`).

        Returns
        -------
        added : int
            Planes added or replaced (0 if nothing was annotated).
        """
        request = self._training_request()
        if request is None:
            return 0
        try:
            found = _collect(request)
        except ValueError as err:
            show_error(f"Annotate cells: {err}")
            return 0
        return self._add_found(request, found)

    def start_adding(self) -> Any:
        """The button: :meth:`add_to_training_set` with the planes collected in a worker.

        Collecting copies and counts the cells of every annotated plane (about
        0.1 s for a 2048 x 2048 plane with 9,000 cells). The button is disabled
        meanwhile; a paint stroke on the labels during the collection makes it
        start again (napari paints into the array being copied).

        Returns
        -------
        worker : FunctionWorker or None
            The worker started (None when the choices are not valid or one runs).
        """
        if self.worker is not None:
            return None
        request = self._training_request()
        return None if request is None else self._collect_in_worker(request)

    def _collect_in_worker(self, request: dict[str, Any]) -> Any:
        from napari.qt import thread_worker

        labels = request["labels"]
        request["edits"] = self._edits.get(id(labels), 0)
        request["again"] = False
        for event in (labels.events.paint, labels.events.data):
            event.connect(self._on_labels_edited)
        # connect= errored: else the error is re-raised on the GUI thread (a traceback).
        worker = thread_worker(
            _collect, start_thread=False, connect={"errored": self._on_collect_error}
        )(request)
        worker.returned.connect(lambda found: self._on_collected(request, found))
        worker.finished.connect(lambda: self._on_collect_finished(request))
        self.worker = worker
        self._add.enabled = False
        self._add.text = "Adding to the training set ..."
        worker.start()
        return worker

    def _on_labels_edited(self, event: Any) -> None:
        layer = event.source
        self._edits[id(layer)] = self._edits.get(id(layer), 0) + 1

    def _on_collected(self, request: dict[str, Any], found: list[Any]) -> None:
        labels = request["labels"]
        if not self._alive or labels not in self._viewer.layers:
            return  # closed, or the labels layer removed meanwhile: add nothing
        if self._edits.get(id(labels), 0) != request["edits"]:
            request["again"] = True  # painted during the copy: collect again
            return
        self._add_found(request, found)

    def _on_collect_error(self, err: BaseException) -> None:
        if self._alive:
            show_error(f"Annotate cells: {err}")

    def _on_collect_finished(self, request: dict[str, Any]) -> None:
        labels = request["labels"]
        for event in (labels.events.paint, labels.events.data):
            event.disconnect(self._on_labels_edited)
        self.worker = None
        if not self._alive:
            return
        self._add.enabled = True
        self._add.text = "Add to training set"
        if request["again"] and request["labels"] in self._viewer.layers:
            self._collect_in_worker(request)  # the layers chosen at the click, not current ones

    def _training_request(self) -> dict[str, Any] | None:
        """The chosen layers, checked, and what to collect from them (None: error shown)."""
        from .. import annotation

        image, labels = self._image.value, self._labels.value
        if image is None or labels is None:
            show_error("Annotate cells: choose both an image and its cell labels layer.")
            return None
        axis = resolve_channel_axis(image, self._channel_axis.value)
        shape = spatial_shape(image, axis)
        if tuple(labels.data.shape) != shape:
            show_error(
                f"Annotate cells: '{elide(labels.name)}' has shape {tuple(labels.data.shape)}, "
                f"but '{elide(image.name)}' without its channel axis has shape {shape}. Choose "
                "the matching layers (or the right channel axis)."
            )
            return None
        if not self.is_paired(image, labels):
            show_error(
                f"Annotate cells: '{elide(labels.name)}' was not made for "
                f"'{elide(image.name)}'. Choose its own labels, or press 'Use these labels "
                "with this image' if they do belong together."
            )
            return None
        mask = None
        regions = self._regions.value
        if regions is not None and len(regions.data):
            mask = annotation.rectangles_to_mask(rectangles_for(regions, labels), shape)
        elif regions is not None:
            show_warning(
                f"'{regions.name}' has no rectangles: the whole image counts as annotated."
            )
        planes = None
        if self._current_only.value and len(shape) > 2:
            planes = [current_plane(self._viewer, labels)]
        return {"image": image, "labels": labels, "axis": axis, "mask": mask, "planes": planes}

    def _add_found(self, request: dict[str, Any], found: list[Any]) -> int:
        """Add the collected planes to the training set; the number added or replaced."""
        image, labels = request["image"], request["labels"]
        if not found:
            where = "inside the finished regions" if request["mask"] is not None else "yet"
            show_error(
                f"Annotate cells: no annotated plane in '{labels.name}' {where}: paint at "
                "least one cell (or draw a finished region)."
            )
            return 0
        entries = [
            TrainingEntry(image.name, labels.name, p.index, p.image, p.labels, p.mask, p.n_cells)
            for p in found
        ]
        existing = {e.channels for e in self._session.training_set}
        if existing and existing != {entries[0].channels}:
            show_error(
                f"Annotate cells: '{image.name}' has {entries[0].channels} channel(s), the "
                f"training set has {existing.pop()}; one model needs one channel count."
            )
            return 0
        added, replaced = self._session.training_set.add(entries)
        # Short: a napari toast shows one line.
        updated = f", {replaced} updated" if replaced else ""
        show_info(
            f"Training set: +{added} plane(s){updated}, {sum(e.n_cells for e in entries)} cells"
        )
        return added + replaced

    def _remove_selected(self) -> None:
        positions = list(self._entries.value or [])
        if positions:
            self._session.training_set.remove(positions)

    def _refresh_entries(self) -> None:
        if not self._alive:
            return
        self._entries.reset_choices()
        self._summary.value = f"Training set: {self._session.training_set.summary()}"


def _collect(request: dict[str, Any]) -> list[Any]:
    """The planes to add (copies): the worker's part of "Add to training set"."""
    from .. import annotation

    return annotation.collect_planes(
        request["image"].data,
        request["labels"].data,
        request["mask"],
        channel_axis=request["axis"],
        planes=request["planes"],
    )


def made_for(labels: Labels, image: Image) -> bool:
    """Whether ``labels`` was made for ``image``.

    Layers made here record their image in their metadata; others (a ground
    truth opened with the image) count when named after it, as
    "<image> ground truth" or "<image> cells".
    """
    owner = labels.metadata.get(IMAGE_KEY)
    if owner is not None:
        return owner == image.name
    return labels.name == image.name or labels.name.startswith(f"{image.name} ")


def labels_name(image_name: str) -> str:
    """ "<image> cells", or "<image> labels" when the image's name already says cells."""
    words = image_name.lower().split()
    if words and words[-1] in ("cell", "cells", "nuclei", "nucleus"):
        return f"{image_name} labels"
    return f"{image_name} cells"

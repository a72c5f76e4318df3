"""The Train dock with 3D training: a 3D U-Net on a volume's image and labels layers.

:class:`TrainVolumeWidget` is the Train dock (:class:`~.train.TrainWidget`)
with one more section. With "train a 3D U-Net on a volume" ticked, Start
trains a 3D U-Net (``spatial_dims=3``) on the chosen (Z, Y, X) image and
labels layers instead of the annotated planes of the training set: voxel
spacing from the image layer's scale (shown and editable; the in-plane pixel
is 1, as the weight map's sigma is in pixels), and partial annotation: only
the planes with labels, the box around the labels, or a mask layer's voxels
count as annotated, and the loss ignores every other voxel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Label, LineEdit
from napari.layers import Image, Labels
from napari.utils.notifications import show_error

from ._layers import elide, layer_spacing, layers_of, on_layer_list_change
from ._ui import heading
from .train import TrainWidget

if TYPE_CHECKING:
    import napari

__all__ = ["TrainVolumeWidget", "VolumeSet", "annotated_mask"]

#: Volumes larger than this are summarised at Start only (counting cells takes seconds).
SUMMARY_VOXELS = 2**24

#: What counts as annotated in the labels layer (the rest is left out of the loss).
ANNOTATED = [
    ("the planes with labels", "planes"),
    ("the box around the labels", "box"),
    ("every voxel", "all"),
    ("a mask layer's non-zero voxels", "layer"),
]


def annotated_mask(
    labels: np.ndarray, how: str, layer: np.ndarray | None = None
) -> np.ndarray | None:
    """The voxels of a (Z, Y, X) labels volume that are annotated (None: all of them).

    Parameters
    ----------
    labels : ndarray of int, shape (Z, Y, X)
    how : {"planes", "box", "all", "layer"}
        ``"planes"``: every plane with a label is complete (its 0s are
        background), the others unknown. ``"box"``: the bounding box of the
        labels, widened by one voxel, is complete. ``"all"``: the whole
        volume. ``"layer"``: the non-zero voxels of ``layer``.
    layer : ndarray, shape (Z, Y, X), optional
        For ``"layer"``.
    """
    if how == "all":
        return None
    if how == "layer":
        if layer is None or np.shape(layer) != labels.shape:
            raise ValueError(
                f"the mask layer must have the labels' shape {labels.shape}, "
                f"got {None if layer is None else np.shape(layer)}"
            )
        return np.asarray(layer) != 0
    mask = np.zeros(labels.shape, bool)
    if how == "planes":
        mask[labels.any(axis=(1, 2))] = True
        return mask
    found = np.argwhere(labels > 0)
    if len(found):
        low = np.maximum(found.min(axis=0) - 1, 0)
        high = found.max(axis=0) + 2
        mask[tuple(slice(a, b) for a, b in zip(low, high, strict=True))] = True
    return mask


@dataclass
class _Plane:
    """One annotated plane of the volume: what the Train dock records as provenance."""

    labels: np.ndarray
    mask: np.ndarray | None
    text: str

    def describe(self) -> str:
        return self.text


class VolumeSet:
    """One annotated volume, shaped like the session's training set for the Train dock.

    Iterating gives its annotated planes (provenance and the object size,
    measured in the plane); :meth:`samples` gives the volume itself.
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, name: str):
        self.image, self.labels, self.mask, self.name = image, labels, mask, name

    def samples(self) -> list[dict[str, Any]]:
        return [{"image": self.image, "labels": self.labels, "mask": self.mask}]

    def __iter__(self) -> Any:
        for z in range(self.labels.shape[0]):
            mask = None if self.mask is None else self.mask[z]
            if (mask is None or mask.any()) and self.labels[z].any():
                yield _Plane(self.labels[z], mask, f"{self.name} plane {z} (3D)")

    @property
    def n_cells(self) -> int:
        inside = self.labels if self.mask is None else self.labels[self.mask]
        return len(np.unique(inside[inside > 0]))

    def summary(self) -> str:
        annotated = self.labels.size if self.mask is None else int(self.mask.sum())
        share = 100 * annotated / max(self.labels.size, 1)
        return (
            f"volume {'x'.join(map(str, self.labels.shape))}: {self.n_cells} cells, "
            f"{share:.0f} % of the voxels annotated"
        )


class TrainVolumeWidget(TrainWidget):
    """The Train dock, also training 3D U-Nets on a volume's image and labels layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer  # the layer choices below read it
        self._volume_on = CheckBox(text="train a 3D U-Net on a volume", value=False)
        self._volume_image = ComboBox(label="volume image", choices=self._image_choices)
        self._volume_labels = ComboBox(label="volume labels", choices=self._labels_choices)
        self._spacing = LineEdit(label="voxel spacing Z, Y, X", value="1, 1, 1")
        self._spacing.tooltip = (
            "Voxel size per axis, the in-plane pixel being 1 (from the image layer's scale). "
            "The 3D U-Net pools only in the plane while Z is coarser; the weight map's "
            "distances are measured in these units."
        )
        self._annotated = ComboBox(label="annotated", choices=ANNOTATED, value="planes")
        self._mask_layer = ComboBox(label="mask layer", choices=self._labels_choices)
        self._volume_info = Label(value="")
        super().__init__(viewer)
        on_layer_list_change(viewer, self._on_volume_layers)
        for widget in (self._volume_on, self._volume_labels, self._annotated, self._mask_layer):
            widget.changed.connect(self._update_volume)
        self._volume_image.changed.connect(self._on_volume_image)
        self._on_volume_image()

    def set_content(self, widgets: Any) -> None:
        """The dock's sections, with the volume section after the training set."""
        widgets = list(widgets)
        at = widgets.index(self._val_percent) + 1
        widgets[at:at] = [
            heading("Volume (3D U-Net)"),
            self._volume_on,
            self._volume_image,
            self._volume_labels,
            self._spacing,
            self._annotated,
            self._mask_layer,
            self._volume_info,
        ]
        super().set_content(widgets)

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(n, layer) for n, layer in layers_of(self._viewer, Image) if layer.ndim == 3]

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(n, layer) for n, layer in layers_of(self._viewer, Labels) if layer.ndim == 3]

    def _on_volume_layers(self, *_: Any) -> None:
        if self._alive:
            for widget in (self._volume_image, self._volume_labels, self._mask_layer):
                widget.reset_choices()
            self._update_volume()

    def _on_volume_image(self, *_: Any) -> None:
        layer = self._volume_image.value
        if layer is not None:
            self._spacing.value = ", ".join(f"{v:g}" for v in layer_spacing(layer))
        self._update_volume()

    def _update_volume(self, *_: Any) -> None:
        if not self._alive:
            return
        on = bool(self._volume_on.value)
        for widget in (self._volume_image, self._volume_labels, self._spacing, self._annotated):
            widget.visible = on
        self._mask_layer.visible = on and self._annotated.value == "layer"
        self._volume_info.visible = on
        # Planes' settings that a volume does not use: one volume, 3D tiles chosen by the engine.
        for widget in (self._val_percent, self._estimate, self._tile):
            widget.visible = not on
        if on:
            volume = self._volume_set(quiet=True)
            if isinstance(volume, VolumeSet):
                self._volume_info.value = volume.summary()
            else:
                ready = volume.startswith("ready")
                self._volume_info.value = volume if ready else f"not ready: {volume}"
        self._update_set_info()
        self._update_tile_info()

    def _update_set_info(self) -> None:
        if getattr(self, "_volume_on", None) is not None and self._volume_on.value:
            if self._alive:
                self._set_info.value = "training on the volume below (3D U-Net)"
            return
        super()._update_set_info()

    def _update_tile_info(self, *_: Any) -> None:
        if getattr(self, "_volume_on", None) is not None and self._volume_on.value:
            if self._alive:
                self._tile_info.value = "3D tiles: automatic (about 64 output voxels per axis)"
            return
        super()._update_tile_info()

    def volume_spacing(self) -> tuple[float, float, float] | str:
        """The spacing field as three positive numbers, or what is wrong with it."""
        try:
            values = tuple(float(v) for v in self._spacing.value.replace(",", " ").split())
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) <= 0:
            return f"voxel spacing {self._spacing.value!r}: give three positive numbers Z, Y, X"
        return values  # type: ignore[return-value]

    def _volume_set(self, quiet: bool = False) -> VolumeSet | str:
        """The chosen layers as a :class:`VolumeSet`, or what is missing."""
        image, labels = self._volume_image.value, self._volume_labels.value
        if image is None or labels is None:
            return "choose a 3D image layer and a 3D labels layer"
        if tuple(image.data.shape) != tuple(labels.data.shape):
            return (
                f"'{elide(image.name)}' {tuple(image.data.shape)} and '{elide(labels.name)}' "
                f"{tuple(labels.data.shape)} differ in shape"
            )
        if quiet and np.prod(labels.data.shape) > SUMMARY_VOXELS:
            return f"ready ({'x'.join(map(str, labels.data.shape))}; cells counted at Start)"
        if quiet:  # the summary only: no copies on every change
            ids = np.asarray(labels.data)
            mask_data = None if self._mask_layer.value is None else self._mask_layer.value.data
        else:
            ids = np.array(labels.data, dtype=np.int64)  # the user may paint on while training
            mask_data = (
                None if self._mask_layer.value is None else np.array(self._mask_layer.value.data)
            )
        try:
            mask = annotated_mask(ids, self._annotated.value, mask_data)
        except ValueError as err:
            return str(err)
        # The image as it is (a Dask or Zarr array is read by the training worker, not here).
        return VolumeSet(image.data, ids, mask, image.name)

    def start(self) -> Any:
        """Train on the volume when its section is ticked, else on the training set."""
        if not self._volume_on.value:
            return super().start()
        if self.worker is not None:
            return super().start()  # says it is already running
        volume, spacing = self._volume_set(), self.volume_spacing()
        for problem in (volume, spacing):
            if isinstance(problem, str):
                show_error(f"Train (3D): {problem}")
                return None
        if volume.n_cells == 0:
            show_error("Train (3D): no cells in the annotated part of the labels; paint some.")
            return None
        if self._finetune.value:
            show_error(
                "Train (3D): fine-tuning is for the training set's planes here; untick it, or "
                "fine-tune a 3D model with napari-unet train --dims 3."
            )
            return None
        if "spatial_dims" not in _arguments(self._arch.value):
            show_error(f"Train (3D): {self._arch.value} has no 3D form; choose U-Net.")
            return None
        config = self._train_config(self._border_class.value, 0.0)
        if config is None:
            return None
        config = replace(config, tile_shape=None)  # the engine picks 3D tiles
        model = {
            "architecture": self._arch.value,
            "in_channels": 1,
            "num_classes": config.num_classes,
            "depth": int(self._depth.value),
            "base_channels": int(self._base.value),
            "padding": self._padding.value,
            "spatial_dims": 3,
            "spacing": spacing,
        }
        return self._launch(volume, model, config)


def _arguments(name: str) -> set[str]:
    """The constructor arguments of an architecture (by its name in the dock)."""
    import inspect

    from ._choices import architectures

    cls = architectures().get(name)
    return set(inspect.signature(cls).parameters) if cls is not None else set()

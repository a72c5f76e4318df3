"""Set up a viewer for trying every widget at once (``napari-unet demo``, screenshots)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QApplication

from .._sample_data import make_cells_2d, make_cells_3d

__all__ = ["WIDGETS", "setup_demo"]

PLUGIN = "napari-unet-cells"
#: The dock widgets, by their display names in the manifest.
WIDGETS = ("Annotate cells", "Weight map", "Train", "Predict")


def setup_demo(viewer: Any, *, stack: bool = True, tabify: bool = True) -> dict[str, Any]:
    """Open the synthetic samples and dock the four widgets, ready to train.

    The 2D sample's ground truth is already in the training set and its
    weight map is shown; the Train widget gets a small network (depth 3, 16
    base channels, Adam, 300 iterations) that trains in a minute or two on a
    laptop CPU.

    Parameters
    ----------
    viewer : napari.Viewer
    stack : bool, optional
        Also open the 3D sample (to try Predict on a stack).
    tabify : bool, optional
        One "U-Net" dock with the four steps as tabs (else four docks).

    Returns
    -------
    widgets : dict
        Display name -> widget.
    """
    layers = make_cells_2d() + (make_cells_3d() if stack else [])
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widgets = {}
    if tabify:
        # One "U-Net" dock with a tab per step (fits a 1366 x 768 screen).
        _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net")
        widgets = dict(zip(WIDGETS, dock.widgets.values(), strict=True))
        dock.show_tab("Annotate")
    else:
        for name in WIDGETS:
            _, widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    QApplication.processEvents()
    annotate, weights, train, predict = (widgets[name] for name in WIDGETS)
    image = viewer.layers["synthetic cells"]
    truth = viewer.layers["synthetic cells ground truth"]
    annotate._image.value = image
    annotate._labels.value = truth
    annotate.add_to_training_set()
    weights._labels.value = truth
    weights.update_preview(block=True)
    # The CPU preset: depth 3, 16 base channels, 124 px tiles, Adam, 300 iterations.
    train._preset.value = "cpu"
    if stack:
        predict._image.value = viewer.layers["synthetic cell stack"]
    # Show the image and the annotation; the weight map is one click away.
    for layer in viewer.layers:
        layer.visible = layer.name in ("synthetic cells", "synthetic cells ground truth")
    viewer.layers.selection.active = truth
    viewer.dims.ndisplay = 2
    viewer.reset_view()
    return widgets

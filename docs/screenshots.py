"""Render the README screenshots of the four widgets in a real napari window.

Run under a display (or Xvfb, with QT_QPA_PLATFORM unset; the screen must be
larger than the 1400 x 1000 window)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python docs/screenshots.py

It opens the demo (synthetic cells), then for each widget brings its tab to
the front, does what a user would (paint, preview, train, predict) and saves
``viewer.screenshot(canvas_only=False)``: widget_annotate.png,
widget_weight_map.png, widget_train.png (mid-training, with the loss curve),
widget_predict.png and demo.png. Takes about two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = (1400, 1000)


def _wait(condition: Callable[[], bool], timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("gave up waiting")
        QApplication.processEvents()
        time.sleep(0.02)


def _settle(seconds: float = 0.5) -> None:
    """Let debounced updates and repaints happen."""
    end = time.perf_counter() + seconds
    _wait(lambda: time.perf_counter() > end)


def _shoot(viewer, path: Path) -> None:
    _settle()
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def _front(widget) -> None:
    """Bring a step's tab (in the U-Net dock) to the front."""
    from qtpy.QtWidgets import QTabWidget

    page, parent = widget.native, widget.native.parentWidget()
    while parent is not None and not isinstance(parent, QTabWidget):
        parent = parent.parentWidget()
    if parent is not None:
        parent.setCurrentWidget(page)
    _settle(0.2)


def screen_sizes(out: Path, iterations: int = 30) -> None:
    """The U-Net dock on a laptop (1366 x 768) and a desktop (1920 x 1080) screen.

    Writes ``dock_<W>x<H>_train.png`` (mid-training, with the loss curve) and
    ``dock_<W>x<H>_predict.png`` (after predicting the 2D sample).
    """
    import napari

    from napari_unet._widgets._demo import setup_demo

    out.mkdir(parents=True, exist_ok=True)
    for size in ((1366, 768), (1920, 1080)):
        viewer = napari.Viewer(title="napari-unet")
        viewer.window._qt_window.resize(*size)
        widgets = setup_demo(viewer, stack=False)
        train, predict = widgets["Train"], widgets["Predict"]
        _front(train)
        train._iterations.value = 100_000
        train._out_dir.value = Path(tempfile.mkdtemp(prefix="napari-unet-shots-"))
        train._device.value = "cpu"
        train.start()
        _wait(lambda train=train: len(train._losses) >= iterations)
        _shoot(viewer, out / f"dock_{size[0]}x{size[1]}_train.png")
        train.stop()
        _wait(lambda train=train: train.worker is None)
        _front(predict)
        predict._image.value = viewer.layers["synthetic cells"]
        predict.start()
        _wait(lambda predict=predict: predict.worker is None)
        _show_only(viewer, ("synthetic cells", "synthetic cells (predicted)"))
        _shoot(viewer, out / f"dock_{size[0]}x{size[1]}_predict.png")
        viewer.close()


def _show_only(viewer, names: tuple[str, ...]) -> None:
    for layer in viewer.layers:
        layer.visible = layer.name in names


def main(out: Path, iterations: int) -> None:
    from napari.settings import get_settings

    # No notification toasts over the canvas in the pictures. napari saves its settings,
    # so the user's level is restored afterwards.
    settings = get_settings().application
    previous = settings.gui_notification_level
    settings.gui_notification_level = "error"
    try:
        _render(out, iterations)
    finally:
        settings.gui_notification_level = previous


def _render(out: Path, iterations: int) -> None:
    import napari

    from napari_unet._widgets._demo import setup_demo

    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-unet")
    viewer.window.resize(*SIZE)
    widgets = setup_demo(viewer, stack=True)
    _shoot_annotate(viewer, widgets, out)
    _shoot_weight_map(viewer, widgets, out)
    _shoot_train(viewer, widgets, out, iterations)
    _shoot_predict(viewer, widgets, out)
    viewer.close()
    _shoot_demo(out)


def _shoot_annotate(viewer, widgets: dict, out: Path) -> None:
    """1. Annotate: a new labels layer with a few painted cells and a finished region."""
    annotate = widgets["Annotate cells"]
    _front(annotate)
    annotate._image.value = viewer.layers["synthetic cells"]
    painted = annotate.create_labels_layer()
    truth = viewer.layers["synthetic cells ground truth"].data
    # Copy a corner of the ground truth, as if painted by hand.
    painted.data[:110, :120] = truth[:110, :120]
    painted.refresh()
    regions = annotate.create_regions_layer()
    regions.add_rectangles(np.array([[0, 0], [0, 119], [109, 119], [109, 0]]))
    regions.mode = "pan_zoom"
    annotate.add_to_training_set()
    _show_only(viewer, ("synthetic cells", painted.name, regions.name))
    viewer.layers.selection.active = painted
    viewer.reset_view()
    _shoot(viewer, out / "widget_annotate.png")


def _shoot_weight_map(viewer, widgets: dict, out: Path) -> None:
    """2. Weight map of the ground truth."""
    weights = widgets["Weight map"]
    _front(weights)
    weights._labels.value = viewer.layers["synthetic cells ground truth"]
    weights.update_preview(block=True)
    _show_only(
        viewer,
        (
            "synthetic cells ground truth weight map",
            "synthetic cells ground truth separating borders",
        ),
    )
    viewer.layers.selection.active = viewer.layers["synthetic cells ground truth weight map"]
    _shoot(viewer, out / "widget_weight_map.png")


def _shoot_train(viewer, widgets: dict, out: Path, iterations: int) -> None:
    """3. Train: the 2D ground truth plus the stack's planes, 20% held out for validation."""
    annotate, train = widgets["Annotate cells"], widgets["Train"]
    _front(train)
    annotate._image.value = viewer.layers["synthetic cell stack"]
    annotate._labels.value = viewer.layers["synthetic cell stack ground truth"]
    annotate._regions.value = None
    annotate.add_to_training_set()
    train._val_percent.value = 20
    train._iterations.value = iterations
    train._out_dir.value = Path(tempfile.mkdtemp(prefix="napari-unet-shots-"))
    train._device.value = "cpu"
    _show_only(viewer, ("synthetic cells", "synthetic cells ground truth"))
    viewer.layers.selection.active = viewer.layers["synthetic cells ground truth"]
    train.start()
    _wait(lambda: len(train._losses) >= iterations // 2)
    _shoot(viewer, out / "widget_train.png")
    _wait(lambda: train.worker is None)
    print(train._status.value)


def _shoot_predict(viewer, widgets: dict, out: Path) -> None:
    """4. Predict the stack with the model just trained."""
    predict = widgets["Predict"]
    _front(predict)
    predict._image.value = viewer.layers["synthetic cell stack"]
    predict._probabilities.value = True
    predict.start()
    _wait(lambda: predict.worker is None)
    viewer.dims.set_current_step(0, 6)
    _show_only(viewer, ("synthetic cell stack", "synthetic cell stack cells (predicted)"))
    viewer.layers.selection.active = viewer.layers["synthetic cell stack cells (predicted)"]
    viewer.reset_view()
    # Fit the 160 px stack rather than the 256 px 2D sample that is also open.
    viewer.camera.center = (*viewer.camera.center[:-2], 80.0, 80.0)
    viewer.camera.zoom *= 256 / 170
    _shoot(viewer, out / "widget_predict.png")


def _shoot_demo(out: Path) -> None:
    """5. The whole demo as `napari-unet demo` opens it."""
    import napari

    from napari_unet._widgets._demo import setup_demo

    viewer = napari.Viewer(title="napari-unet demo")
    viewer.window.resize(*SIZE)
    setup_demo(viewer, stack=True)
    _settle(1.0)
    viewer.reset_view()
    _shoot(viewer, out / "demo.png")
    viewer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument(
        "--sizes", action="store_true", help="only the dock at 1366x768 and 1920x1080"
    )
    args = parser.parse_args()
    if args.sizes:
        screen_sizes(args.out)
    else:
        main(args.out, args.iterations)

"""How soon Stop and Cancel take effect, and how long a weight-map preview takes, in napari.

These were time bounds in tests/test_widgets.py (Stop < 2 s, Cancel < 2 s,
a 512 x 512 preview with 100+ cells < 250 ms), which failed CI on a busy
machine; they are reported here instead, each against a baseline measured in
the same run:

- Stop pressed -> training ended and the model saved; baseline: one training
  iteration of the same run (Stop takes effect after the current iteration).
- Cancel pressed -> prediction ended (12-plane stack, test-time augmentation,
  a tiny model); baseline: one plane of the same prediction run to the end.
- Weight map preview of a 512 x 512 labels layer with over 100 cells, as the
  widget reports it (``last_ms``: request to layers updated); baseline:
  ``weight_map`` and ``separation_borders`` alone.

Needs a display (``xvfb-run -a``); without one it reports nothing. The GUI's
stalls (how long the event loop cannot react) are in bench_gui.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import Row

PLUGIN = "napari-unet-cells"


def _wait(until, timeout: float = 600.0) -> None:
    """Process Qt events until ``until()`` holds."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + timeout
    while not until():
        if time.perf_counter() > end:
            raise TimeoutError("bench_stop_cancel: the widget did not finish")
        QApplication.processEvents()
        time.sleep(0.002)


def _stop_training(viewer, quick: bool) -> Row:
    from napari_unet._sample_data import make_cells_2d

    for data, kwargs, kind in make_cells_2d():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _, annotate = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate cells")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    annotate._image.value = viewer.layers["synthetic cells"]
    annotate._labels.value = viewer.layers["synthetic cells ground truth"]
    annotate.add_to_training_set()
    # The demo's CPU network: depth 3, 16 base channels, 124 px tiles.
    train._depth.value = 2 if quick else 3
    train._base.value = 8 if quick else 16
    train._tile.value = 124
    train._iterations.value = 1_000_000
    train._device.value = "cpu"
    train._out_dir.value = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    train.start()
    _wait(lambda: len(train._losses) >= 1)
    first = time.perf_counter()
    _wait(lambda: len(train._losses) >= (3 if quick else 10))
    pressed = time.perf_counter()
    train.stop()
    _wait(lambda: train.worker is None)
    stop_s = time.perf_counter() - pressed
    per_iteration = (pressed - first) / max(1, train.result.iterations - 1)
    return Row(
        name="Stop pressed -> training ended, model saved",
        baseline="one training iteration",
        baseline_value=1000 * per_iteration,
        ours_value=1000 * stop_s,
        unit="ms",
        ratio=per_iteration / stop_s,
        goal="< 2 s",
    )


def _cancel_prediction(viewer, quick: bool) -> Row:
    from napari_unet._modelfile import save_model
    from napari_unet._sample_data import make_cells_3d
    from napari_unet.models import UNet

    for data, kwargs, kind in make_cells_3d():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    model = Path(tempfile.mkdtemp(prefix="bench-cancel-")) / "tiny.safetensors"
    save_model(UNet(depth=1, base_channels=2, num_classes=3), model, metadata={})
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = model
    predict._image.value = viewer.layers["synthetic cell stack"]
    predict._device.value = "cpu"
    predict._tta.value = True
    planes = viewer.layers["synthetic cell stack"].data.shape[0]
    start = time.perf_counter()
    predict.start()
    _wait(lambda: predict.worker is None)
    per_plane = (time.perf_counter() - start) / planes
    predict.start()
    _wait(lambda: predict._progress.value > 0)
    pressed = time.perf_counter()
    predict.cancel()
    _wait(lambda: predict.worker is None)
    cancel_s = time.perf_counter() - pressed
    return Row(
        name=f"Cancel pressed -> prediction ended ({planes} planes, TTA)",
        baseline="one plane",
        baseline_value=1000 * per_plane,
        ours_value=1000 * cancel_s,
        unit="ms",
        ratio=per_plane / cancel_s,
        goal="< 2 s",
    )


def _weight_map_preview(viewer, quick: bool) -> Row:
    import numpy as np

    from napari_unet._sample_data import synthetic_cells
    from napari_unet.weights import separation_borders, weight_map

    _, labels = synthetic_cells((512, 512), radius=(16, 24), seed=1)
    layer = viewer.add_labels(labels, name="big")
    _, weights = viewer.window.add_plugin_dock_widget(PLUGIN, "Weight map")
    weights._labels.value = layer
    _wait(lambda: weights.updates >= 1 and weights.worker is None)
    repeat = 3 if quick else 10
    preview = []
    for _ in range(repeat):
        before = weights.updates
        weights.update_preview()
        _wait(lambda before=before: weights.updates > before and weights.worker is None)
        preview.append(weights.last_ms / 1000)
    start = time.perf_counter()
    for _ in range(repeat):
        weight_map(labels)
        separation_borders(labels)
    alone = (time.perf_counter() - start) / repeat
    ours = float(np.median(preview))
    return Row(
        name=f"weight-map preview 512x512, {int(labels.max())} cells",
        baseline="weight_map + borders alone",
        baseline_value=1000 * alone,
        ours_value=1000 * ours,
        unit="ms",
        ratio=alone / ours,
        goal="< 250 ms",
    )


def run(quick: bool = False) -> list[Row]:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        print("bench_stop_cancel: no display (run under xvfb-run -a); skipped", file=sys.stderr)
        return []
    import napari

    rows = []
    for scenario in (_stop_training, _cancel_prediction, _weight_map_preview):
        viewer = napari.Viewer(show=True)
        try:
            rows.append(scenario(viewer, quick))
        finally:
            viewer.close()
    return rows


if __name__ == "__main__":
    from _common import format_table

    print(format_table(run(quick="--quick" in sys.argv)))

"""What keeps the GUI thread free: imports, reads and pixel passes happen elsewhere.

The stalls themselves are measured in ``benchmarks/bench_gui.py`` (never timed
here); these tests check the behaviour that removed them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_unet._widgets._layers import add_in_background, compact_labels


def test_compact_labels_uses_uint16_only_when_every_id_fits():
    labels = np.array([[0, 1], [65535, 7]], np.uint32)
    small = compact_labels(labels)
    assert small.dtype == np.uint16
    np.testing.assert_array_equal(small, labels)
    wide = np.array([[0, 65536]], np.uint32)
    assert compact_labels(wide) is wide
    negative = np.array([[-1, 3]], np.int64)
    assert compact_labels(negative) is negative
    already = np.array([[1, 2]], np.uint8)
    assert compact_labels(already) is already
    assert compact_labels(np.zeros((0, 3), np.uint32)).dtype == np.uint32


# Run in a fresh interpreter: in the test process PyTorch is imported already.
_FRESH_DOCKS = textwrap.dedent(
    """
    import json, sys, threading, time

    main_thread_imports = []
    watching = []

    class Watch:
        def find_spec(self, name, path=None, target=None):
            on_main = threading.current_thread() is threading.main_thread()
            if watching and on_main and name in ("torch", "scipy"):
                main_thread_imports.append(name)
            return None

    sys.meta_path.insert(0, Watch())
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    watching.append(True)
    # The one dock with all four steps (Annotate, Weights, Train, Predict).
    _, dock = viewer.window.add_plugin_dock_widget("napari-unet-cells", "U-Net")
    predict, train = dock.widgets["Predict"], dock.widgets["Train"]
    out = {
        "main_thread_imports": main_thread_imports[:],
        "ready_at_once": [predict._ready, train._ready],
        "devices_before": list(predict._device.choices),
        "model_info_before": predict._model_info.value,
    }
    deadline = time.monotonic() + 240
    while not (predict._ready and train._ready) and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    from napari_unet._widgets import _warmup
    from napari_unet.devices import available_devices
    from vispy.visuals.line.dash_atlas import _make_pattern

    for thread in _warmup._started.values():
        thread.join(240)
    # Train checks the tile on the event-loop turn after it is ready.
    while train._tile_info.value.startswith("checking") and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)

    out.update(
        ready=[predict._ready, train._ready],
        devices_after=list(predict._device.choices),
        expected_devices=["auto", *available_devices()],
        train_devices=list(train._device.choices),
        model_info_after=predict._model_info.value,
        tile_info=train._tile_info.value,
        # No Labels layer yet: only the warm-up can have drawn napari's line patterns.
        dash_patterns=_make_pattern.cache_info().currsize,
    )
    viewer.close()
    print(json.dumps(out))
    """
)


@pytest.mark.gui
@pytest.mark.slow
def test_the_docks_open_without_importing_pytorch_or_scipy():
    pytest.importorskip("napari")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_DOCKS],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    out = json.loads(lines[-1])
    # Built at once; PyTorch and SciPy imported by the warm-up threads only.
    assert out["main_thread_imports"] == []
    assert out["ready_at_once"] == [False, False]
    assert out["devices_before"] == ["auto", "cpu"]
    assert out["model_info_before"] == "reading the model ..."
    # Filled in on the GUI thread once the warm-up is done.
    assert out["ready"] == [True, True]
    assert out["devices_after"] == out["expected_devices"]
    assert out["train_devices"] == out["expected_devices"]
    assert "nuclei" in out["model_info_after"] or "cells" in out["model_info_after"]
    assert out["tile_info"].startswith("valid tile 124 px")
    # The first result layer's one-off vispy work, done by the Predict warm-up.
    assert out["dash_patterns"] > 0


def test_add_in_background_keeps_the_active_layer_in_any_napari():
    """Without napari's insert switch the active layer is restored after the add."""

    class Selection:
        active = "labels"

    class Layers(list):
        selection = Selection()

    layers = Layers(["labels"])

    def add():
        layers.append("preview")
        layers.selection.active = "preview"  # what napari does with a new layer
        return "preview"

    viewer = type("Viewer", (), {"layers": layers})()
    assert add_in_background(viewer, add) == "preview"
    assert layers == ["labels", "preview"] and layers.selection.active == "labels"


@pytest.mark.gui
def test_weight_map_drops_a_preview_painted_over_in_place(make_napari_viewer, qtbot):
    """napari paints into the array itself: a stroke during the computation is not shown stale."""
    pytest.importorskip("napari")
    from napari_unet._sample_data import synthetic_cells
    from napari_unet.weights import weight_map

    viewer = make_napari_viewer()
    _, labels = synthetic_cells((96, 96), seed=3)
    layer = viewer.add_labels(labels.astype(np.int32), name="cells")
    _, weights = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Weight map")
    weights._labels.value = layer
    qtbot.waitUntil(lambda: weights.updates == 1, timeout=60_000)
    qtbot.waitUntil(lambda: weights.worker is None, timeout=60_000)
    # The preview layers are added behind: the user's labels layer stays the active one.
    assert "cells separating borders" in viewer.layers
    assert viewer.layers.selection.active is layer

    assert weights.update_preview() is not None  # reads the plane in the worker
    layer.paint((48, 48), 0)  # in place, while it runs (or just after)
    qtbot.waitUntil(lambda: weights.updates == 2, timeout=60_000)
    qtbot.waitUntil(lambda: weights.worker is None, timeout=60_000)
    qtbot.wait(400)
    assert weights.updates == 2
    assert layer.data[48, 48] == 0
    np.testing.assert_allclose(
        viewer.layers["cells weight map"].data, weight_map(np.asarray(layer.data)), rtol=1e-6
    )


@pytest.mark.gui
def test_add_to_training_set_button_collects_in_a_worker(make_napari_viewer, qtbot, monkeypatch):
    """The button collects the planes off the GUI thread; a stroke meanwhile collects again."""
    pytest.importorskip("napari")
    import threading

    from napari_unet import annotation

    shown: list[str] = []
    monkeypatch.setattr("napari_unet._widgets.annotate.show_error", shown.append)
    collect_planes = annotation.collect_planes
    release, threads = threading.Event(), []

    def held(*args, **kwargs):  # waits until the test lets it go, then does the real work
        threads.append(threading.current_thread())
        assert release.wait(60)
        return collect_planes(*args, **kwargs)

    monkeypatch.setattr(annotation, "collect_planes", held)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    first = viewer.add_image(rng.random((40, 40)).astype(np.float32), name="first")
    viewer.add_image(rng.random((40, 40)).astype(np.float32), name="second")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate cells")
    annotate._image.value = first
    labels = annotate.create_labels_layer()
    labels.data[5:15, 5:15] = 3

    annotate._add.native.click()  # what the user does
    assert annotate.worker is not None and not annotate._add.enabled
    annotate._add.native.click()  # a second click while it runs starts nothing more
    labels.paint((30, 30), 4)  # a stroke while the planes are copied
    annotate._image.value = viewer.layers["second"]  # the entry is what was chosen at the click
    release.set()
    qtbot.waitUntil(lambda: annotate.worker is None, timeout=60_000)
    assert len(threads) == 2 and threading.main_thread() not in threads
    assert annotate._add.enabled and shown == []
    (entry,) = list(annotate._session.training_set)
    assert (entry.image_name, entry.labels_name) == ("first", "first cells")
    np.testing.assert_array_equal(entry.labels, labels.data)  # with the stroke
    assert entry.n_cells == 2
    np.testing.assert_array_equal(entry.image, first.data)

    # An error is shown as the dock shows errors, and the button comes back.
    def failing(*args, **kwargs):
        raise ValueError("labels must be integer ids")

    monkeypatch.setattr(annotation, "collect_planes", failing)
    annotate._image.value = first
    annotate._add.native.click()
    qtbot.waitUntil(lambda: annotate.worker is None, timeout=60_000)
    assert shown == ["Annotate cells: labels must be integer ids"]
    assert annotate._add.enabled and len(annotate._session.training_set) == 1


@pytest.mark.gui
@pytest.mark.parametrize("queued", [True, False])
def test_set_progress_queues_the_repaint(qtbot, queued):
    from magicgui.widgets import ProgressBar
    from qtpy.QtCore import QEvent, QObject

    from napari_unet._widgets._ui import set_progress

    class Paints(QObject):
        count = 0

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint:
                self.count += 1
            return False

    bar = ProgressBar(value=0, min=0, max=1000)
    qtbot.addWidget(bar.native)
    bar.native.show()
    qtbot.waitExposed(bar.native)
    qtbot.wait(50)
    paints = Paints()
    bar.native.installEventFilter(paints)
    if queued:
        set_progress(bar, 700)
    else:
        bar.value = 700  # QProgressBar.setValue: painted before it returns
    assert bar.value == 700
    # A plain setValue paints before returning (in napari's window that drew the canvas too).
    assert (paints.count == 0) is queued
    qtbot.waitUntil(lambda: paints.count >= 1, timeout=2000)

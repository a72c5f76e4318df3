"""The napari widgets, driven as a user would, in a real viewer (run under xvfb-run).

Every test that starts a worker waits for it to finish before returning:
otherwise the process aborts after pytest has printed its summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._modelfile import load_model, save_model
from napari_unet._sample_data import make_cells_2d, make_cells_3d
from napari_unet._widgets._warmup import wait_until_ready
from napari_unet.models import UNet

pytestmark = pytest.mark.gui

PLUGIN = "napari-unet-cells"
WORKER_TIMEOUT_MS = 60_000


def _add_layers(viewer, layers):
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    # Predict and Train fill in what needs PyTorch after their background warm-up
    # (at once when this process has imported it already; tests/test_widgets_responsive.py).
    wait_until_ready(widget)
    return widget


def _wait_idle(qtbot, widget, timeout=WORKER_TIMEOUT_MS):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


@pytest.fixture
def errors(monkeypatch):
    """Messages the widgets show with napari's show_error."""
    shown: list[str] = []
    for module in ("annotate", "weight_map", "train", "predict"):
        monkeypatch.setattr(f"napari_unet._widgets.{module}.show_error", shown.append)
    return shown


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_model(UNet(depth=1, base_channels=2, num_classes=3), path, metadata={})
    return path


def _tiny_training(train, out: Path, iterations: int) -> None:
    train._depth.value = 1
    train._base.value = 4
    train._tile.value = 60
    train._iterations.value = iterations
    train._out_dir.value = out
    train._device.value = "cpu"


def test_all_widgets_open_from_the_manifest(make_napari_viewer):
    from napari_unet._widgets.annotate import AnnotateWidget
    from napari_unet._widgets.predict import PredictWidget
    from napari_unet._widgets.train import TrainWidget
    from napari_unet._widgets.weight_map import WeightMapWidget

    viewer = make_napari_viewer()
    expected = {
        "Annotate cells": AnnotateWidget,
        "Weight map": WeightMapWidget,
        "Train": TrainWidget,
        "Predict": PredictWidget,
    }
    widgets = {name: _dock(viewer, name) for name in expected}
    for name, cls in expected.items():
        assert isinstance(widgets[name], cls)
    # The four widgets of one viewer share one session.
    assert widgets["Train"]._session is widgets["Annotate cells"]._session
    other = make_napari_viewer()
    assert _dock(other, "Train")._session is not widgets["Train"]._session


def test_one_tabbed_dock_fits_a_1366x768_screen(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QApplication

    from napari_unet._widgets.dock import UNetDock

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net")
    assert isinstance(dock, UNetDock)
    # Only the tab on show is built; another one is built when it is first shown.
    assert list(dock.widgets.built) == ["Annotate"]
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="later")  # resets built steps only
    dock.tabs.setCurrentIndex(1)
    assert list(dock.widgets.built) == ["Annotate", "Weights"]
    weights = dock.widgets["Weights"]
    assert dock.tabs.widget(1).isAncestorOf(weights.native)
    assert [layer.name for layer in weights._labels.choices if layer] == ["later"]
    wait_until_ready(dock)  # builds the rest, as reading dock.widgets does
    assert list(dock.widgets.built) == ["Annotate", "Weights", "Train", "Predict"]
    tabs = dock.tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == [
        "Annotate",
        "Weights",
        "Train",
        "Predict",
    ]
    assert dock.widgets["Train"]._session is dock.widgets["Predict"]._session
    window = viewer.window._qt_window
    for title, button in (("Train", "_start"), ("Predict", "_run")):
        widget = dock.show_tab(title)
        QApplication.processEvents()
        native = getattr(widget, button).native
        # Start / Predict and the progress bar are in view without scrolling.
        for shown in (native, widget._progress.native):
            assert shown.isVisible() and shown.height() >= 10
            bottom = shown.mapTo(window, shown.rect().bottomLeft()).y()
            assert bottom <= window.height()
    train = dock.show_tab("Train")
    QApplication.processEvents()
    assert train.plot.isVisible() and train.plot.height() >= 140


def test_annotate_new_layer_defaults_and_naming(make_napari_viewer):
    from napari_unet._widgets.annotate import NEW_CELL_KEY

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 64, 80), np.uint16), name="stack", scale=(2, 1, 1))
    viewer.add_labels(np.zeros((2, 2), np.int32), name="stack cells")  # name already taken
    annotate = _dock(viewer, "Annotate cells")
    assert annotate._image.value.name == "stack"
    layer = annotate.create_labels_layer()
    assert layer.name == "stack cells (2)"
    assert viewer.layers["stack cells"].data.shape == (2, 2)  # the existing layer is untouched
    assert layer.data.shape == (3, 64, 80) and layer.data.dtype == np.int32
    np.testing.assert_array_equal(layer.scale, (2, 1, 1))
    assert layer.mode == "paint"
    assert layer.brush_size == annotate._brush.value
    assert layer.selected_label == 1
    # One key gives a fresh cell id.
    layer.data[0, :5, :5] = 1
    layer.data[1, :5, :5] = 4
    bindings = {str(key): action for key, action in layer.keymap.items()}
    bindings[NEW_CELL_KEY.upper()](layer)
    assert layer.selected_label == 5
    # Automatic mode: every stroke moves on to a new id.
    annotate._auto_new_id.value = True
    layer.paint((1, 30, 30), 5)
    assert layer.selected_label == 6
    layer.paint((1, 40, 40), 6)
    layer.paint((1, 50, 50), 7)
    assert layer.selected_label == 8
    # Painting an existing id again moves on to an unused one.
    layer.selected_label = 4
    layer.paint((2, 30, 30), 4)
    assert layer.selected_label == 8
    # Data replaced (a tidy-up, a script): the largest id is measured again.
    data = layer.data.copy()
    data[2, 60:, 70:] = 50
    layer.data = data
    layer.selected_label = 49
    layer.paint((0, 40, 40), 49)
    assert layer.selected_label == 51
    assert len(np.unique(layer.data)) == 8  # 0, 1, 4, 5, 6, 7, 49, 50: no id painted twice


def test_annotate_tidy_and_training_set_with_regions(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    viewer.add_image(image, name="img")
    annotate = _dock(viewer, "Annotate cells")
    labels = annotate.create_labels_layer()
    data = np.zeros((3, 40, 40), np.int32)
    data[1, 5:15, 5:15] = 7
    data[1, 9, 9] = 0  # a hole
    data[1, 30, 30] = 7  # a stray fragment
    data[2, 20:30, 20:30] = 3
    labels.data = data

    annotate.tidy("fill")
    assert labels.data[1, 9, 9] == 7
    annotate._min_size.value = 3
    annotate.tidy("fragments")
    assert labels.data[1, 30, 30] == 0
    annotate.tidy("relabel")
    assert set(np.unique(labels.data)) == {0, 1, 2}

    # Without regions: every plane with cells.
    assert annotate.add_to_training_set() == 2
    training_set = annotate._session.training_set
    assert [e.index for e in training_set] == [(1,), (2,)]
    assert training_set.n_cells == 2
    assert "2 planes, 2 cells" in annotate._summary.value
    assert len(annotate._entries.choices) == 2

    # A finished region drawn on plane 2 only: only that plane, with its mask.
    regions = annotate.create_regions_layer()
    assert regions.name == "img finished regions"
    regions.add_rectangles(np.array([[2, 18, 18], [2, 18, 32], [2, 32, 32], [2, 32, 18]]))
    training_set.clear()
    assert annotate.add_to_training_set() == 1
    (entry,) = list(training_set)
    assert entry.index == (2,) and entry.mask.sum() == 15 * 15
    # Adding the same plane again replaces it instead of duplicating it.
    annotate.add_to_training_set()
    assert len(training_set) == 1

    # Current plane only.
    annotate._regions.value = None
    training_set.clear()
    annotate._current_only.value = True
    viewer.dims.set_current_step(0, 1)
    assert annotate.add_to_training_set() == 1
    assert [e.index for e in training_set] == [(1,)]
    annotate._entries.value = [0]
    annotate._remove_selected()
    assert len(training_set) == 0

    # Nothing painted on plane 0: a readable error, nothing added.
    viewer.dims.set_current_step(0, 0)
    assert annotate.add_to_training_set() == 0
    assert errors and "no annotated plane" in errors[-1]


def test_annotate_keeps_image_and_labels_together(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    first = viewer.add_image(rng.random((40, 40)).astype(np.float32), name="first")
    second = viewer.add_image(rng.random((40, 40)).astype(np.float32), name="second")
    viewer.add_image(rng.random((30, 30)).astype(np.float32), name="small")
    annotate = _dock(viewer, "Annotate cells")
    annotate._image.value = first
    labels = annotate.create_labels_layer()
    assert labels.name == "first cells"
    assert annotate._labels.value == labels
    labels.data[5:15, 5:15] = 1
    assert annotate.add_to_training_set() == 1

    # Another image of the same size: the first image's labels are not kept silently.
    annotate._image.value = second
    assert annotate._labels.value is None
    assert "No cell labels made for 'second'" in annotate._pair_info.value
    assert annotate.add_to_training_set() == 0
    # Chosen by hand, they are refused until the user confirms that they belong together.
    annotate._labels.value = labels
    assert not annotate._confirm.native.isHidden()
    assert "made for 'first'" in annotate._pair_info.value
    assert annotate.add_to_training_set() == 0
    assert "was not made for 'second'" in errors[-1]
    annotate.confirm_pair()
    assert annotate._confirm.native.isHidden()
    assert annotate.add_to_training_set() == 1
    # Only labels of the image's size are offered; each entry names image and labels.
    annotate._image.value = viewer.layers["small"]
    assert labels not in annotate._labels.choices
    listed = annotate._entries.native
    names = [listed.item(row).text() for row in range(listed.count())]
    assert names == ["1. first ← first cells: 1 cells", "2. second ← first cells: 1 cells"]
    # Back to the first image: its own labels come back.
    annotate._image.value = first
    assert annotate._labels.value == labels


def test_annotate_rgb_image(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((30, 40, 3), np.uint8), name="rgb", rgb=True, scale=(0.5, 0.5))
    annotate = _dock(viewer, "Annotate cells")
    assert annotate._channel_axis.value == "rgb"
    layer = annotate.create_labels_layer()
    assert layer.data.shape == (30, 40)
    np.testing.assert_array_equal(layer.scale, (0.5, 0.5))
    layer.data[3:9, 3:9] = 1
    annotate.add_to_training_set()
    (entry,) = list(annotate._session.training_set)
    assert entry.image.shape == (3, 30, 40) and entry.channels == 3


def test_weight_map_preview_follows_painting(make_napari_viewer, qtbot):
    from napari_unet.weights import weight_map

    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_3d())
    labels = viewer.layers["synthetic cell stack ground truth"]
    weights = _dock(viewer, "Weight map")
    weights._labels.value = labels
    viewer.dims.set_current_step(0, 5)
    weights.update_preview(block=True)
    preview = viewer.layers["synthetic cell stack ground truth weight map"]
    borders = viewer.layers["synthetic cell stack ground truth separating borders"]
    assert preview.data.shape == (160, 160)  # the current plane only
    assert preview.colormap.name == "inferno"
    np.testing.assert_array_equal(preview.scale, labels.scale[-2:])
    assert borders.data.any()
    # Touching cells get weights near w0 + w_c between them.
    assert 8 < preview.data.max() < 14

    # Painting: the preview is recomputed once the user pauses (debounced).
    before = weights.updates
    data = labels.data.copy()
    data[5, 60:100, 60:100] = 0
    labels.data = data
    assert weights.updates == before  # not yet: the timer is running
    qtbot.waitUntil(lambda: weights.updates == before + 1, timeout=WORKER_TIMEOUT_MS)
    np.testing.assert_allclose(preview.data, weight_map(data[5]), rtol=1e-6)

    # Settings change the map and are shared with Train.
    weights._w0.value = 0.0
    qtbot.waitUntil(lambda: weights.updates == before + 2, timeout=WORKER_TIMEOUT_MS)
    assert preview.data.max() < 4
    assert weights._session.weights.w0 == 0.0

    # Moving to another plane recomputes it.
    viewer.dims.set_current_step(0, 0)
    qtbot.waitUntil(lambda: weights.updates == before + 3, timeout=WORKER_TIMEOUT_MS)
    assert "plane 0" in weights._info.value
    _wait_idle(qtbot, weights)


def test_weight_map_runs_in_a_worker_and_drops_stale_previews(make_napari_viewer, qtbot):
    from napari_unet._sample_data import synthetic_cells
    from napari_unet.weights import weight_map

    viewer = make_napari_viewer()
    _, labels = synthetic_cells((96, 96), seed=1)
    layer = viewer.add_labels(labels, name="cells")
    weights = _dock(viewer, "Weight map")
    # Opening the dock previews nothing: no layer was chosen yet.
    qtbot.wait(400)
    assert weights._labels.value is None and len(viewer.layers) == 1 and weights.updates == 0

    weights._labels.value = layer
    qtbot.waitUntil(lambda: weights.updates == 1, timeout=WORKER_TIMEOUT_MS)
    _wait_idle(qtbot, weights)
    # Start a computation, then paint before it returns: its result is stale and dropped;
    # the preview that follows shows the painted labels.
    assert weights.update_preview() is not None
    painted = labels.copy()
    painted[:40, :40] = 0
    layer.data = painted
    qtbot.waitUntil(lambda: weights.updates == 2, timeout=WORKER_TIMEOUT_MS)
    _wait_idle(qtbot, weights)
    qtbot.wait(400)  # nothing else is pending
    assert weights.updates == 2
    np.testing.assert_allclose(
        viewer.layers["cells weight map"].data, weight_map(painted), rtol=1e-6
    )


def test_predict_stack_alignment_and_cancel(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_3d())
    image = viewer.layers["synthetic cell stack"]
    image.translate = (4.0, 10.0, -5.0)
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = tiny_model
    assert "1 channel in" in predict._model_info.value
    predict._image.value = image
    predict._probabilities.value = True
    worker = predict.start()
    assert worker is not None and not predict._run.enabled
    _wait_idle(qtbot, predict)
    result = viewer.layers["synthetic cell stack cells (predicted)"]
    assert result.data.shape == image.data.shape
    # uint16 when the ids fit: napari then draws the layer without re-mapping every pixel.
    assert result.data.dtype == np.uint16
    # A Z-stack: planes linked into 3D objects (linking.link_planes), on by default.
    from napari_unet._widgets.predict import predict_job
    from napari_unet.linking import link_planes
    from napari_unet.progress import drive

    assert predict._link.value and predict._link.enabled
    per_plane, _ = drive(
        predict_job(
            tiny_model,
            image.data,
            channel_axis=None,
            tile=None,
            tta=False,
            threshold=float(predict._threshold.value),
            device="auto",
            keep_probabilities=False,
        )
    )
    np.testing.assert_array_equal(result.data, link_planes(per_plane, axis=0))
    np.testing.assert_array_equal(result.scale, image.scale)
    np.testing.assert_array_equal(result.translate, image.translate)
    probability = viewer.layers["synthetic cell stack cell probability"]
    assert probability.data.shape == image.data.shape
    assert 0 <= probability.data.min() and probability.data.max() <= 1
    assert predict._progress.value == 1000 and predict._run.enabled

    # A second run never overwrites the first result.
    predict._probabilities.value = False
    predict.start()
    _wait_idle(qtbot, predict)
    assert "synthetic cell stack cells (predicted) (2)" in viewer.layers

    # Cancel: test-time augmentation on 12 planes is long enough to stop mid-way.
    n_layers = len(viewer.layers)
    predict._tta.value = True
    predict.start()
    qtbot.waitUntil(lambda: predict._progress.value > 0, timeout=WORKER_TIMEOUT_MS)
    # How soon Cancel takes effect is measured in benchmarks/bench_stop_cancel.py, not bounded.
    predict.cancel()
    _wait_idle(qtbot, predict)
    assert len(viewer.layers) == n_layers
    assert "cancelled" in predict._status.value


def test_predict_channel_axis_and_rgb(make_napari_viewer, qtbot, tmp_path, errors):
    two = tmp_path / "two.safetensors"
    save_model(UNet(in_channels=2, depth=1, base_channels=2, num_classes=2), two, metadata={})
    three = tmp_path / "three.safetensors"
    save_model(UNet(in_channels=3, depth=1, base_channels=2, num_classes=3), three, metadata={})
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    # A time series of two-channel images: (T, C, Y, X), channel axis 1.
    series = viewer.add_image(
        rng.random((3, 2, 40, 48)).astype(np.float32),
        name="series",
        scale=(5.0, 1.0, 0.5, 0.5),
        translate=(0.0, 0.0, 3.0, 4.0),
    )
    rgb = viewer.add_image(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), name="rgb", rgb=True)
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = two
    predict._image.value = series
    assert predict._channel_axis.value == 1  # suggested: the axis with 2 entries
    predict.start()
    _wait_idle(qtbot, predict)
    out = viewer.layers["series cells (predicted)"]
    assert out.data.shape == (3, 40, 48)
    np.testing.assert_array_equal(out.scale, (5.0, 0.5, 0.5))
    np.testing.assert_array_equal(out.translate, (0.0, 3.0, 4.0))

    # Only the channel choices that fit the model are offered.
    assert predict._channel_axis.choices == (1,)
    # Wrong channel count: refused before starting, with a readable message.
    predict._image.value = viewer.add_image(np.zeros((40, 48), np.float32), name="single")
    assert predict.start() is None
    assert "expects 2 channel(s)" in errors[-1]

    predict._model_file.value = three
    predict._image.value = rgb
    assert predict._channel_axis.choices == ("rgb",)
    predict.start()
    _wait_idle(qtbot, predict)
    assert viewer.layers["rgb cells (predicted)"].data.shape == (40, 48)


def test_predict_rgba_with_a_one_channel_model_and_clear_errors(
    make_napari_viewer, qtbot, tiny_model, errors
):
    from napari_unet._widgets.predict import predict_job
    from napari_unet.progress import drive

    viewer = make_napari_viewer()
    grey = np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)
    rgba = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    # A DSB-like PNG: grey saved as RGBA, under a long file name.
    name = "0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9.png"
    layer = viewer.add_image(rgba, name=name, rgb=True)
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = tiny_model
    predict._image.value = layer
    assert predict._channel_axis.choices == ("grey",)
    assert "grey (converted from RGBA)" in predict._channel_axis.native.currentText()
    predict.start()
    _wait_idle(qtbot, predict)
    (result,) = [out for out in viewer.layers if out.name.endswith("cells (predicted)")]
    assert result.data.shape == (40, 48)
    assert "converted to grey" in predict._status.value and "…" in predict._status.value
    expected, _ = drive(
        predict_job(
            tiny_model,
            grey,
            channel_axis=None,
            tile=None,
            tta=False,
            threshold=float(predict._threshold.value),
            device="auto",
            keep_probabilities=False,
        )
    )
    np.testing.assert_array_equal(result.data > 0, expected > 0)

    # A typing slip in the object diameter: refused with what to type instead.
    predict._diameter.value = "25 pixels"
    assert predict.start() is None
    assert "object diameter '25 pixels' is not a number of pixels" in errors[-1]
    predict._diameter.value = "none"

    # NaN in the image: a message that names the layer and the fix, not an internal shape.
    bad = np.ones((32, 32), np.float32)
    bad[3, 3] = np.nan
    predict._image.value = viewer.add_image(bad, name="with nan")
    predict.start()
    _wait_idle(qtbot, predict)
    assert "'with nan' contains NaN" in errors[-1] and "shape" not in errors[-1]
    assert not [out for out in viewer.layers if out.name.startswith("with nan cells")]


def test_object_diameter_field():
    from napari_unet._widgets.predict import parse_diameter

    assert parse_diameter("") == "default" and parse_diameter(" Auto ") == "auto"
    assert parse_diameter("none") is None and parse_diameter("24.5 px") == 24.5
    assert isinstance(parse_diameter("-3"), ValueError)
    assert isinstance(parse_diameter("nan"), ValueError)


def test_predict_measures_the_diameter_on_a_line_or_painted_cells(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:64, :64]
    cells = np.zeros((64, 64), np.int32)
    for k, (cy, cx) in enumerate([(16, 16), (16, 46), (46, 30)], start=1):
        cells[(yy - cy) ** 2 + (xx - cx) ** 2 <= 8**2] = k  # 16 px across
    image = viewer.add_image(cells.astype(np.float32), name="cells")
    predict = _dock(viewer, "Predict")
    predict._image.value = image

    # Painted cells (here: the whole truth) give their median equivalent diameter.
    viewer.add_labels(cells, name="painted")
    assert predict.measure_diameter() == pytest.approx(16.0, rel=0.05)
    assert float(predict._diameter.value) == pytest.approx(16.0, rel=0.05)
    assert "3 painted cells in 'painted'" in predict._status.value
    # Labels painted at half the image's resolution: measured in the image's pixels.
    viewer.add_labels(cells[::2, ::2], name="coarse", scale=(2, 2))
    assert predict.measure_diameter() == pytest.approx(16.0, rel=0.15)

    # Lines drawn across cells: their median length, in the image's pixels.
    viewer.add_shapes(
        [
            np.array([[16, 8], [16, 24]]),
            np.array([[8, 46], [24, 46]]),
            np.array([[0, 0], [60, 60]]),
        ],
        shape_type="line",
        name="ruler",
    )
    assert predict.measure_diameter() == pytest.approx(16.0)
    assert "3 lines in 'ruler'" in predict._status.value
    viewer.add_shapes([np.array([[16, 4], [16, 12]])], shape_type="line", scale=(2, 2))
    assert predict.measure_diameter() == pytest.approx(16.0)

    # Nothing to measure: the field keeps its value and the message says what to draw.
    predict._diameter.value = "16.0"
    viewer.add_shapes([np.array([[0, 0], [0, 9], [9, 9], [9, 0]])], shape_type="rectangle")
    assert predict.measure_diameter() is None and "has no line or path" in errors[-1]
    viewer.layers.selection.active = image
    assert predict.measure_diameter() is None
    assert "'cells' is selected: select a Shapes layer with a line" in errors[-1]
    viewer.add_labels(np.zeros((64, 64), np.int32), name="empty")
    assert predict.measure_diameter() is None and "'empty' has no painted cell" in errors[-1]
    assert predict._diameter.value == "16.0"

    # After a run that estimated the size, the empty field shows the estimate.
    predict._job = {"info": {"estimated": True, "diameter": 17.3}}
    predict._show_report(3, "cells cells (predicted)", 1.0)
    assert predict._diameter.native.placeholderText() == "auto (last: 17 px)"
    assert "objects ~17 px (estimated)" in predict._status.value


def test_removing_the_image_during_predict_adds_nothing(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_3d())
    image = viewer.layers["synthetic cell stack"]
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = tiny_model
    predict._image.value = image
    predict._tta.value = True
    n_layers = len(viewer.layers)
    predict.start()
    viewer.layers.remove(image)
    _wait_idle(qtbot, predict)
    qtbot.wait(100)
    assert len(viewer.layers) == n_layers - 1
    assert "was removed" in predict._status.value


def test_errors_in_the_worker_reach_napari_notifications(
    make_napari_viewer, qtbot, tiny_model, monkeypatch, errors
):
    from napari.utils.notifications import notification_manager

    received = []
    monkeypatch.setattr(
        notification_manager, "receive_error", lambda *args: received.append(args[1])
    )

    def broken(*args, **kwargs):
        yield from ()
        raise RuntimeError("out of memory")

    monkeypatch.setattr("napari_unet._widgets.predict.predict_job", broken)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = tiny_model
    predict.start()
    _wait_idle(qtbot, predict)
    # An unexpected error keeps its traceback (for a bug report) ...
    assert [str(e) for e in received] == ["out of memory"]
    assert "failed" in predict._status.value and predict._run.enabled

    # ... an input problem is a plain message.
    def bad_input(*args, **kwargs):
        yield from ()
        raise ValueError("the model file went missing")

    monkeypatch.setattr("napari_unet._widgets.predict.predict_job", bad_input)
    predict.start()
    _wait_idle(qtbot, predict)
    assert len(received) == 1
    assert errors[-1] == "Predict: the model file went missing"


def test_train_validates_before_starting(make_napari_viewer, errors, tmp_path):
    viewer = make_napari_viewer()
    train = _dock(viewer, "Train")
    train._out_dir.value = tmp_path
    assert train.start() is None
    assert "training set is empty" in errors[-1]
    assert train.worker is None and train._start.enabled


def test_train_presets_follow_the_device(make_napari_viewer):
    import torch

    viewer = make_napari_viewer()
    train = _dock(viewer, "Train")
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert train._preset.value == expected
    train._preset.value = "cpu"
    settings = (train._depth, train._base, train._tile, train._optimizer, train._iterations)
    assert [w.value for w in settings] == [3, 16, 124, "adam", 300]
    assert train._lr.value == pytest.approx(0.001)
    cpu_text = train._estimate.value
    assert cpu_text.startswith("Estimated training time: about")
    train._device.value = "cpu"
    train._preset.value = "gpu"
    assert [w.value for w in settings] == [4, 64, 0, "sgd", 1000]
    # The paper's network on this CPU: hours, and the estimate says so before Start.
    assert " h on this CPU" in train._estimate.value


def test_train_checks_the_tile_on_a_later_turn_once_per_burst(
    make_napari_viewer, qtbot, monkeypatch
):
    viewer = make_napari_viewer()
    train = _dock(viewer, "Train")
    qtbot.waitUntil(lambda: train._tile_info.value.startswith("valid tile"), timeout=5000)
    built = []
    shape_model = type(train)._shape_model

    def counted(self):
        built.append(1)
        return shape_model(self)

    monkeypatch.setattr(type(train), "_shape_model", counted)
    # A preset changes depth, base channels and tile: one check, after the changes.
    train._preset.value = "gpu" if train._preset.value == "cpu" else "cpu"
    train._tile.value = 130
    assert built == [] and train._tile_info.value == "checking the tile size ..."
    qtbot.waitUntil(lambda: train._tile_info.value.startswith("valid tile"), timeout=5000)
    assert len(built) == 2  # the shape model and valid_tile's, once
    built.clear()
    assert train._tile_info.value.startswith(f"valid tile {train.valid_tile()} px")
    assert train.valid_tile() >= 130


def test_end_to_end_annotate_weights_train_predict(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_2d())
    _add_layers(viewer, make_cells_3d())
    annotate = _dock(viewer, "Annotate cells")
    weights = _dock(viewer, "Weight map")
    train = _dock(viewer, "Train")
    predict = _dock(viewer, "Predict")

    # Annotate: the 2D sample's ground truth plus a few cells painted on a new layer.
    annotate._image.value = viewer.layers["synthetic cells"]
    annotate._labels.value = viewer.layers["synthetic cells ground truth"]
    assert annotate.add_to_training_set() == 1
    painted = annotate.create_labels_layer()
    painted.paint((40, 40), 1)
    painted.paint((90, 90), 2)
    annotate._labels.value = painted
    assert annotate.add_to_training_set() == 1
    assert len(annotate._session.training_set) == 2

    # Preview the weight map; its settings reach Train.
    weights._labels.value = viewer.layers["synthetic cells ground truth"]
    weights._sigma.value = 4.0
    weights.update_preview(block=True)
    assert "synthetic cells ground truth weight map" in viewer.layers
    assert "σ = 4 px" in train._weights_info.value
    assert "2 planes" in train._set_info.value

    # Train a tiny model in the worker.
    _tiny_training(train, tmp_path, iterations=4)
    train.start()
    _wait_idle(qtbot, train)
    result = train.result
    assert result is not None and not result.cancelled and result.iterations == 4
    assert result.best_path.is_file()
    assert train.plot.points("loss")[0] == [1, 2, 3, 4]
    assert "Finished at iteration 4" in train._status.value
    model, meta = load_model(result.best_path)
    assert meta["training"]["config"]["sigma"] == 4.0
    assert model.depth == 1 and model.num_classes == 3

    # The new model is offered (and chosen) in Predict.
    assert predict._model.value == result.best_path
    predict._image.value = viewer.layers["synthetic cell stack"]
    predict.start()
    _wait_idle(qtbot, predict)
    out = viewer.layers["synthetic cell stack cells (predicted)"]
    assert out.data.shape == (12, 160, 160)
    np.testing.assert_array_equal(out.scale, (2.0, 1.0, 1.0))


def _count_event_loop_ticks(qtbot, until, interval_ms=10) -> int:
    """How many times a 10 ms QTimer fired in the GUI thread until ``until(ticks)`` held."""
    from qtpy.QtCore import QTimer

    ticks = [0]

    def tick():
        ticks[0] += 1

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(interval_ms)
    try:
        qtbot.waitUntil(lambda: until(ticks[0]), timeout=WORKER_TIMEOUT_MS)
    finally:
        timer.stop()
    return ticks[0]


def test_stop_keeps_last_model_and_gui_stays_responsive(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_2d())
    annotate = _dock(viewer, "Annotate cells")
    annotate.add_to_training_set()
    train = _dock(viewer, "Train")
    predict = _dock(viewer, "Predict")
    _tiny_training(train, tmp_path, iterations=100_000)
    train.start()
    # The event loop keeps running while training: a GUI timer fires again and again and
    # the loss curve grows, with the worker still busy. (How long the event loop stalls, and
    # how soon Stop takes effect, are measured in benchmarks/, not bounded here.)
    ticks = _count_event_loop_ticks(qtbot, lambda t: len(train._losses) >= 20 and t >= 20)
    assert ticks >= 20 and train.worker is not None
    train.stop()
    _wait_idle(qtbot, train)
    result = train.result
    assert result.cancelled and 20 <= result.iterations < 100_000
    _model, meta = load_model(result.best_path)  # the last good model loads
    assert meta["training"]["cancelled"] and meta["training"]["iteration"] == result.iterations
    assert "Stopped at iteration" in train._status.value
    assert train._session.models[0].path == result.best_path
    # A stopped run is listed in Predict but does not become its model.
    assert predict.model_path() != result.best_path
    combo = predict._model.native
    listed = [combo.itemText(i) for i in range(combo.count())]
    assert f"cells (this session, stopped at iteration {result.iterations})" in listed


def test_closing_the_dock_stops_training(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    # Closing waits at most CLOSE_WAIT_S for the save; a loaded machine may need longer.
    monkeypatch.setattr("napari_unet._widgets.train.CLOSE_WAIT_S", WORKER_TIMEOUT_MS / 1000)
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_2d())
    _dock(viewer, "Annotate cells").add_to_training_set()
    train = _dock(viewer, "Train")
    _tiny_training(train, tmp_path, iterations=100_000)
    train.start()
    qtbot.waitUntil(lambda: len(train._losses) >= 2, timeout=WORKER_TIMEOUT_MS)
    viewer.window.remove_dock_widget(train.native)
    assert train._stop.is_set()
    qtbot.waitUntil(train._done.is_set, timeout=WORKER_TIMEOUT_MS)
    _wait_idle(qtbot, train)
    assert train.result.cancelled


def test_closing_the_viewer_stops_training_and_saves(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    # Closing waits at most CLOSE_WAIT_S for the save; a loaded machine may need longer.
    monkeypatch.setattr("napari_unet._widgets.train.CLOSE_WAIT_S", WORKER_TIMEOUT_MS / 1000)
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_2d())
    _dock(viewer, "Annotate cells").add_to_training_set()
    train = _dock(viewer, "Train")
    _tiny_training(train, tmp_path, iterations=100_000)
    train.start()
    qtbot.waitUntil(lambda: len(train._losses) >= 2, timeout=WORKER_TIMEOUT_MS)
    done = train._done
    viewer.close()
    # Closing waits (at most CLOSE_WAIT_S) for the engine to save and return.
    assert done.is_set()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["cells.last.safetensors", "cells.safetensors"]
    _, meta = load_model(tmp_path / "cells.safetensors")
    assert meta["training"]["cancelled"]
    qtbot.wait(50)  # let the worker's queued signals arrive at the (now inert) widget


def test_predict_uses_the_bundled_nuclei_model_by_default(make_napari_viewer, qtbot):
    from napari_unet._sample_data_real import make_dsb_nuclei
    from napari_unet.pretrained import pretrained_path

    viewer = make_napari_viewer()
    _add_layers(viewer, make_dsb_nuclei())
    image = next(layer for layer in viewer.layers if layer._type_string == "image")
    truth = next(layer for layer in viewer.layers if layer._type_string == "labels")
    predict = _dock(viewer, "Predict")
    # Nothing trained in this session: the bundled nuclei model, at its own threshold.
    assert predict.model_path() == pretrained_path("nuclei")
    # What the model is for and which checkpoint it is, not its depth and width.
    info = predict._model_info.value
    assert info.startswith("Fluorescence nuclei") and "depth" not in info
    from napari_unet.io import read_metadata

    trained = read_metadata(pretrained_path("nuclei"))["training"]
    assert f"trained {trained['iteration']} iterations" in info.lower()
    assert predict._threshold.value == pytest.approx(0.8, abs=0.15)
    assert not predict._tta.value
    # em-membranes: its stored choice (growth over cell probability 0.05, TTA) fills the fields.
    predict._model.value = pretrained_path("em-membranes")
    assert predict._tta.value and predict._threshold.value == pytest.approx(0.05)
    # A post-processing choice below 0.05 ("seeded" can choose 0.01-0.04) is not clamped.
    predict._threshold.value = 0.02
    assert predict._threshold.value == pytest.approx(0.02)
    predict._model.value = pretrained_path("nuclei")
    assert not predict._tta.value
    predict._image.value = image
    predict.start()
    _wait_idle(qtbot, predict)
    from napari_unet._widgets._layers import result_name

    # "DSB 2018 nuclei (predicted)", not "DSB 2018 nuclei cells (predicted)".
    assert result_name(image.name) == f"{image.name} (predicted)"
    result = viewer.layers[result_name(image.name)]
    found = len(np.unique(result.data)) - 1
    expected = len(np.unique(truth.data)) - 1
    assert abs(found - expected) <= 0.2 * expected


def test_predict_dask_layer_stays_lazy(make_napari_viewer, qtbot, tiny_model):
    import dask.array as da
    from skimage.segmentation import relabel_sequential

    from napari_unet._widgets.predict import predict_job
    from napari_unet.progress import drive
    from napari_unet.segment import LAZY_ID_STRIDE

    stack = make_cells_3d()[0][0][:6, :64, :64]
    read: list[int] = []  # the planes of the input that were read

    def counted(block, block_info=None):
        read.append(block_info[0]["chunk-location"][0])
        return block

    source = da.map_blocks(counted, da.from_array(stack, chunks=(1, 64, 64)), dtype=stack.dtype)
    viewer = make_napari_viewer()
    image = viewer.add_image(
        source,
        name="lazy stack",
        scale=(2.0, 1.0, 1.0),
        translate=(4.0, 10.0, -5.0),
        contrast_limits=(float(stack.min()), float(stack.max())),
    )
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = tiny_model
    predict._image.value = image
    predict._device.value = "cpu"
    predict._probabilities.value = True
    read.clear()
    assert predict.start() is None and predict.worker is None  # no worker: nothing to wait for
    result = viewer.layers["lazy stack cells (predicted)"]
    assert isinstance(result.data, da.Array)
    assert result.data.shape == stack.shape and result.data.dtype == np.uint32
    assert result.data.chunks == ((1,) * 6, (64,), (64,))
    np.testing.assert_array_equal(result.scale, image.scale)
    np.testing.assert_array_equal(result.translate, image.translate)
    assert "lazy: planes are computed as you browse" in predict._status.value
    assert "lazy stack cell probability" not in viewer.layers
    # At most the displayed plane was computed when the layer was added.
    assert len(set(read)) <= 1

    read.clear()
    plane = np.asarray(result.data[2])
    assert set(read) == {2}
    labels, _ = drive(
        predict_job(
            tiny_model,
            stack,
            channel_axis=None,
            tile=None,
            tta=False,
            threshold=float(predict._threshold.value),
            device="cpu",
            keep_probabilities=False,
        )
    )
    # Same partition of plane 2; ids offset by plane index * 2**16.
    foreground = plane > 0
    np.testing.assert_array_equal(foreground, labels[2] > 0)
    if foreground.any():
        assert plane[foreground].min() > 2 * LAZY_ID_STRIDE
        assert plane.max() < 3 * LAZY_ID_STRIDE
    np.testing.assert_array_equal(relabel_sequential(plane)[0], relabel_sequential(labels[2])[0])


def test_predict_dask_stack_links_planes_as_they_are_computed(
    make_napari_viewer, qtbot, tiny_model
):
    import dask.array as da

    from napari_unet._widgets.predict import predict_job
    from napari_unet.linking import link_planes
    from napari_unet.progress import drive

    stack = make_cells_3d()[0][0][:5, :64, :64]
    viewer = make_napari_viewer()
    image = viewer.add_image(da.from_array(stack, chunks=(1, 64, 64)), name="lazy z")
    predict = _dock(viewer, "Predict")
    predict._model.value = "__file__"
    predict._model_file.value = tiny_model
    predict._image.value = image
    predict._device.value = "cpu"
    # The dock says which axis it takes as Z.
    assert predict._link.text == "link the 5 planes of axis 0 (Z) into 3D objects"
    assert predict._link.value and predict._link.enabled
    assert predict.start() is None
    assert "Z planes linked" in predict._status.value
    result = viewer.layers["lazy z cells (predicted)"]
    np.asarray(result.data)  # every plane computed (in parallel, as the 3D view does)
    linked = np.asarray(result.data)  # drawn again: every link known
    per_plane, _ = drive(
        predict_job(
            tiny_model, stack, channel_axis=None, tile=None, tta=False,
            threshold=float(predict._threshold.value), device="cpu", keep_probabilities=False,
        )
    )  # fmt: skip
    expected = link_planes(per_plane, axis=0)
    assert len(np.unique(expected)) < len(np.unique(per_plane))
    pairs = np.unique(np.stack([linked.ravel(), expected.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_unetplusplus_trains_and_predicts_from_the_widgets(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_layers(viewer, make_cells_2d())
    annotate = _dock(viewer, "Annotate cells")
    train = _dock(viewer, "Train")
    predict = _dock(viewer, "Predict")
    annotate._image.value = viewer.layers["synthetic cells"]
    annotate._labels.value = viewer.layers["synthetic cells ground truth"]
    assert annotate.add_to_training_set() == 1

    train._arch.value = "U-Net++"
    _tiny_training(train, tmp_path, iterations=3)
    train._tile.value = 64
    train.start()
    _wait_idle(qtbot, train)
    result = train.result
    assert result is not None and result.iterations == 3
    model, meta = load_model(result.best_path)
    assert meta["architecture"] == "unetplusplus" and model.padding == "same"

    assert predict._model.value == result.best_path
    predict._image.value = viewer.layers["synthetic cells"]
    predict.start()
    _wait_idle(qtbot, predict)
    out = viewer.layers["synthetic cells (predicted)"]
    assert out.data.shape == viewer.layers["synthetic cells"].data.shape
    assert out.data.dtype == np.uint16

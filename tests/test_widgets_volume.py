"""3D training in the Train dock, on a volume's image and labels layers (run under xvfb-run)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._modelfile import load_model
from napari_unet._sample_data import synthetic_cells
from napari_unet._widgets._warmup import wait_until_ready
from napari_unet._widgets.train_volume import annotated_mask

pytestmark = pytest.mark.gui

WORKER_TIMEOUT_MS = 120_000


def _train_dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Train")
    wait_until_ready(widget)  # the architectures and devices, after the warm-up
    return widget


def test_annotated_mask_of_planes_box_and_layer():
    labels = np.zeros((6, 10, 10), np.int32)
    labels[1, 2:4, 2:5] = 1
    labels[4, 5:7, 6:8] = 2
    planes = annotated_mask(labels, "planes")
    assert planes.any(axis=(1, 2)).tolist() == [False, True, False, False, True, False]
    assert planes[1].all()  # a labelled plane is complete: its 0s are background
    box = annotated_mask(labels, "box")
    assert box[0:6, 1:8, 1:9].all() and box.sum() == 6 * 7 * 8
    assert annotated_mask(labels, "all") is None
    with pytest.raises(ValueError, match="shape"):
        annotated_mask(labels, "layer", np.zeros((6, 10, 9)))


@pytest.mark.slow
def test_train_dock_trains_a_3d_unet_on_a_partly_annotated_volume(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    image, truth = synthetic_cells((8, 40, 40), radius=(5.0, 8.0), spacing=(2, 1, 1), seed=2)
    partial = np.zeros_like(truth)
    partial[[2, 5]] = truth[[2, 5]]  # two annotated planes, as a biologist would start
    viewer = make_napari_viewer()
    volume = viewer.add_image(image, name="volume", scale=(1.0, 0.25, 0.25))
    viewer.add_labels(partial, name="volume labels", scale=(1.0, 0.25, 0.25))
    train = _train_dock(viewer)
    errors: list[str] = []
    monkeypatch.setattr("napari_unet._widgets.train_volume.show_error", errors.append)
    assert train._volume_image.native.isHidden()  # the section opens when ticked
    train._volume_on.value = True
    assert not train._volume_image.native.isHidden() and train._tile.native.isHidden()
    assert train._volume_image.value is volume
    # Spacing from the layer's scale, the in-plane pixel as 1; editable.
    assert train._spacing.value == "4, 1, 1"
    train._spacing.value = "2, 1, 1"
    assert "25 % of the voxels annotated" in train._volume_info.value
    assert "3D U-Net" in train._set_info.value
    train._depth.value = 1
    train._base.value = 4
    train._iterations.value = 3
    train._out_dir.value = tmp_path
    train._device.value = "cpu"
    worker = train.start()
    assert worker is not None, errors
    qtbot.waitUntil(lambda: train.worker is None, timeout=WORKER_TIMEOUT_MS)
    assert not errors
    result = train.result
    model, meta = load_model(result.best_path)
    assert model.spatial_dims == 3
    assert tuple(model.spacing) == (2.0, 1.0, 1.0)
    assert meta["spacing"] == [2.0, 1.0, 1.0]
    # Provenance names the annotated planes only.
    assert meta["training"]["data"]["planes"] == ["volume plane 2 (3D)", "volume plane 5 (3D)"]
    assert meta["training"]["planes"] == 1  # one volume


def test_train_dock_refuses_a_volume_without_labels_in_the_annotated_part(
    make_napari_viewer, monkeypatch
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="empty volume")
    viewer.add_labels(np.zeros((4, 16, 16), np.int32), name="no labels")
    train = _train_dock(viewer)
    errors: list[str] = []
    monkeypatch.setattr("napari_unet._widgets.train_volume.show_error", errors.append)
    train._volume_on.value = True
    train._spacing.value = "2, 1"
    assert train.start() is None
    assert "three positive numbers" in errors[-1] or "no cells" in errors[-1]
    train._spacing.value = "2, 1, 1"
    assert train.start() is None
    assert "no cells" in errors[-1]


def test_weight_map_preview_of_the_whole_volume_in_3d(make_napari_viewer):
    from napari_unet.weights import weight_map

    _, truth = synthetic_cells((6, 40, 40), radius=(5.0, 8.0), spacing=(2, 1, 1), seed=3)
    partial = np.zeros_like(truth)
    partial[[1, 3]] = truth[[1, 3]]
    viewer = make_napari_viewer()
    labels = viewer.add_labels(partial, name="cells", scale=(2.0, 0.5, 0.5))
    _, weights = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Weight map")
    weights._labels.value = labels
    assert not weights._volume.native.isHidden()  # offered for a volume
    weights._volume.value = True
    weights.update_preview(block=True)
    shown = viewer.layers["cells weight map"]
    assert shown.data.shape == partial.shape
    np.testing.assert_array_equal(shown.scale, labels.scale)
    # As the 3D training computes it: voxel spacing from the scale, the planes with labels.
    mask = np.zeros(partial.shape, bool)
    mask[[1, 3]] = True
    expected = weight_map(partial, spacing=(4.0, 1.0, 1.0), mask=mask)
    np.testing.assert_allclose(shown.data, expected, rtol=1e-5)
    assert "whole volume (3D; the 2 planes with labels)" in weights._info.value


def test_annotate_dock_tells_how_a_cell_continues_through_planes(make_napari_viewer):
    viewer = make_napari_viewer()
    flat = viewer.add_image(np.zeros((32, 32), np.float32), name="plane")
    stack = viewer.add_image(np.zeros((4, 32, 32), np.float32), name="stack")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate cells")
    annotate._image.value = stack
    assert "keeps its id through the planes" in annotate._hint.value
    annotate._image.value = flat
    assert "planes" not in annotate._hint.value

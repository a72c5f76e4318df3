"""One pipeline: the CLI, the Python API and the Predict widget's job give identical results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.io import read_image, save_model, write_image
from napari_unet.models import UNet
from napari_unet.normalize import Normalization
from napari_unet.progress import Cancelled, drive
from napari_unet.segment import (
    LAZY_ID_STRIDE,
    SegmentConfig,
    iter_segment,
    segment,
    segment_dask,
)


def _blob_model(channels: int, plane: np.ndarray, seed: int, feature: int | None = None) -> UNet:
    """A random-weight 3-class U-Net whose cell class follows one feature map: many blobs."""
    torch.manual_seed(seed)
    net = UNet(in_channels=channels, depth=2, base_channels=4, num_classes=3, dropout=0.0).eval()
    features = {}
    hook = net.head.register_forward_hook(lambda m, i, o: features.setdefault("f", i[0]))
    x = Normalization()(plane, channel_axis=0 if channels > 1 else None)
    x = x if channels > 1 else x[None]
    with torch.no_grad():
        net(torch.from_numpy(np.pad(x, ((0, 0), (8, 8), (8, 8)), mode="reflect"))[None])
        hook.remove()
        k = feature
        if k is None:  # the liveliest feature map
            k = int(features["f"][0].std(dim=(-2, -1)).argmax())
        f = features["f"][0, k]
        scale = 8.0 / float(f.std())
        net.head.weight.zero_()
        net.head.weight[1, k] = scale
        net.head.bias.zero_()
        # About 30% cell interior; the border class stays low.
        net.head.bias[1] = -scale * float(f.quantile(0.7))
        net.head.bias[2] = -4.0
    return net


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """A one-channel model file and a (Z, Y, X) uint8 stack written as TIFF."""
    root = tmp_path_factory.mktemp("segment")
    rng = np.random.default_rng(0)
    plane = rng.normal(100, 30, (120, 104)).clip(0, 255).astype(np.uint8)
    stack = np.stack([plane, plane[::-1].copy(), plane[:, ::-1].copy()])
    save_model(_blob_model(1, plane, seed=2), root / "m.safetensors")
    tifffile.imwrite(root / "stack.tif", stack, photometric="minisblack")
    return root, stack


def _cli(root, image, out, *extra) -> tuple[np.ndarray, np.ndarray]:
    argv = ["predict", "--model", str(root / "m.safetensors"), str(image), "--out", str(out)]
    assert main([*argv, "--probabilities", "--device", "cpu", "--quiet", *extra]) == 0
    name = image.name.rsplit(".", 1)[0] + ".tif"
    return read_image(out / name), read_image(out / "probabilities" / name)


def _widget_job(path, image, channel_axis, **settings):
    pytest.importorskip("napari")
    from napari_unet._widgets.predict import predict_job

    options = dict(tile=None, tta=False, threshold=0.5, device="cpu", keep_probabilities=True)
    options["backend"] = "eager"
    options.update(settings)
    return drive(predict_job(path, image, channel_axis=channel_axis, **options))


# "eager": the "auto" backend may switch to ONNX Runtime once its export is cached,
# which changes probabilities by float rounding between otherwise identical runs.
@pytest.mark.parametrize(
    "settings",
    [
        {"backend": "eager"},
        pytest.param({"backend": "eager", "tile": 48, "tta": True}, marks=pytest.mark.slow),
    ],
)
def test_cli_python_and_widget_give_identical_labels_and_probabilities(grey, tmp_path, settings):
    root, stack = grey
    model = root / "m.safetensors"
    extra = [
        f"--{key}" if value is True else f"--{key}={value}" for key, value in settings.items()
    ]
    # The front ends link the planes of a Z-stack (the CLI by default, the widget's
    # checkbox is on for 3D layers); the library does when asked.
    cli_labels, cli_probs = _cli(root, root / "stack.tif", tmp_path / "cli", *extra)
    config = SegmentConfig(device="cpu", link_planes=True, **settings)
    result = segment(model, stack, config=config)
    widget_labels, widget_probs = _widget_job(model, stack, None, link_planes=True, **settings)

    if not settings.get("tta"):  # TTA averages the (orientation-bound) blobs away
        assert result.labels.max() > 20  # many cells over three planes: a real comparison
    assert result.labels.dtype == widget_labels.dtype == np.uint32
    # Ids 1..N over the whole stack in all three.
    assert np.array_equal(np.unique(result.labels), np.arange(result.labels.max() + 1))
    assert np.array_equal(cli_labels, result.labels)
    assert np.array_equal(widget_labels, result.labels)
    assert np.array_equal(cli_probs, result.probabilities)
    assert np.array_equal(widget_probs, result.probabilities)


def test_colour_image_identical_from_a_png_and_an_rgb_layer(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.normal(100, 30, (80, 72, 3)).clip(0, 255).astype(np.uint8)
    save_model(
        _blob_model(3, np.moveaxis(rgb, -1, 0), seed=2, feature=1), tmp_path / "m.safetensors"
    )
    write_image(tmp_path / "rgb.png", rgb)
    cli_labels, cli_probs = _cli(
        tmp_path, tmp_path / "rgb.png", tmp_path / "out", "--backend=eager"
    )

    # napari's RGB layer: channels last, the widget passes axis 2.
    widget_labels, widget_probs = _widget_job(tmp_path / "m.safetensors", rgb, 2)
    config = SegmentConfig(device="cpu", backend="eager")
    result = segment(tmp_path / "m.safetensors", rgb, config=config)

    assert result.labels.max() > 10
    assert np.array_equal(cli_labels, result.labels)
    assert np.array_equal(widget_labels, result.labels)
    assert np.array_equal(cli_probs, result.probabilities)
    assert np.array_equal(widget_probs, result.probabilities)


def test_lazy_planes_are_the_in_memory_planes(grey):
    da = pytest.importorskip("dask.array")
    root, stack = grey
    config = SegmentConfig(device="cpu", backend="eager")  # lazy planes are never linked
    memory = segment(root / "m.safetensors", stack, config=config).labels
    lazy = segment_dask(
        root / "m.safetensors", da.from_array(stack, chunks=(1, 60, 52)), config=config
    )
    assert lazy.chunks == ((1, 1, 1), (120,), (104,))
    offset = 0
    for index in range(stack.shape[0]):
        plane = np.asarray(lazy[index])
        cells = plane > 0
        # Same cells; lazy ids start at index * LAZY_ID_STRIDE, in-memory ones continue.
        np.testing.assert_array_equal(cells, memory[index] > 0)
        np.testing.assert_array_equal(
            plane[cells] - index * LAZY_ID_STRIDE, memory[index][cells] - offset
        )
        offset = int(memory[index].max())


def test_z_planes_are_linked_and_t_planes_are_not(grey, tmp_path):
    root, stack = grey
    twice = np.stack([stack[0], stack[0]])  # the same cells in two planes
    config = SegmentConfig(device="cpu", backend="eager", link_planes=True)
    linked = segment(root / "m.safetensors", twice, config=config).labels
    assert linked.max() > 20
    np.testing.assert_array_equal(linked[0], linked[1])  # one id per cell through the stack
    as_time = segment(root / "m.safetensors", twice, config=replace(config, axes="TYX")).labels
    assert as_time[1][as_time[1] > 0].min() == as_time[0].max() + 1  # planes apart
    tifffile.imwrite(tmp_path / "twice.tif", twice, photometric="minisblack")
    cli_labels, _ = _cli(root, tmp_path / "twice.tif", tmp_path / "out", "--backend=eager")
    assert np.array_equal(cli_labels, linked)
    cli_time, _ = _cli(
        root, tmp_path / "twice.tif", tmp_path / "t", "--backend=eager", "--axes=TYX"
    )
    assert np.array_equal(cli_time, as_time)
    with pytest.raises(ValueError, match="axes"):
        SegmentConfig(axes="XYZ")


def test_settings_come_from_the_model_and_cancel_stops(grey):
    root, stack = grey
    meta = {"pretrained": {"postprocessing": {"threshold": 0.7}}}
    assert SegmentConfig.from_metadata(meta).threshold == 0.7
    assert SegmentConfig.from_metadata(meta, threshold=0.4).threshold == 0.4
    assert SegmentConfig.from_metadata({}).threshold == 0.5
    # The bundled em-membranes model's cells are 4-connected components (its card says so).
    card = {"pretrained": {"postprocessing": {"threshold": 0.3, "method": "components"}}}
    assert SegmentConfig.from_metadata(card).postprocess == {"method": "components"}
    assert SegmentConfig.from_metadata(card, postprocess={}).postprocess == {}
    # Chosen on validation (tuning): the labelling and whether to average 8 orientations.
    chosen = {"postprocessing": {"method": "seeded", "threshold": 0.05, "tta": True}}
    config = SegmentConfig.from_metadata(chosen)
    assert (config.tta, config.threshold, config.postprocess) == (True, 0.05, {"method": "seeded"})
    assert SegmentConfig.from_metadata(chosen, tta=False).tta is False
    assert SegmentConfig.from_metadata(card).tta is False
    with pytest.raises(ValueError, match="threshold"):
        SegmentConfig(threshold=1.5)
    events = []
    with pytest.raises(Cancelled):
        segment(
            root / "m.safetensors",
            stack,
            config=SegmentConfig(device="cpu", tile=48),
            progress=events.append,
            cancel=lambda: events[-1].stage == "predict",
        )
    assert [e.stage for e in events] == ["load", "normalize", "predict"]
    # The generator form yields the labelling of every plane.
    stages = [e.stage for e in iter_segment(root / "m.safetensors", stack[:2])]
    assert stages[-2:] == ["labels", "labels"]
    with pytest.raises(ValueError, match="no axis of 2 channels"):
        segment(UNet(in_channels=2, depth=1, base_channels=2), stack)


def test_one_engine_per_run_and_the_result_says_which(grey, monkeypatch):
    from napari_unet import inference

    root, stack = grey
    built = []
    real = inference.make_backend
    monkeypatch.setattr(
        inference, "make_backend", lambda *a, **k: built.append(k) or real(*a, **k)
    )
    config = SegmentConfig(device="cpu", backend="eager", precision="fp32")
    result = segment(root / "m.safetensors", stack, config=config)
    # Built once for all three planes, not per plane or per tile.
    assert len(built) == 1
    assert (result.info["backend"], result.info["precision"]) == ("eager", "fp32")

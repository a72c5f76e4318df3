"""`napari-unet predict` in chunked mode: Zarr, OME-Zarr or TIFF in, OME-Zarr out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.io import create_ome_zarr, load_model, open_chunked, read_image, save_model
from napari_unet.models import UNet
from napari_unet.normalize import Normalization

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    one_to_one = len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return one_to_one and bool(np.array_equal(a == 0, b == 0))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random-weight 2-class model whose cell class follows one feature map: many blobs."""
    root = tmp_path_factory.mktemp("zarr")
    rng = np.random.default_rng(0)
    plane = rng.normal(100, 30, (300, 280)).clip(0, 255).astype(np.uint8)
    stack = np.stack([plane, plane[::-1].copy()])  # (Z, Y, X)
    torch.manual_seed(2)
    net = UNet(depth=2, base_channels=4, num_classes=2, dropout=0.0).eval()
    features = {}
    hook = net.head.register_forward_hook(lambda m, i, o: features.setdefault("f", i[0]))
    x = Normalization()(plane, channel_axis=None)
    with torch.no_grad():
        net(torch.from_numpy(np.pad(x, 8, mode="reflect"))[None, None])
        hook.remove()
        f = features["f"][0, 2]
        scale = 8.0 / float(f.std())
        net.head.weight.zero_()
        net.head.weight[1, 2] = scale
        net.head.bias.zero_()
        # About 30% foreground: separate blobs, most above min_size.
        net.head.bias[1] = -scale * float(f.quantile(0.7))
    save_model(net, root / "m.safetensors")
    tifffile.imwrite(root / "stack.tif", stack, photometric="minisblack")
    # The same first plane as an OME-Zarr image (one plane, chunks of 100).
    target = create_ome_zarr(
        root / "plane.zarr", shape=plane.shape, chunks=(100, 100), dtype=np.uint8, axes="yx"
    )
    da.store(da.from_array(plane, chunks=(100, 100)), target, lock=False)
    # Reference: the in-memory TIFF path.
    ref = root / "ref"
    args = ["predict", "--model", str(root / "m.safetensors"), str(root / "stack.tif")]
    # --no-link: planes labelled on their own, in memory and in chunked mode.
    argv = [*args, "--out", str(ref), "--probabilities", "--device", "cpu", "--quiet", "--no-link"]
    assert main(argv) == 0
    labels = read_image(ref / "stack.tif")
    probs = read_image(ref / "probabilities" / "stack.tif")
    assert labels.max() > 50  # many objects, so many cross chunk borders
    return root, labels, probs


def _predict(root, source, out, *extra):
    return main(
        ["predict", "--model", str(root / "m.safetensors"), str(source), "--out", str(out),
         "--probabilities", "--device", "cpu", "--quiet", "--chunks", "96",
         "--labels-margin", "32", *extra]
    )  # fmt: skip


@pytest.mark.slow
def test_zarr_and_large_tiff_paths_equal_the_in_memory_prediction(setup, tmp_path):
    root, ref_labels, ref_probs = setup
    # OME-Zarr in, OME-Zarr out (--out NAME.zarr).
    assert _predict(root, root / "plane.zarr", tmp_path / "plane.zarr") == 0
    labels = open_chunked(tmp_path / "plane.zarr")
    probs = open_chunked(tmp_path / "probabilities" / "plane.zarr")
    assert labels.axes == ("y", "x") and labels.data.dtype == np.uint32
    assert probs.axes == ("c", "y", "x") and probs.data.dtype == np.float32
    assert max(len(c) for c in labels.data.chunks) >= 3  # really chunked
    np.testing.assert_allclose(probs.data.compute(), ref_probs[:, 0], atol=1e-4)
    result = labels.data.compute()
    assert _same_partition(result, ref_labels[0])
    assert np.unique(result).tolist() == list(range(int(result.max()) + 1))
    # Minimal NGFF metadata a reader needs.
    attrs = json.loads((tmp_path / "plane.zarr" / ".zattrs").read_text())
    assert attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    assert "image-label" in attrs

    # A TIFF stack read region by region (folder output): planes labelled on their own.
    assert _predict(root, root / "stack.tif", tmp_path / "out", "--no-link") == 0
    labels = open_chunked(tmp_path / "out" / "stack.zarr").data.compute()
    assert labels.shape == ref_labels.shape
    for z in range(2):
        assert _same_partition(labels[z], ref_labels[z])
    assert not set(np.unique(labels[0])) & set(np.unique(labels[1])) - {0}
    # Nothing left behind but the outputs (the scratch probabilities are removed).
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["probabilities", "stack.zarr"]


@pytest.mark.slow
def test_a_models_tta_applies_in_memory_and_is_dropped_in_chunked_mode(setup, tmp_path):
    root, _, ref_probs = setup
    net, _ = load_model(root / "m.safetensors")
    save_model(net, tmp_path / "tta.safetensors", metadata={"postprocessing": {"tta": True}})
    args = ["predict", "--model", str(tmp_path / "tta.safetensors"), "--device", "cpu", "--quiet"]
    args += ["--probabilities"]
    # In memory: the model's choice, 8 orientations averaged (differs from the plain run).
    assert main([*args, str(root / "stack.tif"), "--out", str(tmp_path / "m"), "--no-link"]) == 0
    tta = read_image(tmp_path / "m" / "probabilities" / "stack.tif")
    assert np.abs(tta - ref_probs).max() > 0.01
    # Chunked: no TTA there, so the model's choice is dropped instead of failing the run.
    assert main([*args, str(root / "plane.zarr"), "--out", str(tmp_path / "c.zarr")]) == 0
    probs = open_chunked(tmp_path / "probabilities" / "c.zarr").data.compute()
    np.testing.assert_allclose(probs, ref_probs[:, 0], atol=1e-4)


@pytest.mark.slow
def test_scheduler_address_of_a_local_cluster(setup, tmp_path):
    distributed = pytest.importorskip("distributed")
    root, ref_labels, _ = setup
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        code = _predict(
            root,
            root / "plane.zarr",
            tmp_path / "c.zarr",
            "--scheduler",
            cluster.scheduler_address,
        )
    assert code == 0
    assert _same_partition(open_chunked(tmp_path / "c.zarr").data.compute(), ref_labels[0])


def test_open_chunked_reads_ome_zarr_v3_first_level_and_tiff_regions(tmp_path):
    data = np.arange(2 * 60 * 70, dtype=np.uint16).reshape(2, 60, 70)
    group = zarr.open_group(tmp_path / "v3.zarr", mode="w", zarr_format=3)
    group.create_array("s0", shape=data.shape, chunks=(1, 32, 32), dtype=data.dtype)[:] = data
    group.create_array("s1", shape=(2, 30, 35), chunks=(1, 32, 32), dtype=data.dtype)
    axes = [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}]
    datasets = [
        {"path": p, "coordinateTransformations": [{"type": "scale", "scale": [1, s, s]}]}
        for p, s in (("s0", 0.5), ("s1", 1.0))
    ]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [{"axes": axes, "datasets": datasets}],
    }
    image = open_chunked(tmp_path / "v3.zarr")
    assert image.data.shape == data.shape and image.channel_axis == 0
    assert image.scale == (1.0, 0.5, 0.5) and image.source.endswith("s0")
    np.testing.assert_array_equal(image.data.compute(), data)

    for name, kwargs in (
        ("plain.tif", {}),
        ("big_endian.tif", {"byteorder": ">"}),
        ("tiled.tif", {"compression": "zlib", "tile": (32, 32)}),
    ):
        tifffile.imwrite(tmp_path / name, data, photometric="minisblack", **kwargs)
        lazy = open_chunked(tmp_path / name, chunks=(1, 25, 30)).data
        assert lazy.dtype == np.uint16
        np.testing.assert_array_equal(lazy[1, 7:51, 3:66].compute(), data[1, 7:51, 3:66])


@pytest.mark.parametrize(
    ("inputs", "extra", "message", "code"),
    [
        (["stack.tif"], ["--scheduler", "fast"], "--scheduler must be", 2),
        (["stack.tif"], ["--chunks", "0"], "--chunks must be", 2),
        (["stack.tif", "plane.zarr"], ["--out", "{tmp}/two.zarr"], "names one output store", 2),
        (["plane.zarr"], ["--out", "{root}/plane.zarr", "--overwrite"], "is the input", 4),
        (["plane.zarr"], ["--out", "{root}", "--overwrite"], "is the input", 4),
    ],
)
def test_bad_chunked_input_gives_one_line_and_its_exit_code(
    setup, tmp_path, capsys, inputs, extra, message, code
):
    root = setup[0]
    extra = [e.format(root=root, tmp=tmp_path) for e in extra]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "o.zarr")]
    args = ["predict", "--model", str(root / "m.safetensors"), *(str(root / i) for i in inputs)]
    assert main([*args, *out, "--quiet", *extra]) == code
    err = capsys.readouterr().err
    assert message in err and err.startswith("napari-unet predict: error")

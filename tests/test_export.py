"""Export to bioimage.io packages and ONNX, and reading our packages back."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_unet import export
from napari_unet.cli import main
from napari_unet.io import ModelFileError, load_model, read_metadata, save_model
from napari_unet.models import UNet
from napari_unet.normalize import Normalization

_META = {
    "classes": ["background", "cell"],
    "normalization": {"method": "percentile", "scope": "image", "low": 1.0, "high": 99.8},
}
_META_DATASET = {
    "classes": ["background", "cell", "border"],
    "normalization": {
        "method": "percentile",
        "scope": "dataset",
        "low": 1.0,
        "high": 99.8,
        "lo": [3.0],
        "hi": [900.0],
    },
}


def _tiny(padding: str, seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(depth=2, base_channels=4, padding=padding, **kwargs).eval()


def _rdf(package: Path) -> dict:
    if package.is_dir():
        return yaml.safe_load((package / "rdf.yaml").read_text())
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def _validate_or_skip(package: Path) -> None:
    pytest.importorskip("bioimageio.spec")
    try:
        export.bioimageio._validate(package)
    except RuntimeError as err:  # the environment's bioimageio.spec cannot validate at all
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def valid_zip(tmp_path_factory) -> tuple[Path, UNet]:
    """A valid-padding U-Net exported to a zip package (not validated here)."""
    model = _tiny("valid")
    out = tmp_path_factory.mktemp("valid") / "tiny.bioimageio.zip"
    export.export_bioimageio((model, _META), out, validate=False, authors=["A. Tester"])
    return out, model


@pytest.fixture(scope="module")
def same_folder(tmp_path_factory) -> tuple[Path, UNet]:
    """A same-padding U-Net with batch norm and dataset normalisation, as a folder."""
    model = _tiny("same", seed=1, num_classes=3, batch_norm=True)
    out = tmp_path_factory.mktemp("same") / "tiny_same"
    export.export_bioimageio((model, _META_DATASET), out, validate=False)
    return out, model


def test_rdf_declares_sizes_processing_and_weights(valid_zip):
    package, model = valid_zip
    rdf = _rdf(package)
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    (inp,) = rdf["inputs"]
    (out,) = rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    # Valid sizes of a depth-2 valid U-Net: 44 + 4k; the output loses the halo (20) per side.
    for axis in inp["axes"][2:]:
        assert axis["size"] == {"min": 44, "step": 4}
        assert model.is_valid_input_shape((44, 48)) and not model.is_valid_input_shape((46, 46))
    for axis in out["axes"][2:]:
        assert axis["size"] == {"tensor_id": "input", "axis_id": axis["id"], "offset": -40}
    assert out["axes"][1]["channel_names"] == ["background", "cell"]
    assert inp["preprocessing"] == [
        {
            "id": "scale_range",
            "kwargs": {
                "axes": ["y", "x"],
                "min_percentile": 1.0,
                "max_percentile": 99.8,
                "eps": 1e-6,
            },
        }
    ]
    state = rdf["weights"]["pytorch_state_dict"]
    assert state["architecture"]["import_from"] == "napari_unet.export"
    assert state["architecture"]["callable"] == "ExportWrapper"
    assert state["architecture"]["kwargs"]["arguments"] == model.config()
    assert rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert rdf["config"]["napari_unet"]["metadata"]["classes"] == _META["classes"]
    assert rdf["authors"] == [{"name": "A. Tester"}]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_test_tensors_are_softmax_of_the_normalised_input(valid_zip, tmp_path):
    package, model = valid_zip
    with zipfile.ZipFile(package) as archive:
        archive.extractall(tmp_path)
    x = np.load(tmp_path / "test_input.npy")
    y = np.load(tmp_path / "test_output.npy")
    assert x.dtype == y.dtype == np.float32
    assert x.shape == (1, 1, 104, 104) and y.shape == (1, 2, 64, 64)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    normalized = Normalization(scope="image", low=1.0, high=99.8)(x[0], channel_axis=0)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(normalized[None])), dim=1).numpy()
    np.testing.assert_allclose(y, expected, atol=1e-6)
    # The TorchScript weights (what deepImageJ and QuPath run) give the same maps,
    # also at another valid size: the trace is not tied to the example's shape.
    scripted = torch.jit.load(str(tmp_path / "weights_torchscript.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(torch.from_numpy(normalized[None])), y, atol=1e-6)
        other = torch.rand(2, 1, 52, 60)
        np.testing.assert_allclose(scripted(other), torch.softmax(model(other), dim=1), atol=1e-6)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_zip_package_validates_and_bioimageio_core_reproduces(valid_zip):
    package, _ = valid_zip
    _validate_or_skip(package)
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(package)
    failed = [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.errors]
    assert summary.status == "passed", failed
    names = " ".join(d.name for d in summary.details)
    assert "Reproduce test outputs from test inputs (pytorch_state_dict)" in names
    assert "Reproduce test outputs from test inputs (torchscript)" in names


def test_folder_package_with_dataset_normalisation_validates(same_folder):
    package, _ = same_folder
    _validate_or_skip(package)
    rdf = _rdf(package)
    (step,) = rdf["inputs"][0]["preprocessing"]
    assert step["id"] == "scale_linear" and step["kwargs"]["axis"] == "channel"
    gain = 1 / (900.0 - 3.0 + 1e-6)
    np.testing.assert_allclose(step["kwargs"]["gain"], [gain])
    np.testing.assert_allclose(step["kwargs"]["offset"], [-3.0 * gain])
    for axis in rdf["inputs"][0]["axes"][2:]:
        assert axis["size"] == {"min": 4, "step": 4}
    for axis in rdf["outputs"][0]["axes"][2:]:
        assert axis["size"]["offset"] == 0


@pytest.mark.parametrize("which", ["valid_zip", "same_folder"])
def test_load_model_reads_our_package_back(which, request):
    package, model = request.getfixturevalue(which)
    loaded, meta = load_model(package)
    assert type(loaded) is UNet and loaded.config() == model.config() and not loaded.training
    assert meta["classes"] == (_META if which == "valid_zip" else _META_DATASET)["classes"]
    assert (
        meta["normalization"]
        == (_META if which == "valid_zip" else _META_DATASET)["normalization"]
    )
    assert read_metadata(package) == meta
    x = torch.rand(1, 1, *model.valid_input_shape((24, 28)))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_round_trip_from_model_file_is_lossless(tmp_path):
    model = _tiny("same", seed=3)
    path = save_model(model, tmp_path / "m.safetensors", metadata={**_META, "note": "kept"})
    _, original = load_model(path)
    package = export.export_bioimageio(
        path, tmp_path / "m.bioimageio.zip", validate=False, weights=("pytorch_state_dict",)
    )
    _, meta = load_model(package)
    assert meta == original


def test_state_dict_weights_are_used_without_the_safetensors_copy(same_folder, tmp_path):
    package, model = same_folder
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in package.iterdir():
        if path.name != "model.safetensors":
            (copy / path.name).write_bytes(path.read_bytes())
    rdf = _rdf(copy)
    del rdf["attachments"]
    (copy / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    loaded, _ = load_model(copy)
    x = torch.rand(2, 1, 32, 36)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_foreign_package_is_refused_with_a_clear_error(same_folder, tmp_path):
    package, _ = same_folder
    rdf = _rdf(package)
    del rdf["config"]["napari_unet"]
    rdf["name"] = "someone else's U-Net"
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))
    with pytest.raises(ModelFileError, match=r"not exported by napari-unet.*config\.napari_unet"):
        load_model(foreign)
    with pytest.raises(ModelFileError, match="pytorch_state_dict, torchscript"):
        read_metadata(foreign)


def test_corrupt_package_is_refused(valid_zip, tmp_path):
    package, _ = valid_zip
    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(corrupt, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "model.safetensors":
                data = data[:-8] + bytes(8)  # same size, different weights
            dst.writestr(name, data)
    with pytest.raises(ModelFileError, match="does not match the sha256"):
        load_model(corrupt)
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("rdf.yaml", "inputs: [unclosed")
    with pytest.raises(ModelFileError, match="not valid YAML"):
        load_model(broken)


@pytest.mark.slow
def test_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = _tiny("valid", seed=2)
    path = export.export_onnx((model, _META), tmp_path / "m.onnx")
    assert path.is_file() and not (tmp_path / "m.onnx.data").exists()
    # Another batch size and spatial size than the export example: dynamic axes.
    x = np.random.default_rng(0).random((3, 1, 76, 92), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": x})
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()
    assert got.shape == want.shape == (3, 2, 36, 52)
    assert np.abs(got - want).max() <= 1e-4
    assert export.check_onnx(path, (model, _META)) <= 1e-4
    with pytest.raises(FileExistsError):
        export.export_onnx((model, _META), path)


def test_sample_is_cropped_to_a_valid_size_and_checked(tmp_path):
    model = _tiny("valid")
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 4000, (131, 70)).astype(np.uint16)
    out = export.export_bioimageio(
        (model, _META), tmp_path / "s", sample=sample, validate=False, weights=()
    )
    x = np.load(out / "test_input.npy")
    assert x.shape == (1, 1, 128, 68) and model.is_valid_input_shape(x.shape[2:])
    np.testing.assert_array_equal(x[0, 0], sample[1:129, 1:69])
    assert set(_rdf(out)["weights"]) == {"pytorch_state_dict"}
    with pytest.raises(ValueError, match="too small"):
        export.export_bioimageio((model, _META), tmp_path / "t", sample=sample[:40])
    with pytest.raises(ValueError, match=r"`sample` has shape \(2, 60, 60\)"):
        export.export_bioimageio((model, _META), tmp_path / "u", sample=np.zeros((2, 60, 60)))
    with pytest.raises(ValueError, match="`weights`"):
        export.export_bioimageio((model, _META), tmp_path / "v", weights=("keras",))


def test_overwrite_rules(tmp_path):
    model = _tiny("same")
    out = export.export_bioimageio((model, _META), tmp_path / "p", validate=False, weights=())
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_bioimageio((model, _META), out, validate=False)
    export.export_bioimageio((model, _META), out, validate=False, weights=(), overwrite=True)
    assert (out / "rdf.yaml").is_file()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"not a bioimage\.io package"):
        export.export_bioimageio((model, _META), precious, validate=False, overwrite=True)
    assert (precious / "thesis.tex").read_text() == "keep me"


def test_cli_export_and_overwrite(tmp_path, capsys):
    model_file = save_model(_tiny("same"), tmp_path / "m.safetensors", metadata=_META)
    out = tmp_path / "m.bioimageio.zip"
    args = ["export", str(model_file), "--out", str(out), "--no-validate", "--author", "Me"]
    assert main(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert _rdf(out)["authors"] == [{"name": "Me"}]
    assert main(args) == 4  # an output error
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    _, meta = load_model(out)
    assert meta["classes"] == _META["classes"]
    assert main(["export", str(model_file), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "ending in .onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 3


def test_anisotropic_3d_package_declares_sizes_per_axis_and_validates(tmp_path):
    # Z is pooled fewer times than Y and X, so its valid sizes, step and halo differ.
    torch.manual_seed(0)
    model = UNet(spatial_dims=3, depth=2, base_channels=4, spacing=(2, 1, 1)).eval()
    out = tmp_path / "vol.bioimageio.zip"
    export.export_bioimageio((model, _META), out, validate=False)
    rdf = _rdf(out)
    inputs = {a["id"]: a["size"] for a in rdf["inputs"][0]["axes"] if a["type"] == "space"}
    outputs = {a["id"]: a["size"] for a in rdf["outputs"][0]["axes"] if a["type"] == "space"}
    minimum = model.valid_input_shape((1, 1, 1))
    for i, axis in enumerate(("z", "y", "x")):
        assert inputs[axis] == {"min": minimum[i], "step": model.divisors[i]}
        assert outputs[axis]["offset"] == -2 * model.halo[i]
    assert inputs["z"] != inputs["x"]
    _validate_or_skip(out)

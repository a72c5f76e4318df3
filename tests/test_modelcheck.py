"""Hostile and broken model files and packages: refused from the header, before any allocation."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_unet import _modelfile
from napari_unet._modelfile import (
    ModelFileError,
    build_model,
    load_checkpoint,
    save_model,
)
from napari_unet.io import load_model, read_metadata  # files and bioimage.io packages
from napari_unet.modelcheck import parameter_count, validate_metadata
from napari_unet.models import UNet, UNetPlusPlus
from napari_unet.tensortable import expected_tensors


def _tiny(**kwargs) -> UNet:
    torch.manual_seed(0)
    return UNet(**{"depth": 2, "base_channels": 4, "num_classes": 3, **kwargs})


def _split(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _edit_document(path: Path, change) -> Path:
    """Edit the JSON document of a model file in place, keeping its tensors byte for byte."""
    header, body = _split(path.read_bytes())
    document = json.loads(header["__metadata__"]["napari_unet"])
    change(document)
    header["__metadata__"]["napari_unet"] = json.dumps(document)
    path.write_bytes(_join(header, body))
    return path


@pytest.fixture
def model_file(tmp_path) -> Path:
    return save_model(
        _tiny(), tmp_path / "m.safetensors", metadata={"classes": ["bg", "cell", "border"]}
    )


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if a network is built for real (the meta device allocates nothing)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network was built before the file was refused")

    from napari_unet.export import _wrapper

    monkeypatch.setattr(_modelfile, "build_model", refuse)
    monkeypatch.setattr(_wrapper, "build_model", refuse)  # packages' state-dict path


# -- budget ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "arguments"),
    [
        ("unet", {}),
        ("unet", {"in_channels": 3, "num_classes": 5, "depth": 2, "base_channels": 6}),
        ("unet", {"depth": 3, "base_channels": 4, "batch_norm": True, "spatial_dims": 3}),
        ("unet", {"depth": 3, "base_channels": 2, "spatial_dims": 3, "spacing": [4.0, 1.0, 1.0]}),
        ("unetplusplus", {"num_classes": 1}),
        ("unetplusplus", {"depth": 3, "base_channels": 4, "deep_supervision": False}),
        ("unetplusplus", {"depth": 2, "base_channels": 3, "batch_norm": True, "spatial_dims": 3}),
    ],
)
def test_parameter_count_is_exact(architecture, arguments):
    cls = UNet if architecture == "unet" else UNetPlusPlus
    net = expected_tensors(cls, arguments)  # the real class, on the meta device
    assert parameter_count(architecture, arguments) == sum(p.numel() for p in net.parameters())


def test_depth_60_is_refused_with_numbers_before_anything_is_built(model_file, no_build):
    # The 121 KB file declaring depth 60 allocated 4.9 GB before failing.
    _edit_document(model_file, lambda d: d["arguments"].update(depth=60))
    with pytest.raises(ModelFileError, match="depth 60") as info:
        load_model(model_file)
    message = str(info.value)
    assert "parameters" in message and "the limit is 2.5e+08 parameters" in message
    assert str(model_file) in message and "NAPARI_UNET_MAX_PARAMETERS" in message
    # read_metadata does not build anything; build_model (the widgets' path) refuses too.
    assert read_metadata(model_file)["arguments"]["depth"] == 60


def test_build_model_refuses_above_the_budget():
    with pytest.raises(ModelFileError, match=r"depth 60, .* implies [0-9.e+]+ parameters"):
        build_model("unet", {"depth": 60, "base_channels": 1})
    with pytest.raises(ModelFileError, match="base_channels 256"):
        build_model("unet", {"base_channels": 256})  # 496 M parameters, 2 GB


def test_budget_from_the_environment(model_file, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_MAX_PARAMETERS", "100")
    with pytest.raises(ModelFileError, match="the limit is 100 parameters"):
        load_model(model_file)
    monkeypatch.delenv("NAPARI_UNET_MAX_PARAMETERS")
    assert isinstance(load_model(model_file)[0], UNet)


def test_mismatched_weights_are_found_in_the_tensor_table(model_file, no_build):
    # base_channels 256 with small weights cost 2.1 GB and 16 s before "weights do not match".
    _edit_document(model_file, lambda d: d["arguments"].update(base_channels=256, depth=4))
    with pytest.raises(ModelFileError, match=r"base_channels 256, .* implies 4.96e"):
        load_model(model_file)
    _edit_document(model_file, lambda d: d["arguments"].update(base_channels=64, depth=2))
    with pytest.raises(ModelFileError, match="do not match the stored architecture") as info:
        load_model(model_file)
    assert "wrong shape" in str(info.value) and "nothing was loaded" in str(info.value)


# -- tensor table ------------------------------------------------------------------------------


def _edit_table(path: Path, change) -> Path:
    header, body = _split(path.read_bytes())
    change(header)
    path.write_bytes(_join(header, body))
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda h: h["head.bias"].pop("data_offsets"), "has no 'data_offsets'"),
        (lambda h: h["head.bias"].update(dtype="Q7"), "dtype"),
        (lambda h: h["head.bias"].update(shape=[2]), "a range of 8 bytes"),
        (lambda h: h["head.bias"].update(shape="3"), "shape"),
        (lambda h: h["head.bias"].update(data_offsets=[0, -1]), "data_offsets"),
        (lambda h: h.update({"head.bias": 7}), "tensor 'head.bias'"),
        (lambda h: h.update({"__metadata__": {"napari_unet": 1}}), "__metadata__"),
        (lambda h: h.pop("head.bias"), "tensors must be contiguous|bytes after the header"),
        (lambda h: h.update({"extra": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}),
         "unexpected extra"),
    ],
)  # fmt: skip
def test_malformed_tensor_tables(model_file, no_build, change, match):
    _edit_table(model_file, change)
    with pytest.raises(ModelFileError, match=match):
        load_model(model_file)


def test_overlapping_and_padded_data(model_file):
    header, body = _split(model_file.read_bytes())
    model_file.write_bytes(_join(header, body + b"\0" * 16))
    with pytest.raises(ModelFileError, match="corrupt: its tensors need"):
        load_model(model_file)
    names = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    header[names[1][1]]["data_offsets"] = list(names[0][0])  # two tensors on the same bytes
    model_file.write_bytes(_join(header, body))
    with pytest.raises(ModelFileError):
        load_model(model_file)


def test_huge_or_deeply_nested_headers(tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{" + b"\0" * 100)
    with pytest.raises(ModelFileError, match="its header claims"):
        load_model(path)
    nested = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(struct.pack("<Q", len(nested) + 2) + b'{"a":' + nested[:-1])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)
    path.write_bytes(_join({"__metadata__": {"napari_unet": "[" * 50_000 + "]" * 50_000}}, b""))
    with pytest.raises(ModelFileError):
        read_metadata(path)


def test_a_device_file_is_not_read(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(ModelFileError, match="not a regular file"):
        load_model("/dev/zero")


# -- metadata schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(classes=[0, 1, 2]), r"invalid 'classes': found \[0, 1, 2\]"),
        (lambda d: d.update(classes=["a", "b"]), "3 names"),
        (lambda d: d.update(normalization="percentile"), "invalid 'normalization'"),
        (lambda d: d.update(normalization={"scope": "image", "low": 99, "high": 1}), "high"),
        (lambda d: d.update(normalization={"scope": "dataset", "lo": [0.0]}), "normalization.hi"),
        (lambda d: d.update(normalization={"scope": "colour"}), "normalization.scope"),
        (lambda d: d.update(pretrained={"postprocessing": {"threshold": "high"}}),
         "pretrained.postprocessing.threshold: found 'high', expected a number in"),
        (lambda d: d.update(postprocessing={"threshold": 1.5}), "postprocessing'.threshold"),
        (lambda d: d.update(postprocessing={"min_size": "big"}), "postprocessing'.min_size"),
        (lambda d: d.update(postprocessing={"method": "magic"}), "postprocessing'.method"),
        (lambda d: d.update(pretrained={"postprocessing": {"level": "2"}}), "level"),
        (lambda d: d.update(training="yesterday"), "invalid 'training'"),
        (lambda d: d.update(training={"iteration": "ten"}), "training.iteration"),
        (lambda d: d.update(training={"config": {"optimizer": "rmsprop"}}),
         "training.config.optimizer"),
        (lambda d: d.update(training={"best": {"iteration": 1, "metrics": []}}), "best.metrics"),
        (lambda d: d.pop("package_version"), "lacks 'package_version'"),
        (lambda d: d.update(package_version=3), "package_version"),
        (lambda d: d.update(format_version="1"), "format version '1'"),
        (lambda d: d.update(format_version=0), "format version 0"),
        (lambda d: d.update(num_classes=7), "'num_classes'"),
        (lambda d: d.update(object_diameter=-3), "object_diameter"),
        (lambda d: d.update(spacing=[1.0]), "spacing"),
        (lambda d: d.update(architecture=["unet"]), "architecture"),
    ],
)  # fmt: skip
def test_metadata_schema(model_file, no_build, change, match):
    _edit_document(model_file, change)
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(model_file)
    assert str(model_file) in str(info.value)
    with pytest.raises(ModelFileError, match=match):
        read_metadata(model_file)


@pytest.mark.parametrize(
    "arguments",
    [
        {"depth": 0},
        {"depth": -1},
        {"depth": 10**9},
        {"depth": 2.0},
        {"depth": True},
        {"base_channels": "64"},
        {"base_channels": 0},
        {"in_channels": 10**12},
        {"spatial_dims": 4},
        {"dropout": 2},
        {"dropout": float("nan")},
        {"padding": "reflect"},
        {"batch_norm": "yes"},
        {"width": 3},
        {"spacing": [0.0, 1.0]},
        {"spacing": [1.0, 1.0, 1.0]},
        {"spacing": "1,1"},
    ],
)
def test_absurd_architectures(model_file, no_build, arguments):
    _edit_document(model_file, lambda d: d["arguments"].update(arguments))
    with pytest.raises(ModelFileError, match=r"invalid arguments|unknown key") as info:
        load_model(model_file)
    assert str(model_file) in str(info.value)


def test_unetplusplus_output_level_out_of_range(tmp_path, no_build):
    path = save_model(UNetPlusPlus(depth=2, base_channels=2), tmp_path / "pp.safetensors")
    _edit_document(path, lambda d: d["arguments"].update(output_level=9))
    with pytest.raises(ModelFileError, match=r"arguments.output_level"):
        load_model(path)


def test_known_optional_keys_and_extensions_round_trip(tmp_path):
    meta = {
        "object_diameter": 17.5,
        "postprocessing": {"threshold": 0.4, "method": "watershed"},
        "spacing": [2.0, 0.5, 0.5],
        "inference_check": {"max_abs_diff": 0.0},
        "x_mylab": {"anything": [1, "two"]},
        "note": "unknown keys are kept and never read",
    }
    path = save_model(_tiny(), tmp_path / "m.safetensors", metadata=meta)
    stored = load_model(path)[1]
    assert {k: stored[k] for k in meta} == meta


def test_nan_scores_in_the_training_record_are_kept(tmp_path):
    # A validation score can be NaN; refusing it would make training fail at its first save.
    best = {"iteration": 2, "monitor": "val_loss", "value": float("nan"),
            "metrics": {"val_loss": float("nan"), "rand_error": None}}  # fmt: skip
    path = save_model(_tiny(), tmp_path / "m.safetensors", metadata={"training": {"best": best}})
    assert np.isnan(load_model(path)[1]["training"]["best"]["metrics"]["val_loss"])


def test_save_refuses_metadata_it_could_not_load(tmp_path):
    with pytest.raises(ValueError, match=r"schema.*classes"):
        save_model(_tiny(), tmp_path / "m.safetensors", metadata={"classes": [1, 2, 3]})
    assert not list(tmp_path.iterdir())


def test_bundled_models_fit_the_schema():
    from napari_unet.pretrained import list_pretrained, pretrained_path

    names = list_pretrained()
    assert names
    for name in names:
        validate_metadata(read_metadata(pretrained_path(name)), source=name)


# -- optimiser state and resuming --------------------------------------------------------------


def _checkpoint(tmp_path: Path, model: torch.nn.Module, optimizer_model: torch.nn.Module) -> Path:
    optimizer = torch.optim.Adam(optimizer_model.parameters(), lr=1e-3)
    x = torch.randn(1, 1, *optimizer_model.valid_input_shape((4, 4)))
    optimizer_model(x).mean().backward()
    optimizer.step()
    return save_model(
        model, tmp_path / "c.safetensors", optimizer_state=optimizer.state_dict(), overwrite=True
    )


def test_optimizer_state_of_another_model_is_refused(tmp_path):
    # Same parameter count, other shapes: only the shapes tell them apart.
    path = _checkpoint(tmp_path, _tiny(), _tiny(num_classes=2))
    with pytest.raises(ModelFileError, match=r"state exp_avg of parameter \d+ has shape"):
        load_checkpoint(path)
    path = _checkpoint(tmp_path, _tiny(), UNet(depth=1, base_channels=2, num_classes=3))
    with pytest.raises(ModelFileError, match=r"covers \d+ parameter.*the model has \d+"):
        load_checkpoint(path)
    # The weights alone still load.
    assert isinstance(load_model(path)[0], UNet)


def test_bad_optimiser_keys(tmp_path):
    path = _checkpoint(tmp_path, _tiny(), _tiny())
    header, body = _split(path.read_bytes())
    name = next(k for k in header if k.startswith("__optimizer__."))
    header[name.replace("__optimizer__.0.", "__optimizer__.zero.")] = header.pop(name)
    path.write_bytes(_join(header, body))
    with pytest.raises(ModelFileError, match="invalid optimiser tensor name"):
        load_checkpoint(path)

    path = _checkpoint(tmp_path, _tiny(), _tiny())
    header, body = _split(path.read_bytes())
    groups = json.loads(header["__metadata__"]["optimizer"])
    groups[0].pop("params")
    header["__metadata__"]["optimizer"] = json.dumps(groups)
    path.write_bytes(_join(header, body))
    with pytest.raises(ModelFileError, match=r"param_groups\[0\]"):
        load_checkpoint(path)

    header["__metadata__"]["optimizer"] = "{not json"
    path.write_bytes(_join(header, body))
    with pytest.raises(ModelFileError, match="bad optimiser state"):
        load_checkpoint(path)


def test_resume_with_another_optimizer_is_a_clear_error(tmp_path):
    from napari_unet.training import TrainConfig, train

    path = _checkpoint(tmp_path, _tiny(num_classes=2), _tiny(num_classes=2))
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    labels = np.zeros((32, 32), np.uint16)
    labels[8:20, 8:20] = 1
    config = TrainConfig(iterations=2, optimizer="sgd", border_class=False, tile_shape=None)
    with pytest.raises(ValueError, match=r"holds adam optimiser state.*'sgd'"):
        train([(image, labels)], model=path, resume=True, config=config)


# -- devices, predict_tiled --------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_a_clear_error(model_file):
    with pytest.raises(ValueError, match="'cuda' is not available on this machine"):
        load_model(model_file, device="cuda")
    with pytest.raises(ValueError, match="not a device name"):
        load_model(model_file, device="gpu please")


def test_predict_tiled_without_a_model():
    from napari_unet.tiling import predict_tiled

    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module"):
        predict_tiled(None, np.zeros((16, 16), np.float32))


# -- file modes --------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_model_files_respect_the_umask_and_keep_the_mode_they_replace(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_model(_tiny(), tmp_path / "a.safetensors")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a colleague can read it
        os.umask(0o077)
        private = save_model(_tiny(), tmp_path / "b.safetensors")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        os.umask(0o022)
        path.chmod(0o640)
        save_model(_tiny(), path, overwrite=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # overwriting keeps the mode
    finally:
        os.umask(old)


# -- packages ----------------------------------------------------------------------------------


def _package(tmp_path: Path, members: dict[str, bytes], name: str = "p.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def _rdf(model_file: Path) -> bytes:
    document = read_metadata(model_file)
    return yaml.safe_dump(
        {
            "type": "model",
            "name": "tiny",
            "attachments": [{"source": "model.safetensors"}],
            "config": {"napari_unet": {"model_file": "model.safetensors", "metadata": document}},
        }
    ).encode()


def test_package_is_read_from_memory_without_temporary_files(tmp_path, model_file, monkeypatch):
    import tempfile

    path = _package(
        tmp_path, {"rdf.yaml": _rdf(model_file), "model.safetensors": model_file.read_bytes()}
    )

    def refuse(*args, **kwargs):
        raise AssertionError("a temporary file was written")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)
    model, meta = load_model(path)
    assert meta["classes"] == ["bg", "cell", "border"]
    reference = load_model(model_file)[0].state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_zip_bomb_is_refused_before_reading(tmp_path, model_file, no_build):
    # The 2 MB zip expanded to 2 GiB; 20 MiB of zeros is enough to show the rule.
    bomb = b"\0" * (20 * 2**20)
    path = _package(tmp_path, {"rdf.yaml": _rdf(model_file), "model.safetensors": bomb})
    assert path.stat().st_size < 100_000
    with pytest.raises(ModelFileError, match="zip bomb") as info:
        load_model(path)
    assert "MB" in str(info.value) and "times" in str(info.value)


def test_large_rdf_yaml_is_refused_before_parsing(tmp_path, model_file):
    # The 42 KB zip with a 40 MB rdf.yaml burnt 64 s of CPU in the YAML parser.
    big = _rdf(model_file) + b"# " + b"x" * (2 * 2**20) + b"\n"
    path = _package(tmp_path, {"rdf.yaml": big})
    with pytest.raises(ModelFileError, match=r"rdf.yaml has \d+ bytes; napari-unet reads at most"):
        read_metadata(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "rdf.yaml").write_bytes(big)
    with pytest.raises(ModelFileError, match="reads at most"):
        load_model(folder)


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "C:/evil", "a/../../evil"])
def test_package_member_names_outside_the_package(tmp_path, model_file, name):
    path = _package(tmp_path, {"rdf.yaml": _rdf(model_file), name: b"x"})
    with pytest.raises(ModelFileError, match="refusing member"):
        load_model(path)


def test_too_many_members(tmp_path, model_file):
    members = {"rdf.yaml": _rdf(model_file)} | {f"f{i}": b"" for i in range(1001)}
    with pytest.raises(ModelFileError, match="1002 members"):
        load_model(_package(tmp_path, members))


def test_yaml_aliases_are_refused(tmp_path):
    text = b"a: &x [1, 2, 3]\nb: [*x, *x, *x]\nconfig: {}\n"
    with pytest.raises(ModelFileError, match="aliases"):
        read_metadata(_package(tmp_path, {"rdf.yaml": text}))


def test_package_folder_link_outside_is_refused(tmp_path, model_file):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "rdf.yaml").write_bytes(_rdf(model_file))
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(model_file.read_bytes())
    try:
        (folder / "model.safetensors").symlink_to(outside)
    except OSError:
        pytest.skip("no symlinks here")
    with pytest.raises(ModelFileError, match="leads outside the package"):
        load_model(folder)


def test_package_weights_checked_like_a_model_file(tmp_path, model_file, no_build):
    _edit_document(model_file, lambda d: d["arguments"].update(depth=60))
    path = _package(
        tmp_path, {"rdf.yaml": _rdf(model_file), "model.safetensors": model_file.read_bytes()}
    )
    with pytest.raises(ModelFileError, match="depth 60"):
        load_model(path)


def test_not_a_zip_and_not_a_model(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelFileError):
        load_model(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights.bin", b"1234")
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)


def test_anisotropic_3d_unet_round_trips(tmp_path):
    model = UNet(depth=2, base_channels=2, spatial_dims=3, spacing=(3.0, 1.0, 1.0), padding="same")
    path = save_model(model, tmp_path / "m3.safetensors", metadata={"spacing": [3.0, 1.0, 1.0]})
    loaded, meta = load_model(path)
    assert loaded.config() == model.config() and meta["arguments"]["spacing"] == [3.0, 1.0, 1.0]
    assert parameter_count("unet", meta["arguments"]) == sum(p.numel() for p in model.parameters())


def test_package_state_dict_weights_are_bounded_before_loading(tmp_path, model_file):
    # The pytorch_state_dict fallback: a torch.save archive that expands a thousandfold.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as inner:
        inner.writestr("archive/data/0", b"\0" * (20 * 2**20))
    rdf = yaml.safe_load(_rdf(model_file))
    rdf["attachments"] = []
    rdf["weights"] = {"pytorch_state_dict": {"source": "weights.pt"}}
    path = _package(
        tmp_path, {"rdf.yaml": yaml.safe_dump(rdf).encode(), "weights.pt": buffer.getvalue()}
    )
    with pytest.raises(ModelFileError, match=r"weights.pt.*zip bomb"):
        load_model(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_package_on_cuda_without_a_gpu(tmp_path, model_file):
    path = _package(
        tmp_path, {"rdf.yaml": _rdf(model_file), "model.safetensors": model_file.read_bytes()}
    )
    with pytest.raises(ValueError, match="'cuda' is not available"):
        load_model(path, device="cuda")

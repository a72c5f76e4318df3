"""Model files: round trip, atomic writes, and refusal of unsafe or broken files."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet._modelfile import (
    ModelFileError,
    build_model,
    load_checkpoint,
    load_model,
    read_metadata,
    register_architecture,
    save_model,
)
from napari_unet.models import UNet


def _tiny(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(**{"depth": 2, "base_channels": 4, "num_classes": 3, **kwargs})


def test_round_trip_weights_and_metadata(tmp_path):
    model = _tiny(in_channels=2)
    path = tmp_path / "m.safetensors"
    meta = {"classes": ["background", "cell", "border"], "normalization": {"scope": "image"}}
    save_model(model, path, metadata=meta)

    loaded, stored = load_model(path)
    assert isinstance(loaded, UNet) and not loaded.training
    assert loaded.config() == model.config()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert stored["architecture"] == "unet"
    assert stored["arguments"]["in_channels"] == 2
    assert stored["classes"] == meta["classes"]
    assert stored["normalization"] == meta["normalization"]
    assert stored["package_version"]
    assert read_metadata(path) == stored
    # Same predictions.
    x = torch.randn(1, 2, *model.valid_input_shape((8, 8)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_single_file_with_json_in_header(tmp_path):
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    (size,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8 : 8 + size])
    document = json.loads(header["__metadata__"]["napari_unet"])
    assert document["format"] == "napari-unet-model"


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(_tiny(0), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(_tiny(1), path)
    assert path.read_bytes() == before
    save_model(_tiny(1), path, overwrite=True)
    assert path.read_bytes() != before


def test_interrupted_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_model(_tiny(0), path)
    before = path.read_bytes()

    def crash(src, dst):
        raise KeyboardInterrupt  # as if Ctrl-C arrived just before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(_tiny(1), path, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp left


def test_reserved_and_unserialisable_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(_tiny(), tmp_path / "a.safetensors", metadata={"architecture": "x"})
    with pytest.raises(ValueError, match="JSON"):
        save_model(_tiny(), tmp_path / "b.safetensors", metadata={"x": object()})
    assert not list(tmp_path.iterdir())


class _Exploit:
    """Unpickling this runs ``Path(target).touch()``: what a malicious model file does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    payload = {"state_dict": _Exploit(target)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=4))
    # Sanity check: the payload really would run if unpickled.
    assert not target.exists()

    with pytest.raises(ModelFileError, match="pickle") as info:
        load_model(path)
    assert "arbitrary code" in str(info.value)
    with pytest.raises(ModelFileError, match="pickle"):
        read_metadata(path)
    assert not target.exists()

    # And a proof that the file is dangerous: unpickling it does create the file.
    if writer == "pickle":
        pickle.loads(path.read_bytes())
        assert target.exists()


def test_malicious_pickle_renamed_to_safetensors_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    torch.save({"x": _Exploit(target)}, path)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(path)
    assert not target.exists()


def test_truncated_file(tmp_path):
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(path)
    path.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(path)
    path.write_bytes(data[:3])
    with pytest.raises(ModelFileError, match="too short"):
        load_model(path)


def test_corrupt_files(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"this is not a model at all, just some text")
    with pytest.raises(ModelFileError, match="not a napari-unet model file"):
        load_model(path)

    good = save_model(_tiny(), tmp_path / "good.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", good[:8])
    broken = bytearray(good)
    broken[8 + size // 2] = ord("\x00")  # garble the JSON header
    path.write_bytes(bytes(broken))
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(path)


def test_plain_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_model(path)


def _rewrite_document(path: Path, change) -> None:
    """Edit the stored JSON document of a model file, keeping its tensors."""
    from safetensors.torch import load, save

    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])["__metadata__"]
    document = json.loads(header["napari_unet"])
    change(document)
    header["napari_unet"] = json.dumps(document)
    path.write_bytes(save(load(data), metadata=header))


def test_wrong_architecture_arguments(tmp_path):
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    _rewrite_document(path, lambda d: d["arguments"].update(base_channels=8))
    with pytest.raises(ModelFileError, match="do not match the stored architecture"):
        load_model(path)


def test_unknown_architecture(tmp_path):
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    _rewrite_document(path, lambda d: d.update(architecture="transformer"))
    with pytest.raises(ModelFileError, match="unknown architecture 'transformer'"):
        load_model(path)
    _rewrite_document(path, lambda d: d.update(architecture="unet", arguments={"depth": -1}))
    with pytest.raises(ModelFileError, match="invalid"):
        load_model(path)


def test_newer_format_version(tmp_path):
    path = save_model(_tiny(), tmp_path / "m.safetensors")
    _rewrite_document(path, lambda d: d.update(format_version=99))
    with pytest.raises(ModelFileError, match="upgrade"):
        load_model(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="folder"):
        load_model(tmp_path)


def test_optimizer_state_round_trip(tmp_path):
    model = _tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(1, 1, *model.valid_input_shape((4, 4)))
    model(x).mean().backward()
    optimizer.step()
    path = save_model(model, tmp_path / "c.safetensors", optimizer_state=optimizer.state_dict())
    loaded, _, state = load_checkpoint(path)
    restored = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    restored.load_state_dict(state)
    for a, b in zip(
        optimizer.state_dict()["state"].values(),
        restored.state_dict()["state"].values(),
        strict=True,
    ):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
        assert torch.equal(a["step"], b["step"])
    # load_model ignores the optimiser tensors.
    assert isinstance(load_model(path)[0], UNet)


def test_registry(tmp_path):
    class Wider(UNet):
        pass

    with pytest.raises(ValueError, match="not a registered architecture"):
        save_model(Wider(depth=1, base_channels=2), tmp_path / "w.safetensors")
    register_architecture("wider-test", Wider)
    try:
        path = save_model(Wider(depth=1, base_channels=2), tmp_path / "w.safetensors")
        model, meta = load_model(path)
        assert type(model) is Wider and meta["architecture"] == "wider-test"
    finally:
        from napari_unet._modelfile import ARCHITECTURES

        ARCHITECTURES.pop("wider-test")
    with pytest.raises(ValueError, match=r"nn\.Module"):
        register_architecture("bad", int)
    assert isinstance(build_model("unet", {"depth": 1, "base_channels": 2}), UNet)


def test_weights_on_cpu_and_contiguous(tmp_path):
    model = _tiny()
    # A non-contiguous parameter must still save (safetensors needs contiguous data).
    with torch.no_grad():
        model.head.weight.data = (
            model.head.weight.data.transpose(0, 1).contiguous().transpose(0, 1)
        )
    path = save_model(model, tmp_path / "m.safetensors")
    loaded, _ = load_model(path)
    np.testing.assert_array_equal(loaded.head.weight.detach(), model.head.weight.detach())


def test_unetplusplus_round_trip(tmp_path):
    from napari_unet.models import UNetPlusPlus

    torch.manual_seed(0)
    model = UNetPlusPlus(depth=2, base_channels=4, num_classes=3)
    path = save_model(model, tmp_path / "pp.safetensors")
    loaded, meta = load_model(path)
    assert meta["architecture"] == "unetplusplus" and type(loaded) is UNetPlusPlus
    assert loaded.config() == model.config()
    x = torch.randn(1, 1, *model.valid_input_shape((8, 8)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# "PK" writes up to a thousand files before one starts with it: slow on a busy disk.
@pytest.mark.parametrize("prefix", [b"\x80", pytest.param(b"PK", marks=pytest.mark.slow)])
def test_own_files_whose_header_length_looks_like_a_pickle_or_zip_load(tmp_path, prefix):
    # The first bytes of a safetensors file are its header length; 1 file in 256 starts with
    # 0x80 (a pickle's first byte) and some start with "PK" (a zip's). They are still ours.
    model = _tiny()
    found = None
    for pad in range(0, 1024):
        path = save_model(
            model,
            tmp_path / f"m{pad}.safetensors",
            metadata={"note": "x" * pad},
        )
        if path.read_bytes()[: len(prefix)] == prefix:
            found = path
            break
        path.unlink()
    if found is None and prefix == b"PK":
        # "PK" needs a header of 0x4B50 bytes (+ k·65536): pad to it exactly.
        base = save_model(model, tmp_path / "base.safetensors", metadata={"note": ""})
        size = struct.unpack("<Q", base.read_bytes()[:8])[0]
        target = 0x4B50
        for extra in range(target - size - 8, target - size + 8):
            path = save_model(
                model, tmp_path / f"pk{extra}.safetensors", metadata={"note": "x" * extra}
            )
            if path.read_bytes()[:2] == b"PK":
                found = path
                break
            path.unlink()
    assert found is not None, "could not produce a file with that prefix"
    loaded, stored = load_model(found)
    assert stored["note"].startswith("x") or stored["note"] == ""
    assert read_metadata(found)["note"] == stored["note"]
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)

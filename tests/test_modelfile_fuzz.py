"""Property-based tests: any model file or package ends in success or a documented error.

Every generated file (random bytes, random header lengths, mutated metadata,
mutated tensor tables, truncations, random zips) must either load or raise
``ModelFileError`` / ``FileNotFoundError``; never another exception, and never
a network built above the parameter budget (set low here, so that a check that
let an architecture through would be seen). Examples are derandomised so that
CI is reproducible; the counts are modest to keep the file fast. Set
``NAPARI_UNET_FUZZ_EXAMPLES`` (e.g. 1000) for a deeper run with fresh random
examples.
"""

from __future__ import annotations

import functools
import io
import json
import os
import struct
import zipfile
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_unet._modelfile import ModelFileError, load_checkpoint, save_model  # noqa: E402
from napari_unet.io import load_model, read_metadata  # noqa: E402  (files and packages)
from napari_unet.modelcheck import validate_metadata  # noqa: E402
from napari_unet.models import UNet, UNetPlusPlus  # noqa: E402
from napari_unet.normalize import Normalization  # noqa: E402
from napari_unet.pretrained import recommended_threshold  # noqa: E402
from napari_unet.tensortable import expected_tensors  # noqa: E402

BUDGET = 200_000  # parameters; the tiny model below has a few hundred
DOCUMENTED = (ModelFileError, FileNotFoundError)
# NAPARI_UNET_FUZZ_EXAMPLES=1000 explores new random examples (a deeper, slower run).
_DEEP = int(os.environ.get("NAPARI_UNET_FUZZ_EXAMPLES") or 0)
FUZZ = settings(
    max_examples=_DEEP or 60,
    deadline=None,
    derandomize=not _DEEP,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)


@functools.cache
def _good_file() -> bytes:
    import tempfile

    torch.manual_seed(0)
    model = UNet(depth=1, base_channels=2, num_classes=3, padding="same")
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(1, 1, 4, 4)).mean().backward()
    optimizer.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(
            model,
            Path(tmp) / "m.safetensors",
            metadata={
                "classes": ["background", "cell", "border"],
                "normalization": Normalization().to_dict(),
                "training": {"iteration": 3, "config": {"optimizer": "adam", "iterations": 5}},
                "pretrained": {"name": "tiny", "postprocessing": {"threshold": 0.4}},
            },
            optimizer_state=optimizer.state_dict(),
        )
        return path.read_bytes()


def _split(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def _guarded(cls: type):
    """``cls.__init__`` that first counts the parameters on the meta device (nothing allocated)."""
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        if torch.get_default_device().type != "meta":
            count = sum(p.numel() for p in expected_tensors(cls, kwargs).parameters())
            assert count <= BUDGET, f"built {count} parameters, above the budget {BUDGET}"
        original(self, *args, **kwargs)

    return __init__


def _load_everything(path: Path) -> None:
    """Every reader on ``path``: success, or a documented error; then the consumers."""
    with (
        mock.patch.dict(os.environ, {"NAPARI_UNET_MAX_PARAMETERS": str(BUDGET)}),
        mock.patch.object(UNet, "__init__", _guarded(UNet)),
        mock.patch.object(UNetPlusPlus, "__init__", _guarded(UNetPlusPlus)),
    ):
        for reader in (read_metadata, load_model, load_checkpoint):
            try:
                result = reader(path)
            except DOCUMENTED:
                continue
            meta = result if isinstance(result, dict) else result[1]
            # What the readers of the metadata do must then work.
            Normalization.from_dict(meta.get("normalization"))
            assert 0 < recommended_threshold(meta) < 1


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(folder, data):
    path = folder / "random.safetensors"
    path.write_bytes(data)
    _load_everything(path)


@FUZZ
@given(
    length=st.integers(min_value=0, max_value=2**64 - 1) | st.integers(0, 600),
    tail=st.binary(max_size=600),
    brace=st.booleans(),
)
def test_random_header_lengths(folder, length, tail, brace):
    path = folder / "header.safetensors"
    path.write_bytes(struct.pack("<Q", length) + (b"{" if brace else b"") + tail)
    _load_everything(path)


@FUZZ
@given(header=json_values, body=st.binary(max_size=64))
def test_random_json_headers(folder, header, body):
    path = folder / "json.safetensors"
    path.write_bytes(_join(header, body))
    _load_everything(path)


_PATHS = [
    ("architecture",),
    ("arguments",),
    ("arguments", "depth"),
    ("arguments", "base_channels"),
    ("arguments", "in_channels"),
    ("arguments", "num_classes"),
    ("arguments", "padding"),
    ("arguments", "dropout"),
    ("arguments", "spatial_dims"),
    ("arguments", "batch_norm"),
    ("format_version",),
    ("package_version",),
    ("classes",),
    ("normalization",),
    ("normalization", "scope"),
    ("normalization", "low"),
    ("normalization", "lo"),
    ("training",),
    ("training", "iteration"),
    ("training", "config"),
    ("training", "best"),
    ("pretrained",),
    ("pretrained", "postprocessing"),
    ("postprocessing",),
    ("object_diameter",),
    ("spacing",),
    ("in_channels",),
]


def _mutate(document: dict, path: tuple[str, ...], value, delete: bool) -> None:
    target = document
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    if delete:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(_PATHS),
            json_values | st.integers(-3, 70) | st.sampled_from(["unet", "unetplusplus", "same"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_metadata(folder, edits):
    header, body = _split(_good_file())
    document = json.loads(header["__metadata__"]["napari_unet"])
    for path, value, delete in edits:
        _mutate(document, path, value, delete)
    header["__metadata__"]["napari_unet"] = json.dumps(document)
    path = folder / "meta.safetensors"
    path.write_bytes(_join(header, body))
    _load_everything(path)


@FUZZ
@given(
    tensor=st.integers(0, 100),
    field=st.sampled_from(["dtype", "shape", "data_offsets", None]),
    value=json_values
    | st.lists(st.integers(-2, 5000), max_size=4)
    | st.sampled_from(["F32", "F16", "I64", "U8", "F64"]),
    action=st.sampled_from(["set", "delete", "drop-tensor", "add-tensor"]),
)
def test_mutated_tensor_table(folder, tensor, field, value, action):
    header, body = _split(_good_file())
    names = sorted(k for k in header if k != "__metadata__")
    name = names[tensor % len(names)]
    if action == "drop-tensor":
        header.pop(name)
    elif action == "add-tensor":
        header["extra." + name] = value if field is None else {**header[name], field: value}
    elif field is not None and action == "delete":
        header[name].pop(field)
    elif field is not None:
        header[name][field] = value
    path = folder / "table.safetensors"
    path.write_bytes(_join(header, body))
    _load_everything(path)


@FUZZ
@given(cut=st.integers(min_value=0))
def test_truncated_files(folder, cut):
    data = _good_file()
    path = folder / "cut.safetensors"
    path.write_bytes(data[: cut % len(data)])
    with pytest.raises(ModelFileError):
        load_model(path)
    _load_everything(path)


@functools.cache
def _good_rdf() -> dict:
    header, _ = _split(_good_file())
    document = json.loads(header["__metadata__"]["napari_unet"])
    return {
        "type": "model",
        "attachments": [{"source": "model.safetensors"}],
        "config": {"napari_unet": {"model_file": "model.safetensors", "metadata": document}},
        "weights": {"pytorch_state_dict": {"source": "weights.pt"}},
    }


_RDF_PATHS = [
    ("attachments",),
    ("weights",),
    ("weights", "pytorch_state_dict"),
    ("weights", "pytorch_state_dict", "source"),
    ("weights", "pytorch_state_dict", "sha256"),
    ("config",),
    ("config", "napari_unet"),
    ("config", "napari_unet", "model_file"),
    ("type",),
]


@functools.cache
def _good_state_dict() -> bytes:
    """The tiny model's weights as bioimage.io's pytorch_state_dict (of the softmax wrapper)."""
    from safetensors.torch import load

    tensors = {f"model.{k}": v for k, v in load(_good_file()).items() if "__optimizer__" not in k}
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


_names = st.sampled_from(
    ["rdf.yaml", "model.safetensors", "weights.pt", "../x", "/abs", "a/b", "C:x", "sub/../../y"]
) | st.text(alphabet="ab./\\:", min_size=1, max_size=6)


@FUZZ
@example(members={"rdf.yaml": "good-rdf", "model.safetensors": "good-model"}, rdf_edit=None,
         package_edit=None)  # fmt: skip
@example(members={"rdf.yaml": "good-rdf", "weights.pt": "good-state"}, rdf_edit=None,
         package_edit=None)  # fmt: skip
@given(
    members=st.dictionaries(
        _names,
        st.binary(max_size=200)
        | st.sampled_from(["good-model", "good-rdf", "yaml", "good-state"]),
        max_size=5,
    ),
    rdf_edit=st.tuples(st.sampled_from(_PATHS), json_values, st.booleans()),
    package_edit=st.tuples(st.sampled_from(_RDF_PATHS), json_values, st.booleans()),
)
def test_random_zips(folder, members, rdf_edit, package_edit):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            if content == "good-model":
                content = _good_file()
            elif content == "good-state":
                content = _good_state_dict()
            elif content in ("good-rdf", "yaml"):
                rdf = json.loads(json.dumps(_good_rdf()))
                if "weights.pt" in members:
                    rdf["attachments"] = []  # the state-dict fallback
                if content == "yaml" and rdf_edit is not None:
                    _mutate(rdf["config"]["napari_unet"]["metadata"], *rdf_edit)
                    _mutate(rdf, *package_edit)
                content = yaml.safe_dump(rdf).encode()
            try:
                archive.writestr(name, content)
            except (ValueError, OSError):
                pass  # a name zipfile itself will not write
    path = folder / "package.zip"
    path.write_bytes(buffer.getvalue())
    _load_everything(path)
    if rdf_edit is None:  # the two explicit examples are valid packages: they must load
        assert load_model(path)[1]["classes"] == ["background", "cell", "border"]


@settings(max_examples=_DEEP or 200, deadline=None, derandomize=not _DEEP)
@given(key=st.sampled_from(_PATHS), value=json_values, delete=st.booleans())
def test_validate_metadata_accepts_or_refuses_cleanly(key, value, delete):
    header, _ = _split(_good_file())
    document = json.loads(header["__metadata__"]["napari_unet"])
    _mutate(document, key, value, delete)
    try:
        validate_metadata(document, source="fuzz")
    except ModelFileError as err:
        assert str(err).startswith("fuzz")


@FUZZ
@given(extra=st.dictionaries(st.sampled_from([p[0] for p in _PATHS[10:]]), json_values))
def test_what_save_model_writes_loads_again(folder, extra):
    model = UNet(depth=1, base_channels=2, num_classes=3)
    path = folder / "saved.safetensors"
    try:
        save_model(model, path, metadata=extra, overwrite=True)
    except ValueError:
        return  # refused before anything was written
    _, meta = load_model(path)  # never a self-written file refused
    stored = {k: meta[k] for k in extra}
    assert json.dumps(stored, sort_keys=True) == json.dumps(extra, sort_keys=True)

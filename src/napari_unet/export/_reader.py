"""Read back the bioimage.io packages that :func:`napari_unet.export.export_bioimageio` writes.

Only packages with napari-unet's metadata (``config: napari_unet:`` in
``rdf.yaml``) can be mapped to a napari-unet architecture; the weights come
from the ``model.safetensors`` attachment, else from the state dict read with
``torch.load(weights_only=True)``. Nothing is extracted to disk and every read
has a size limit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._modelfile import ModelFileError, _parse_document, load_model_bytes
from ..devices import select_device
from ..modelcheck import MAX_RDF_BYTES, check_member_name, check_zip_members, max_parameters
from ..models.registry import architecture_name
from ._wrapper import ExportWrapper

__all__ = ["CONFIG_KEY", "is_bioimageio_package", "load_bioimageio", "read_bioimageio_metadata"]

#: The rdf.yaml section that holds our metadata.
CONFIG_KEY = "napari_unet"
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_MODEL_FILE = "model.safetensors"


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bioimage.io package: a folder or zip with ``rdf.yaml``.

    Only the names are looked at; a zip written by ``torch.save`` (also a zip
    archive) is not a package.
    """
    path = Path(path)
    if path.is_dir():
        return any((path / n).is_file() for n in _RDF_NAMES)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n in archive.namelist() for n in _RDF_NAMES)
    except (zipfile.BadZipFile, OSError):
        return False


def _weights_limit() -> int:
    """Largest weights file read from a package: the parameter budget in float32, plus slack."""
    return 4 * max_parameters() + 16 * 2**20


class _Package:
    """Read files of a package folder or zip by their name in rdf.yaml.

    A zip's directory is checked before anything in it is read (member names,
    count, total size, compression ratio), and every read has a size limit,
    checked against the directory (zip) or the file system (folder) first.
    Nothing is extracted to disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = None
        if not path.is_dir():
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as err:
                raise ModelFileError(f"{path} is not a readable zip file ({err})") from err
            try:
                # Several weight formats (safetensors, state dict, TorchScript, ONNX) + extras.
                check_zip_members(self._zip, source=path, max_total=4 * _weights_limit())
            except ModelFileError:
                self._zip.close()
                raise

    def __enter__(self) -> _Package:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of member ``name``, refused if larger than ``limit`` bytes."""
        # Package-relative names only: never read outside the package.
        if not isinstance(name, str):
            raise ModelFileError(f"{self.path}: a file name in rdf.yaml is {name!r}, not a string")
        check_member_name(name, source=self.path)
        try:
            if self._zip is not None:
                size = self._zip.getinfo(name).file_size
            else:
                file = self.path / name
                if not file.resolve().is_relative_to(self.path.resolve()):
                    raise ModelFileError(
                        f"{self.path}: refusing to read {name!r} (it leads outside the package)"
                    )
                if file.exists() and not file.is_file():
                    raise ModelFileError(f"{self.path}: {name!r} is not a regular file")
                size = file.stat().st_size
        except (KeyError, FileNotFoundError) as err:
            raise ModelFileError(f"{self.path} is incomplete: it lacks {name!r}") from err
        if size > limit:
            raise ModelFileError(
                f"{self.path}: {name} has {size} bytes; napari-unet reads at most {limit} "
                f"bytes for it. Nothing was read"
            )
        try:
            if self._zip is not None:
                # zipfile never returns more than the size in the directory (checked above).
                return self._zip.read(name)
            return (self.path / name).read_bytes()[: limit + 1]
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise ModelFileError(f"{self.path}: cannot read {name!r} ({err})") from err

    def rdf(self) -> dict[str, Any]:
        import yaml

        for name in _RDF_NAMES:
            try:
                text = self.read(name, MAX_RDF_BYTES)
            except ModelFileError as err:
                if "lacks" in str(err):
                    continue
                raise
            try:
                # YAML aliases can make a small file expand exponentially once walked.
                if any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(text, yaml.SafeLoader)):
                    raise ModelFileError(
                        f"{self.path}: {name} uses YAML aliases (*name), which napari-unet "
                        "does not read (its own exports have none)"
                    )
                rdf = yaml.safe_load(text)
            except (yaml.YAMLError, RecursionError, ValueError) as err:
                if isinstance(err, ModelFileError):
                    raise
                raise ModelFileError(f"{self.path}: {name} is not valid YAML ({err})") from err
            if not isinstance(rdf, dict):
                raise ModelFileError(f"{self.path}: {name} is not a YAML mapping")
            return rdf
        raise ModelFileError(f"{self.path} is not a bioimage.io package: no rdf.yaml")


def _file_entry(rdf: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    attachments = rdf.get("attachments")
    for entry in attachments if isinstance(attachments, list) else []:
        if isinstance(entry, Mapping) and entry.get("source") == name:
            return entry
    return None


def load_bioimageio(
    path: str | os.PathLike, *, device: str | torch.device | None = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a bioimage.io package exported by napari-unet.

    Parameters
    ----------
    path : str or path-like
        A package folder or zip (``.bioimageio.zip``) written by
        :func:`export_bioimageio`.
    device : str or torch.device, optional
        Where to put the model.

    Returns
    -------
    model : nn.Module
        The network (logits, as from :func:`napari_unet.io.load_model`; not
        the softmax wrapper), in eval mode.
    metadata : dict
        The napari-unet metadata stored in ``config.napari_unet``.

    Raises
    ------
    ModelFileError
        If the package was not exported by napari-unet (no
        ``config.napari_unet``), lacks files, or its files do not match the
        checksums in ``rdf.yaml``.

    Notes
    -----
    The weights come from the package's ``model.safetensors`` attachment
    (checked against its sha256); a package without it falls back to the
    ``pytorch_state_dict`` weights, read with ``torch.load(weights_only=True)``,
    which loads tensors only and refuses pickled code. ``bioimageio.spec`` is
    not needed for loading.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {path} does not exist")
    if device is not None:
        device = select_device(device)  # a clear error for "cuda" without a GPU, before reading
    with _Package(path) as package:
        rdf = package.rdf()
        ours, document = _our_config(path, rdf)
        model_file = ours.get("model_file")
        if isinstance(model_file, str) and _file_entry(rdf, model_file) is not None:
            data = package.read(model_file, _weights_limit())
            _check_sha(path, model_file, data, _file_entry(rdf, model_file))
            model = _model_from_safetensors(path, data, device)
        else:
            model = _model_from_state_dict(path, package, rdf, document, device)
    if architecture_name(model) != document["architecture"] or model.config() != dict(
        document["arguments"]
    ):
        raise ModelFileError(
            f"{path}: the weights' architecture does not match config.{CONFIG_KEY}.metadata"
        )
    return model, document


def read_bioimageio_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The napari-unet metadata of a package from :func:`export_bioimageio`, without weights.

    Raises
    ------
    ModelFileError
        If the package was not exported by napari-unet.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {path} does not exist")
    with _Package(path) as package:
        return _our_config(path, package.rdf())[1]


def _our_config(path: Path, rdf: Mapping[str, Any]) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """``config.napari_unet`` and the metadata document in it, or a clear refusal."""
    config = rdf.get("config") if isinstance(rdf.get("config"), Mapping) else {}
    ours = config.get(CONFIG_KEY)
    if not isinstance(ours, Mapping) or not isinstance(ours.get("metadata"), Mapping):
        weights = rdf.get("weights") if isinstance(rdf.get("weights"), Mapping) else {}
        formats = ", ".join(sorted(map(str, weights))) or "none"
        raise ModelFileError(
            f"{path} is a bioimage.io {rdf.get('type', 'resource')} "
            f"({rdf.get('name', 'unnamed')!r}) but was not exported by napari-unet: its "
            f"rdf.yaml has no config.{CONFIG_KEY}.metadata (architecture, arguments, "
            f"normalisation), so its weights ({formats}) cannot be mapped to a napari-unet "
            "architecture. Run it with bioimageio.core, deepImageJ or ilastik instead"
        )
    try:
        header = {"napari_unet": json.dumps(dict(ours["metadata"]))}
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: config.{CONFIG_KEY} is invalid ({err})") from err
    return ours, _parse_document(path, header)


def _check_sha(path: Path, name: str, data: bytes, entry: Mapping[str, Any] | None) -> None:
    expected = (entry or {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ModelFileError(
            f"{path}: {name} does not match the sha256 in rdf.yaml (corrupt or modified)"
        )


def _model_from_safetensors(path: Path, data: bytes, device: Any) -> nn.Module:
    # From memory: no temporary copy on disk.
    model, _ = load_model_bytes(data, source=f"{path}: its {_MODEL_FILE}", device=device)
    return model


def _model_from_state_dict(
    path: Path, package: _Package, rdf: Mapping[str, Any], document: Mapping[str, Any], device: Any
) -> nn.Module:
    weights = rdf.get("weights") if isinstance(rdf.get("weights"), Mapping) else {}
    entry = weights.get("pytorch_state_dict")
    if not isinstance(entry, Mapping) or not isinstance(entry.get("source"), str):
        raise ModelFileError(
            f"{path} has neither a {_MODEL_FILE} attachment nor pytorch_state_dict weights"
        )
    # Built first: the stored arguments and the parameter budget are checked before any weights.
    wrapper = ExportWrapper(document["architecture"], document["arguments"])
    data = package.read(entry["source"], _weights_limit())
    _check_sha(path, entry["source"], data, entry)
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):  # torch.save's format: its sizes, before loading
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                check_zip_members(
                    inner,
                    source=f"{path}: {entry['source']}",
                    max_total=_weights_limit(),
                    max_members=100_000,
                )
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{path}: {entry['source']} is not a readable zip ({err})") from err
    try:
        # weights_only: tensors and plain containers only; pickled code is refused.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure means a bad or unsafe file
        raise ModelFileError(
            f"{path}: cannot read the pytorch_state_dict weights safely ({err})"
        ) from err
    try:
        wrapper.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise ModelFileError(
            f"{path}: the pytorch_state_dict weights do not fit {document['architecture']!r} "
            f"{document['arguments']}: {err}"
        ) from err
    model = wrapper.model.eval()
    return model.to(device) if device is not None else model

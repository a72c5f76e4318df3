"""Export to bioimage.io model packages and ONNX, and import our bioimage.io packages.

- :mod:`napari_unet.export.bioimageio`: :func:`export_bioimageio` writes a
  bioimage.io model package (zip or folder) that deepImageJ, ilastik, QuPath,
  micro-sam and ``bioimageio.core`` run.
- :mod:`napari_unet.export.onnx`: :func:`export_onnx` and :func:`check_onnx`.
- :func:`load_bioimageio`, :func:`read_bioimageio_metadata` and
  :func:`is_bioimageio_package` read packages exported by napari-unet back
  (:func:`napari_unet.io.load_model` calls them for a package).
- :class:`ExportWrapper`: the network with its softmax, the architecture of
  the exported state-dict weights. Every exported ``rdf.yaml`` names it as
  ``import_from: napari_unet.export``, so it stays importable from here.
"""

from __future__ import annotations

from ._reader import CONFIG_KEY, is_bioimageio_package, load_bioimageio, read_bioimageio_metadata
from ._wrapper import ExportWrapper
from .bioimageio import RDF_FORMAT_VERSION, export_bioimageio
from .onnx import ONNX_OPSET, check_onnx, export_onnx

__all__ = [
    "CONFIG_KEY",
    "ONNX_OPSET",
    "RDF_FORMAT_VERSION",
    "ExportWrapper",
    "check_onnx",
    "export_bioimageio",
    "export_onnx",
    "is_bioimageio_package",
    "load_bioimageio",
    "read_bioimageio_metadata",
]

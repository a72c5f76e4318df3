"""Inference backends: one callable that turns a batch of tiles into class probabilities.

Overlap-tile prediction (:mod:`napari_unet.tiling`) only needs "a batch of
normalised tiles in, probabilities out". This module provides that callable
for several engines and precisions:

``"eager"``
    PyTorch eager in ``inference_mode`` with ``channels_last`` tensors
    (oneDNN / cuDNN pick faster convolutions for that layout).
``"compile"``
    ``torch.compile`` of the same (with weight freezing on the CPU). Needs a
    C++ compiler and costs seconds per tile shape; if it cannot compile, it
    warns once and runs eager.
``"onnxruntime"``
    ONNX Runtime on the project's own ONNX export
    (:func:`napari_unet.export.export_onnx`), fp32. The export is cached on
    disk (see :func:`cache_dir`).
``"auto"``
    The fastest path whose labels equal the fp32 labels: on the CPU, ONNX
    Runtime when its export is cached or pays back within this prediction
    (checked against eager on the same batch), else eager.

Precisions: ``"fp32"``; ``"bf16"`` (autocast; CPUs with AVX-512 BF16 / AMX,
CUDA); ``"fp16"`` (autocast; CUDA, MPS); ``"auto"``: fp32 unless the model's
metadata records an agreement check (key ``inference_check``, written by
:func:`napari_unet.agreement.inference_check`) in which bf16 kept at least 99.9 % of pixels in the
same class and the instance count within 1 %.

CUDA and MPS paths are guarded by availability checks; the project's CI has
neither, so they are tested only through the CPU fallbacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .devices import select_device

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "bf16_supported",
    "cache_dir",
    "cache_onnx",
    "default_precision",
    "make_backend",
    "model_digest",
]

BACKENDS = ("auto", "eager", "compile", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Environment variable that overrides where exported models are cached.
CACHE_ENV = "NAPARI_UNET_CACHE_DIR"

# Measured on the project's 2-core CPU (docs/performance.md): ONNX Runtime fp32
# runs a tile 1.9-2.0x faster than eager on the paper network, and its export
# costs 15 s on a quiet machine, 46 s at load 11. The automatic choice exports
# only when the eager time it saves in this prediction exceeds that cost.
_ORT_EXPECTED_SPEEDUP = 1.9
_EXPORT_COST_S = 30.0
# Eager seconds each model (by its export's cache path) has run under "auto": a model
# predicted with often, in many small calls (a folder of images, repeated clicks on
# Predict, one command-line process per image), is exported once its past eager work would
# have paid for the export. Kept in memory and in the cache folder (_add_eager_seconds).
_EAGER_SECONDS: dict[str, float] = {}
_LEDGER_LOCK = threading.Lock()
_MAX_LEDGER_FILES = 64
# Agreement a reduced precision must have shown (inference_check) to become a default.
_MIN_CLASS_AGREEMENT = 0.999
_MAX_INSTANCE_CHANGE = 0.01

_log = logging.getLogger(__name__)


class Backend(Protocol):
    """A batch of tiles in, softmax probabilities out.

    ``tiles`` is a float32 CPU tensor (N, C, *spatial) of normalised tiles of
    a valid input size; the result is a float32 array (N, classes,
    *output spatial).
    """

    name: str
    precision: str
    device: torch.device

    def __call__(self, tiles: torch.Tensor) -> np.ndarray: ...


# -- capabilities ------------------------------------------------------------------------------


def bf16_supported(device: str | torch.device | None = None) -> bool:
    """Whether bf16 autocast runs natively (not emulated) on ``device``.

    On the CPU this needs AVX-512 BF16 or AMX (oneDNN's check); on CUDA
    compute capability 8.0 or newer; MPS is not supported.
    """
    dev = select_device(device)
    if dev.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    if dev.type == "cuda":  # pragma: no cover - no CUDA in CI
        return bool(torch.cuda.is_bf16_supported())
    return False


def _onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def _compiler_available() -> bool:
    return any(shutil.which(c) for c in ("c++", "g++", "clang++", "cl"))


# -- the backends ------------------------------------------------------------------------------


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class EagerBackend:
    """PyTorch eager, ``channels_last``, ``inference_mode``, optional autocast."""

    name = "eager"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        self.device = device
        self.precision = precision
        # The caller's model moves (as predict_tiled always did) rather than
        # being copied: a copy of a large model would double its memory.
        self.model = model.to(device, memory_format=_channels_last(model)).eval()

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        x = tiles.to(self.device, memory_format=_channels_last(self.model))
        with torch.inference_mode(), _autocast(self.device, self.precision):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def _channels_last(model: nn.Module) -> torch.memory_format:
    """``channels_last`` for 2D models, ``channels_last_3d`` for 3D ones (5-D tensors)."""
    return (
        torch.channels_last_3d if getattr(model, "spatial_dims", 2) == 3 else torch.channels_last
    )


class CompiledBackend(EagerBackend):
    """``torch.compile`` (inductor, frozen weights on the CPU); eager if compiling fails."""

    name = "compile"

    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        super().__init__(model, device, precision)
        self._compiled: Any = None
        self._failed = not _compiler_available()
        if self._failed:
            warnings.warn(
                "backend 'compile' needs a C++ compiler (none found on PATH); running eager",
                RuntimeWarning,
                stacklevel=3,
            )
            self.name = "eager"

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        if self._failed:
            return super().__call__(tiles)
        if self._compiled is None:
            # Freezing folds weights (and batch norm) into the graph; it is
            # what makes bf16 fast on the CPU (5.4x vs 2.9x unfrozen).
            options = {"freezing": True} if self.device.type == "cpu" else {}
            self._compiled = torch.compile(self.model, dynamic=False, options=options)
        x = tiles.to(self.device, memory_format=_channels_last(self.model))
        try:
            with torch.inference_mode(), _autocast(self.device, self.precision):
                logits = self._compiled(x)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            warnings.warn(
                f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); running eager",
                RuntimeWarning,
                stacklevel=2,
            )
            self._failed = True
            self.name = "eager"
            return super().__call__(tiles)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


class OnnxRuntimeBackend:
    """ONNX Runtime (fp32) on the cached ONNX export of the model."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        if not _onnxruntime_available():
            raise ImportError(
                "backend 'onnxruntime' needs onnxruntime and onnx; "
                "install them with: pip install 'napari-unet-cells[export]'"
            )
        self.device = device
        self.session = _session(cache_onnx(model), device)

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(tiles.detach().cpu().numpy(), dtype=np.float32)
        (probs,) = self.session.run(["output"], {"input": x})
        return probs


class AutoBackend:
    """Eager first; switches to ONNX Runtime once that is cached or pays back.

    The first two batches run eager; the second is timed (the first pays
    one-off set-up). If running the tiles still to come (:meth:`expect` tells
    how many) with ONNX Runtime would save more eager time than the export
    costs, the model is exported (or found in the cache), the second batch is
    run again with ONNX Runtime, and the switch happens only if both give the
    same class on every pixel. Eager time this model already ran under
    ``auto`` in this process or in earlier ones (a one-number file in the
    cache folder) counts as well (and then the first batch
    decides, its set-up being paid): the export is made once the time ONNX
    Runtime would have saved so far, plus in this call, exceeds its cost, so a
    model used in many small calls costs at most about twice the best choice
    made in hindsight (the rent-or-buy rule), and a first prediction is never
    slowed by an export that does not pay back within it.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.precision = "fp32"
        self._model = model
        self._eager = EagerBackend(model, device, "fp32")
        self._current: Backend = self._eager
        self._decided = device.type != "cpu" or not _onnxruntime_available()
        self._key = ""
        if not self._decided:
            path = _cached_onnx_path(model)
            self._key = str(path)
            if path.exists():
                self._current = OnnxRuntimeBackend(model, device)
                self._decided = True
        self._remaining = 0
        self._calls = 0

    @property
    def name(self) -> str:
        return self._current.name

    def expect(self, tiles: int) -> None:
        """Announce ``tiles`` more tiles (of the shape of the next batch)."""
        self._remaining += int(tiles)

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        n = int(tiles.shape[0])
        self._remaining -= n
        if self._decided:
            return self._current(tiles)
        start = time.perf_counter()
        probs = self._eager(tiles)
        elapsed = time.perf_counter() - start
        before = _add_eager_seconds(self._key, elapsed)
        # The first call of a shape pays oneDNN's set-up: time the second one,
        # unless this model already ran here (then its set-up is paid).
        self._calls += 1
        if self._calls < 2 and not before:
            return probs
        self._decided = True
        coming = self._remaining * elapsed / n
        saved = (before + coming) * (1 - 1 / _ORT_EXPECTED_SPEEDUP)
        if saved > _EXPORT_COST_S:
            self._switch(tiles, probs)
        return probs

    def _switch(self, tiles: torch.Tensor, reference: np.ndarray) -> None:
        try:
            candidate = OnnxRuntimeBackend(self._model, self.device)
            probs = candidate(tiles)
        except Exception as err:  # noqa: BLE001 - any export failure keeps the eager path
            _log.warning("ONNX Runtime unavailable (%s); staying with eager", err)
            return
        if np.array_equal(probs.argmax(axis=1), reference.argmax(axis=1)):
            self._current = candidate
        else:
            _log.warning("ONNX Runtime labels differ from eager on the first tiles; eager kept")


def make_backend(
    model: nn.Module,
    *,
    backend: str = "auto",
    precision: str = "auto",
    device: str | torch.device | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Backend:
    """The inference callable for a model, a backend and a precision.

    Parameters
    ----------
    model : torch.nn.Module
        A napari-unet model. ``"eager"`` and ``"compile"`` move it to
        ``device`` in ``channels_last`` layout and evaluation mode.
    backend : {"auto", "eager", "compile", "onnxruntime"}
        See the module docstring. ``"onnxruntime"`` runs on the CPU (or CUDA
        with the GPU build of onnxruntime) in fp32 only.
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``"auto"``: bf16 only where ``metadata["inference_check"]`` shows that
        bf16 agreed with fp32 (at least 99.9 % of pixels in the same class,
        instance count within 1 %) and the device runs bf16 natively;
        fp32 otherwise.
    device : str or torch.device, optional
        As for :func:`~napari_unet.devices.select_device`.
    metadata : dict, optional
        The model file's metadata (for ``precision="auto"``).

    Returns
    -------
    backend : Backend
        ``backend(tiles)`` -> probabilities; ``backend.name`` and
        ``backend.precision`` say what runs.

    Raises
    ------
    ValueError
        For an unknown backend or precision, or a combination the device
        cannot run (bf16 on a CPU without native bf16, fp16 on the CPU, reduced
        precision with ONNX Runtime).
    ImportError
        For ``"onnxruntime"`` when onnxruntime or onnx is missing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dev = select_device(device)
    if precision == "auto":
        precision = default_precision(metadata, dev)
    else:
        _check_precision(precision, dev)
    if backend == "onnxruntime":
        if precision != "fp32":
            raise ValueError(
                f"backend 'onnxruntime' runs fp32 only; use backend 'eager' or 'compile' "
                f"for precision {precision!r}"
            )
        return OnnxRuntimeBackend(model, dev)
    if backend == "compile":
        return CompiledBackend(model, dev, precision)
    if backend == "auto" and precision == "fp32":
        return AutoBackend(model, dev)
    return EagerBackend(model, dev, precision)


def _check_precision(precision: str, device: torch.device) -> None:
    if precision == "bf16" and not bf16_supported(device):
        raise ValueError(
            f"precision 'bf16' is not supported natively on {device.type} here "
            "(it needs a CPU with AVX-512 BF16 or AMX, or a CUDA GPU of compute capability "
            ">= 8.0); use precision 'fp32'"
        )
    if precision == "fp16" and device.type == "cpu":
        raise ValueError(
            "precision 'fp16' is for CUDA and MPS; on the CPU use 'bf16' (where supported) "
            "or 'fp32'"
        )


def default_precision(
    metadata: Mapping[str, Any] | None, device: str | torch.device | None = None
) -> str:
    """``"bf16"`` where the model's recorded check approves it and the device runs it, else fp32.

    Parameters
    ----------
    metadata : dict or None
        A model file's metadata; its ``inference_check`` (from
        :func:`inference_check`) must show at least 99.9 % of pixels in the
        fp32 class and the instance count within 1 % for ``"eager/bf16"``.
    device : str or torch.device, optional
        Where prediction runs.
    """
    device = select_device(device)
    check = (metadata or {}).get("inference_check") or {}
    result = (check.get("paths") or {}).get("eager/bf16") if isinstance(check, Mapping) else None
    if not isinstance(result, Mapping) or not bf16_supported(device):
        return "fp32"
    try:
        agreement = float(result["class_agreement"])
        change = abs(float(result["instance_change"]))
    except (KeyError, TypeError, ValueError):
        return "fp32"
    if agreement >= _MIN_CLASS_AGREEMENT and change <= _MAX_INSTANCE_CHANGE:
        return "bf16"
    return "fp32"


# -- caching -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where exported models are cached.

    ``$NAPARI_UNET_CACHE_DIR`` if set, else the user cache folder
    (``platformdirs.user_cache_dir("napari-unet")``, e.g.
    ``~/.cache/napari-unet`` on Linux).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".cache" / "napari-unet"
    return Path(platformdirs.user_cache_dir("napari-unet", appauthor=False))


_DIGESTS: dict[int, tuple[tuple, str]] = {}
_DIGEST_LOCK = threading.Lock()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's architecture and weights (hex).

    Remembered per model object until one of its tensors changes (PyTorch
    counts in-place updates, e.g. optimiser steps), so asking again is free.
    """
    # Outside inference mode: there, state_dict() returns inference tensors, which
    # keep no version counter, and the stamp below needs one.
    with torch.inference_mode(False):
        state = model.state_dict()
        stamp = _stamp(state)
    with _DIGEST_LOCK:
        known = _DIGESTS.get(id(model))
        if stamp is not None and known is not None and known[0] == stamp:
            return known[1]
    config = model.config() if hasattr(model, "config") else {}
    h = hashlib.sha256(json.dumps([type(model).__name__, config], sort_keys=True).encode())
    for key, tensor in sorted(state.items()):
        t = tensor.detach().cpu()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    digest = h.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[id(model)] = (stamp, digest)
    return digest


def _stamp(state: dict[str, torch.Tensor]) -> tuple | None:
    """Where each tensor lives and how often it was changed in place, or None.

    None for a model whose weights are inference tensors (built inside
    ``torch.inference_mode``): they keep no version counter, so their digest
    is computed afresh each time rather than risk a stale one.
    """
    try:
        return tuple((t.data_ptr(), t._version) for t in state.values())
    except RuntimeError:
        return None


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    parts = [f"torch={torch.__version__}", f"napari_unet={__version__}"]
    for dist in ("onnx", "onnxscript"):
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist}=none")
    return ";".join(parts)


def _cached_onnx_path(model: nn.Module) -> Path:
    from .export.onnx import ONNX_OPSET

    key = hashlib.sha256(
        f"{model_digest(model)};{_versions()};opset={ONNX_OPSET}".encode()
    ).hexdigest()[:32]
    return cache_dir() / "onnx" / f"{key}.onnx"


_EXPORT_LOCK = threading.Lock()


def cache_onnx(model: nn.Module) -> Path:
    """The model's ONNX export in the cache; exported (atomically) if missing.

    Keyed by :func:`model_digest` and the torch / onnx / onnxscript /
    napari-unet versions, so an export is made once per model and library
    set. ONNX files are data (no code is loaded from them), so a cached file
    cannot run anything; the worst a stale or damaged one can do is fail to
    load, and then it is exported again.

    Call this after saving a model (or in the background) so that the first
    prediction with ``backend="auto"`` runs ONNX Runtime at once.
    """
    from .export import ExportWrapper
    from .export.onnx import _onnx_export

    path = _cached_onnx_path(model)
    with _EXPORT_LOCK:
        if path.exists():
            with contextlib.suppress(OSError):
                os.utime(path)  # most recently used: kept by _prune
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        net = ExportWrapper.from_model(model).cpu()
        shape = model.valid_input_shape((64,) * int(getattr(model, "spatial_dims", 2)))
        example = torch.randn(1, model.in_channels, *shape)
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            start = time.perf_counter()
            _onnx_export(net, example, staging)
            os.replace(staging, path)
            _log.info("exported %s to ONNX in %.1f s", path.name, time.perf_counter() - start)
        finally:
            staging.unlink(missing_ok=True)
        _prune(path.parent, keep=path)
    return path


def _add_eager_seconds(key: str, elapsed: float) -> float:
    """Add ``elapsed`` eager seconds to a model's ledger; return the total before.

    The total is kept in memory and in a one-number text file in the cache
    folder, so that runs in separate processes (a shell loop of
    ``napari-unet predict`` over images) add up as calls in one process do.
    The file holds a number, nothing executable; an unreadable or unwritable
    one counts as zero (the export then waits longer, nothing breaks).
    """
    ledger = _ledger_path(key)
    with _LEDGER_LOCK:
        before = max(_EAGER_SECONDS.get(key, 0.0), _read_seconds(ledger))
        _EAGER_SECONDS[key] = before + elapsed
        with contextlib.suppress(OSError):
            ledger.parent.mkdir(parents=True, exist_ok=True)
            staging = ledger.with_name(f".{ledger.name}.{os.getpid()}.tmp")
            staging.write_text(f"{before + elapsed:.3f}\n")
            os.replace(staging, ledger)
            files = sorted(ledger.parent.glob("*.txt"), key=lambda p: p.stat().st_mtime)
            for old in files[:-_MAX_LEDGER_FILES]:
                old.unlink(missing_ok=True)
    return before


def _ledger_path(key: str) -> Path:
    """``<cache>/eager-seconds/<export's name>.txt`` for an export at ``key``."""
    export = Path(key)
    return export.parent.parent / "eager-seconds" / f"{export.stem}.txt"


def _read_seconds(path: Path) -> float:
    try:
        value = float(path.read_text().strip())
    except (OSError, ValueError):
        return 0.0
    return value if np.isfinite(value) and value > 0 else 0.0


_MAX_CACHED_EXPORTS = 16


def _prune(folder: Path, keep: Path) -> None:
    """Keep the cache bounded: the most recently used exports only."""
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[_MAX_CACHED_EXPORTS:]:
        if old != keep:
            old.unlink(missing_ok=True)


_SESSIONS: OrderedDict[tuple, Any] = OrderedDict()
_SESSION_LOCK = threading.Lock()
_MAX_SESSIONS = 4


def _session(path: Path, device: torch.device) -> Any:
    """One ONNX Runtime session per file, device and thread count (a few kept)."""
    import onnxruntime as ort

    threads = torch.get_num_threads()
    key = (str(path), str(device), threads)
    with _SESSION_LOCK:
        if key in _SESSIONS:
            _SESSIONS.move_to_end(key)
            return _SESSIONS[key]
    options = ort.SessionOptions()
    # Follow PyTorch's thread setting, so OMP_NUM_THREADS / torch.set_num_threads apply.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: spinning threads take the cores that
    # post-processing (and, on a shared machine, everything else) needs. Measured on the
    # nuclei model, 6 planes, load 5: 2.3 s without spinning, 3.2 s with, 5.1 s eager.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":  # pragma: no cover - no CUDA in CI
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                "backend 'onnxruntime' on CUDA needs onnxruntime-gpu; use backend 'eager'"
            )
        providers.insert(0, "CUDAExecutionProvider")
    elif device.type != "cpu":
        raise ValueError(f"backend 'onnxruntime' runs on the CPU or CUDA, not {device.type}")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception:  # a damaged cache file is exported next time
        path.unlink(missing_ok=True)
        raise
    with _SESSION_LOCK:
        _SESSIONS[key] = session
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
    return session

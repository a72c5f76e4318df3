"""Paying for first-use imports while the user reads the dock, not after a click.

The first training step imports ``torch._dynamo`` and SymPy (through the
optimiser and autograd), the first prediction SciPy and scikit-image parts:
seconds of imports that hold the interpreter lock in long stretches, so the
GUI stalled for up to a second after Start or Predict even though the work
ran in a worker thread. Opening the Train or Predict dock starts the same
imports (and one tiny step) in a background thread, once per process,
half a second after the dock is built (so that the dock is drawn first).

The docks themselves do not import PyTorch while they are built (that
stalled the GUI for 2.5-3.5 s when the Predict or Train dock opened in a
fresh napari): what needs it (the device list, the architectures, the model
file's details) is filled in by :func:`when_ready` once the warm-up has
imported it, or at once when it is imported already.

Afterwards the heap is frozen (:func:`gc.freeze`): napari runs a full
``gc.collect()`` whenever a layer is added, and with PyTorch's compiler stack
imported that took over 2 s on 2 cores, after every Predict. Frozen objects
(modules, classes: they live as long as the process) are skipped by it.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "freeze_heap",
    "is_ready",
    "wait_until_ready",
    "warm_up",
    "warm_up_soon",
    "when_ready",
]

#: How often a dock looks whether its warm-up is done (ms).
POLL_MS = 50
#: How long after a dock is built its warm-up starts (ms; see warm_up_soon).
START_DELAY_MS = 500

_started: dict[str, threading.Thread] = {}
_lock = threading.Lock()


def _train_step() -> None:
    import torch

    layer = torch.nn.Conv2d(1, 1, 3)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 1, 8, 8)).sum().backward()
    optimizer.step()
    torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9).step()


#: The modules each dock uses on the GUI thread once they are imported (all import PyTorch).
NEEDS = {
    "train": ("napari_unet.devices", "napari_unet.models", "napari_unet.models.registry"),
    # io.models reads a model file's metadata; export: it also recognises bioimage.io packages.
    "predict": ("napari_unet.devices", "napari_unet.io.models", "napari_unet.export"),
}


def _labels_layer_patterns() -> None:
    """napari's first Labels layer draws vispy's line dash patterns (a cached Python loop).

    0.3-0.5 s of the first Predict's result layer under load, on the GUI
    thread; computed here they are cached for it (``functools.lru_cache``).
    """
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()


def _weight_map_step() -> None:
    """A tiny weight map: loads numba and the compiled kernels (numba's cache).

    0.5-0.7 s, or 2-3 s when the kernels compile after an install, holding the
    interpreter lock for 100-140 ms at a time: here rather than in the first
    preview or the first training run's preparation.
    """
    import numpy as np

    from napari_unet.weights import weight_map

    cells = np.zeros((16, 16), dtype=np.int32)
    cells[2:6, 2:6], cells[2:6, 8:12] = 1, 2
    weight_map(cells)


def _train_step_and_weight_map() -> None:
    _weight_map_step()
    _train_step()


def _predict_step() -> None:
    # Inference imports torch._dynamo too (through the backends): the training step.
    _train_step()
    _labels_layer_patterns()


_JOBS = {
    # Annotate and Weight map: SciPy's ndimage (about 0.4 s of the U-Net dock's opening)
    # and the weight map's numba kernels.
    "annotate": (("napari_unet.annotation", "napari_unet.weights"), _weight_map_step),
    "train": (
        (*NEEDS["train"], "napari_unet.training", "napari_unet.augment", "napari_unet.metrics"),
        _train_step_and_weight_map,
    ),
    "predict": (
        (
            *NEEDS["predict"],
            "napari_unet.segment",
            "napari_unet.postprocess",
            "skimage.segmentation",
        ),
        _predict_step,
    ),
}


def _run(kind: str) -> None:
    modules, step = _JOBS[kind]
    try:
        for name in modules:
            importlib.import_module(name)
        step()
    except Exception:  # noqa: BLE001 - a warm-up only saves time; the real run reports errors
        pass
    freeze_heap()


def freeze_heap() -> None:
    """Exclude every object alive now from napari's full garbage collections (cheap)."""
    gc.freeze()


def warm_up(kind: str) -> threading.Thread:
    """Start the first-use imports of a dock (``"annotate"``, ``"train"`` or ``"predict"``)
    in a daemon thread (once per process)."""
    with _lock:
        thread = _started.get(kind)
        if thread is None:
            thread = threading.Thread(target=_run, args=(kind,), daemon=True, name=f"warm-{kind}")
            _started[kind] = thread
            thread.start()
        return thread


def warm_up_soon(kind: str, parent: Any) -> None:
    """:func:`warm_up` after :data:`START_DELAY_MS`, from the event loop: the dock is drawn first.

    The imports hold the interpreter lock in long stretches (loading
    PyTorch's libraries: 0.3-1 s under load), when the GUI cannot repaint;
    started in the constructor, they delayed the new dock itself. ``parent``
    (the dock's QWidget) owns the timer: a dock closed at once starts nothing.
    """
    if kind in _started:
        return
    from qtpy.QtCore import QTimer

    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(START_DELAY_MS)
    timer.timeout.connect(lambda: warm_up(kind))
    timer.start()


def _imported(name: str) -> bool:
    """``name`` is imported completely (not half-way, by another thread)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


def is_ready(kind: str) -> bool:
    """The modules the ``kind`` dock needs are imported: using them costs no import."""
    return all(_imported(name) for name in NEEDS[kind])


def when_ready(kind: str, callback: Callable[[], None], parent: Any) -> None:
    """Call ``callback()`` on the GUI thread once :func:`is_ready` (at once if it is now).

    Otherwise the warm-up imports them in the background (started by
    :func:`warm_up_soon`) and a timer owned by ``parent`` (a QObject: the
    dock's widget; the check ends with it) looks every :data:`POLL_MS`. If
    the warm-up thread ends without them (an import failed), ``callback``
    still runs: its own imports then raise the error where the user sees it.
    """
    if is_ready(kind):
        callback()
        return
    from qtpy.QtCore import QTimer

    warm_up_soon(kind, parent)
    timer = QTimer(parent)
    timer.setInterval(POLL_MS)

    def check() -> None:
        thread = _started.get(kind)
        if is_ready(kind) or (thread is not None and not thread.is_alive()):
            timer.stop()
            timer.deleteLater()
            callback()

    timer.timeout.connect(check)
    timer.start()


def wait_until_ready(widget: Any, timeout: float = 120.0) -> None:
    """Process Qt events until a dock has filled in what needed PyTorch (scripts, tests).

    ``widget`` is a step's widget or the U-Net dock (then all its steps, built now if not yet).
    A user never needs this: the dock fills itself in while they read it.

    Raises
    ------
    TimeoutError
        If the background warm-up has not finished after ``timeout`` seconds.
    """
    from qtpy.QtWidgets import QApplication

    steps = getattr(widget, "widgets", None)
    steps = list(steps.values()) if isinstance(steps, Mapping) else [widget]
    deadline = time.monotonic() + timeout
    while not all(getattr(step, "_ready", True) for step in steps):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dock's background warm-up did not finish in {timeout:g} s")
        QApplication.processEvents()
        time.sleep(0.01)
    # What ready docks defer to the next event-loop turn (the Train tab's tile check).
    QApplication.processEvents()

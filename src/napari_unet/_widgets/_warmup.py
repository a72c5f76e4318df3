"""Paying for first-use imports while the user reads the dock, not after a click.

The first training step imports ``torch._dynamo`` and SymPy (through the
optimiser and autograd), the first prediction SciPy and scikit-image parts:
seconds of imports that hold the interpreter lock in long stretches, so the
GUI stalled for up to a second after Start or Predict even though the work
ran in a worker thread. Opening the Train or Predict dock starts the same
imports (and one tiny step) in a background thread, once per process.

Afterwards the heap is frozen (:func:`gc.freeze`): napari runs a full
``gc.collect()`` whenever a layer is added, and with PyTorch's compiler stack
imported that took over 2 s on 2 cores, after every Predict. Frozen objects
(modules, classes: they live as long as the process) are skipped by it.
"""

from __future__ import annotations

import gc
import importlib
import threading

__all__ = ["freeze_heap", "warm_up"]

_started: dict[str, threading.Thread] = {}
_lock = threading.Lock()


def _train_step() -> None:
    import torch

    layer = torch.nn.Conv2d(1, 1, 3)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 1, 8, 8)).sum().backward()
    optimizer.step()
    torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9).step()


_JOBS = {
    "train": (
        ("napari_unet.training", "napari_unet.augment", "napari_unet.metrics"),
        _train_step,
    ),
    "predict": (
        ("napari_unet.segment", "napari_unet.postprocess", "skimage.segmentation"),
        # Inference imports torch._dynamo too (through the backends): the same step.
        _train_step,
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
    """Start the first-use imports for ``"train"`` or ``"predict"`` in a daemon thread (once)."""
    with _lock:
        thread = _started.get(kind)
        if thread is None:
            thread = threading.Thread(target=_run, args=(kind,), daemon=True, name=f"warm-{kind}")
            _started[kind] = thread
            thread.start()
        return thread

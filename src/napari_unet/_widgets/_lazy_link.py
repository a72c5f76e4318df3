"""A lazy Labels layer redrawn when its Z planes get linked (see segment.PlaneLinker)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, QTimer

#: How often the linker is checked, ms: a redraw reads kept planes only (no network).
POLL_MS = 300


def link_text(spatial: tuple[int, ...]) -> str:
    """The Predict dock's link option, naming the axis taken as Z."""
    if len(spatial) == 3:
        return f"link the {spatial[0]} planes of axis 0 (Z) into 3D objects"
    if len(spatial) > 3:
        return "link planes into 3D objects (off: name the Z axis with napari-unet predict --axes)"
    return "link planes into 3D objects (Z-stacks only)"


def watch_linker(viewer: Any, layer: Any, linker: Any, parent: QObject) -> QTimer:
    """Redraw ``layer`` whenever ``linker`` linked planes; stops when the layer is removed.

    The planes already on screen keep their old ids until redrawn; the
    redraw reads the planes the linker kept, so it never runs the network.
    """
    timer = QTimer(parent)
    timer.setInterval(POLL_MS)
    seen = [linker.version]

    def check() -> None:
        if layer not in viewer.layers:
            timer.stop()
            return
        if linker.version != seen[0]:
            seen[0] = linker.version
            layer.refresh()

    timer.timeout.connect(check)
    timer.start()
    return timer

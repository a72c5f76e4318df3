"""GUI responsiveness: how long the napari event loop stalls while the Train widget trains.

A 10 ms QTimer probe records how late each tick fires; the largest lateness
is the longest time the GUI could not react (a click, a repaint), measured
from Start to the first iteration (network set-up) and then during
training. Baseline: the same probe with the viewer idle. Also: the Weight map preview's update
time on a 512 x 512 image with over a hundred cells (baseline: computing the
weight map and borders alone, without updating layers).

Needs a display (run under ``xvfb-run -a``); without one it reports nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import Row

PROBE_MS = 10


def _probe(seconds: float, until=None) -> tuple[float, int]:
    """Largest lateness (s) of a PROBE_MS timer over ``seconds`` (or until ``until()``)."""
    from qtpy.QtCore import QEventLoop, QTimer

    late: list[float] = []
    last = [time.perf_counter()]
    start = last[0]
    loop = QEventLoop()

    def tick() -> None:
        now = time.perf_counter()
        late.append(now - last[0] - PROBE_MS / 1000)
        last[0] = now
        if now - start >= seconds and (until is None or until()):
            loop.quit()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(PROBE_MS)
    loop.exec()
    timer.stop()
    return max(late), len(late)


def run(quick: bool = False) -> list[Row]:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        print("bench_gui: no display (run under xvfb-run -a); skipped", file=sys.stderr)
        return []
    import napari
    import numpy as np

    from napari_unet._sample_data import make_cells_2d, synthetic_cells
    from napari_unet.weights import separation_borders, weight_map

    seconds = 2.0 if quick else 6.0
    viewer = napari.Viewer(show=True)
    rows: list[Row] = []
    try:
        for data, kwargs, kind in make_cells_2d():
            getattr(viewer, f"add_{kind}")(data, **kwargs)
        _, annotate = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate cells")
        _, train = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Train")
        annotate.add_to_training_set()
        _probe(0.5)  # let the window settle
        idle, _ = _probe(seconds)

        # The demo's network (depth 3, 16 base channels, 124 px tiles) on the CPU.
        train._depth.value = 2 if quick else 3
        train._base.value = 8 if quick else 16
        train._tile.value = 124
        train._iterations.value = 1_000_000
        train._device.value = "cpu"
        train._out_dir.value = Path(tempfile.mkdtemp(prefix="bench-gui-"))
        train.start()
        # Start-up: building the network, weight maps, and PyTorch's first forward and
        # backward pass (kernel set-up), until the first iteration is reported.
        startup, _ = _probe(0.0, until=lambda: len(train._losses) >= 1)
        busy, _ = _probe(seconds)
        iterations = len(train._losses)
        train.stop()
        _probe(0.1, until=lambda: train.worker is None)
        for name, value in (
            ("start of training (build, weights, 1st it)", startup),
            (f"training ({iterations} it in all)", busy),
        ):
            rows.append(
                Row(
                    name=f"event-loop max delay, {name}",
                    baseline="viewer idle",
                    baseline_value=1000 * idle,
                    ours_value=1000 * value,
                    unit="ms",
                    ratio=idle / value if value > 0 else float("inf"),
                    goal="< 100 ms",
                )
            )

        _, labels = synthetic_cells((512, 512), radius=(16, 24), seed=1)
        layer = viewer.add_labels(labels, name="big")
        _, weights = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Weight map")
        weights._labels.value = layer
        weights.update_preview()
        preview = []
        for _ in range(3 if quick else 10):
            weights.update_preview()
            preview.append(weights.last_ms / 1000)
        start = time.perf_counter()
        for _ in range(3 if quick else 10):
            weight_map(labels)
            separation_borders(labels)
        alone = (time.perf_counter() - start) / (3 if quick else 10)
        rows.append(
            Row(
                name=f"weight-map preview 512x512, {int(labels.max())} cells",
                baseline="weight_map + borders alone",
                baseline_value=1000 * alone,
                ours_value=1000 * float(np.median(preview)),
                unit="ms",
                ratio=alone / float(np.median(preview)),
                goal="< 100 ms",
            )
        )
    finally:
        viewer.close()
    return rows


if __name__ == "__main__":
    from _common import format_table

    print(format_table(run(quick="--quick" in sys.argv)))

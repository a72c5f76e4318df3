"""GUI responsiveness: the longest the napari event loop stalls in what a user does.

A 10 ms QTimer probe records how late each tick fires; the largest lateness
is the longest time the GUI could not react (a click, a repaint). Every
scenario runs in a fresh Python process (so "first Predict" pays for its
imports, as a user's first Predict does), with the viewer shown:

- picking a 2048 x 2048 labels layer with ~9,000 cells in Weight map (the
  preview is computed), then three paint strokes 0.1 s apart (live preview);
- the first Predict in a fresh process (bundled nuclei model, 512 x 512);
- training start (until the first iteration) and stop (until the model is saved);
- adding a 2048 x 2048 result layer with ~9,000 cells (the Predict widget's
  last step, given the labels).

Baseline: the same probe with the viewer idle, in the same process. The goal
is a stall under 100 ms; the table reports, it does not assert. Needs a
display (``xvfb-run -a``); without one it reports nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROBE_MS = 10
PLUGIN = "napari-unet-cells"
SCENARIOS = ("paint", "predict", "train", "result")
if os.environ.get("BENCH_GUI_ONLY"):
    SCENARIOS = tuple(os.environ["BENCH_GUI_ONLY"].split(","))


def _probe(until, timeout: float = 300.0, at_least: float = 0.0) -> float:
    """Largest lateness (s) of a PROBE_MS timer until ``until()`` (checked every tick)."""
    from qtpy.QtCore import QEventLoop, QTimer

    late: list[float] = [0.0]
    last = [time.perf_counter()]
    start = last[0]
    loop = QEventLoop()

    def tick() -> None:
        now = time.perf_counter()
        late.append(now - last[0] - PROBE_MS / 1000)
        last[0] = now
        if now - start >= at_least and (until() or now - start > timeout):
            loop.quit()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(PROBE_MS)
    loop.exec()
    timer.stop()
    return max(late)


def dense_cells(side: int = 2048, spacing: int = 22, seed: int = 0):
    """(image, labels): ~(side/spacing)**2 touching cells (Voronoi of a jittered grid), fast."""
    import numpy as np
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    seeds = np.zeros((side, side), np.int32)
    grid = np.arange(spacing // 2, side, spacing)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    yy = np.clip(yy + rng.integers(-5, 6, yy.shape), 0, side - 1)
    xx = np.clip(xx + rng.integers(-5, 6, xx.shape), 0, side - 1)
    seeds[yy.ravel(), xx.ravel()] = np.arange(1, yy.size + 1)
    distance, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    labels = np.where(distance < 0.6 * spacing, seeds[iy, ix], 0).astype(np.int32)
    image = (200 + 1500 * (labels > 0) + rng.normal(0, 80, labels.shape)).astype(np.uint16)
    return image, labels


def _scenario(name: str, quick: bool) -> dict[str, float]:
    """Run one scenario in this process; returns {"idle": s, "<part>": s, ...}."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1366, 768)
    out: dict[str, float] = {}
    try:
        _probe(lambda: True, at_least=0.5)  # let the window settle
        out["idle"] = _probe(lambda: True, at_least=1.0)
        if name in ("pick", "paint"):
            _pick_and_paint(viewer, name, quick, out)
        elif name == "predict":
            _predict(viewer, quick, out)
        elif name == "train":
            _train(viewer, quick, out)
        elif name == "result":
            _result(viewer, quick, out)
    finally:
        viewer.close()
    return out


def _pick_and_paint(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Pick a dense labels layer in Weight map (and, for "paint", paint three strokes)."""
    _, labels = dense_cells(1024 if quick else 2048)
    _, weights = viewer.window.add_plugin_dock_widget(PLUGIN, "Weight map")
    _probe(lambda: True, at_least=0.5)
    before = weights.updates
    layer = viewer.add_labels(labels, name="cells 2048")
    weights._labels.value = layer
    out["pick"] = _probe(lambda: weights.updates > before, at_least=0.4)
    if name == "paint":
        before = weights.updates
        for stroke in range(3):
            layer.paint((500 + 40 * stroke, 500), int(labels.max()) + 1 + stroke)
            out[f"stroke {stroke + 1}"] = _probe(lambda: True, at_least=0.1)
        out["preview after strokes"] = _probe(
            lambda: weights.updates > before and not _busy(weights), at_least=0.4
        )


def _predict(viewer, quick: bool, out: dict[str, float]) -> None:
    """Open Predict (its warm-up) and run a first prediction."""
    from napari_unet._sample_data import synthetic_cells

    image, _ = synthetic_cells((256, 256) if quick else (512, 512), seed=2)
    layer = viewer.add_image(image, name="cells")
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    predict._image.value = layer
    predict._device.value = "cpu"
    out["Predict dock open (warm-up)"] = _probe(_warmed_up, at_least=0.5)
    predict.start()
    out["first predict"] = _probe(lambda: predict.worker is None, at_least=0.1)


def _train(viewer, quick: bool, out: dict[str, float]) -> None:
    """Open Train (its warm-up), start training on the demo, train a while and stop."""
    import tempfile

    from napari_unet._sample_data import make_cells_2d

    for data, kwargs, kind in make_cells_2d():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _, annotate = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate cells")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train")
    annotate._image.value = viewer.layers["synthetic cells"]
    annotate._labels.value = viewer.layers["synthetic cells ground truth"]
    annotate.add_to_training_set()
    # The demo's CPU network: depth 3, 16 base channels, 124 px tiles.
    train._depth.value = 2 if quick else 3
    train._base.value = 8 if quick else 16
    train._tile.value = 124
    train._iterations.value = 1_000_000
    train._device.value = "cpu"
    train._out_dir.value = Path(tempfile.mkdtemp(prefix="bench-gui-"))
    out["Train dock open (warm-up)"] = _probe(_warmed_up, at_least=0.5)
    train.start()
    out["training start"] = _probe(lambda: len(train._losses) >= 1)
    out["training"] = _probe(lambda: True, at_least=1.0 if quick else 3.0)
    train.stop()
    out["training stop"] = _probe(lambda: train.worker is None)


def _result(viewer, quick: bool, out: dict[str, float]) -> None:
    """Add a large labels result layer as Predict does when a run returns."""
    import numpy as np

    _, labels = dense_cells(1024 if quick else 2048)
    image = viewer.add_image(np.zeros(labels.shape, np.uint16), name="cells")
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    predict._job = {"image": image, "axis": None, "probabilities": False}
    predict._started = time.perf_counter()
    _probe(lambda: True, at_least=0.5)
    predict._on_returned((labels.astype(np.uint32), None))
    out["add result layer"] = _probe(lambda: True, at_least=1.0)


def _warmed_up() -> bool:
    """The widgets' background first-use imports are done (true for versions without them)."""
    try:
        from napari_unet._widgets._warmup import _started
    except ImportError:
        return True
    return not any(thread.is_alive() for thread in _started.values())


def _busy(widget) -> bool:
    return getattr(widget, "worker", None) is not None


def run(quick: bool = False) -> list:
    from _common import Row

    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        print("bench_gui: no display (run under xvfb-run -a); skipped", file=sys.stderr)
        return []
    rows: list[Row] = []
    for name in SCENARIOS:
        command = [sys.executable, __file__, "--scenario", name] + (["--quick"] if quick else [])
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"bench_gui {name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(lines[-1])
        idle = result.pop("idle")
        for part, value in result.items():
            rows.append(
                Row(
                    name=f"GUI stall, {part}",
                    baseline="viewer idle",
                    baseline_value=1000 * idle,
                    ours_value=1000 * value,
                    unit="ms",
                    ratio=idle / value if value > 0 else float("inf"),
                    goal="< 100 ms",
                )
            )
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    if "--scenario" in sys.argv:
        print(json.dumps(_scenario(sys.argv[sys.argv.index("--scenario") + 1], quick)))
    else:
        from _common import format_table

        print(format_table(run(quick=quick)))

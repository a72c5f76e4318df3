"""GUI responsiveness: the longest the napari event loop stalls in what a user does.

A 10 ms QTimer probe records how late each tick fires; the largest lateness
is the longest time the GUI could not react (a click, a repaint). The user's
action itself (opening a dock, a click, a paint stroke) runs on the event
loop while the probe runs, so its own time counts. Every scenario runs in a
fresh Python process (so "first Predict" pays for its imports, as a user's
first Predict does), with the viewer shown at 1366 x 768:

- napari: napari alone, no plugin code (the baseline): its first Labels
  layer, adding a 2048 x 2048 labels layer (uint32 and uint16) and a float32
  image, a paint stroke, replacing an image's data;
- paint: opening Weight map, picking a 2048 x 2048 labels layer with ~9,000
  cells (the preview is computed), three paint strokes (live preview);
- predict: opening Predict (its background warm-up), the first Predict
  (bundled nuclei model, 512 x 512);
- train: opening Train (its warm-up), training start (until the first
  iteration), training, stop (until the model is saved);
- result: adding a 2048 x 2048 result layer with ~9,000 cells (the Predict
  widget's last step, given the labels the worker returns);
- result-napari: the same set-up, then napari's ``add_labels`` of that result
  alone (the baseline of "add result layer");
- dock: opening the one "U-Net" dock, its warm-ups, then the first show of each other tab.
- annotate: Annotate cells, "Add to training set" on a 2048² plane with ~9,000 cells.

Each row's baseline is napari doing the same by itself (scenario "napari")
where there is one, else the idle viewer in the same process. The goal is a
stall under 100 ms; the table reports, it does not assert. One command:
``xvfb-run -a python benchmarks/run.py gui`` (``BENCH_GUI_ONLY=paint,predict``
picks scenarios; ``BENCH_GUI_STACKS=1 python benchmarks/bench_gui.py
--scenario paint`` prints what the GUI thread ran during the stalls). Needs a
display; without one it reports nothing.
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
SCENARIOS = (
    "napari",
    "paint",
    "predict",
    "train",
    "result-napari",
    "result",
    "dock",
    "annotate",
)
if os.environ.get("BENCH_GUI_ONLY"):
    SCENARIOS = tuple(os.environ["BENCH_GUI_ONLY"].split(","))


class _Sampler:
    """With BENCH_GUI_STACKS=1: what the GUI thread runs while the probe is late.

    A watchdog thread looks at the main thread's stack every 5 ms; whenever
    the last probe tick is more than 50 ms old, the stack is counted. At the
    end of a probe the functions seen most often (inclusive) go to stderr.
    """

    def __init__(self) -> None:
        import collections
        import threading

        self.beat = time.perf_counter()
        self.counts: collections.Counter = collections.Counter()
        self.leaves: collections.Counter = collections.Counter()
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            if time.perf_counter() - self.beat < 0.05:
                continue
            frame = sys._current_frames().get(self._main)
            seen = set()
            stack = []
            while frame is not None:
                code = frame.f_code
                where = f"{_short(code.co_filename)}:{code.co_name}"
                stack.append(f"{where}:{frame.f_lineno}")
                if where not in seen:
                    seen.add(where)
                    self.counts[where] += 1
                frame = frame.f_back
            self.leaves[" < ".join(stack[:6])] += 1

    def report(self, label: str) -> None:
        self._stop.set()
        total = sum(self.leaves.values())
        if not total:
            return
        print(
            f"--- {label}: {total} samples (5 ms) while the probe was > 50 ms late",
            file=sys.stderr,
        )
        for where, n in self.counts.most_common(40):
            print(f"  {n:5d}  {where}", file=sys.stderr)
        print("  leaf stacks:", file=sys.stderr)
        for stack, n in self.leaves.most_common(12):
            print(f"  {n:5d}  {stack}", file=sys.stderr)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _probe(
    until, timeout: float = 300.0, at_least: float = 0.0, label: str = "", action=None
) -> float:
    """Largest lateness (s) of a PROBE_MS timer until ``until()`` (checked every tick).

    ``action`` (the user's click, as a function) runs on the event loop once
    the probe is running, so its own time on the GUI thread is measured too.
    """
    from qtpy.QtCore import QEventLoop, QTimer

    sampler = _Sampler() if os.environ.get("BENCH_GUI_STACKS") else None
    late: list[float] = [0.0]
    last = [time.perf_counter()]
    start = last[0]
    loop = QEventLoop()

    def tick() -> None:
        now = time.perf_counter()
        late.append(now - last[0] - PROBE_MS / 1000)
        last[0] = now
        if sampler is not None:
            sampler.beat = now
        if now - start >= at_least and (until() or now - start > timeout):
            loop.quit()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(PROBE_MS)
    if action is not None:
        QTimer.singleShot(PROBE_MS // 2, action)
    loop.exec()
    timer.stop()
    if sampler is not None:
        sampler.report(f"{label or 'probe'} (longest stall {1000 * max(late):.0f} ms)")
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
        _settle()
        out["idle"] = _probe(label="idle", until=lambda: True, at_least=1.0)
        {
            "napari": _napari_alone,
            "pick": _pick_and_paint,
            "paint": _pick_and_paint,
            "predict": _predict,
            "train": _train,
            "result": _result,
            "result-napari": _result,
            "dock": _unet_dock,
            "annotate": _annotate_add,
        }[name](viewer, name, quick, out)
    finally:
        viewer.close()
    return out


def _settle() -> None:
    _probe(lambda: True, at_least=0.5)


def _measure(out: dict[str, float], part: str, action, until=lambda: True, at_least=0.3):
    """out[part] = the longest stall from ``action()`` (on the event loop) until ``until()``."""
    out[part] = _probe(until, at_least=at_least, label=part, action=action)
    return out[part]


def _napari_alone(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """napari's own cost of what the plugin asks of it (no plugin code runs)."""
    import numpy as np

    side = 1024 if quick else 2048
    _, labels = dense_cells(side)
    small = np.zeros((512, 512), np.uint16)
    viewer.add_image(small, name="cells")
    _settle()
    _measure(out, NAPARI["first"], lambda: viewer.add_labels(labels[:512, :512], name="first"))
    _settle()
    _measure(out, NAPARI["labels32"], lambda: viewer.add_labels(labels, name="labels32"))
    _settle()
    _measure(
        out,
        NAPARI["labels16"],
        lambda: viewer.add_labels(labels.astype(np.uint16), name="labels16"),
    )
    _settle()
    layer = viewer.layers["labels32"]
    viewer.layers.selection.active = layer
    _settle()
    _measure(out, NAPARI["paint"], lambda: layer.paint((500, 500), int(labels.max()) + 1))
    _settle()
    weights = np.random.default_rng(0).random((side, side), np.float32)
    _measure(out, NAPARI["image"], lambda: viewer.add_image(weights, name="w", colormap="inferno"))
    _settle()
    image = viewer.layers["w"]
    _measure(out, NAPARI["replace"], lambda: setattr(image, "data", weights[::-1].copy()))


#: napari-alone parts (scenario "napari") and the plugin parts they are the baseline of.
NAPARI = {
    "first": "napari alone: first Labels layer (512²)",
    "labels32": "napari alone: add 2048² labels (uint32)",
    "labels16": "napari alone: add 2048² labels (uint16)",
    "paint": "napari alone: paint stroke on 2048² labels",
    "image": "napari alone: add 2048² float32 image",
    "replace": "napari alone: replace 2048² image data",
    # The same uint16 layer added by viewer.add_labels in the "result" scenario's own state
    # (a 2048² image, a first Labels layer, the Predict dock): labels16 above is a second
    # layer of the same shape in a viewer without a dock, which costs less.
    "result": "napari alone: add the 2048² result layer (result scenario's state)",
}
BASELINE_OF = {
    "pick": NAPARI["image"],
    "stroke 1": NAPARI["paint"],
    "stroke 2": NAPARI["paint"],
    "stroke 3": NAPARI["paint"],
    "preview after strokes": NAPARI["replace"],
    "first predict": NAPARI["first"],
    "add result layer": NAPARI["result"],
}


def _pick_and_paint(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Pick a dense labels layer in Weight map (and, for "paint", paint three strokes)."""
    _, labels = dense_cells(1024 if quick else 2048)
    layer = viewer.add_labels(labels, name="cells 2048")
    _settle()
    docked: list = []
    _measure(
        out,
        "open Weight map dock",
        lambda: docked.append(viewer.window.add_plugin_dock_widget(PLUGIN, "Weight map")[1]),
    )
    weights = docked[0]
    # The user reads the dock a moment: its warm-up (SciPy, in the background) ends first.
    _measure(
        out,
        "Weight map warm-up (background imports)",
        None,
        until=lambda: _warmed_up("annotate"),
    )
    _settle()
    before = weights.updates
    _measure(
        out,
        "pick",
        lambda: setattr(weights._labels, "value", layer),
        until=lambda: weights.updates > before and not _busy(weights),
    )
    if name == "paint":
        viewer.layers.selection.active = layer
        _settle()
        before = weights.updates
        for stroke in range(3):
            value = int(labels.max()) + 1 + stroke
            _measure(
                out,
                f"stroke {stroke + 1}",
                lambda value=value, stroke=stroke: layer.paint((500 + 40 * stroke, 500), value),
                at_least=0.1,
            )
        _measure(
            out,
            "preview after strokes",
            None,
            until=lambda: weights.updates > before and not _busy(weights),
        )


def _predict(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Open Predict (its warm-up) and run a first prediction."""
    from napari_unet._sample_data import synthetic_cells

    image, _ = synthetic_cells((256, 256) if quick else (512, 512), seed=2)
    layer = viewer.add_image(image, name="cells")
    _settle()
    docked: list = []
    _measure(
        out,
        "open Predict dock",
        lambda: docked.append(viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")[1]),
    )
    predict = docked[0]
    _measure(out, "Predict dock warm-up (background imports)", None, until=_ready(predict))
    predict._image.value = layer
    predict._device.value = "cpu"
    _settle()
    _measure(out, "first predict", predict.start, until=lambda: predict.worker is None)


def _train(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Open Train (its warm-up), start training on the demo, train a while and stop."""
    import tempfile

    from napari_unet._sample_data import make_cells_2d

    for data, kwargs, kind in make_cells_2d():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _, annotate = viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate cells")
    _settle()
    docked: list = []
    _measure(
        out,
        "open Train dock",
        lambda: docked.append(viewer.window.add_plugin_dock_widget(PLUGIN, "Train")[1]),
    )
    train = docked[0]
    _measure(out, "Train dock warm-up (background imports)", None, until=_ready(train))
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
    _settle()
    _measure(out, "training start", train.start, until=lambda: len(train._losses) >= 1)
    _measure(out, "training", None, at_least=1.0 if quick else 3.0)
    _measure(out, "training stop", train.stop, until=lambda: train.worker is None)


def _result(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Add a large labels result layer as Predict does when a run returns."""
    import numpy as np

    _, labels = dense_cells(1024 if quick else 2048)
    image = viewer.add_image(np.zeros(labels.shape, np.uint16), name="cells")
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    predict._job = {"image": image, "axis": None, "probabilities": False}
    predict._started = time.perf_counter()
    # A first Labels layer (napari's one-off set-up is measured in "first predict").
    viewer.add_labels(labels[:64, :64], name="first")
    _settle()
    result = labels.astype(np.uint32)
    try:  # what the worker returns (uint16 when the ids fit), in versions that compact
        from napari_unet._widgets._layers import compact_labels

        result = compact_labels(result)
    except ImportError:
        pass
    if name == "result-napari":
        _measure(out, NAPARI["result"], lambda: viewer.add_labels(result, name="r"), at_least=1.0)
    else:
        _measure(
            out, "add result layer", lambda: predict._on_returned((result, None)), at_least=1.0
        )


def _unet_dock(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Open the one U-Net dock (Annotate, Weights, Train, Predict as tabs) and its warm-ups."""
    docked: list = []
    _measure(
        out,
        "open U-Net dock",
        lambda: docked.append(viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net")[1]),
    )
    dock = docked[0]
    # Versions that build every tab with the dock have them all in `widgets`.
    built = getattr(getattr(dock, "widgets", None), "built", None)
    steps = list((built if built is not None else getattr(dock, "widgets", {})).values())
    _measure(
        out,
        "U-Net dock warm-up (background imports)",
        None,
        until=lambda: _warmed_up() and all(_ready(step)() for step in steps),
    )
    # The user then opens each other step's tab (built on first show where it is lazy).
    for title in ("Weights", "Train", "Predict"):
        _settle()
        _measure(
            out,
            f"U-Net dock: first show of the {title} tab",
            lambda title=title: dock.show_tab(title),
            until=lambda title=title: _ready(dock.widgets[title])(),
        )


def _annotate_add(viewer, name: str, quick: bool, out: dict[str, float]) -> None:
    """Annotate: "Add to training set" on a 2048² image with ~9,000 painted cells."""
    import numpy as np

    _, labels = dense_cells(1024 if quick else 2048)
    image = viewer.add_image(labels.astype(np.float32), name="cells")
    layer = viewer.add_labels(labels, name="cells cells")
    _settle()
    docked: list = []
    _measure(
        out,
        "open Annotate dock",
        lambda: docked.append(viewer.window.add_plugin_dock_widget(PLUGIN, "Annotate cells")[1]),
    )
    _measure(out, "Annotate warm-up (background imports)", None, until=_warmed_up)
    annotate = docked[0]
    annotate._image.value, annotate._labels.value = image, layer
    _settle()
    training_set = annotate._session.training_set
    _measure(
        out,
        "add to training set",
        annotate._add.native.click,
        until=lambda: len(training_set) > 0 and not _busy(annotate),
    )


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _warmed_up(kind: str | None = None) -> bool:
    """The widgets' background first-use imports (of ``kind``: also started) are done.

    True for versions without them.
    """
    try:
        from napari_unet._widgets import _warmup
    except ImportError:
        return True
    started = _warmup._started
    if kind is not None and hasattr(_warmup, "warm_up_soon") and kind not in started:
        return False  # not started yet (it starts half a second after the dock is built)
    return not any(thread.is_alive() for thread in started.values())


def _ready(widget):
    """until(): the dock's warm-up thread is done and the dock filled in what needed it."""
    return lambda: _warmed_up() and getattr(widget, "_ready", True)


def _busy(widget) -> bool:
    return getattr(widget, "worker", None) is not None


def run(quick: bool = False) -> list:
    from _common import Row

    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        print("bench_gui: no display (run under xvfb-run -a); skipped", file=sys.stderr)
        return []
    results: dict[str, float] = {}
    idle: dict[str, float] = {}
    for name in SCENARIOS:
        command = [sys.executable, __file__, "--scenario", name] + (["--quick"] if quick else [])
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"bench_gui {name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        result = json.loads(lines[-1])
        idle[name] = result.pop("idle")
        for part, value in result.items():
            results[part] = value
            idle[part] = idle[name]
    print(f"bench_gui: load average {_loadavg()}", file=sys.stderr)
    rows: list[Row] = []
    for part, value in results.items():
        base = BASELINE_OF.get(part)
        if base not in results:
            base = None
        reference = results[base] if base else idle[part]
        rows.append(
            Row(
                name=f"GUI stall, {part}",
                baseline="viewer idle" if base is None else base.replace("napari alone: ", ""),
                baseline_value=1000 * reference,
                ours_value=1000 * value,
                unit="ms",
                ratio=reference / value if value > 0 else float("inf"),
                goal="-" if part.startswith("napari alone") else "< 100 ms",
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

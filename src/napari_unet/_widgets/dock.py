"""The "U-Net" dock: the four steps as tabs of one dock widget.

napari stacks the docks of a plugin opened one by one from the Plugins menu;
on a 1366 x 768 screen that left Train and Predict two rows each. One dock
with a tab per step gives each step the full height. The four widgets stay
available on their own (the manifest lists them too).

A step's widget is built when its tab is first shown (or first asked for in
:attr:`UNetDock.widgets`): building all four took 310-510 ms on the GUI
thread under load, one step 120-230 ms. The background warm-ups of all steps
still start with the dock, so a step's tab is filled in by the time it is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from ._lifetime import watch_close
from ._warmup import warm_up_soon

if TYPE_CHECKING:
    import napari

__all__ = ["TABS", "UNetDock"]

#: Tab title -> (module, class); short titles, so that no tab is elided.
TABS = {
    "Annotate": ("annotate", "AnnotateWidget"),
    "Weights": ("weight_map", "WeightMapWidget"),
    "Train": ("train_volume", "TrainVolumeWidget"),
    "Predict": ("predict", "PredictWidget"),
}


class _Steps(Mapping):
    """Tab title -> the step's widget, built on first access (``built``: those built so far)."""

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._build = build
        self.built: dict[str, Any] = {}

    def __getitem__(self, title: str) -> Any:
        if title not in TABS:
            raise KeyError(title)
        if title not in self.built:
            self.built[title] = self._build(title)
        return self.built[title]

    def __iter__(self) -> Iterator[str]:
        return iter(TABS)

    def __len__(self) -> int:
        return len(TABS)


class UNetDock(Container):
    """Annotate, Weights, Train and Predict as tabs of one dock.

    Parameters
    ----------
    viewer : napari.viewer.Viewer

    Attributes
    ----------
    widgets : Mapping
        Tab title -> the step's widget (they share the viewer's session);
        reading a step builds it if its tab was not shown yet.
    tabs : QTabWidget
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._viewer = viewer
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self._holders: dict[str, QVBoxLayout] = {}
        for title in TABS:
            holder = QWidget()
            layout = QVBoxLayout(holder)
            layout.setContentsMargins(0, 0, 0, 0)
            self._holders[title] = layout
            self.tabs.addTab(holder, title)
        self.widgets = _Steps(self._build)
        self.native.layout().addWidget(self.tabs)
        self.tabs.currentChanged.connect(self._on_tab_shown)
        self._on_tab_shown(self.tabs.currentIndex())
        # The steps not built yet import their libraries in the background all the same.
        for kind in ("annotate", "train", "predict"):
            warm_up_soon(kind, self.native)
        # The steps watch their own dock when docked alone; inside the tabs they are not
        # re-parented when this dock is closed, so this dock stops their work.
        self._watcher = watch_close(self.native, self._stop_work, lambda: None)

    def _build(self, title: str) -> Any:
        import importlib

        module, name = TABS[title]
        cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        widget = cls(self._viewer)
        self._holders[title].addWidget(widget.native)
        return widget

    def _on_tab_shown(self, index: int) -> None:
        if index >= 0:
            self.widgets[list(TABS)[index]]

    def _stop_work(self) -> None:
        built = self.widgets.built
        if "Train" in built:
            built["Train"].stop()
        if "Predict" in built:
            built["Predict"].cancel()

    def show_tab(self, title: str) -> Any:
        """Bring a step's tab to the front; returns its widget."""
        self.tabs.setCurrentIndex(list(TABS).index(title))
        return self.widgets[title]

    def reset_choices(self, *_: Any) -> None:
        # Steps not built yet read their choices when they are built.
        for widget in list(self.widgets.built.values()):
            widget.reset_choices()

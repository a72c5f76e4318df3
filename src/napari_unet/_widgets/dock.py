"""The "U-Net" dock: the four steps as tabs of one dock widget.

napari stacks the docks of a plugin opened one by one from the Plugins menu;
on a 1366 x 768 screen that left Train and Predict two rows each. One dock
with a tab per step gives each step the full height. The four widgets stay
available on their own (the manifest lists them too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container
from qtpy.QtWidgets import QTabWidget

from ._lifetime import watch_close

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


class UNetDock(Container):
    """Annotate, Weights, Train and Predict as tabs of one dock.

    Parameters
    ----------
    viewer : napari.viewer.Viewer

    Attributes
    ----------
    widgets : dict
        Tab title -> the step's widget (they share the viewer's session).
    tabs : QTabWidget
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        import importlib

        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.widgets: dict[str, Any] = {}
        for title, (module, name) in TABS.items():
            cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
            widget = cls(viewer)
            self.widgets[title] = widget
            self.tabs.addTab(widget.native, title)
        self.native.layout().addWidget(self.tabs)
        # The steps watch their own dock when docked alone; inside the tabs they are not
        # re-parented when this dock is closed, so this dock stops their work.
        self._watcher = watch_close(self.native, self._stop_work, lambda: None)

    def _stop_work(self) -> None:
        self.widgets["Train"].stop()
        self.widgets["Predict"].cancel()

    def show_tab(self, title: str) -> Any:
        """Bring a step's tab to the front; returns its widget."""
        self.tabs.setCurrentIndex(list(TABS).index(title))
        return self.widgets[title]

    def reset_choices(self, *_: Any) -> None:
        for widget in self.widgets.values():
            widget.reset_choices()

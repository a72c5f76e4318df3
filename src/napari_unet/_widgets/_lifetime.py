"""Noticing when a dock widget is closed, removed or destroyed, to stop its work.

napari's dock "close" button hides the dock (a Close event on the
QDockWidget), ``remove_dock_widget`` re-parents the inner widget to None, and
closing the viewer deletes the main window and with it every dock. A widget
running a worker must stop it in all three cases; switching between tabbed
docks only hides the widget and must not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from napari.qt.threading import GeneratorWorker
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QDockWidget, QWidget

__all__ = ["JobError", "StoppableWorker", "report_error", "stopper", "watch_close"]


class JobError(Exception):
    """A RuntimeError raised in a worker's job (PyTorch's out-of-memory, for one), re-raised.

    superqt's workers take a RuntimeError returned from the work for a deleted
    Qt object: they only warn, never emit ``errored`` or ``finished``, and the
    dock stayed "running" for good. The original is the ``__cause__``.
    """


def report_error(err: BaseException) -> None:
    """Show an exception from a worker as a napari error notification (with its traceback).

    napari's workers are meant to relay ``errored`` to the notification
    manager themselves, but with napari 0.9.2 and PyQt6 the mixin that does
    so is never initialised (it sits behind ``sip.wrapper`` in the MRO), so
    the widgets do it explicitly.
    """
    from napari.utils.notifications import notification_manager

    notification_manager.receive_error(type(err), err, err.__traceback__)


class _CloseWatcher(QObject):
    def __init__(
        self, widget: QWidget, on_close: Callable[[], None], on_destroyed: Callable[[], None]
    ) -> None:
        super().__init__(widget)
        self._widget = widget
        self._on_close = on_close
        self._dock: QDockWidget | None = None
        widget.installEventFilter(self)
        # A plain function (not a method of a Qt object being deleted) runs safely here.
        widget.destroyed.connect(lambda *_: on_destroyed())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        # During interpreter or garbage-collector teardown the Python side may already be
        # cleared while Qt still delivers events: then there is nothing left to do.
        widget = getattr(self, "_widget", None)
        if widget is None:
            return False
        kind = event.type()
        if obj is widget and kind == QEvent.Type.ParentChange:
            if widget.parent() is None and self._dock is not None:
                self._dock.removeEventFilter(self)
                self._dock = None
                self._on_close()  # removed from the viewer
            else:
                self._attach()
        elif obj is self._dock and kind == QEvent.Type.Close:
            self._on_close()
        return False

    def _attach(self) -> None:
        parent = self._widget.parent()
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parent()
        if parent is not None and parent is not self._dock:
            if self._dock is not None:
                self._dock.removeEventFilter(self)
            self._dock = parent
            parent.installEventFilter(self)


def watch_close(
    widget: QWidget, on_close: Callable[[], None], on_destroyed: Callable[[], None]
) -> QObject:
    """Call ``on_close`` when the dock holding ``widget`` is closed or removed,
    and ``on_destroyed`` when ``widget`` is deleted (e.g. with the viewer).

    Parameters
    ----------
    widget : QWidget
        The widget placed in a napari dock (``container.native``).
    on_close : callable
        Stop running work; the widget may be shown again later.
    on_destroyed : callable
        Stop running work for good; the Qt widgets are gone.

    Returns
    -------
    watcher : QObject
        Keep a reference to it (it is also a Qt child of ``widget``).
    """
    return _CloseWatcher(widget, on_close, on_destroyed)


class StoppableWorker(GeneratorWorker):
    """A worker whose ``quit()`` asks the engine to stop instead of abandoning it.

    A plain ``quit()`` leaves the generator suspended at a yield, so the
    engine would never write the model trained so far. napari itself calls
    ``quit()`` on running workers when the viewer closes; with this class
    that also ends in a saved model and a normal ``returned``.
    """

    stop_event: threading.Event | None = None

    def quit(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        else:
            super().quit()


def stopper(
    stop: threading.Event, done: threading.Event, flags: dict[str, bool], wait_s: float
) -> Callable[[], None]:
    """The handler for a destroyed dock: stop training and wait up to ``wait_s`` for the save."""

    def on_destroyed() -> None:
        flags["alive"] = False
        if not done.is_set():
            stop.set()
            done.wait(wait_s)

    return on_destroyed

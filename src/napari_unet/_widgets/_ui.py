"""Presentation helpers shared by the dock widgets: a scrolling dock body, compact layout."""

from __future__ import annotations

from collections.abc import Sequence

from magicgui.widgets import ComboBox, Container, Label, ProgressBar
from magicgui.widgets.bases import Widget
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

__all__ = ["ScrollDock", "heading", "set_progress"]

# Characters a combo box shows at least; longer layer names are elided, not widening the dock.
_COMBO_CHARS = 16


def heading(text: str) -> Label:
    """A bold section title."""
    return Label(value=f"<b>{text}</b>")


class ScrollDock(Container):
    """A Container whose content scrolls vertically inside its napari dock.

    napari docks ``container.native``; for a magicgui ``scrollable=True``
    container that is the inner widget, so magicgui's scroll area is left
    behind and a tall dock forces the window taller than the screen. Here
    the native widget holds a QScrollArea around a body Container, which
    stays a magicgui child (so ``reset_choices`` and iteration still reach
    every sub-widget).
    """

    def __init__(self) -> None:
        super().__init__(labels=False)
        self._body = Container(labels=False)
        self.append(self._body)
        layout = self.native.layout()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.removeWidget(self._body.native)
        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll.setWidget(self._body.native)
        layout.addWidget(self._scroll)

    def set_content(self, widgets: Sequence[Widget]) -> None:
        """Add the sub-widgets (top to bottom) and keep the dock narrow.

        Long labels wrap and combo boxes elide long layer names: otherwise one
        long message sets the dock's minimum width and pushes the controls
        out of view in a narrow window.
        """
        self._body.extend(_group_forms(widgets))
        _compact(self._body)
        # Widgets keep their natural height at the top; spare height stays below them.
        self._body.native.layout().addStretch(1)
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self._scroll.setMinimumWidth(self._body.native.minimumSizeHint().width() + bar)

    def set_footer(self, widgets: Sequence[Widget], stretch: QWidget | None = None) -> None:
        """Widgets below the scrolling settings, always visible (Start, Stop, progress).

        ``stretch`` (a plot) goes last and takes the height the dock has
        left; a splitter between the settings and the footer lets the user
        trade one for the other.
        """
        footer = Container(widgets=list(widgets), labels=False)
        footer.margins = (4, 4, 4, 0)
        _compact(footer)
        self.append(footer)  # a magicgui child: reset_choices and iteration reach it
        layout = self.native.layout()
        layout.removeWidget(self._scroll)
        layout.removeWidget(footer.native)
        bottom = QWidget()
        column = QVBoxLayout(bottom)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(footer.native)
        if stretch is not None:
            column.addWidget(stretch, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self._scroll)
        splitter.addWidget(bottom)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2 if stretch is not None else 0)
        layout.addWidget(splitter)
        self._splitter = splitter


def _group_forms(widgets: Sequence[Widget]) -> list[Widget]:
    """Text spans the dock's width; runs of other widgets become labelled forms.

    A word-wrapped label inside a form row keeps the height of one line and
    is cut off, and sits in the narrow value column; directly in the body it
    wraps over the full width.
    """
    out: list[Widget] = []
    run: list[Widget] = []

    def flush() -> None:
        if run:
            form = Container(widgets=list(run), labels=True)
            form.margins = (0, 0, 0, 0)
            out.append(form)
            run.clear()

    for widget in widgets:
        # A container with a label is one form row (a field and its button).
        if isinstance(widget, Label) or not widget.label:
            flush()
            out.append(widget)
        else:
            run.append(widget)
    flush()
    return out


def _compact(container: Container) -> None:
    for widget in container:
        if isinstance(widget, Label):
            label = widget.native
            label.setWordWrap(True)
            label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            # magicgui makes labels Fixed: a wrapped text would keep its first, narrow width.
            label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        elif isinstance(widget, ComboBox):
            combo = widget.native
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(_COMBO_CHARS)
        elif isinstance(widget, Container):
            _compact(widget)


def format_seconds(seconds: float) -> str:
    """A duration as a person reads it: "45 s", "12 min", "2.5 h"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def set_progress(bar: ProgressBar, value: int) -> None:
    """Set a progress bar's value with an ordinary (queued) update instead of a repaint.

    ``QProgressBar.setValue`` repaints at once; in napari's window that repaint also drew
    the OpenGL canvas when it was due (a new 2048² result layer: 8 of 35 stack samples of
    the stall were vispy drawing inside Predict's final progress update).
    """
    native = bar.native
    native.setUpdatesEnabled(False)
    try:
        bar.value = value
    finally:
        native.setUpdatesEnabled(True)  # queues one update of the bar

"""A small line plot drawn with QPainter (no matplotlib dependency).

Good enough for a live loss curve: a few series on shared axes, "nice" tick
values, an optional log scale, a legend, and decimation to one point per
pixel column, so repainting 100 000 iterations costs the same as 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPalette, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["LinePlot", "nice_ticks"]


@dataclass
class _Series:
    name: str
    color: QColor
    width: float = 1.5
    markers: bool = False
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 5 times a power of ten) covering [low, high].

    Examples
    --------
    >>> nice_ticks(0, 1000)
    [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
    """
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * step:
        ticks.append(float(round(value, 12)))
        value += step
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten between 10**low and 10**high; with 2 and 5 times them over short ranges."""
    decades = range(math.floor(low), math.ceil(high) + 1)
    ticks = [10.0**e for e in decades if low <= e <= high]
    if len(ticks) < 3:
        ticks = [
            m * 10.0**e for e in decades for m in (1, 2, 5) if low <= math.log10(m) + e <= high
        ]
    return ticks


def _format(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-3:
        return f"{value:.0e}"
    if magnitude >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


class LinePlot(QWidget):
    """Lines on shared axes, repainted on demand.

    Parameters
    ----------
    title : str
        Shown above the axes.
    xlabel : str
        Label of the x axis.
    log_y : bool
        Logarithmic y axis (losses span decades).
    """

    def __init__(self, title: str = "", xlabel: str = "", *, log_y: bool = False) -> None:
        super().__init__()
        self.title = title
        self.xlabel = xlabel
        self.log_y = log_y
        self._series: dict[str, _Series] = {}
        self.setMinimumHeight(180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def add_series(
        self, name: str, color: str, *, width: float = 1.5, markers: bool = False
    ) -> None:
        """Declare a series (drawn in declaration order; later ones on top)."""
        self._series[name] = _Series(name, QColor(color), width, markers)

    def set_data(self, name: str, x: list[float], y: list[float]) -> None:
        """Replace a series' points."""
        series = self._series[name]
        series.x, series.y = list(x), list(y)

    def append(self, name: str, x: float, y: float) -> None:
        """Add one point to a series."""
        series = self._series[name]
        series.x.append(float(x))
        series.y.append(float(y))

    def clear(self) -> None:
        """Remove all points, keep the series."""
        for series in self._series.values():
            series.x, series.y = [], []
        self.update()

    def points(self, name: str) -> tuple[list[float], list[float]]:
        """The points of a series (for tests)."""
        series = self._series[name]
        return series.x, series.y

    # -- drawing -------------------------------------------------------------------------------

    def _ranges(self) -> tuple[float, float, float, float] | None:
        xs = [v for s in self._series.values() for v in s.x]
        ys = [
            self._ty(v)
            for s in self._series.values()
            for v in s.y
            if math.isfinite(v) and (v > 0 or not self.log_y)
        ]
        if not xs or not ys:
            return None
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        if not self.log_y:
            y0 = min(0.0, y0)  # losses: show how far from zero
        if x1 <= x0:
            x1 = x0 + 1
        if y1 <= y0:
            y1 = y0 + (abs(y0) * 0.1 or 1.0)
        pad = 0.05 * (y1 - y0)
        return x0, x1, y0 - (pad if self.log_y else 0.0), y1 + pad

    def _ty(self, value: float) -> float:
        return math.log10(value) if self.log_y else value

    def paintEvent(self, event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        background = palette.color(QPalette.ColorRole.Base)
        foreground = palette.color(QPalette.ColorRole.Text)
        painter.fillRect(self.rect(), background)
        font = QFont(painter.font())
        metrics = painter.fontMetrics()
        line = metrics.height()
        left, right, top, bottom = (
            6 * metrics.averageCharWidth() + 8,
            10,
            2 * line + 10,
            2 * line + 6,
        )
        plot = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        painter.setPen(foreground)
        painter.setFont(font)
        painter.drawText(
            QRectF(0, 2, self.width(), line + 4), Qt.AlignmentFlag.AlignHCenter, self.title
        )
        ranges = self._ranges()
        if ranges is None or plot.width() < 20 or plot.height() < 20:
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "no data yet")
            painter.end()
            return
        self._draw_axes(painter, plot, ranges, foreground, line)
        self._draw_series(painter, plot, ranges)
        self._draw_legend(painter, plot, foreground)
        painter.end()

    def _draw_axes(
        self,
        painter: QPainter,
        plot: QRectF,
        ranges: tuple[float, float, float, float],
        foreground: QColor,
        line: int,
    ) -> None:
        """Grid lines, tick labels, the x label and the frame."""
        x0, x1, y0, y1 = ranges
        grid = QColor(foreground)
        grid.setAlpha(40)
        painter.setPen(QPen(grid, 1))
        yticks = _log_ticks(y0, y1) if self.log_y else nice_ticks(y0, y1, 4)
        for value in yticks:
            ty = self._ty(value)
            if not y0 <= ty <= y1:
                continue
            p = _to_px(plot, ranges, x0, ty)
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(plot.left(), p.y()), QPointF(plot.right(), p.y()))
            painter.setPen(foreground)
            painter.drawText(
                QRectF(0, p.y() - line / 2, plot.left() - 4, line),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                _format(value),
            )
        for value in nice_ticks(x0, x1, 5):
            p = _to_px(plot, ranges, value, y0)
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(p.x(), plot.top()), QPointF(p.x(), plot.bottom()))
            painter.setPen(foreground)
            painter.drawText(
                QRectF(p.x() - 40, plot.bottom() + 2, 80, line),
                Qt.AlignmentFlag.AlignHCenter,
                _format(value),
            )
        painter.drawText(
            QRectF(plot.left(), plot.bottom() + line + 2, plot.width(), line),
            Qt.AlignmentFlag.AlignHCenter,
            self.xlabel,
        )
        painter.setPen(QPen(foreground, 1))
        painter.drawRect(plot)

    def _draw_series(
        self, painter: QPainter, plot: QRectF, ranges: tuple[float, float, float, float]
    ) -> None:
        """Each series' markers and line, decimated to about one point per pixel column."""
        x0, x1 = ranges[0], ranges[1]
        painter.setClipRect(plot)
        for series in self._series.values():
            if not series.x:
                continue
            x = np.asarray(series.x, dtype=float)
            y = np.asarray(series.y, dtype=float)
            keep = np.isfinite(y) & ((y > 0) if self.log_y else True)
            x, y = x[keep], y[keep]
            if not x.size:
                continue
            if self.log_y:
                y = np.log10(y)
            x, y = _decimate(x, y, x0, x1, max(int(plot.width()), 1))
            painter.setPen(QPen(series.color, series.width))
            if series.markers:
                painter.setBrush(series.color)
                for xi, yi in zip(x, y, strict=True):
                    painter.drawEllipse(_to_px(plot, ranges, xi, yi), 3.0, 3.0)
                painter.setBrush(Qt.BrushStyle.NoBrush)
            if x.size > 1:
                path = QPainterPath(_to_px(plot, ranges, x[0], y[0]))
                for xi, yi in zip(x[1:], y[1:], strict=True):
                    path.lineTo(_to_px(plot, ranges, xi, yi))
                painter.drawPath(path)
        painter.setClipping(False)

    def _draw_legend(self, painter: QPainter, plot: QRectF, foreground: QColor) -> None:
        """The legend in a row between the title and the axes: it never hides a point."""
        metrics = painter.fontMetrics()
        line = metrics.height()
        named = [s for s in self._series.values() if s.x]
        lx = plot.right()
        ly = line + 4
        for series in reversed(named):
            lx -= metrics.horizontalAdvance(series.name) + 30
            painter.setPen(QPen(series.color, 2.5))
            painter.drawLine(QPointF(lx, ly + line / 2), QPointF(lx + 18, ly + line / 2))
            painter.setPen(foreground)
            painter.drawText(QPointF(lx + 22, ly + metrics.ascent()), series.name)


def _to_px(plot: QRectF, ranges: tuple[float, float, float, float], x: float, y: float) -> QPointF:
    """Data coordinates to pixels inside ``plot``."""
    x0, x1, y0, y1 = ranges
    return QPointF(
        plot.left() + (x - x0) / (x1 - x0) * plot.width(),
        plot.bottom() - (y - y0) / (y1 - y0) * plot.height(),
    )


def _decimate(
    x: np.ndarray, y: np.ndarray, x0: float, x1: float, columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Average the points per pixel column when there are over two per column."""
    if x.size <= 2 * columns:
        return x, y
    bins = ((x - x0) / (x1 - x0) * (columns - 1)).astype(int)
    counts = np.bincount(bins, minlength=columns)
    used = counts > 0
    x_mean = np.bincount(bins, weights=x, minlength=columns)[used] / counts[used]
    y_mean = np.bincount(bins, weights=y, minlength=columns)[used] / counts[used]
    return x_mean, y_mean

"""Z planes of lazy labels (napari, one plane computed on demand) linked as they are computed.

A lazy layer computes only the planes the user looks at, so the stack is
never whole. Linking two neighbouring planes needs only those two planes
(:func:`napari_unet.linking.match_overlaps`), and the fragment pass of a
plane needs only its two neighbours; so :class:`PlaneLinker` links each
pair of neighbouring planes as soon as both are computed, and every plane
is shown through the links known at that moment. Once every plane has been
computed (e.g. napari's 3D view computes them all), the objects are exactly
those of :func:`~napari_unet.linking.link_planes` on the whole stack (up to
the numbering). Planes computed earlier show their old ids until they are
drawn again; :attr:`PlaneLinker.version` changes whenever that can happen,
so a viewer redraws then (cheap: the planes are kept, never predicted twice).
"""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np


class PlaneLinker:
    """Link the planes of a lazily computed stack as they are computed.

    Parameters
    ----------
    leading : tuple of int
        The shape of the axes before (Y, X); planes are numbered in C order
        over them.
    z : int
        The leading axis whose planes are linked (others, e.g. T, never are).
    stride : int
        Plane ``i``'s instance ``k`` has the per-plane id ``i * stride + k``.

    Notes
    -----
    Every computed plane is kept (2 bytes per pixel, ids below ``2**16``),
    so a redraw never runs the network again; objects get the smallest
    per-plane id of their members, so an object's id may change when a
    plane above it is computed.
    """

    def __init__(self, leading: tuple[int, ...], z: int, stride: int) -> None:
        self.leading, self.z, self.stride = tuple(leading), int(z), int(stride)
        self._lock = threading.Lock()
        self._planes: dict[int, np.ndarray] = {}
        self._areas: dict[int, np.ndarray] = {}
        self._covered: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        self._parent: dict[int, int] = {}
        self._linked: defaultdict[int, bool] = defaultdict(bool)
        self._absorbed: set[int] = set()
        #: Increases whenever planes shown before may now show other ids.
        self.version = 0

    def __dask_tokenize__(self) -> tuple[str, int]:
        # One linker, one token: Dask must not hash (or pickle) the planes it keeps.
        return ("napari-unet-plane-linker", id(self))

    def plane(self, index: int) -> np.ndarray | None:
        """The per-plane labels (ids ``1 ... n``) of a computed plane, or None."""
        with self._lock:
            return self._planes.get(index)

    def add(self, index: int, part: np.ndarray) -> np.ndarray:
        """Record plane ``index``'s labels (ids ``1 ... n``); its linked labels (uint32)."""
        with self._lock:
            if index not in self._planes:
                self._planes[index] = part.astype(np.uint16)
                self._areas[index] = np.bincount(part.ravel())
                changed = False
                for other in self._neighbours(index):
                    if other in self._planes:
                        self._link_pair(min(index, other), max(index, other))
                        changed = True
                for p in (index, *self._neighbours(index)):
                    self._absorb(p)
                if changed:
                    self.version += 1
            return self._show(index)

    def _neighbours(self, index: int) -> list[int]:
        loc = list(np.unravel_index(index, self.leading))
        out = []
        for step in (-1, 1):
            if 0 <= loc[self.z] + step < self.leading[self.z]:
                near = list(loc)
                near[self.z] += step
                out.append(int(np.ravel_multi_index(near, self.leading)))
        return out

    def _find(self, g: int) -> int:
        root = g
        while self._parent.get(root, root) != root:
            root = self._parent[root]
        while self._parent.get(g, g) != root:
            self._parent[g], g = root, self._parent[g]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        self._parent[max(ra, rb)] = min(ra, rb)

    def _link_pair(self, first: int, second: int) -> None:
        from ..linking import match_overlaps, overlap_counts

        area_a, area_b = self._areas[first], self._areas[second]
        ids_a, ids_b, counts = overlap_counts(self._planes[first], self._planes[second])
        # The two planes' ids side by side: plane b's ids after plane a's.
        shift = len(area_a)
        area = np.concatenate([area_a, area_b])
        matches, covered = match_overlaps((ids_a, ids_b + shift, counts), area)
        base_a, base_b = first * self.stride, second * self.stride
        for a, b in matches:
            self._union(base_a + a, base_b + b - shift)
            self._linked[base_a + a] = self._linked[base_b + b - shift] = True
        self._covered[(first, second)] = (
            covered[0] + base_a,
            covered[1] - shift + base_b,
            covered[2],
            covered[3],
        )

    def _absorb(self, index: int) -> None:
        """The fragment pass of one plane, once both its neighbours are computed."""
        from ..linking import _fragment_targets

        near = self._neighbours(index)
        if index in self._absorbed or index not in self._planes:
            return
        if any(p not in self._planes for p in near):
            return
        self._absorbed.add(index)
        tables = [self._covered[(min(index, p), max(index, p))] for p in near]
        low, high = index * self.stride, (index + 1) * self.stride
        for g, target in _fragment_targets(self._linked, tables, 0.5).items():
            if low <= g < high:
                self._union(g, target)

    def _show(self, index: int) -> np.ndarray:
        part = self._planes[index]
        base = index * self.stride
        lut = np.array(
            [0, *(self._find(base + k) for k in range(1, len(self._areas[index])))], np.uint32
        )
        return lut[part]

"""The package's structure, checked from its source with ``ast``.

- No import cycles between modules, counting imports inside functions (only
  ``if TYPE_CHECKING:`` blocks are skipped: they never run) and the names a
  lazy ``_LAZY`` re-export table hands out.
- The core (everything but ``_widgets/`` and ``cli/``) imports no napari, Qt,
  magicgui or argparse.
- The front ends (``_widgets/``, ``cli/``) import no private core names.
- Reading images does not import PyTorch; the command line is a package.
- No module over 700 lines, no function body over 100 lines.

The allow-lists below name today's offenders; they may only shrink.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_unet"
# The napari-facing modules (named in napari.yaml) and the command line.
FRONT_ENDS = (
    "napari_unet._widgets",
    "napari_unet._sample_data",
    "napari_unet._sample_data_real",
    "napari_unet.cli",
)
GUI_AND_CLI = ("napari", "qtpy", "magicgui", "argparse", "PyQt5", "PyQt6", "PySide2", "PySide6")

MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 100  # body lines without the docstring
# Modules over the limit: none left since issue 13 split export and training; keep it empty.
LONG_MODULES: set[str] = set()
LONG_FUNCTIONS: set[str] = set()
# inference <-> tiling (inference_check calls predict_tiled): issue 17 moves the check out.
KNOWN_CYCLES: list[set[str]] = []
# Private core names the widgets still import (issue 16 switches them to napari_unet.io).
FRONT_END_PRIVATE: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every import that can run."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                found_else = child.orelse
                for item in found_else:
                    visit(item)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, None, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if _is_package(name) else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                found.extend((target, alias.name, child.lineno) for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _lazy_table(name: str) -> dict[str, str]:
    """A package's ``_LAZY`` re-export table (name -> module), read by importing it."""
    if not _is_package(name) or "_LAZY" not in MODULES[name].read_text(encoding="utf-8"):
        return {}
    return dict(importlib.import_module(name)._LAZY)


def _edges() -> dict[str, set[str]]:
    # A lazy table adds an edge only for the names a module takes from it: the
    # table's own modules are imported when (and only if) such a name is used.
    lazy = {name: _lazy_table(name) for name in MODULES}
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, item, _ in _imports(name):
            if item is not None and f"{target}.{item}" in MODULES:
                edges[name].add(f"{target}.{item}")
            elif item is not None and item in lazy.get(target, {}):
                edges[name].add(lazy[target][item])  # resolved through the re-export table
            elif target in MODULES:
                edges[name].add(target)
        edges[name].discard(name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return components


def _is_front_end(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FRONT_ENDS)


def test_the_checks_see_lazy_and_function_level_imports():
    edges = _edges()
    # segment imports tiling only inside functions; cli.predict imports segment likewise.
    assert "napari_unet.tiling" in edges["napari_unet.segment._memory"]
    assert "napari_unet.segment" in edges["napari_unet.cli.predict"]
    # `from ..io import write_image` in export._docs resolves through io's _LAZY table.
    assert "napari_unet.io.images" in edges["napari_unet.export._docs"]
    assert "napari_unet.io.models" not in edges["napari_unet.export._docs"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles():
    cycles = _cycles(_edges())
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles (counting imports inside functions): {unexpected}"
    stale = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not stale, f"fixed cycles still allowed in KNOWN_CYCLES: remove {stale}"


def test_core_imports_no_gui_or_argparse():
    bad = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        if not _is_front_end(name)
        for target, _, line in _imports(name)
        if target.split(".")[0] in GUI_AND_CLI
    ]
    assert not bad, "the core must not import napari, Qt, magicgui or argparse:\n" + "\n".join(bad)


def test_front_ends_import_no_private_core_names():
    bad = set()
    details = []
    for name in MODULES:
        if not _is_front_end(name):
            continue
        for target, item, line in _imports(name):
            if not target.startswith("napari_unet") or _is_front_end(target):
                continue
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            private_name = item is not None and item.startswith("_") and item != "__version__"
            if private_module or private_name:
                bad.add((name, target))
                details.append(f"{name}:{line} from {target} import {item}")
    unexpected = bad - FRONT_END_PRIVATE
    assert not unexpected, "front ends use public core names only:\n" + "\n".join(
        d for d in details if any(d.startswith(f"{n}:") and t in d for n, t in unexpected)
    )
    stale = FRONT_END_PRIVATE - bad
    assert not stale, f"remove from FRONT_END_PRIVATE (fixed): {sorted(stale)}"


def test_reading_images_does_not_import_torch():
    code = (
        "import sys, napari_unet.io as io; io.read_image; io.list_images; io.open_chunked\n"
        "assert 'torch' not in sys.modules, 'napari_unet.io loaded torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_cli_is_a_package_runnable_with_python_m():
    assert _is_package("napari_unet.cli") and "napari_unet.cli.__main__" in MODULES
    out = subprocess.run(
        [sys.executable, "-m", "napari_unet.cli", "--help"],
        check=True,
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    ).stdout
    assert "usage: napari-unet" in out
    commands = importlib.import_module("napari_unet.cli").COMMANDS
    assert all(f"napari_unet.cli.{command}" in MODULES for command in commands)


def test_module_sizes():
    long = {
        name
        for name, path in MODULES.items()
        if len(path.read_text(encoding="utf-8").splitlines()) > MAX_MODULE_LINES
    }
    assert long <= LONG_MODULES, (
        f"modules over {MAX_MODULE_LINES} lines: {sorted(long - LONG_MODULES)}"
    )
    assert not LONG_MODULES - long, f"remove from LONG_MODULES: {sorted(LONG_MODULES - long)}"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            lines -= first.end_lineno - first.lineno + 1
    return lines


@pytest.mark.parametrize("name", sorted(MODULES))
def test_function_sizes(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    long = {
        f"{name}.{node.name}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and _body_lines(node) > MAX_FUNCTION_LINES
    }
    allowed = {f for f in LONG_FUNCTIONS if f.rsplit(".", 1)[0] == name}
    assert long <= allowed, f"functions over {MAX_FUNCTION_LINES} lines: {sorted(long - allowed)}"
    assert not allowed - long, f"remove from LONG_FUNCTIONS: {sorted(allowed - long)}"

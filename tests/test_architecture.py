"""The package's imports follow its layers (docs/ARCHITECTURE.md): a module imports only from its
own layer or lower ones, including imports inside functions. Parsed statically with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import histocam

PACKAGE = Path(histocam.__file__).parent
# lowest first; the package root (``histocam/__init__.py``, the public API) and the CLI sit on top
LAYERS = ["core", "data", "models", "metrics", "maps", "methods", "train", "runs",
          "predict", "report", "experiments", "cli"]
TOP = {"histocam", "histocam.__main__"}


def layer_of(module: str) -> int:
    if module in TOP:
        return len(LAYERS)
    part = module.split(".")[1]
    if part not in LAYERS:
        raise AssertionError(f"{module}: not in a layer of LAYERS; place it in one")
    return LAYERS.index(part)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, histocam module) of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("histocam")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.startswith("histocam"):
            found.append((node.lineno, node.module))
    return found


def upward_imports(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path)
        for line, target in imported(path):
            if target == "histocam" and layer_of(me) < LAYERS.index("cli"):
                problems.append(f"{path.name}:{line} {me} imports the package root")
            elif target != "histocam" and layer_of(target) > layer_of(me):
                problems.append(f"{path.relative_to(root)}:{line} {me} -> {target}")
    return problems


def test_no_upward_imports():
    assert upward_imports() == []


def test_the_check_fails_on_an_upward_import(tmp_path):
    fake = tmp_path / "histocam"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "reader.py").write_text(
        "def f():\n    from histocam.train.trainer import Trainer\n    return Trainer\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, fake
    try:
        assert upward_imports(fake) == ["data/reader.py:2 histocam.data.reader -> "
                                        "histocam.train.trainer"]
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_every_module_is_in_a_layer(path):
    layer_of(module_name(path))

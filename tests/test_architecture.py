"""The package's imports follow its layers (docs/ARCHITECTURE.md): a module imports only from its
own layer or lower ones, including imports inside functions. Parsed statically with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import histocam

PACKAGE = Path(histocam.__file__).parent
# lowest first; the package root (``histocam/__init__.py``, the public API) and the CLI sit on top
LAYERS = ["core", "data", "wsi", "models", "metrics", "maps", "methods", "train", "runs",
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


#: Modules allowed to share a file name (none).
SHARED_NAMES: dict[str, list[str]] = {}


def test_no_two_modules_share_a_file_name():
    by_name: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "__init__.py":
            by_name.setdefault(path.name, []).append(str(path.relative_to(PACKAGE)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert {name: paths for name, paths in shared.items() if SHARED_NAMES.get(name) != paths} == {}


#: What only the run directory modules spell: the file names of a run and of the folders of runs.
RUN_FILE_NAMES = ("config.yaml", "log.csv", "best-loc.pt", "best-cl.pt", "last.pt", "resume.pt",
                  "checkpoints/", "metrics/", "cams/", "-per-image.csv", "-curves.csv",
                  "-curves.png", "-maps.npz", "stain-shift.json", "tsne.json", "thresholds.json",
                  "pipeline.yaml", "comparison.json", "comparison.md", "figures/maps.png",
                  "crossval.json", "crossval.md")
#: A run's own folder, and the folders made of runs (pipeline, cross-validation, ensemble).
RUN_DIRECTORY_MODULES = {PACKAGE / "core" / "rundir.py", PACKAGE / "core" / "studydirs.py"}


def test_only_the_run_directory_modules_spell_run_file_names():
    found = [f"{path.relative_to(PACKAGE)}:{i}: {name}"
             for path in sorted(PACKAGE.rglob("*.py")) if path not in RUN_DIRECTORY_MODULES
             for i, line in enumerate(path.read_text().splitlines(), 1)
             for name in RUN_FILE_NAMES if name in line]
    assert found == []


#: Keys of the written evaluation results that code would index them with.
RESULT_KEYS = ("localization", "classification", "separability", "TP*", "FN*", "FP*", "TN*",
               "at_0.5", "tau_star_valpx", "at_tau_star_valpx", "oracle_test_tau", "per_class",
               "per_image_ap", "paired_ttest_pxap_b_loc", "checkpoints")
RESULT_MODULES = {PACKAGE / "core" / "results.py", PACKAGE / "core" / "experiment_results.py"}
#: QuPath's GeoJSON has a "classification" of its own (the annotations' reader).
OTHER_FORMATS = {PACKAGE / "wsi" / "annotations.py"}


def test_results_are_read_by_attribute_outside_their_modules():
    """No ``x["localization"]`` or ``x.get("TP*")`` outside the modules of the typed results
    (the library and the benchmarks)."""
    indexing = [f'["{key}"]' for key in RESULT_KEYS] + [f'.get("{key}"' for key in RESULT_KEYS]
    roots = [PACKAGE, PACKAGE.parent / "benchmarks"]
    found = [f"{path}:{i}: {token}"
             for root in roots for path in sorted(root.rglob("*.py"))
             if path not in RESULT_MODULES | OTHER_FORMATS
             for i, line in enumerate(path.read_text().splitlines(), 1)
             for token in indexing if token in line]
    assert found == []


def test_the_guards_find_what_they_look_for(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('x = result["localization"]\npath = run / "log.csv"\n')
    text = module.read_text()
    assert any(f'["{key}"]' in text for key in RESULT_KEYS)
    assert any(name in text for name in RUN_FILE_NAMES)

"""The repository's text speaks of the project, never of how its work was organised.

README.md, docs/, benchmarks/, histocam/, tests/ and the CI script say what histocam does, how it
was measured and with which command; none of them speaks of the periods in which the work was
done. The test fails on the word "session" or "sessions" (any case, as a whole word:
``session_dir`` counts, ``obsession`` does not) in any text file there, except in identifiers
that mean something else, listed in ``ALLOWED`` with the file they are allowed in.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# this file: its examples must contain the word
EXCLUDED = {"tests/test_repository_text.py"}

# file (relative to the repository root) -> identifiers in it whose "session" means something else
ALLOWED: dict[str, tuple[str, ...]] = {
    # the context manager that captures a top-down CAM's activations for one call
    "histocam/maps/topdown_cam.py": ("_session",),
    # pytest's fixture scope: one fixture value for the whole test run
    "tests/conftest.py": ('scope="session"',),
}

WORD = re.compile(r"(?<![a-z0-9])sessions?(?![a-z0-9])", re.IGNORECASE)
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".svs", ".bmp", ".npz",
                   ".npy", ".pt", ".pth", ".pyc", ".gz", ".zip", ".pdf"}


def mentions(text: str, allowed: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """(line number, line) of every line of ``text`` that says "session(s)" outside ``allowed``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for identifier in allowed:
            line = line.replace(identifier, "")
        if WORD.search(line):
            found.append((number, line.strip()))
    return found


def text_files(entry: str) -> list[Path]:
    """Every text file of ``entry`` (a file or a folder of the repository), caches left out."""
    path = ROOT / entry
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [p for p in files
            if "__pycache__" not in p.parts and p.suffix.lower() not in BINARY_SUFFIXES
            and p.relative_to(ROOT).as_posix() not in EXCLUDED]


def offenders(entry: str) -> list[str]:
    out = []
    for path in text_files(entry):
        data = path.read_bytes()
        if b"\0" in data:  # binary whatever its suffix
            continue
        name = path.relative_to(ROOT).as_posix()
        text = data.decode("utf-8", errors="replace")
        out += [f"{name}:{number}: {line}" for number, line in mentions(text, ALLOWED.get(name, ()))]
    return out


def test_the_word_is_found_whole_in_any_case_and_allowed_identifiers_are_not() -> None:
    text = "A Session.\nsessions of work\nrun_session_dir = 1\nobsession\nsessional\nSESSION"
    assert [n for n, _ in mentions(text)] == [1, 2, 3, 6]
    assert mentions("client = requests.Session()", ("requests.Session",)) == []
    assert mentions("requests.Session() in one session", ("requests.Session",)) == [
        (1, "() in one session")]


def test_excluded_and_binary_files_are_not_read() -> None:
    assert not any(p.suffix == ".png" for p in text_files("docs"))
    assert ROOT / "tests/test_repository_text.py" not in text_files("tests")
    assert ROOT / "docs/protocol.md" in text_files("docs")


@pytest.mark.parametrize("entry", [
    "README.md",
    "docs",
    "benchmarks",
    "histocam",
    "tests",
    ".ci",
])
def test_no_session_in_the_repository_text(entry: str) -> None:
    assert (ROOT / entry).exists()
    found = offenders(entry)
    assert not found, "the repository speaks of how its work was organised:\n" + "\n".join(found)


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_of_the_readme_and_docs_names_a_file_that_exists() -> None:
    pages = [ROOT / "README.md", ROOT / "benchmarks/README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages
              for target in LINK.findall(page.read_text(encoding="utf-8"))
              if "://" not in target and not (page.parent / target).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)

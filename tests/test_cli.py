"""The command line: version, method listing, help texts, a start that imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from histocam import __version__
from histocam.cli import app
from histocam.methods import METHODS


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_methods_lists_every_registered_method_with_defaults() -> None:
    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in METHODS.names():
        assert name in result.output
    assert "q=5.0" in result.output and "kmax=0.3" in result.output
    assert "PydanticUndefined" not in result.output
    assert "classifier=cam" in result.output  # a composed method's classifier, by name


def test_every_method_carries_its_own_metadata() -> None:
    from histocam.methods import FAMILIES

    summaries = {}
    for name in METHODS.names():
        info = METHODS.info(name)
        assert info["family"] in FAMILIES and info["paper"] and info["map"], name
        assert info["summary"].endswith(".") and len(info["summary"]) < 200, name
        summaries[name] = info["summary"]
    assert len(set(summaries.values())) == len(summaries)  # each its own line, not the family's
    families = {METHODS.info(n)["family"] for n in METHODS.names()}
    assert families == set(FAMILIES)


def test_methods_by_family() -> None:
    result = CliRunner().invoke(app, ["methods", "--family", "seeded student"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "pixelcam" in result.output and "wildcat" not in result.output


def test_every_command_has_help() -> None:
    for command in (["train"], ["evaluate"], ["cams"], ["pixelcam"], ["score-maps"], ["demo"],
                    ["data", "check"], ["data", "synth"], ["data", "gallery"],
                    ["data", "synth-slide"], ["data", "patches"], ["predict"], ["report"],
                    ["negev"], ["stain-shift"], ["tsne"], ["thresholds"],
                    ["pipeline", "pixelcam"]):
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command


def test_methods_rejects_an_unknown_family() -> None:
    result = CliRunner().invoke(app, ["methods", "--family", "pooling-ish"])
    assert result.exit_code == 2 and "'pooling-ish': not a family" in result.output


def test_the_command_line_starts_without_torch() -> None:
    """``histocam --help`` and ``histocam methods`` import neither torch nor the other heavy
    libraries (timm, matplotlib, scikit-learn): checked in a fresh interpreter."""
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "import histocam.cli\n"
            "heavy = ('torch', 'timm', 'matplotlib', 'sklearn', 'torchvision')\n"
            "print(','.join(m for m in heavy if m in sys.modules) or 'none')\n"
            "for args in (['--help'], ['methods']):\n"
            "    result = CliRunner().invoke(histocam.cli.app, args)\n"
            "    assert result.exit_code == 0, result.output\n"
            "print(','.join(m for m in heavy if m in sys.modules) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["none", "none"], done.stdout + done.stderr


def test_the_stored_method_listing_is_the_registrys() -> None:
    """``histocam methods`` reads cli/methods.json: made from the current method sources and
    equal to the listing built from the registry. Regenerate it with
    ``python -m histocam.cli.listing``."""
    from histocam.cli import listing

    stored = json.loads(listing.LISTING.read_text())
    assert stored["sources"] == listing.sources_hash(), "stale: python -m histocam.cli.listing"
    assert stored["listing"] == listing.build_listing()
    assert listing.read_listing() == stored["listing"]


def test_an_edited_method_source_is_listed_from_the_registry(monkeypatch) -> None:
    from histocam.cli import listing

    monkeypatch.setattr(listing, "sources_hash", lambda: "another")
    monkeypatch.setattr(listing, "build_listing", lambda: {"families": [], "methods": ["fresh"]})
    assert listing.read_listing() == {"families": [], "methods": ["fresh"]}

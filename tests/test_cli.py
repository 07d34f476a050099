"""The command line: version, method listing, help texts."""

from __future__ import annotations

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

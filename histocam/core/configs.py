"""What every histocam config shares: ``StrictModel``, YAML files with ``key=value`` overrides, and
one line per invalid config.

Unknown keys anywhere are an error. Overrides use dotted paths (``train.epochs=3``,
``method.backbone.name=resnet50``) and YAML values (``data.classes=[a,b]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Base of every histocam config: unknown keys are an error, values are validated once, where
    the config is built, and a built config is a value: frozen (``model_copy(update=...)`` makes
    another from parts that are validated already)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config that is not valid; the message blames the file or the override."""


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (values parsed as YAML) in a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: the value is not valid YAML "
                             f"({' '.join(str(exc).split())})") from None
    return tree


def load_config_tree(path: str | Path | None = None,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML config file (or nothing) as a dict, with ``key=value`` overrides applied."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a text file (a YAML config is expected)") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: a config must be a mapping")
    return apply_overrides(tree, overrides or [])


def problems(exc: ValidationError) -> list[tuple[tuple[str, ...], str]]:
    """(key path, problem) of each error of a pydantic validation error; an unknown key's problem
    is ``unknown key``."""
    out = []
    for err in exc.errors():
        loc = tuple(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        out.append((loc, "unknown key" if err["type"] == "extra_forbidden"
                    else err["msg"].removeprefix("Value error, ")))
    return out


def describe_invalid(exc: ValidationError) -> str:
    """One line for a pydantic validation error: ``key.path: problem; ...``."""
    return "; ".join(f"{'.'.join(loc)}: {msg}" if loc else msg for loc, msg in problems(exc))

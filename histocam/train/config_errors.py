"""What an invalid run or pipeline config says: each problem blamed on the ``key=value`` override
that made it, or else on the file, with the key that was meant.

``override train.epoch=2: unknown key; did you mean train.epochs?``; in a file,
``run.yaml: invalid config: data.split_sed: unknown key; did you mean data.split_seed?``; a key of
another method than the section's, e.g. after ``method.name=wildcat`` on a DeepMIL config,
``method.gated: a key of deepmil, not of wildcat (the method set by override method.name=wildcat)``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from histocam.core.configs import ConfigError, apply_overrides, load_config_tree, problems
from histocam.core.registry import UnknownNameError
from histocam.methods.base import MethodConfig
from histocam.methods.catalog import METHODS

M = TypeVar("M", bound=BaseModel)
Overrides = list[tuple[tuple[str, ...], str]]  # (key path, the override as given)


def validate_config(model: type[M], path: str | Path | None = None,
                    overrides: list[str] | None = None, *, base: dict | None = None) -> M:
    """``model`` (a run or pipeline config) from a YAML file, or from the ``base`` tree (a config
    made by the caller, called ``path`` in messages), and ``key=value`` overrides; an invalid one
    is a ``ConfigError`` that says, for each problem, which override or file it comes from."""
    overrides = overrides or []
    tree = apply_overrides(base, overrides) if base is not None else \
        load_config_tree(path, overrides)
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(explain_invalid(exc, model, tree, path, overrides)) from None
    except UnknownNameError as exc:  # a method name that is not registered
        text = " ".join(str(exc).split())
        culprit = [item for item in overrides if "=" in item and
                   repr(str(yaml.safe_load(item.split("=", 1)[1]))) in text]
        where = f"override {culprit[-1]}" if culprit else (f"{path}: invalid config" if path
                                                           else "invalid config")
        raise ConfigError(f"{where}: {text}") from None


def explain_invalid(exc: ValidationError, model: type[BaseModel], tree: dict,
                    path: str | Path | None, overrides: list[str]) -> str:
    """One line naming, for each problem, the override or the file it comes from: the last
    override that set the problem's key or a section above it (or, for an unknown key, that made
    it)."""
    set_by = [(tuple(item.split("=", 1)[0].strip().split(".")), item) for item in overrides]
    parts = []
    for loc, msg in problems(exc):
        where = ".".join(loc)
        if msg == "unknown key":
            msg = _unknown_key(model, loc, tree, set_by)
        culprit = [(key, item) for key, item in set_by
                   if loc[:len(key)] == key or (msg.startswith("unknown") and key[:len(loc)] == loc)]
        if culprit:
            key, item = culprit[-1]
            parts.append(f"override {item}: {msg}" if key == loc else
                         f"override {item}: {where}: {msg}")
        else:
            text = f"{where}: {msg}" if where else msg
            parts.append(f"{path}: invalid config: {text}" if path else f"invalid config: {text}")
    return "; ".join(parts)


def _unknown_key(model: type[BaseModel], loc: tuple[str, ...], tree: dict,
                 set_by: Overrides) -> str:
    """``unknown key`` with what was meant: the methods whose key it is when the section is a
    method's, else the close keys of the same section."""
    parent, method = _model_at(model, loc[:-1], tree)
    if parent is None:
        return "unknown key"
    key, prefix = loc[-1], ".".join(loc[:-1] + ("",))
    if method is not None:
        owners = [n for n in METHODS.names() if key in METHODS.get(n).Config.model_fields]
        if owners:
            named = [item for k, item in set_by if k == loc[:-1] + ("name",)]
            by = f" (the method set by override {named[-1]})" if named else ""
            return f"a key of {' and '.join(owners)}, not of {method}{by}"
    close = difflib.get_close_matches(key, list(parent.model_fields), n=3)
    if close:
        return f"unknown key; did you mean {' or '.join(prefix + c for c in close)}?"
    return f"unknown key (known: {', '.join(parent.model_fields)})"


def _model_at(model: type[BaseModel], loc: tuple[str, ...], tree: Any
              ) -> tuple[type[BaseModel] | None, str | None]:
    """The config class at key path ``loc`` under ``model`` for the values in ``tree`` (a method
    section is the ``Config`` of the method it names, or of its default method), and that
    method's name when it is a method section."""
    method = None
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return None, None
        tree = tree.get(part) if isinstance(tree, dict) else None
        model, method = _field_model(field, tree)
        if model is None:
            return None, None
    return model, method


def _field_model(field, value: Any) -> tuple[type[BaseModel] | None, str | None]:
    for candidate in (field.annotation, *get_args(field.annotation)):  # X or X | None
        if not (isinstance(candidate, type) and issubclass(candidate, BaseModel)):
            continue
        if not issubclass(candidate, MethodConfig):
            return candidate, None
        name = value.get("name") if isinstance(value, dict) else None
        if name is None:  # the section's default method
            name = getattr(field.get_default(call_default_factory=True), "name", None)
        if isinstance(name, str) and name in METHODS:
            return METHODS.get(name).Config, name
        return None, None
    return None, None

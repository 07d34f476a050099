"""The one registry type of histocam: a name -> factory map with helpful errors.

Datasets (``histocam.data.open.DATASETS``) and methods (``histocam.methods.catalog.METHODS``) each
own one ``Registry`` instance: register with a decorator, look up by name, list what exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists close and known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A named collection of factories, e.g. ``DATASETS`` or ``METHODS``, each with its metadata
(a method's family, paper and one-line summary), as timm's model registry carries its tags."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", **info)`` stores the decorated object under
        ``name`` and ``info`` beside it (``REGISTRY.info(name)``)."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            self._info[name] = dict(info)
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def info(self, name: str) -> dict[str, Any]:
        """The metadata registered with ``name``."""
        self.get(name)
        return dict(self._info[name])

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

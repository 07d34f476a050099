"""The listing of ``histocam methods``: the registered methods, read without importing torch.

The registry is the one source: every method declares its family, paper, map and summary when it
registers (``methods/registry.py``) and its hyper-parameters in its ``Config``. Reading them means
importing every method, and with them torch (seconds). So the listing is kept, generated, in
``methods.json`` beside this file, with the hash of the sources it was made from (every file of
``histocam/methods/``). ``histocam methods`` reads it when the hash matches the sources, and builds
the listing from the registry otherwise (a method added or edited since: slower, never stale).
Regenerate it with ``python -m histocam.cli.listing``; tests/test_cli.py fails while it is stale.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

LISTING = Path(__file__).with_name("methods.json")
SOURCES = Path(__file__).parents[1] / "methods"
COMMON_KEYS = ("name", "backbone", "map_tta", "map_scales")  # every method's: not listed per method


def sources_hash() -> str:
    """SHA-256 of the method sources (file names and contents, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_listing() -> dict:
    """The listing from the registry (imports every method): families, and per method its
    metadata and hyper-parameter defaults."""
    from histocam.methods import FAMILIES, METHODS
    from histocam.methods.base import MethodConfig

    methods = []
    for name in METHODS.names():
        info = METHODS.info(name)
        params = {}
        for key, field in METHODS.get(name).Config.model_fields.items():
            if key in COMMON_KEYS:
                continue
            default = field.get_default(call_default_factory=True)
            params[key] = default.name if isinstance(default, MethodConfig) else str(default)
        methods.append({"name": name, **{k: info[k] for k in ("family", "paper", "map",
                                                             "summary")}, "params": params})
    return {"families": list(FAMILIES), "methods": methods}


def read_listing() -> dict:
    """The stored listing when it was made from the current sources, else a fresh one."""
    try:
        stored = json.loads(LISTING.read_text())
        current = stored.get("sources") == sources_hash()
    except (OSError, ValueError):
        current = False
    return stored["listing"] if current else build_listing()


def write_listing() -> Path:
    """Regenerate ``methods.json`` from the registry."""
    LISTING.write_text(json.dumps({"sources": sources_hash(), "listing": build_listing()},
                                  indent=1, ensure_ascii=False) + "\n")
    return LISTING


if __name__ == "__main__":
    print(f"wrote {write_listing()}")

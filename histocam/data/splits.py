"""Deterministic stratified splits and the B-LOC subset (PROTOCOL.md, "Data and splits").

Used when a dataset comes without split lists. Every draw depends only on the seed and the sample
ids (sorted first), never on the order in which files were listed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(
    ids: Sequence[str], labels: Sequence[int], fractions: dict[str, float], seed: int
) -> dict[str, list[int]]:
    """Split indices per class into parts of the given fractions; the remainder is ``"train"``.

    Each class contributes ``round(fraction * n_class)`` samples to each named part (at least one
    when the fraction is positive and the class has more than one sample).
    """
    if sum(fractions.values()) >= 1:
        raise ValueError(f"split fractions {fractions} leave nothing for train")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in fractions} | {"train": []}
    labels_arr = np.asarray(labels)
    for cls in sorted(set(labels_arr.tolist())):
        members = sorted(np.flatnonzero(labels_arr == cls).tolist(), key=lambda i: ids[i])
        members = [members[i] for i in rng.permutation(len(members))]
        start = 0
        for name, fraction in fractions.items():
            take = int(round(fraction * len(members)))
            if fraction > 0 and take == 0 and len(members) > 1:
                take = 1
            parts[name].extend(members[start : start + take])
            start += take
        parts["train"].extend(members[start:])
    return {name: sorted(idx, key=lambda i: ids[i]) for name, idx in parts.items()}


def select_valpx(
    ids: Sequence[str],
    labels: Sequence[int],
    has_mask: Sequence[bool],
    candidates: Sequence[int],
    per_class: int,
    seed: int,
) -> list[int]:
    """Draw the B-LOC set: ``per_class`` annotated samples of each class among ``candidates``.

    valpx ⊂ valcl as in the seed papers (GlaS 3 per class, CAMELYON16-512 5 per class). A class with
    fewer annotated candidates contributes all it has.
    """
    rng = np.random.default_rng(seed + 1)
    chosen: list[int] = []
    for cls in sorted({labels[i] for i in candidates}):
        pool = sorted((i for i in candidates if labels[i] == cls and has_mask[i]), key=lambda i: ids[i])
        order = rng.permutation(len(pool))[:per_class]
        chosen.extend(pool[j] for j in order)
    return sorted(chosen, key=lambda i: ids[i])


def make_splits(
    ids: Sequence[str],
    labels: Sequence[int],
    has_mask: Sequence[bool],
    *,
    seed: int,
    valcl_fraction: float,
    test_fraction: float,
    valpx_per_class: int,
) -> dict[str, list[int]]:
    """train / valcl / valpx / test indices; valpx is drawn from valcl."""
    fractions = {"valcl": valcl_fraction}
    if test_fraction > 0:
        fractions = {"test": test_fraction, "valcl": valcl_fraction}
    parts = stratified_split(ids, labels, fractions, seed)
    parts.setdefault("test", [])
    parts["valpx"] = select_valpx(ids, labels, has_mask, parts["valcl"], valpx_per_class, seed)
    return {name: parts[name] for name in ("train", "valcl", "valpx", "test")}

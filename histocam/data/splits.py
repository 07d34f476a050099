"""Deterministic stratified splits and the B-LOC subset (docs/protocol.md, "Data and splits").

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


def grouped_partition(
    groups: Sequence[str], labels: Sequence[int], shares: Sequence[float], seed: int
) -> list[int]:
    """Assign every sample to one of ``len(shares)`` parts, whole groups at a time.

    A group (a patient, a slide) never spans two parts. Each part p aims at ``shares[p]`` of every
    class's samples; the cost of an assignment is the sum over parts and classes of the squared
    distance between count and target. Groups are placed largest first (groups of one size in an
    order drawn from ``seed``), each into the part where the cost rises least (ties: the part
    furthest below its size target, then the first); then single moves of a group and swaps of
    two groups between parts are made while one lowers the cost. This is the stratification by
    class "as far as the groups allow": a group holding a class's images alone fixes them in one
    part.

    Returns the part index of each sample.
    """
    if not shares or min(shares) <= 0:
        raise ValueError(f"part shares must be positive, got {list(shares)}")
    total = float(sum(shares))
    labels_arr = np.asarray(labels)
    classes = sorted(set(labels_arr.tolist()))
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    names = sorted(members)
    order = np.random.default_rng(seed).permutation(len(names))
    names = sorted((names[j] for j in order), key=lambda g: -len(members[g]))  # stable: keeps ties drawn
    class_totals = np.array([(labels_arr == c).sum() for c in classes], dtype=float)
    targets = np.outer(np.asarray(shares, dtype=float) / total, class_totals)  # parts × classes
    counts = np.zeros_like(targets)
    size = {g: np.array([(labels_arr[members[g]] == c).sum() for c in classes], dtype=float)
            for g in names}
    where: dict[str, int] = {}
    for group in names:
        gain = ((counts + size[group] - targets) ** 2).sum(1) - ((counts - targets) ** 2).sum(1)
        room = counts.sum(1) - targets.sum(1)  # < 0: below its size target
        best = min(range(len(shares)), key=lambda p: (round(gain[p], 9), room[p], p))
        counts[best] += size[group]
        where[group] = best
    _refine(names, size, where, counts, targets)
    part_of = [0] * len(labels_arr)
    for group, part in where.items():
        for i in members[group]:
            part_of[i] = part
    return part_of


def _refine(names: list[str], size: dict[str, np.ndarray], where: dict[str, int],
            counts: np.ndarray, targets: np.ndarray) -> None:
    """Move single groups, or swap two groups of different parts, while that lowers the squared
    distance to the targets (``grouped_partition``); first improvement in a fixed order."""
    def cost_change(moves: list[tuple[str, int]]) -> float:
        new = counts.copy()
        for group, part in moves:
            new[where[group]] -= size[group]
            new[part] += size[group]
        return float(((new - targets) ** 2).sum() - ((counts - targets) ** 2).sum())

    def apply(moves: list[tuple[str, int]]) -> None:
        for group, part in moves:
            counts[where[group]] -= size[group]
            counts[part] += size[group]
            where[group] = part

    improved = True
    while improved:
        improved = False
        candidates = [[(g, p)] for g in names for p in range(len(targets)) if p != where[g]]
        candidates += [[(g, where[h]), (h, where[g])] for i, g in enumerate(names)
                       for h in names[i + 1:] if where[g] != where[h]]
        for moves in candidates:
            if cost_change(moves) < -1e-9:
                apply(moves)
                improved = True
                break


def make_fold_splits(
    ids: Sequence[str],
    labels: Sequence[int],
    has_mask: Sequence[bool],
    groups: Sequence[str],
    *,
    folds: int,
    fold: int,
    seed: int,
    valcl_fraction: float,
    valpx_per_class: int,
) -> dict[str, list[int]]:
    """train / valcl / valpx / test of one fold of group-disjoint k-fold cross-validation.

    ``grouped_partition`` cuts the samples into ``folds`` parts by group; part ``fold`` is the
    test split. The other parts' groups are cut again into valcl (``valcl_fraction`` of them) and
    train, so that no group is in two of train, valcl and test: model selection sees groups the
    model was not trained on, as the test does. valpx is ``valpx_per_class`` annotated samples per
    class drawn from valcl. The partition depends on ``seed`` and the ids, not on ``fold``, so the
    k folds' test splits cover every sample exactly once.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not one of 0..{folds - 1}")
    if len(set(groups)) < folds:
        raise ValueError(f"{len(set(groups))} groups cannot make {folds} group-disjoint folds")
    order = sorted(range(len(ids)), key=lambda i: ids[i])  # independent of the listing order
    part = grouped_partition([groups[i] for i in order], [labels[i] for i in order],
                             [1.0] * folds, seed)
    test = [order[j] for j, p in enumerate(part) if p == fold]
    rest = [order[j] for j, p in enumerate(part) if p != fold]
    split = grouped_partition([groups[i] for i in rest], [labels[i] for i in rest],
                              [valcl_fraction, 1.0 - valcl_fraction], seed + 1)
    valcl = [i for i, p in zip(rest, split) if p == 0]
    train = [i for i, p in zip(rest, split) if p == 1]
    valpx = select_valpx(ids, labels, has_mask, valcl, valpx_per_class, seed)
    by_id = lambda idx: sorted(idx, key=lambda i: ids[i])  # noqa: E731
    return {"train": by_id(train), "valcl": by_id(valcl), "valpx": by_id(valpx), "test": by_id(test)}


def make_group_splits(
    ids: Sequence[str],
    labels: Sequence[int],
    has_mask: Sequence[bool],
    groups: Sequence[str],
    *,
    seed: int,
    valcl_fraction: float,
    test_fraction: float,
    valpx_per_class: int,
) -> dict[str, list[int]]:
    """train / valcl / valpx / test with no group (patient) in two of train, valcl and test.

    ``make_splits`` for a pool whose groups are known: the parts take about ``test_fraction`` and
    ``valcl_fraction`` of each class (``grouped_partition``), so the held-out images come from
    patients the model never saw, as a new patient's would. valpx is drawn from valcl.
    """
    if test_fraction + valcl_fraction >= 1:
        raise ValueError(f"split fractions test {test_fraction}, valcl {valcl_fraction} leave "
                         "nothing for train")
    names = ["test", "valcl", "train"] if test_fraction > 0 else ["valcl", "train"]
    shares = [test_fraction, valcl_fraction] if test_fraction > 0 else [valcl_fraction]
    shares.append(1.0 - sum(shares))
    order = sorted(range(len(ids)), key=lambda i: ids[i])  # independent of the listing order
    part = grouped_partition([groups[i] for i in order], [labels[i] for i in order], shares, seed)
    parts: dict[str, list[int]] = {"train": [], "valcl": [], "test": []}
    for j, p in enumerate(part):
        parts[names[p]].append(order[j])
    parts["valpx"] = select_valpx(ids, labels, has_mask, parts["valcl"], valpx_per_class, seed)
    return {name: sorted(parts[name], key=lambda i: ids[i])
            for name in ("train", "valcl", "valpx", "test")}

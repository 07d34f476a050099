"""Stratified, deterministic splits; valpx ⊂ valcl with k annotated images per class."""

from __future__ import annotations

from collections import Counter

import numpy as np

from histocam.data.splits import make_splits, stratified_split


def _data(n0=30, n1=50):
    ids = [f"img{i:03d}" for i in range(n0 + n1)]
    labels = [0] * n0 + [1] * n1
    has_mask = [i % 4 != 0 for i in range(n0 + n1)]
    return ids, labels, has_mask


def test_stratified_fractions_and_disjoint() -> None:
    ids, labels, has_mask = _data()
    parts = make_splits(ids, labels, has_mask, seed=3, valcl_fraction=0.2, test_fraction=0.1,
                        valpx_per_class=3)
    train, valcl, test = set(parts["train"]), set(parts["valcl"]), set(parts["test"])
    assert not (train & valcl) and not (train & test) and not (valcl & test)
    assert len(train | valcl | test) == 80
    count = lambda idx: Counter(labels[i] for i in idx)  # noqa: E731
    assert count(valcl) == {0: 6, 1: 10}
    assert count(test) == {0: 3, 1: 5}
    valpx = parts["valpx"]
    assert set(valpx) <= valcl
    assert count(valpx) == {0: 3, 1: 3}
    assert all(has_mask[i] for i in valpx)


def test_deterministic_and_order_independent() -> None:
    ids, labels, has_mask = _data()
    a = make_splits(ids, labels, has_mask, seed=7, valcl_fraction=0.2, test_fraction=0.0,
                    valpx_per_class=5)
    perm = np.random.default_rng(0).permutation(len(ids))
    ids_p = [ids[i] for i in perm]
    b = make_splits(ids_p, [labels[i] for i in perm], [has_mask[i] for i in perm], seed=7,
                    valcl_fraction=0.2, test_fraction=0.0, valpx_per_class=5)
    for split in a:
        assert sorted(ids[i] for i in a[split]) == sorted(ids_p[i] for i in b[split])
    c = make_splits(ids, labels, has_mask, seed=8, valcl_fraction=0.2, test_fraction=0.0,
                    valpx_per_class=5)
    assert a["valcl"] != c["valcl"]


def test_small_class_gets_at_least_one() -> None:
    parts = stratified_split(["a", "b", "c", "d", "e"], [0, 0, 0, 1, 1], {"valcl": 0.1}, seed=0)
    assert Counter([0, 0, 0, 1, 1][i] for i in parts["valcl"]) == {0: 1, 1: 1}

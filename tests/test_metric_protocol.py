"""Every ``Metric`` of histocam.metrics obeys one protocol (histocam.metrics.protocol): merging
split data is exact, ``reset`` empties, and ``sync`` over two real ``torch.distributed`` processes
(gloo, loopback) gives every rank the single-process result (the reference code's multi-GPU sync
did nothing; docs/protocol.md, "Deviations from the papers").

The metric classes are discovered (``Metric.__subclasses__``, recursively, after importing every
module of the package), so a new metric without an entry in ``_cases`` fails
``test_every_metric_has_a_case``. Shapes are odd (5×7, 7×11, grids 3×5) to catch broadcasting bugs.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.distributed as dist
from helpers import run_ranks
from pydantic import BaseModel

import histocam.metrics
from histocam.metrics import (
    Batch,
    ClassHistograms,
    ClassificationAccuracy,
    Metric,
    PerImageScores,
    PixelHistogram,
    Predictions,
    PxAP,
    SeparabilityIndex,
)


@dataclass
class Case:
    make: Callable[[], Metric]
    batches: list[Batch]  # at least 2; fed in order


def _batches() -> list[Batch]:
    """Every field of a ``Batch``: 3 images 5×7 (float32, one all-background, one with ignored
    pixels), 2 images 7×11 (float64, the second without a mask), 1 image 7×11 with every pixel
    foreground; 3 classes; features on a 3×5 grid."""
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 5, 7, generator=g)
    maps[0, 0, :3] = torch.tensor([0.0, 1.0, 0.5])  # scores on bin edges
    masks = torch.rand(3, 5, 7, generator=g) < 0.4
    masks[1] = False
    masks[2, :2] = True
    ignore = torch.zeros(3, 5, 7, dtype=torch.bool)
    ignore[2, 1:3, 2:6] = True
    second_masks = torch.rand(2, 7, 11, generator=g) < 0.3
    second_masks[1] = False
    return [
        Batch(ids=["a0", "a1", "a2"], labels=torch.tensor([0, 1, 2]),
              logits=torch.randn(3, 3, generator=g), maps=maps, masks=masks, ignore=ignore,
              features=torch.randn(3, 4, 3, 5, generator=g)),
        Batch(ids=["b0", "b1"], labels=torch.tensor([2, 2]), logits=torch.randn(2, 3, generator=g),
              maps=torch.rand(2, 7, 11, generator=g, dtype=torch.float64), masks=second_masks,
              annotated=torch.tensor([True, False]), ignore=torch.zeros(2, 7, 11, dtype=torch.bool),
              features=torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)),
        Batch(ids=["c0"], labels=torch.tensor([1]), logits=torch.randn(1, 3, generator=g),
              maps=torch.rand(1, 7, 11, generator=g), masks=torch.ones(1, 7, 11, dtype=torch.bool),
              features=torch.randn(1, 4, 3, 5, generator=g)),
    ]


def _classification_batches() -> list[Batch]:
    """Scores, and predicted classes alone (which ``ClassificationAccuracy`` also takes)."""
    g = torch.Generator().manual_seed(1)
    return [
        Batch(logits=torch.randn(5, 3, generator=g), labels=torch.tensor([0, 1, 2, 2, 1])),
        Batch(logits=torch.tensor([2, 0, 1]), labels=torch.tensor([2, 1, 1])),
        Batch(logits=torch.randn(7, 3, generator=g), labels=torch.randint(0, 3, (7,), generator=g)),
    ]


def _cases() -> dict[type, Case]:
    every = _batches()
    classes = ["benign", "malignant", "other"]
    return {
        PixelHistogram: Case(PixelHistogram, every),
        PxAP: Case(PxAP, every),
        PerImageScores: Case(lambda: PerImageScores(tau=0.3), every),
        ClassHistograms: Case(lambda: ClassHistograms(3), every),
        ClassificationAccuracy: Case(lambda: ClassificationAccuracy(3),
                                     _classification_batches() + every),
        Predictions: Case(Predictions, every),
        SeparabilityIndex: Case(lambda: SeparabilityIndex(classes), every),
    }


def _metric_classes() -> list[type]:
    """Concrete ``Metric`` subclasses defined in histocam (every module of the package imported)."""
    for info in pkgutil.walk_packages(histocam.metrics.__path__, "histocam.metrics."):
        importlib.import_module(info.name)
    found, todo = [], list(Metric.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("histocam.") and not inspect.isabstract(cls):
            found.append(cls)
    return sorted(set(found), key=lambda c: c.__qualname__)


def _fed(case: Case, batches: list[Batch]) -> Metric:
    metric = case.make()
    for batch in batches:
        metric.update(batch)
    return metric


def _outcome(metric: Metric) -> tuple[str, Any]:
    """compute()'s result, or the error it raised (an empty PxAP raises, like a fresh one)."""
    try:
        return ("ok", metric.compute())
    except Exception as exc:  # noqa: BLE001 - the error itself is the outcome to compare
        return ("error", f"{type(exc).__name__}: {exc}")


def _assert_same(a: Any, b: Any, where: str = "compute()") -> None:
    """Exact equality of nested results, NaN equal to NaN (merging must not even round)."""
    if isinstance(a, BaseModel):
        assert type(b) is type(a), where
        _assert_same(a.model_dump(), b.model_dump(), where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


METRICS = _metric_classes()


def test_every_metric_has_a_case() -> None:
    assert {PixelHistogram, PxAP, PerImageScores, ClassHistograms, ClassificationAccuracy,
            Predictions, SeparabilityIndex} <= set(METRICS)
    missing = [c.__qualname__ for c in METRICS if c not in _cases()]
    assert not missing, f"add these Metric subclasses to _cases in {__name__}: {missing}"


@pytest.mark.parametrize("cls", METRICS, ids=lambda c: c.__name__)
def test_split_and_merge_equals_one_instance(cls: type) -> None:
    case = _cases()[cls]
    assert len(case.batches) >= 2
    whole = _outcome(_fed(case, case.batches))
    assert whole[0] == "ok"
    for k in range(len(case.batches) + 1):  # k = 0 and k = len: merging with an empty metric
        first, second = _fed(case, case.batches[:k]), _fed(case, case.batches[k:])
        merged = first.merge(second)
        assert merged is first and type(merged) is cls
        _assert_same(_outcome(merged), whole, f"split at {k}: compute()")
        _assert_same(_outcome(second), _outcome(_fed(case, case.batches[k:])))  # other untouched


@pytest.mark.parametrize("cls", METRICS, ids=lambda c: c.__name__)
def test_reset_gives_the_empty_result(cls: type) -> None:
    case = _cases()[cls]
    empty = _outcome(case.make())
    metric = _fed(case, case.batches)
    assert _outcome(metric) != empty
    assert metric.reset() is None
    _assert_same(_outcome(metric), empty)
    for batch in case.batches:  # and it accumulates again from scratch
        metric.update(batch)
    _assert_same(_outcome(metric), _outcome(_fed(case, case.batches)))


@pytest.mark.parametrize("cls", METRICS, ids=lambda c: c.__name__)
def test_sync_without_process_group_is_a_no_op(cls: type) -> None:
    assert not dist.is_initialized()
    case = _cases()[cls]
    metric = _fed(case, case.batches)
    assert metric.sync() is metric
    _assert_same(_outcome(metric), _outcome(_fed(case, case.batches)))


def test_merge_refuses_another_type_or_configuration() -> None:
    with pytest.raises(TypeError, match="PxAP into PixelHistogram"):
        PixelHistogram().merge(PxAP())
    with pytest.raises(ValueError, match="tau"):
        PerImageScores(0.5).merge(PerImageScores(0.3))
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationAccuracy(2).merge(ClassificationAccuracy(3))
    with pytest.raises(ValueError, match="class_names"):
        SeparabilityIndex(["a", "b"]).merge(SeparabilityIndex(["b", "a"]))


# --- two real processes (gloo backend, loopback only), with test_metrics_sync.py's runner ------------


def _shards(batches: list[Batch]) -> list[tuple[list[Batch], list[Batch]]]:
    """(rank 0's batches, rank 1's batches): halves, and an idle rank 0 (more ranks than data)."""
    half = len(batches) // 2
    return [(batches[:half], batches[half:]), ([], batches)]


def _sync_rank(rank: int, world: int, names: list[str]) -> dict[str, list]:
    cases = {cls.__qualname__: case for cls, case in _cases().items()}
    results: dict[str, list] = {}
    for name in names:  # the same order on every rank, so that the collectives pair up
        results[name] = []
        for shard in _shards(cases[name].batches):
            metric = _fed(cases[name], shard[rank])
            assert metric.sync() is metric
            results[name].append(_outcome(metric))
    return results


def test_sync_over_two_processes_equals_one_process() -> None:
    results = run_ranks(_sync_rank, [cls.__qualname__ for cls in METRICS])
    cases = _cases()
    for cls in METRICS:
        single = _outcome(_fed(cases[cls], cases[cls].batches))
        for rank, by_name in enumerate(results):
            outcomes = by_name[cls.__qualname__]
            assert len(outcomes) == len(_shards(cases[cls].batches))
            for i, outcome in enumerate(outcomes):
                _assert_same(outcome, single, f"{cls.__name__}, rank {rank}, sharding {i}")

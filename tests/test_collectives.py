"""Collective building blocks under 2–3 gloo ranks on CPU: global BatchNorm (forward, gradient and
running statistics equal BatchNorm over the whole batch; float32 counts under float16), gradient
averaging, and the sharded npz writer. The end-to-end torchrun runs: test_distributed.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers import files_under, run_ranks

from histocam.train.distributed import average_gradients, convert_batchnorm


def _global_bn_rank(rank: int, world: int, x: torch.Tensor, weight: torch.Tensor):
    bn = torch.nn.BatchNorm2d(3)
    convert_batchnorm(bn)
    part = x[rank * 2:(rank + 1) * 2].clone().requires_grad_(True)
    (bn(part) * weight[rank * 2:(rank + 1) * 2]).sum().backward()
    return part.grad.numpy(), bn.running_mean.numpy(), bn.running_var.numpy()  # not shared tensors


def test_global_batchnorm_equals_batchnorm_over_the_whole_batch() -> None:
    """Forward, gradient and running statistics of 2 ranks x 2 samples = BatchNorm over 4
    samples (odd shape 3 channels, 5 x 7)."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(4, 3, 5, 7, generator=g), torch.randn(4, 3, 5, 7, generator=g)
    whole = x.clone().requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3)
    (bn(whole) * weight).sum().backward()
    results = run_ranks(_global_bn_rank, x, weight)
    grads = torch.cat([torch.from_numpy(r[0]) for r in results])
    torch.testing.assert_close(grads, whole.grad, atol=1e-5, rtol=1e-5)
    for mean, var in ((torch.from_numpy(r[1]), torch.from_numpy(r[2])) for r in results):
        torch.testing.assert_close(mean, bn.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(var, bn.running_var, atol=1e-6, rtol=1e-6)


def _global_bn_half_rank(rank: int, world: int, x: torch.Tensor):
    bn = torch.nn.BatchNorm2d(4)
    convert_batchnorm(bn)
    y = bn(x[rank * 8:(rank + 1) * 8].half())
    return y.dtype == torch.float16, y.detach().float().numpy(), bn.running_mean.numpy()


def test_global_batchnorm_in_half_precision_counts_in_float32() -> None:
    """70 000+ values per channel: a float16 count would overflow (max 65 504) and give NaN."""
    x = torch.randn(16, 4, 72, 72, generator=torch.Generator().manual_seed(1)) * 3 + 1
    reference = torch.nn.BatchNorm2d(4)(x)
    results = run_ranks(_global_bn_half_rank, x)
    assert all(r[0] for r in results)
    y = torch.cat([torch.from_numpy(r[1]) for r in results])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, reference.detach(), atol=2e-2, rtol=1e-2)  # fp16 output
    assert np.isfinite(results[0][2]).all()


def _average_rank(rank: int, world: int) -> list:
    a, b, frozen = (torch.nn.Parameter(torch.zeros(3, 5)), torch.nn.Parameter(torch.zeros(7)),
                    torch.nn.Parameter(torch.zeros(2)))
    a.grad = torch.full((3, 5), float(rank + 1))
    b.grad = torch.arange(7.0) if rank == 0 else None  # unused on rank 1: counts as zero there
    average_gradients([a, b, frozen], world)
    return [a.grad.numpy(), b.grad.numpy(), frozen.grad]


def test_average_gradients_is_the_mean_over_ranks() -> None:
    for a, b, frozen in run_ranks(_average_rank):
        assert (a == 1.5).all() and (b == torch.arange(7.0).numpy() / 2).all()
        assert frozen is None  # no gradient anywhere: the optimiser must leave it alone


def _sharded_write_rank(rank: int, world: int, out: str, fail: bool) -> list[str]:
    from histocam.maps.store import ShardedNpzWriter

    # rank 0: one image ("z", last by name); rank 1: none; rank 2: three, odd shapes, a "/" id
    mine = [[("z", (2, 3))], [], [("a/1", (3, 5)), ("b", (7, 11)), ("c", (1, 1))]][rank]
    writer = ShardedNpzWriter(Path(out) / "maps.npz")
    for image_id, shape in mine:
        writer.add(image_id, np.arange(np.prod(shape), dtype=np.float16).reshape(shape))
    if fail:
        writer.abort()
        return []
    return writer.close()


def test_sharded_npz_writer_merges_parts_in_rank_order(tmp_path: Path) -> None:
    """3 ranks: one store in rank order, the ids returned on every rank, an empty rank
    included; no part file left; aborted parts are removed."""
    from histocam.maps.store import npz_key

    for ids in run_ranks(_sharded_write_rank, str(tmp_path), False, world=3):
        assert ids == ["z", "a/1", "b", "c"]
    with np.load(tmp_path / "maps.npz") as data:
        assert data.files == [npz_key(i) for i in ("z", "a/1", "b", "c")]
        np.testing.assert_array_equal(data["z"], np.arange(6, dtype=np.float16).reshape(2, 3))
        np.testing.assert_array_equal(data["b"], np.arange(77, dtype=np.float16).reshape(7, 11))
        assert data[npz_key("a/1")].shape == (3, 5) and data["c"].shape == (1, 1)
    assert files_under(tmp_path) == ["maps.npz"]
    (tmp_path / "maps.npz").unlink()
    run_ranks(_sharded_write_rank, str(tmp_path), True, world=3)
    assert files_under(tmp_path) == []

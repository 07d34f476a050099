"""Data-parallel training under PyTorch's own launcher (``torchrun --nproc_per_node N -m histocam
train ...``): the process group comes from torchrun's environment (gloo on CPU, NCCL on GPU).

What makes N processes train the same model as one process with the same global batch B:

- every rank starts from the same weights (same seed, then a broadcast from rank 0) and takes the
  same optimiser steps on the same averaged gradient (``average_gradients``: one flat
  ``all_reduce`` per step, mean over ranks = mean over the global batch because every rank's batch
  holds B/N samples and its loss is a batch mean);
- BatchNorm normalises with the statistics of the whole global batch (``GlobalBatchNorm``): the sums
  over each rank's batch are ``all_reduce``d (differentiably), and running statistics are updated
  from them, exactly as one process's BatchNorm over the B samples would. torch's
  ``SyncBatchNorm`` does the same on GPUs only; this one works on gloo/CPU as well;
- the loaders (``loader.make_train_loader``) give rank r every N-th index of the one-process
  permutation, with per-sample augmentation seeds, so the ranks' k-th batches together are the
  one-process k-th batch, transformed identically.

Gradients are averaged by hand instead of through ``DistributedDataParallel``: methods run their own
``training_step`` (extra forward passes, frozen classifiers, unused heads) and a flat reduction
needs no knowledge of which parameters a step used.

Where N ranks equal one process only approximately: terms computed over a rank's own batch rather
than the global one — CutMix's partner permutation, ADL's drop/importance draw per step, SAT's
batch-mean area loss, the supervised pixel loss's mean over the rank's annotated pixels — and the
methods' own random draws (seeds, hidden patches), which come from each rank's generator.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from histocam.core.collectives import collective_device, distributed_ready


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not distributed_ready():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        work = tensor.data
        if work.device.type == "cpu" and dist.get_backend() == "nccl":
            work = work.to(collective_device(work.device))
            dist.broadcast(work, src=0)
            tensor.data.copy_(work)
        else:
            dist.broadcast(work, src=0)


def average_gradients(parameters: list[nn.Parameter], world: int) -> None:
    """Replace every gradient by its mean over the ranks, in one flat ``all_reduce``.

    A parameter without a gradient on some rank counts as a zero gradient there; one without a
    gradient on every rank keeps ``grad = None`` (so the optimiser leaves it alone, as one process
    would).
    """
    params = [p for p in parameters if p.requires_grad]
    if world <= 1 or not params:
        return
    device = collective_device(params[0].device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      .to(device, torch.float32) for p in params]
                     + [torch.tensor([float(p.grad is not None) for p in params], device=device)])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.device, p.dtype).div_(world)
        offset += n
    for p, present in zip(params, flat[offset:].tolist()):
        if present == 0:
            p.grad = None


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a rank's input is the sum over the
    ranks of the gradients of the summed output (each rank's loss depends on the global sums)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch normalisation of ``x`` with the mean and (biased) variance of the union of every rank's
    batch; running statistics updated with the unbiased variance, as ``F.batch_norm`` does. The
    statistics are computed in float32 whatever ``x`` is (a half-precision count overflows at
    65 504 values; autocast's fp16 activations) and the output is cast back to ``x``'s dtype."""
    all_reduce = _AllReduceSum.apply
    dtype, x = x.dtype, x.float()
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = x.numel() // x.shape[1]
    summed = all_reduce(torch.cat([x.sum(dims), x.new_tensor([float(count)])]))
    n = summed[-1].detach()
    mean = summed[:-1] / n
    centred = x - mean.view(shape)
    var = all_reduce((centred * centred).sum(dims)) / n
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.float().view(shape) + bn.bias.float().view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - momentum).add_(mean.detach() * momentum)
            unbiased = var.detach() * (n / (n - 1).clamp(min=1))
            bn.running_var.mul_(1 - momentum).add_(unbiased * momentum)
    return y.to(dtype)


def _uses_batch_stats(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    return bn.training or not bn.track_running_stats


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of the global batch."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _uses_batch_stats(self) and distributed_ready():
            return _global_batch_norm(self, x)
        return super().forward(x)


def _batchnorm_act_class():
    from timm.layers.norm_act import BatchNormAct2d

    class GlobalBatchNormAct2d(BatchNormAct2d):
        """timm's ``BatchNormAct2d`` (norm, drop, activation) with global-batch statistics."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if _uses_batch_stats(self) and distributed_ready():
                return self.act(self.drop(_global_batch_norm(self, x)))
            return super().forward(x)

    return BatchNormAct2d, GlobalBatchNormAct2d


def convert_batchnorm(module: nn.Module) -> int:
    """Make every BatchNorm of ``module`` normalise with global-batch statistics (in place: the
    modules keep their parameters, buffers and state-dict keys); returns how many were converted.
    A BatchNorm of another kind (its own ``forward``) is refused rather than left per-rank."""
    act_cls, global_act_cls = _batchnorm_act_class()
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    converted = 0
    for name, m in module.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(
                m, (GlobalBatchNorm2d, global_act_cls)):
            continue
        if type(m) is act_cls:
            m.__class__ = global_act_cls
        elif type(m) in plain:
            m.__class__ = GlobalBatchNorm2d
        else:
            raise ValueError(f"distributed training: cannot synchronise the BatchNorm {name!r} of "
                             f"type {type(m).__name__}")
        converted += 1
    return converted

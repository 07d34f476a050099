"""Training throughput: the full data pipeline vs the raw model step on random tensors.

Same model, optimizer, batch and image size in one run: (a) images/s of forward + backward + step
on random tensors already in memory; (b) the same with batches from histocam's loader (reading,
decoding, joint transforms, colour jitter, collation; ``num_workers`` worker processes), for
on-disk data (PNG files in the WSOL list layout) and for synthetic images rendered on the fly.
Target: (b)/(a) >= 0.85.

Usage: python benchmarks/speed/train_throughput.py [--model resnet18] [--size 224] [--steps 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from histocam.data.config import DataConfig, SyntheticConfig
from histocam.data.open import open_source
from histocam.data.synthetic import write_synthetic
from histocam.data.transforms import JointTransform
from histocam.methods import create_method
from histocam.train.loader import make_loader


def step_fn(method, optimizer):
    def step(images, labels):
        out = method(images)
        loss, _ = method.loss({"label": labels}, out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def raw_rate(step, batch, size, steps) -> float:
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    step(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return steps * batch / (time.perf_counter() - start)


def loader_rate(step, dataset, data_cfg, batch, steps, workers) -> float:
    loader = make_loader(dataset, JointTransform.from_config(data_cfg, train=True), batch,
                         shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    first = next(it)
    step(first["image"], first["label"])  # warm-up (workers started, caches filled)
    start = time.perf_counter()
    n = 0
    for _ in range(steps):
        b = next(it)
        step(b["image"], b["label"])
        n += b["image"].shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    method = create_method({"name": "cam", "backbone": {"name": args.model}}, 2)
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)
    step = step_fn(method.train(), optimizer)
    n = args.batch * (args.steps + 2)
    resize = int(round(args.size * 256 / 224))
    synth = SyntheticConfig(size=resize, n_train=n, n_valcl=2, n_test=2)
    print(f"{args.model} at {args.size}, batch {args.batch}, {args.steps} steps, "
          f"{args.workers} workers, torch threads {torch.get_num_threads()}")
    raw = raw_rate(step, args.batch, args.size, args.steps)
    print(f"raw model step on random tensors: {raw:.1f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic("colon", tmp, synth)
        cfg = DataConfig(dataset=tmp, resize=resize, crop=args.size)
        disk = loader_rate(step, open_source(cfg).dataset("train"), cfg, args.batch, args.steps,
                           args.workers)
    print(f"full pipeline, PNG files on disk: {disk:.1f} img/s -> ratio {disk / raw:.2f}")
    cfg = DataConfig(dataset="synthetic-colon", resize=resize, crop=args.size, synthetic=synth)
    fly = loader_rate(step, open_source(cfg).dataset("train"), cfg, args.batch, args.steps,
                      args.workers)
    print(f"full pipeline, synthetic rendered on the fly: {fly:.1f} img/s -> ratio {fly / raw:.2f}")


if __name__ == "__main__":
    main()

"""Distributed training throughput: ``torchrun --nproc_per_node N -m histocam train`` for N = 1, 2.

The same run (synthetic H&E images rendered on the fly, global batch ``--batch``, one epoch of
``--n-train`` images) under PyTorch's launcher with 1 and with N processes (gloo on CPU, NCCL on
GPUs); the training time of epoch 1 comes from the run's own training log (``seconds``: the training
epoch, evaluation excluded), so process start-up and the epoch-0 evaluation are not counted.
Reports images/s and the speed-up over one process.

On CPU every process uses ``cores / N`` threads (``OMP_NUM_THREADS``): the comparison is one
process with all the cores vs N processes sharing them, i.e. what data parallelism buys on one
machine (gradient all-reduce and BatchNorm synchronisation included). Timings are only meaningful on
an otherwise idle machine: on a shared one, other jobs' load dominates the difference.

Usage: python benchmarks/speed/distributed_throughput.py [--procs 1 2] [--model test_resnet]
       [--size 64] [--batch 16] [--n-train 128] [--device cpu|cuda] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from histocam.core.rundir import RunDir


def run_config(out: Path, name: str, args: argparse.Namespace) -> dict:
    return {
        "name": name, "out_dir": str(out), "seed": 0, "device": args.device,
        "data": {"dataset": "synthetic-colon", "resize": args.size, "crop": args.size,
                 "eval_size": args.size,
                 "synthetic": {"size": max(64, args.size), "n_train": args.n_train, "n_valcl": 4,
                               "n_test": 2}},
        "method": {"name": "cam", "backbone": {"name": args.model}},
        "train": {"epochs": 1, "batch_size": args.batch, "num_workers": args.workers,
                  "checkpoint_every": None, "lr": 0.001},
    }


def train_seconds(procs: int, out: Path, args: argparse.Namespace) -> float:
    name = f"procs{procs}"
    config = out / f"{name}.yaml"
    config.write_text(yaml.safe_dump(run_config(out, name, args)))
    threads = args.threads or (max(1, (os.cpu_count() or 1) // procs) if args.device == "cpu" else 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(procs), "-m", "histocam", "train", "--config", str(config)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return float(RunDir(out / name).read_log()[-1]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="global batch")
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per process (default: cores / processes on CPU)")
    args = parser.parse_args()
    images = args.n_train // args.batch * args.batch  # drop_last
    print(f"{args.model} {args.size}px, global batch {args.batch}, {images} images/epoch, "
          f"{args.device}, {os.cpu_count()} cores")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for procs in args.procs:
            seconds = train_seconds(procs, Path(tmp), args)
            rate = images / seconds
            base = base or rate
            print(f"{procs} process(es): {seconds:7.2f} s  {rate:8.1f} images/s  "
                  f"x{rate / base:.2f}")


if __name__ == "__main__":
    main()

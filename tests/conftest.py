"""Fixtures shared by the tests: the environment every test runs in, and a tiny GlaS-like release.
What tests share besides fixtures (paths, tiny configs, file writers, the two-process runner) is
in helpers.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import predict_run, write_mask, write_rgb

from histocam.core.devices import one_cpu_thread
from histocam.train.seeding import set_deterministic

#: Variables of a launcher (torchrun) that would make a test process join a job of its own.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                    "MASTER_PORT", "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    """Every test: one torch thread in the process and its children (tiny tensors: more threads
    only contend on shared cores, and subprocesses sum floats in the same order), no launcher
    variables, no network for weights; deterministic mode off again afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(threads)
    set_deterministic(False)


@pytest.fixture
def glas_dir(tmp_path: Path) -> Path:
    """A GlaS-like release: 5 benign + 7 malignant train images, 2 test images, CR-only Grade.csv."""
    release = tmp_path / "Warwick QU Dataset (Released 2016_07_08)"
    rows = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    names = [(f"train_{i}", "benign" if i < 5 else "malignant") for i in range(12)]
    names += [("testA_1", "benign"), ("testB_1", "malignant")]
    for k, (name, grade) in enumerate(names):
        write_rgb(release / f"{name}.bmp", 9, 13, seed=k)
        instance = np.zeros((9, 13), np.uint8)
        instance[1:4, 2:6] = 1
        instance[5:8, 7:12] = 2  # an instance map: two glands
        write_mask(release / f"{name}_anno.bmp", instance)
        rows.append(f"{name},{k}, {grade}, whatever")
    (release / "Grade.csv").write_bytes("\r".join(rows).encode() + b"\r")
    return tmp_path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A run directory of a seeded, untrained CAM on synthetic-node with a recorded τ* of 0.4
    (``helpers.predict_run``), shared by the prediction tests."""
    with one_cpu_thread():
        return predict_run(tmp_path_factory.mktemp("runs"))

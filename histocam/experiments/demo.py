"""``histocam demo``: the data path end to end on the embedded synthetic benchmark."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from histocam.data.check import check_source
from histocam.data.cli import print_report
from histocam.data.config import SyntheticConfig
from histocam.data.gallery import save_gallery
from histocam.data.open import open_source
from histocam.data.synthetic import write_synthetic

console = Console()


def run_demo(out: Path, n_train: int = 64, seed: int = 0) -> None:
    """Generate synthetic-colon on disk, read it back with the WSOL list reader, validate it."""
    out = Path(out)
    config = SyntheticConfig(seed=seed, n_train=n_train, n_valcl=20, n_test=40)
    data_dir = write_synthetic("colon", out / "data", config, progress=True)
    report = check_source(open_source(str(data_dir)))
    print_report(report)
    figure = save_gallery(open_source(str(data_dir)).dataset("train"), out / "figures" / "samples.png")
    console.print(f"dataset: {data_dir}\nfigure: {figure}")

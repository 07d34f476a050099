"""The data config rejects keys the chosen dataset would not read, never ignores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_rgb
from pydantic import ValidationError

from histocam.data import DataConfig, DataError, open_dataset, open_source
from histocam.data.config import SYNTHETIC_DATASETS
from histocam.data.synthetic import DOMAINS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dataset", sorted(SYNTHETIC_DATASETS))
@pytest.mark.parametrize(("key", "value", "instead"), [
    ("valpx_per_class", 2, r"data\.synthetic\.valpx_per_class"),
    ("split_seed", 3, r"data\.synthetic\.seed"),
    ("valcl_fraction", 0.3, r"data\.synthetic\.n_valcl"),
    ("test_fraction", 0.1, r"data\.synthetic\.n_test"),
    ("root", "somewhere", r"generated, not read"),
    ("classes", ["a", "b"], r"class names .* are fixed"),
])
def test_synthetic_rejects_keys_it_does_not_read(dataset: str, key: str, value, instead: str) -> None:
    with pytest.raises(ValidationError, match=rf"data\.{key} is not used by .*{dataset}.*{instead}"):
        DataConfig(dataset=dataset, **{key: value})


def test_synthetic_valpx_per_class_is_an_error_naming_the_synthetic_key() -> None:
    """data.valpx_per_class of a synthetic dataset is an error naming data.synthetic.valpx_per_class."""
    with pytest.raises(ValidationError, match=r"data\.synthetic\.valpx_per_class"):
        open_dataset(DataConfig(dataset="synthetic-colon", valpx_per_class=1), "valpx")
    with pytest.raises(ValidationError, match="split_seed"):
        open_source("synthetic-node", split_seed=4)
    with pytest.raises(ValidationError, match="split_seed"):  # overrides of a config, too
        open_source(DataConfig(dataset="synthetic-node"), split_seed=4)
    cfg = DataConfig(dataset="synthetic-colon")
    with pytest.raises(ValidationError, match=r"(?s)test_fraction.*frozen"):  # a config is a value
        cfg.test_fraction = 0.5
    small = {"size": 64, "n_train": 4, "n_valcl": 4, "n_test": 2, "valpx_per_class": 1}
    valpx = open_dataset(DataConfig(dataset="synthetic-colon", synthetic=small), "valpx")
    assert sorted(valpx.labels) == [0, 1]


def test_defaults_set_explicitly_and_saved_configs_are_accepted() -> None:
    # a key set to its default changes nothing (the CLI passes --seed 0, --root None)
    DataConfig(dataset="synthetic-colon", split_seed=0, root=None, classes=None,
               valcl_fraction=None, test_fraction=0.2, valpx_per_class=None)
    DataConfig(dataset="some/folder", synthetic={})
    for cfg in (DataConfig(dataset="synthetic-node", synthetic={"size": 96}),
                DataConfig(dataset="some/lists", root="imgs", classes=["a", "b"], split_seed=2)):
        saved = yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json")))  # every key written
        assert DataConfig.model_validate(saved) == cfg


def test_file_datasets_reject_the_synthetic_section() -> None:
    with pytest.raises(ValidationError, match=r"data\.synthetic is used only by synthetic-colon"):
        DataConfig(dataset="../shared/data/glas-train", synthetic={"n_train": 10})
    # a path is never a registered name, even when its folder is called like one
    with pytest.raises(ValidationError, match=r"data\.synthetic"):
        DataConfig(dataset="./synthetic-colon", synthetic={"seed": 1})
    DataConfig(dataset="./synthetic-colon", split_seed=3, valpx_per_class=2, root="r")
    with pytest.raises(ValidationError, match=r"data\.root is not used by a CSV manifest"):
        DataConfig(dataset="mine/set.csv", root="mine")


def test_registered_synthetic_names_match_the_domains() -> None:
    assert set(SYNTHETIC_DATASETS.values()) == set(DOMAINS)
    for name, domain in SYNTHETIC_DATASETS.items():
        assert open_source(name).class_names == DOMAINS[domain][1]
        names = ", ".join(DOMAINS[domain][1])
        with pytest.raises(ValidationError, match=names):
            DataConfig(dataset=name, classes=["x", "y"])


def _lists(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "img"
    lists = tmp_path / "lists"
    for split in ("train", "valcl", "valpx", "test"):
        write_rgb(root / f"{split}.png", 5, 5, 0)
        d = lists / split
        d.mkdir(parents=True)
        (d / "image_ids.txt").write_text(f"{split}.png\n")
        (d / "class_labels.txt").write_text(f"{split}.png,0\n")
        (d / "localization.txt").write_text(f"{split}.png,,\n")
    (lists / "classes.txt").write_text("a\nb\n")
    return lists, root


@pytest.mark.parametrize(("key", "value"), [("split_seed", 1), ("valcl_fraction", 0.3),
                                            ("test_fraction", 0.0), ("valpx_per_class", 5)])
def test_wsol_lists_reject_split_keys(tmp_path: Path, key: str, value) -> None:
    lists, root = _lists(tmp_path)
    assert len(open_source(str(lists), root=root).dataset("valpx")) == 1
    with pytest.raises(DataError, match=rf"lists: data\.{key} is set .* WSOL split lists fix"):
        open_source(str(lists), root=root, **{key: value})


def test_glas_release_rejects_what_it_does_not_read(glas_dir: Path) -> None:
    assert open_source(str(glas_dir), split_seed=3, valpx_per_class=1).class_names == [
        "benign", "malignant"]
    # its own encoding, spelled out, changes nothing
    open_source(str(glas_dir), classes=["benign", "malignant"])
    with pytest.raises(DataError, match=r"data\.classes .* GlaS's encoding is fixed"):
        open_source(str(glas_dir), classes=["malignant", "benign"])
    with pytest.raises(DataError, match=r"data\.root .* release folder is data\.dataset"):
        open_source(str(glas_dir), root=glas_dir)
    # testA/testB present: the test split is theirs, test_fraction would be ignored
    with pytest.raises(DataError, match=r"data\.test_fraction .* 2 test images"):
        open_source(str(glas_dir), test_fraction=0.3)
    # the registered name reads its release folder from root
    assert open_source("glas", root=glas_dir).class_names == ["benign", "malignant"]


def test_csv_with_split_column_rejects_split_keys(tmp_path: Path) -> None:
    for i in range(4):
        write_rgb(tmp_path / f"{i}.png", 5, 5, i)
    (tmp_path / "fixed.csv").write_text("image,label,split\n0.png,0,train\n1.png,1,train\n"
                                        "2.png,0,test\n3.png,1,test\n")
    with pytest.raises(DataError, match=r"data\.split_seed .* split column fixes the splits"):
        open_source(str(tmp_path / "fixed.csv"), split_seed=2)
    (tmp_path / "pool.csv").write_text("image,label\n" + "".join(f"{i}.png,{i % 2}\n"
                                                                for i in range(4)))
    source = open_source(str(tmp_path / "pool.csv"), split_seed=2, test_fraction=0.0)
    assert sorted(np.concatenate([source.dataset(s).ids for s in ("train", "valcl")])) == [
        f"{i}.png" for i in range(4)]


def test_benchmark_configs_still_validate() -> None:
    """Every benchmark config validates whole: a run config, or a student pipeline (pixelcam-*,
    negev-*; their teacher_run is set per run by benchmarks/quality/pixelcam_vs_teacher.py)."""
    from histocam.experiments.pipeline import PipelineConfig
    from histocam.train.run_config import RunConfig

    configs = sorted((REPO / "benchmarks" / "configs").glob("*.yaml"))
    assert len(configs) >= 12
    for path in configs:
        tree = yaml.safe_load(path.read_text())
        DataConfig.model_validate(tree["data"])
        if path.name.startswith(("pixelcam-", "negev-")):
            config = PipelineConfig.model_validate({**tree, "teacher_run": "teacher"})
            assert config.student.method.name == path.name.split("-")[0]
        else:
            RunConfig.model_validate(tree)


def test_demo_config_still_validates(tmp_path: Path) -> None:
    from histocam.experiments.demo import demo_config

    assert demo_config(tmp_path).data.dataset == "synthetic-node"

"""The bad-input battery of the command line.

Every case exits with status 2 and prints one line ``error: ...`` on stderr that names the thing
given (a path, key or name) and the problem; no traceback. One tiny trained run is shared.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import tiny_run
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app, user_error_message, user_errors
from histocam.core.devices import one_cpu_thread

RUNNER = CliRunner()

#: The tiny run, smaller still: 4 train images of 64 px.
TINY = tiny_run(name="teacher", seed=1, device="cpu",
                data={"resize": 64, "synthetic": {"size": 64, "n_train": 4, "n_valcl": 2,
                                                  "n_test": 2, "valpx_per_class": 1}},
                train={"batch_size": 2, "eval_batch_size": 4})


def _tiny_yaml(path: Path, out_dir: Path, **changes) -> Path:
    tree = yaml.safe_load(yaml.safe_dump(TINY))
    tree["out_dir"] = str(out_dir)
    for key, value in changes.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def invoke(args: list) -> object:
    return RUNNER.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A trained tiny CAM run (config, checkpoints), shared read-only by the cases."""
    root = tmp_path_factory.mktemp("cli-errors")
    with one_cpu_thread():
        result = invoke(["train", "-c", _tiny_yaml(root / "run.yaml", root / "runs")])
    assert result.exit_code == 0, result.output
    run = root / "runs" / "teacher"
    assert (run / "checkpoints" / "best-loc.pt").is_file()
    return run


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# --------------------------------------------------------------------------- the cases
# Each builder gets (tmp_path, the trained run: copy it before a command that may write into it)
# and returns (argv, strings the error line must hold: the thing given and the problem).
Case = Callable[[Path, Path], tuple[list, list[str]]]


def _train(tmp: Path, *overrides: str) -> list:
    """``histocam train`` of the tiny config (run ``tmp/teacher``) with ``overrides``."""
    return ["train", "-c", _tiny_yaml(tmp / "run.yaml", tmp), *overrides]


def case_train_missing_config(tmp, run):
    return ["train", "-c", tmp / "missing.yaml"], [str(tmp / "missing.yaml"), "not found"]


def case_train_unknown_key(tmp, run):
    argv = _train(tmp, "foo=1")
    return argv, ["error: override foo=1: unknown key"]


def case_train_unknown_nested_key(tmp, run):
    argv = _train(tmp, "method.bogus=1")
    return argv, ["error: override method.bogus=1: unknown key", "known: name, backbone"]


def case_train_mistyped_key_in_an_override(tmp, run):
    """Blamed on the override, not on the file, with the key that was meant."""
    argv = _train(tmp, "train.epoch=2")
    return argv, ["error: override train.epoch=2: unknown key; did you mean train.epochs?"]


def case_train_mistyped_key_in_the_file(tmp, run):
    config = _tiny_yaml(tmp / "run.yaml", tmp, **{"data.split_sed": 3})
    return ["train", "-c", config], [f"error: {config}: invalid config: data.split_sed: unknown "
                                     "key; did you mean data.split_seed?"]


def case_train_a_key_of_another_method(tmp, run):
    """A DeepMIL key, once the method is switched to WILDCAT, is named as DeepMIL's."""
    config = _tiny_yaml(tmp / "run.yaml", tmp, method={"name": "deepmil", "gated": False,
                                                       "backbone": {"name": "test_resnet"}})
    return (["train", "-c", config, "method.name=wildcat"],
            [str(config), "method.gated: a key of deepmil, not of wildcat (the method set by "
                          "override method.name=wildcat)"])


def case_train_unknown_method(tmp, run):
    argv = _train(tmp, "method.name=nope")
    return argv, ["override method.name=nope", "'nope'", "unknown method"]


def case_train_invalid_value(tmp, run):
    argv = _train(tmp, "train.epochs=-1")
    return argv, ["override train.epochs=-1", "greater than or equal to 0"]


def case_train_dataset_key_the_dataset_does_not_read(tmp, run):
    argv = _train(tmp, "data.split_seed=3")
    return argv, ["data.split_seed is not used by the generated dataset 'synthetic-colon'",
                  "data.synthetic.seed"]


def case_train_override_without_value(tmp, run):
    argv = _train(tmp, "train.epochs")
    return argv, ["'train.epochs'", "not key=value"]


def case_train_override_into_value(tmp, run):
    argv = _train(tmp, "train=3", "train.epochs=2")
    return argv, ["'train.epochs=2'", "'train' is not a section"]


def case_train_out_dir_is_a_file(tmp, run):
    (tmp / "afile").write_text("x")
    argv = _train(tmp, f"out_dir={tmp / 'afile'}")
    return argv, [str(tmp / "afile" / "teacher"), "not a directory"]


def case_train_config_not_text(tmp, run):
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00name: x\n")
    return ["train", "-c", tmp / "binary.yaml"], [str(tmp / "binary.yaml"), "not a text file"]


def case_train_invalid_yaml(tmp, run):
    (tmp / "bad.yaml").write_text("name: [unclosed\ntrain: {epochs: 1\n")
    return ["train", "-c", tmp / "bad.yaml"], [str(tmp / "bad.yaml"), "not valid YAML"]


def case_train_yaml_list(tmp, run):
    (tmp / "list.yaml").write_text("- name: x\n- seed: 1\n")
    return ["train", "-c", tmp / "list.yaml"], [str(tmp / "list.yaml"), "must be a mapping"]


def case_train_unknown_backbone(tmp, run):
    argv = _train(tmp, "method.backbone.name=not_a_model")
    return argv, ["'not_a_model'", "unknown timm backbone"]


def case_train_missing_weights(tmp, run):
    argv = _train(tmp, "method.backbone.pretrained=/nonexistent.pth")
    return argv, ["/nonexistent.pth", "not found"]


def case_train_weights_not_torch(tmp, run):
    (tmp / "garbage.pth").write_bytes(b"\x00\x01 definitely not a torch file" * 10)
    argv = _train(tmp, f"method.backbone.pretrained={tmp / 'garbage.pth'}")
    return argv, [str(tmp / "garbage.pth"), "not a loadable state dict"]


def case_train_weights_not_a_dict(tmp, run):
    torch.save([torch.zeros(2), torch.ones(3)], tmp / "list.pth")
    argv = _train(tmp, f"method.backbone.pretrained={tmp / 'list.pth'}")
    return argv, [str(tmp / "list.pth"), "not a state dict (it holds a list)"]


def case_train_weights_wrong_shapes(tmp, run):
    torch.save({"conv1.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(7)}, tmp / "wrong.pth")
    argv = _train(tmp, f"method.backbone.pretrained={tmp / 'wrong.pth'}")
    return argv, [str(tmp / "wrong.pth"), "do not match"]


def case_train_existing_run(tmp, run):
    copy = _copy_run(run, tmp / "teacher")  # the config's own run name, in tmp
    return _train(tmp), [str(copy), "--resume"]


def case_train_resume_without_checkpoint(tmp, run):
    return [*_train(tmp), "--resume"], [str(tmp / "teacher"), "cannot resume"]


def case_evaluate_missing_run(tmp, run):
    return ["evaluate", tmp / "nope"], [str(tmp / "nope"), "no such run directory"]


def case_evaluate_not_a_run(tmp, run):
    (tmp / "empty").mkdir()
    return ["evaluate", tmp / "empty"], [str(tmp / "empty"), "no config.yaml"]


def case_evaluate_bad_run_config(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    (copy / "config.yaml").write_text("method: {name: cam, bogus: 1}\n")
    return ["evaluate", copy], [str(copy / "config.yaml"), "not a valid run config"]


def case_evaluate_corrupt_checkpoint(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    (copy / "checkpoints" / "best-loc.pt").write_bytes(b"garbage" * 100)
    return (["evaluate", copy, "--checkpoint", "best-loc"],
            [str(copy / "checkpoints" / "best-loc.pt"), "cannot load checkpoint"])


def case_evaluate_missing_checkpoint(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    (copy / "checkpoints" / "best-cl.pt").unlink()
    return (["evaluate", copy, "--checkpoint", "best-cl"],
            [str(copy / "checkpoints" / "best-cl.pt"), "checkpoint not found"])


def case_evaluate_unknown_checkpoint(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    return ["evaluate", copy, "--checkpoint", "nope"], ["'nope'", "checkpoint must be one of"]


def case_evaluate_missing_data(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    return (["evaluate", copy, "--checkpoint", "best-loc", "--data", "/nonexistent"],
            ["/nonexistent", "no such file or folder"])


def case_evaluate_lists_without_classes(tmp, run):
    lists = tmp / "lists"
    (lists / "test").mkdir(parents=True)
    (lists / "test" / "image_ids.txt").write_text("a.png\n")
    (lists / "a.png").write_bytes(b"")
    copy = _copy_run(run, tmp / "copy")
    return (["evaluate", copy, "--checkpoint", "best-loc", "--data", lists],
            [str(lists), "class names", "unknown"])


def case_evaluate_a_folder_of_runs(tmp, run):
    return ["evaluate", run.parent], [str(run.parent), "a folder of runs: teacher",
                                      str(run.parent / "teacher")]


def case_predict_a_folder_of_runs(tmp, run):
    return (["predict", run.parent, tmp, "--out", tmp / "out"],
            [str(run.parent), "not a run directory but a folder of runs: teacher; give one of "
                              "them"])


def case_cams_missing_run(tmp, run):
    return ["cams", tmp / "nope"], [str(tmp / "nope"), "no such run directory"]


def case_cams_unknown_split(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    return ["cams", copy, "--split", "nope"], ["--split 'nope'", "not a split"]


def case_pixelcam_missing_teacher(tmp, run):
    return ["pixelcam", tmp / "nope"], [str(tmp / "nope"), "no such run directory"]


def case_pixelcam_untrained_teacher(tmp, run):
    (tmp / "untrained").mkdir()
    shutil.copy(run / "config.yaml", tmp / "untrained" / "config.yaml")
    return ["pixelcam", tmp / "untrained"], [str(tmp / "untrained"), "train it first"]


def case_pixelcam_data_override(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    return ["pixelcam", copy, "data.dataset=x"], ["'data.dataset=x'", "only student.*"]


def case_pixelcam_invalid_value(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    return ["pixelcam", copy, "student.method.n=-1"], ["student.method.n", "greater than"]


def case_pipeline_missing_config(tmp, run):
    return (["pipeline", "pixelcam", "-c", tmp / "missing.yaml"],
            [str(tmp / "missing.yaml"), "not found"])


def case_pipeline_stage_backbone(tmp, run):
    return (["pipeline", "pixelcam", "teacher.method.backbone.name=resnet50"],
            ["teacher.method", "backbone", "share the pipeline's backbone"])


def case_pipeline_missing_teacher_run(tmp, run):
    return (["pipeline", "pixelcam", f"teacher_run={tmp / 'nope'}", f"out_dir={tmp}"],
            [str(tmp / "nope"), "no such run directory"])


def case_pipeline_untrained_teacher_run(tmp, run):
    (tmp / "untrained").mkdir()
    shutil.copy(run / "config.yaml", tmp / "untrained" / "config.yaml")
    return (["pipeline", "pixelcam", f"teacher_run={tmp / 'untrained'}", f"out_dir={tmp}"],
            [str(tmp / "untrained"), "train it first"])


def case_train_missing_cam_store(tmp, run):
    argv = _train(tmp, "method={name: pixelcam, backbone: {name: test_resnet}}",
                      f"cams={tmp / 'none.npz'}")
    return argv, [str(tmp / "none.npz"), "CAM store", "not found"]


def case_train_stale_cam_store(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    exported = invoke(["cams", copy])
    assert exported.exit_code == 0, exported.output
    store = copy / "cams" / "best-loc-train.npz"
    config = _tiny_yaml(tmp / "student.yaml", tmp, **{
        "name": "student", "cams": str(store), "data.synthetic.seed": 9,
        "method": {"name": "pixelcam", "backbone": {"name": "test_resnet"}}})
    return ["train", "-c", config], [str(store), "another dataset"]


def case_score_maps_missing_dirs(tmp, run):
    return (["score-maps", tmp / "no-maps", tmp / "no-masks"],
            [str(tmp / "no-maps"), "not found"])


def case_data_check_missing(tmp, run):
    return ["data", "check", "/nonexistent"], ["/nonexistent", "no such file or folder"]


def case_data_check_unused_option(tmp, run):
    return (["data", "check", "synthetic-colon", "--root", tmp],
            ["data.root", "not used by the generated dataset"])


def case_data_check_unknown_split(tmp, run):
    return ["data", "check", "synthetic-colon", "--split", "nope"], ["'nope'", "not a split"]


def case_data_synth_unknown_domain(tmp, run):
    return (["data", "synth", "--out", tmp / "d", "--domain", "lung"],
            ["--domain 'lung'", "unknown domain"])


def case_data_gallery_missing(tmp, run):
    return (["data", "gallery", "/nonexistent", "--out", tmp / "g.png"],
            ["/nonexistent", "no such file or folder"])


class Payload:
    """An arbitrary Python object in a checkpoint: weights-only loading refuses it."""


def _pickled_checkpoint(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "payload": Payload()}, path)
    return path


def case_train_resume_pickled_last(tmp, run):
    copy = _copy_run(run, tmp / "teacher")
    last = _pickled_checkpoint(copy / "checkpoints" / "last.pt")
    return [*_train(tmp), "--resume"], [str(last), "cannot load checkpoint"]


def case_train_resume_last_without_optimizer(tmp, run):
    copy = _copy_run(run, tmp / "teacher")
    shutil.copy(copy / "checkpoints" / "best-loc.pt", copy / "checkpoints" / "last.pt")
    return ([*_train(tmp), "--resume"],
            [str(copy / "checkpoints" / "last.pt"), "not a histocam checkpoint", "optimizer"])


def case_train_pickled_init(tmp, run):
    init = _pickled_checkpoint(tmp / "evil.pt")
    return _train(tmp, f"init={init}"), [str(init), "cannot load checkpoint"]


def case_train_init_of_another_method(tmp, run):
    init = tmp / "other.pt"
    torch.save({"model": {"encoder.conv1.weight": torch.zeros(3, 3)}}, init)
    return _train(tmp, f"init={init}"), [str(init), "do not fit method 'cam'"]


def case_train_cam_store_of_an_older_format(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    assert invoke(["cams", copy]).exit_code == 0
    meta = copy / "cams" / "best-loc-train.json"
    old = json.loads(meta.read_text())
    del old["format"], old["labels_identity"]
    meta.write_text(json.dumps(old))
    config = _tiny_yaml(tmp / "student.yaml", tmp, **{
        "name": "student", "cams": str(copy / "cams" / "best-loc-train.npz"),
        "method": {"name": "pixelcam", "backbone": {"name": "test_resnet"}}})
    return ["train", "-c", config], ["best-loc-train.npz", "older format",
                                     f"histocam cams {copy.resolve()} --checkpoint best-loc"]


def case_evaluate_allow_outside_root_without_data(tmp, run):
    copy = _copy_run(run, tmp / "copy")
    return ["evaluate", copy, "--allow-outside-root"], ["--allow-outside-root", "--data"]


def case_data_check_outside_root(tmp, run):
    (tmp / "set").mkdir()
    (tmp / "set" / "a.csv").write_text("image,label\n../x.png,0\n")
    return (["data", "check", tmp / "set" / "a.csv"],
            [f"{tmp / 'set' / 'a.csv'}:2", "'../x.png' is outside", "--allow-outside-root"])


def case_data_check_allow_outside_root_on_lists(tmp, run):
    return (["data", "check", "synthetic-colon", "--allow-outside-root"],
            ["data.allow_outside_root", "only for a CSV manifest"])


def case_data_check_one_image_two_spellings(tmp, run):
    (tmp / "a.csv").write_text("image,label,split\nimg01.png,0,train\n./img01.png,0,test\n")
    return (["data", "check", tmp / "a.csv"],
            [f"{tmp / 'a.csv'}:3", "duplicate image 'img01.png'", "line 2"])


def case_score_maps_two_masks_of_one_id(tmp, run):
    maps, masks = tmp / "maps", tmp / "masks"
    maps.mkdir()
    masks.mkdir()
    np.save(maps / "img0.npy", torch.rand(4, 4).numpy())
    for suffix in (".png", ".tif"):
        Image.new("L", (4, 4)).save(masks / f"img0{suffix}")
    return (["score-maps", maps, masks],
            [str(masks / "img0.png"), str(masks / "img0.tif"), "second mask"])


CASES = [pytest.param(fn, id=name.removeprefix("case_"), marks=getattr(fn, "pytestmark", []))
         for name, fn in dict(globals()).items() if name.startswith("case_")]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line(case: Case, trained: Path, tmp_path: Path) -> None:
    argv, needles = case(tmp_path, trained)
    result = invoke(argv)
    report = f"{argv}\n--- exit {result.exit_code}; output:\n{result.output}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: pytest shows it
    assert "Traceback" not in result.output, report
    assert result.exit_code == 2, report
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), report
    assert lines[0] in result.stderr, f"{report}\n(the error line is not on stderr)"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} missing\n{report}"


def test_evaluate_on_other_data_with_as_many_classes(trained: Path, tmp_path: Path) -> None:
    """synthetic-colon and synthetic-node both have two classes: evaluating across them works."""
    copy = _copy_run(trained, tmp_path / "copy")
    result = invoke(["evaluate", copy, "--checkpoint", "best-loc", "--data", "synthetic-node"])
    assert result.exit_code == 0, result.output
    assert "data: synthetic-node (out of distribution" in result.stdout
    assert "run class = data class: benign = normal, malignant = tumor" in result.stdout


def test_bugs_are_not_user_errors() -> None:
    """Unexpected exception types keep their traceback: they are bugs, not bad input."""
    for exc in (RuntimeError("x"), KeyError("x"), TypeError("x"), AttributeError("x")):
        assert user_error_message(exc) is None, exc

    @user_errors
    def broken() -> None:
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        broken()


def test_evaluate_on_a_csv_reading_outside_its_folder(trained: Path, tmp_path: Path) -> None:
    """``--data`` names a CSV whose images lie beside its folder: refused, then read with
    ``--allow-outside-root`` (τ* comes from the run's own valpx: the CSV needs a test split only)."""
    from histocam.data import open_source

    test = open_source(yaml.safe_load((trained / "config.yaml").read_text())["data"]["dataset"],
                       synthetic={"size": 64, "n_test": 2}).dataset("test")
    rows = []
    for i in range(len(test)):
        sample = test[i]
        Image.fromarray(sample.image).save(tmp_path / f"{i}.png")
        Image.fromarray(sample.mask.astype(np.uint8) * 255).save(tmp_path / f"{i}-mask.png")
        rows.append(f"../{i}.png,{sample.label},../{i}-mask.png,test")
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "other.csv"
    csv.write_text("image,label,mask,split\n" + "\n".join(rows) + "\n")
    copy = _copy_run(trained, tmp_path / "copy")
    args = ["evaluate", copy, "--checkpoint", "best-loc", "--data", csv, "--device", "cpu",
            "--json", "--quiet"]
    refused = invoke(args)
    assert refused.exit_code == 2 and "is outside the manifest's folder" in refused.output
    allowed = invoke([*args, "--allow-outside-root"])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["data"] == str(csv)


def test_a_student_run_is_refused_again_then_resumed_or_replaced(trained: Path,
                                                                  tmp_path: Path) -> None:
    """``histocam pixelcam`` into a student run that has results: refused in one line naming
    --overwrite; --resume continues it (finished: nothing to train), --overwrite replaces it."""
    copy = _copy_run(trained, tmp_path / "teacher")
    argv = ["pixelcam", copy, "--name", "student", "--quiet", "student.train.epochs=1"]
    with one_cpu_thread():
        assert invoke(argv).exit_code == 0
        again = invoke(argv)
        lines = [line for line in again.output.splitlines() if line.strip()]
        assert again.exit_code == 2 and len(lines) == 1, again.output
        assert lines[0].startswith("error: ") and "--overwrite" in lines[0]
        student = tmp_path / "pixelcam" / "student"
        before = (student / "log.csv").read_bytes()
        assert invoke([*argv, "--resume"]).exit_code == 0
        assert (student / "log.csv").read_bytes() == before  # finished: nothing trained again
        assert invoke([*argv, "--overwrite"]).exit_code == 0
        assert (student / "checkpoints" / "last.pt").is_file()


def test_a_file_read_too_far_is_one_error_line() -> None:
    import typer
    from typer.testing import CliRunner

    tiny = typer.Typer()

    @tiny.command()
    @user_errors
    def read() -> None:
        raise EOFError("Ran out of input")

    result = CliRunner().invoke(tiny, [])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unexpected end of a file (Ran out of input)"

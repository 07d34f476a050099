"""Fuzzing of every reader and of the run config (hypothesis): whatever bytes a user's files hold,
histocam answers with its own error (``DataError``, or a user error of the CLI: one ``error:``
line) naming the file, never a crash; ``histocam data check`` reports and never raises.

Bounded by default (``HISTOCAM_FUZZ_EXAMPLES``, 15 examples per test: the file runs in seconds);
a longer run: ``HISTOCAM_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.cli.user_errors import user_error_message
from histocam.data import DataError, open_source
from histocam.data.check import check_source
from histocam.data.csv_manifest import read_class_names
from histocam.data.io import read_image, read_mask
from histocam.data.wsol_lists import read_wsol_split
from histocam.train.run_config import load_run_config

# hypothesis's caches go to the temporary folder, not into the working tree
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "histocam-hypothesis")
EXAMPLES = int(os.environ.get("HISTOCAM_FUZZ_EXAMPLES", "15"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 15, database=None,
                suppress_health_check=list(HealthCheck))
SUFFIXES = [".png", ".jpg", ".bmp", ".tif", ".gif", ".txt"]


def _assert_user_error(exc: BaseException, path: Path) -> None:
    """``exc`` is histocam's own kind of error (a CLI user error) and names ``path``."""
    assert isinstance(exc, DataError) or user_error_message(exc) is not None, repr(exc)
    assert path.name in str(exc), f"{exc!r} does not name {path.name}"


def _png_bytes(h: int = 5, w: int = 7, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def _encoded(fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    if fmt == "TIFF":
        import tifffile

        tifffile.imwrite(buf, rng.integers(0, 255, (9, 11, 3), dtype=np.uint8))
    else:
        Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height pixels and holds almost no data (a bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _read_both(path: Path) -> None:
    for reader in (read_image, read_mask):
        try:
            reader(path)
        except Exception as exc:  # noqa: BLE001 - asserting what kind it is
            _assert_user_error(exc, path)


# ---------------------------------------------------------------- images and masks
@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_as_image_or_mask(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"sample{suffix}"
        path.write_bytes(data)
        _read_both(path)


@FUZZ
@given(fmt=st.sampled_from(["PNG", "JPEG", "BMP", "TIFF", "GIF"]), seed=st.integers(0, 3),
       cut=st.floats(0, 1, exclude_max=True), flips=st.lists(st.integers(0, 10**6), max_size=4))
def test_truncated_or_corrupted_images(fmt: str, seed: int, cut: float, flips: list[int]) -> None:
    data = bytearray(_encoded(fmt, seed))
    data = data[: int(len(data) * cut)] if cut > 0.05 else data  # truncated, or whole and...
    for f in flips:  # ... with some bytes flipped
        if data:
            data[f % len(data)] ^= 0xFF
    suffix = {"JPEG": ".jpg", "TIFF": ".tif"}.get(fmt, f".{fmt.lower()}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cut{suffix}"
        path.write_bytes(bytes(data))
        _read_both(path)


@FUZZ
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_huge_declared_sizes_are_refused_not_allocated(width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bomb.png"
        path.write_bytes(_png_declaring(width, height))
        _read_both(path)


def test_decompression_bomb_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(100_000, 100_000))  # 10^10 pixels, > 2 x PIL's limit
    with pytest.raises(DataError, match=r"bomb\.png: .*decompression bomb"):
        read_image(path)
    tif = tmp_path / "bomb.tif"
    import tifffile

    tifffile.imwrite(tif, np.zeros((4, 4), np.uint8))
    raw = bytearray(tif.read_bytes())
    # declare 65535 x 65535 in the first IFD (tags 256/257 as SHORT), data still 16 bytes
    ifd = struct.unpack("<I", raw[4:8])[0]
    for i in range(struct.unpack("<H", raw[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", raw[entry:entry + 4])
        if tag in (256, 257):
            raw[entry + 8:entry + 12] = struct.pack("<HH", 65535, 0) if kind == 3 else \
                struct.pack("<I", 65535)
    tif.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"bomb\.tif: "):
        read_image(tif)


# ---------------------------------------------------------------- list files
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)
CSVISH = st.lists(st.lists(st.sampled_from(["image", "label", "mask", "split", "a.png", "0", "1",
                                            "train", "valpx", "benign", "", "x", " ", '"',
                                            "../a.png", "-1", "9"]), max_size=5),
                  max_size=6).map(lambda rows: "\n".join(",".join(r) for r in rows))
LIST_CONTENT = st.one_of(TEXT, CSVISH, st.binary(max_size=300))


def _write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@FUZZ
@given(content=LIST_CONTENT, classes=st.one_of(st.none(), LIST_CONTENT))
def test_random_csv_manifest_and_class_names(content, classes) -> None:
    with tempfile.TemporaryDirectory() as d:
        manifest = Path(d) / "set.csv"
        _write(manifest, content)
        _write(Path(d) / "a.png", _png_bytes())
        if classes is not None:
            _write(Path(d) / "classes.txt", classes)
        try:
            source = open_source(str(manifest))
        except Exception as exc:  # noqa: BLE001
            named = Path(d) / "classes.txt" if "classes.txt" in str(exc) else manifest
            _assert_user_error(exc, named)
            return
        check_source(source)  # a readable manifest is checked without raising
        if classes is not None:
            try:
                read_class_names(Path(d) / "classes.txt")
            except Exception as exc:  # noqa: BLE001
                _assert_user_error(exc, Path(d) / "classes.txt")


@FUZZ
@given(ids=LIST_CONTENT, labels=LIST_CONTENT, sizes=st.one_of(st.none(), LIST_CONTENT),
       masks=st.one_of(st.none(), LIST_CONTENT))
def test_random_wsol_split_lists(ids, labels, sizes, masks) -> None:
    with tempfile.TemporaryDirectory() as d:
        split = Path(d) / "lists" / "train"
        files = {"image_ids.txt": ids, "class_labels.txt": labels, "image_sizes.txt": sizes,
                 "localization.txt": masks}
        for name, content in files.items():
            if content is not None:
                _write(split / name, content)
        try:
            read_wsol_split(split, Path(d), n_classes=2)
        except Exception as exc:  # noqa: BLE001
            named = [split / n for n in files if n in str(exc)]
            assert named, repr(exc)
            _assert_user_error(exc, named[0])


# ---------------------------------------------------------------- configs
KEYS = st.sampled_from(["name", "seed", "data", "method", "train", "epochs", "batch_size",
                        "dataset", "backbone", "lr", "x", "device", "deterministic", "init",
                        "cams", "out_dir", "resize", "crop"])
VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6),
                                st.floats(allow_nan=True), st.text(max_size=8)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3),
                                              st.dictionaries(KEYS, inner, max_size=4)),
                      max_leaves=12)


@FUZZ
@given(tree=st.dictionaries(KEYS, VALUES, max_size=6))
def test_configs_with_random_keys_and_values(tree) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_text(yaml.safe_dump(tree))
        try:
            load_run_config(path)
        except Exception as exc:  # noqa: BLE001
            _assert_user_error(exc, path)


@FUZZ
@given(content=LIST_CONTENT, overrides=st.lists(st.text(max_size=12), max_size=3))
def test_random_yaml_text_and_overrides(content, overrides) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        _write(path, content)
        try:
            load_run_config(path, overrides)
        except Exception as exc:  # noqa: BLE001
            assert isinstance(exc, DataError) or user_error_message(exc) is not None, repr(exc)
            assert path.name in str(exc) or "override" in str(exc), repr(exc)


# ---------------------------------------------------------------- histocam data check
@FUZZ
@given(manifest=LIST_CONTENT, image=st.binary(max_size=600), mask=st.binary(max_size=600),
       valid_image=st.booleans())
def test_data_check_never_crashes(manifest, image, mask, valid_image) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _write(root / "set.csv", manifest)
        _write(root / "a.png", _png_bytes() if valid_image else image)
        _write(root / "a_m.png", mask)
        _write(root / "b.png", _png_bytes(seed=1))
        _write(root / "ok.csv", "image,label,mask,split\na.png,0,a_m.png,train\nb.png,1,,valcl\n")
        for csv_name in ("set.csv", "ok.csv"):
            result = CliRunner().invoke(app, ["data", "check", str(root / csv_name)])
            assert result.exit_code in (0, 1, 2), result.output
            assert result.exception is None or isinstance(result.exception, SystemExit), \
                repr(result.exception)
            if result.exit_code == 2:
                lines = result.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr

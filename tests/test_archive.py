"""Deterministic zips and Lambda's size budgets (mlayer.archive)."""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlayer.archive import (
    DIRECT_UPLOAD_LIMIT,
    UNZIPPED_LIMIT,
    ZOPFLI_MIN_BYTES,
    Budget,
    BudgetPart,
    choose_zip_encoder,
    dir_size,
    largest_direct_zip,
    mb,
    needs_s3,
    sha256_file,
    unsafe_entry,
    upload_note,
    write_model_tar,
    write_zip,
    write_zip_zopfli,
    zip_unzipped_size,
)


def _tree(root: Path, *, reverse: bool = False) -> None:
    """The same files, created in a different order and with other mtimes and modes."""
    files = {
        "pkg/__init__.py": b"x = 1\n",
        "pkg/sub/mod.py": b"y = 2\n" * 100,
        "pkg/tool.sh": b"#!/bin/sh\necho hi\n",
        "a.txt": b"a",
    }
    items = sorted(files.items(), reverse=reverse)
    for i, (name, data) in enumerate(items):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1_600_000_000 + i * 1000 + (7 if reverse else 0),) * 2)
        path.chmod(0o600 if not reverse else 0o664)
    (root / "pkg/tool.sh").chmod(0o700 if not reverse else 0o775)


def test_same_files_give_the_same_bytes(tmp_path: Path) -> None:
    # given two trees with equal contents but different creation order, mtimes and modes
    _tree(tmp_path / "one")
    _tree(tmp_path / "two", reverse=True)
    # when both are zipped
    first = write_zip(tmp_path / "one", tmp_path / "one.zip", prefix="python")
    second = write_zip(tmp_path / "two", tmp_path / "two.zip", prefix="python")
    # then the zips are byte-identical
    assert first.sha256 == second.sha256 == sha256_file(tmp_path / "one.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    assert first.files == 4
    assert first.unzipped_bytes == dir_size(tmp_path / "one")[0]
    assert zip_unzipped_size(tmp_path / "one.zip") == first.unzipped_bytes


def test_entries_are_sorted_with_fixed_times_and_modes(tmp_path: Path) -> None:
    _tree(tmp_path / "src", reverse=True)
    write_zip(tmp_path / "src", tmp_path / "out.zip", prefix="python")
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names == sorted(names)
        assert all(name.startswith("python/") for name in names)
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
        modes = {info.filename: stat.S_IMODE(info.external_attr >> 16) for info in infos}
        assert modes["python/pkg/tool.sh"] == 0o755
        assert {m for n, m in modes.items() if n != "python/pkg/tool.sh"} == {0o644}
        assert archive.read("python/pkg/sub/mod.py") == b"y = 2\n" * 100


def test_pairs_source_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    result = write_zip([(tmp_path / "f", "model/f")], tmp_path / "m.zip")
    assert result.files == 1
    with pytest.raises(ValueError, match="duplicate"):
        write_zip([(tmp_path / "f", "x"), (tmp_path / "f", "x")], tmp_path / "d.zip")


MODEL_FILES = {
    "manifest.json": b'{"name": "m"}\n',
    "z_model.joblib": b"\x80\x04model" * 5000,
    "PreProc1_m.joblib": b"pre" * 10,
    "a/nested.pkl": b"n",
}


def _model_dir(root: Path, *, reverse: bool = False) -> list[str]:
    """The same model files, written in another order, with other mtimes and modes."""
    names = sorted(MODEL_FILES, reverse=reverse)
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(MODEL_FILES[name])
        os.utime(path, (1_600_000_000 + i * 1000 + (7 if reverse else 0),) * 2)
        path.chmod(0o755 if reverse else 0o600)
    return names


def test_model_tar_same_content_same_sha(tmp_path: Path) -> None:
    # given the same model files, created differently, and listed in different orders
    one = write_model_tar(tmp_path / "one", _model_dir(tmp_path / "one"), tmp_path / "1.tar")
    two = write_model_tar(
        tmp_path / "two", _model_dir(tmp_path / "two", reverse=True), tmp_path / "2.tar"
    )
    # then the archives are byte-identical, and the returned sha and size are the file's
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
    assert one == two == (sha256_file(tmp_path / "1.tar"), (tmp_path / "1.tar").stat().st_size)
    assert not list(tmp_path.glob("*.tmp"))


def test_model_tar_order_headers_and_content(tmp_path: Path) -> None:
    files = _model_dir(tmp_path / "src", reverse=True)
    write_model_tar(tmp_path / "src", files, tmp_path / "m.tar")
    with tarfile.open(tmp_path / "m.tar") as archive:
        members = archive.getmembers()
        # manifest.json first, then the others sorted; regular files only
        assert [m.name for m in members] == [
            "manifest.json",
            "PreProc1_m.joblib",
            "a/nested.pkl",
            "z_model.joblib",
        ]
        assert all(m.isreg() for m in members)
        assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {
            (0, 0o644, 0, 0, "", "")
        }
        for member in members:
            extracted = archive.extractfile(member)
            assert extracted is not None
            assert extracted.read() == MODEL_FILES[member.name]
    # ustar magic in the first header: no pax header for short names
    assert (tmp_path / "m.tar").read_bytes()[257:263] == b"ustar\x00"


def test_model_tar_manifest_from_elsewhere_and_long_names(tmp_path: Path) -> None:
    # given a manifest written outside the model directory and a name over 100 bytes
    model = tmp_path / "model"
    model.mkdir()
    long_name = "m" * 120 + ".joblib"
    (model / long_name).write_bytes(b"long")
    (tmp_path / "staged.json").write_text("{}")
    # when the tar is written with the manifest passed apart
    write_model_tar(model, [long_name], tmp_path / "m.tar", manifest=tmp_path / "staged.json")
    # then it is first, named manifest.json, and the long name survives (a pax header)
    with tarfile.open(tmp_path / "m.tar") as archive:
        assert archive.getnames() == ["manifest.json", long_name]
        assert archive.extractfile(long_name).read() == b"long"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["../up.joblib"], "not a relative path"),
        (["/abs.joblib"], "not a relative path"),
        (["x.joblib", "./x.joblib"], "listed twice: x.joblib"),
    ],
    ids=["climbs-out", "absolute", "duplicate"],
)
def test_model_tar_refuses_bad_names(tmp_path: Path, files: list[str], message: str) -> None:
    (tmp_path / "x.joblib").write_bytes(b"x")
    with pytest.raises(ValueError, match=message):
        write_model_tar(tmp_path, files, tmp_path / "out" / "m.tar")
    assert not (tmp_path / "out" / "m.tar").exists()


def test_budget_shares_and_verdict() -> None:
    budget = Budget(
        [BudgetPart("dependency layer", 190 * 1_048_576), BudgetPart("model", 70 * 1_048_576)]
    )
    assert budget.limit == UNZIPPED_LIMIT == 250 * 1_048_576
    assert not budget.fits
    assert budget.over_by == 10 * 1_048_576
    assert budget.describe() == (
        "dependency layer 190.0 MiB (76%), model 70.0 MiB (28%); total 260.0 MiB of 250.0 MiB: "
        "over by 10.0 MiB"
    )
    assert Budget([BudgetPart("x", 1)]).fits


def test_direct_upload_limit() -> None:
    # "50 MiB" as AWS states it is a request limit: the zip's base64 plus the JSON around it
    assert DIRECT_UPLOAD_LIMIT == 52_428_800
    assert needs_s3(DIRECT_UPLOAD_LIMIT)  # its base64 alone is 69,905,068 bytes
    largest = largest_direct_zip()
    assert DIRECT_UPLOAD_LIMIT - 1_000 < largest < DIRECT_UPLOAD_LIMIT
    assert not needs_s3(largest) and needs_s3(largest + 1)
    # and a narrower request takes a little more: the publish decides with its own fields
    params = {"LayerName": "scorer-deps", "Description": "mlayer deps"}
    assert not needs_s3(largest + 3, params)
    assert needs_s3(largest_direct_zip(params) + 1, params)
    assert upload_note(1000) is None
    assert upload_note(largest) is None and upload_note(largest + 1) is not None
    note = upload_note(60 * 1_048_576, "dependency layer")
    assert note is not None and "--bucket" in note and "60.0 MiB" in note
    assert mb(262_144_000) == "250.0 MiB"


# --------------------------------------------------------------------------- zopfli


def _binary_sample(root: Path) -> None:
    """A real shared library (numpy's, from this interpreter) and the function's sources."""
    import numpy

    library = max(Path(numpy.__file__).parent.rglob("*.so"), key=lambda path: path.stat().st_size)
    (root / "lib").mkdir(parents=True)
    # 300 KB of it: over the zopfli threshold, a second or two of zopfli
    (root / "lib" / "part.so").write_bytes(library.read_bytes()[:300_000])
    os.chmod(root / "lib" / "part.so", 0o755)
    for source in (Path(__file__).parent.parent / "function").glob("*.py"):
        (root / source.name).write_bytes(source.read_bytes())


def test_zopfli_zip_round_trips_and_is_smaller(tmp_path: Path) -> None:
    import shutil
    import subprocess

    src = tmp_path / "src"
    _binary_sample(src)
    deflate = write_zip(src, tmp_path / "deflate.zip", prefix="python")
    zopfli = write_zip(src, tmp_path / "zopfli.zip", prefix="python", encoder="zopfli")
    assert zopfli.zip_bytes < deflate.zip_bytes
    assert (zopfli.files, zopfli.unzipped_bytes) == (deflate.files, deflate.unzipped_bytes)
    with zipfile.ZipFile(zopfli.path) as z, zipfile.ZipFile(deflate.path) as d:
        assert z.testzip() is None
        assert [i.filename for i in z.infolist()] == [i.filename for i in d.infolist()]
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.external_attr == d.getinfo(info.filename).external_attr
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert z.read(info) == (src / info.filename.removeprefix("python/")).read_bytes()
        big = z.getinfo("python/lib/part.so")
        assert big.compress_size < d.getinfo("python/lib/part.so").compress_size
    assert unsafe_entry(zipfile.ZipFile(zopfli.path).infolist()) is None
    assert shutil.which("unzip"), "unzip is part of this machine's checks"
    proc = subprocess.run(["unzip", "-t", str(zopfli.path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "No errors detected" in proc.stdout, proc.stdout
    # deterministic, whatever the threads
    again = write_zip(src, tmp_path / "again.zip", prefix="python", encoder="zopfli")
    assert again.sha256 == zopfli.sha256


def test_zopfli_writer_headers_are_write_zips(tmp_path: Path) -> None:
    # With no file over the threshold every entry is level 9: the same bytes as write_zip,
    # so the hand-written headers are exactly zipfile's.
    src = tmp_path / "src"
    _tree(src)
    pairs = sorted(((p, "python/" + p.relative_to(src).as_posix()) for p in src.rglob("*")
                    if p.is_file()), key=lambda pair: pair[1])  # fmt: skip
    write_zip_zopfli(pairs, tmp_path / "mine.zip", min_bytes=1 << 40)
    reference = write_zip(src, tmp_path / "zipfile.zip", prefix="python")
    assert sha256_file(tmp_path / "mine.zip") == reference.sha256


def test_write_zip_deflates_at_level_9(tmp_path: Path) -> None:
    import zlib

    src = tmp_path / "src"
    src.mkdir()
    data = b"".join(b"%d: %s\n" % (i, b"abcdefghij" * (i % 7)) for i in range(20_000))
    (src / "data.txt").write_bytes(data)
    result = write_zip(src, tmp_path / "out.zip")
    level9 = zlib.compressobj(9, zlib.DEFLATED, -15)
    level6 = zlib.compressobj(6, zlib.DEFLATED, -15)
    size9 = len(level9.compress(data) + level9.flush())
    assert size9 < len(level6.compress(data) + level6.flush())
    with zipfile.ZipFile(result.path) as z:
        assert z.getinfo("data.txt").compress_size == size9


LIMIT = 1_000_000


@pytest.mark.parametrize(
    ("deflate_bytes", "requested", "available", "encoder", "min_bytes", "why"),
    [
        # 2% under: a direct upload takes it, plain deflate
        (980_000, "auto", True, "deflate", 0, None),
        (995_000, "auto", True, "zopfli", ZOPFLI_MIN_BYTES, "within 1% of what a direct upload"),
        (1_020_000, "auto", True, "zopfli", ZOPFLI_MIN_BYTES, "2.0% over what a direct upload"),
        # over by more than zopfli on the large files saves, less than on every file
        (1_030_000, "auto", True, "deflate", 0, "--zip-encoder zopfli (every file"),
        (1_060_000, "auto", True, "deflate", 0, "no lossless encoder brings it under"),
        (1_020_000, "auto", False, "deflate", 0, "pip install 'mlayer[zopfli]'"),
        (1_020_000, "deflate", True, "deflate", 0, None),
        (500_000, "zopfli", True, "zopfli", 0, "--zip-encoder zopfli (every file)"),
        (500_000, "zopfli", False, "deflate", 0, "zopfli is not installed"),
    ],
    ids=["under", "near", "over", "over-more", "far-over", "no-zopfli", "deflate", "zopfli",
         "zopfli-missing"],
)  # fmt: skip
def test_choose_zip_encoder(
    deflate_bytes: int,
    requested: str,
    available: bool,
    encoder: str,
    min_bytes: int,
    why: str | None,
) -> None:
    chosen = choose_zip_encoder(deflate_bytes, requested, available=available, limit=LIMIT)
    assert (chosen.encoder, chosen.zopfli_min_bytes) == (encoder, min_bytes)
    if why is None:
        assert chosen.why is None
    else:
        assert chosen.why is not None and why in chosen.why, chosen.why


def test_choose_zip_encoder_defaults_to_the_direct_limit() -> None:
    limit = largest_direct_zip()
    assert choose_zip_encoder(limit + 1, "auto", available=True).encoder == "zopfli"
    assert choose_zip_encoder(limit // 2, "auto", available=True).encoder == "deflate"

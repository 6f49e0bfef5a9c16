"""build-deps --zip-encoder: zopfli when deflate level 9 lands over or near the direct upload.

A real build (two small pins, one with an extension module) through the CLI, in process so
that the direct-upload limit and zopfli's file threshold can be made small enough for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlayer import archive
from mlayer.archive import largest_direct_zip, needs_s3
from mlayer.cli import cli
from mlayer.deps_layer import _zip_note

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _build(tmp_path: Path, name: str, encoder: str, *flags: str) -> dict[str, Any]:
    pins = _pins()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"orjson=={pins['orjson']}\nthreadpoolctl=={pins['threadpoolctl']}\n")
    result = CliRunner().invoke(
        cli,
        ["build-deps", "-r", str(requirements), "--runtime", "python3.11", "--layers-dir",
         str(tmp_path / name), "--cache-dir", str(tmp_path / "cache"), "--zip-encoder",
         encoder, "--json", *flags],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _files(zip_path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as z:
        assert z.testzip() is None
        return {info.filename: z.read(info) for info in z.infolist()}


@pytest.mark.slow
def test_auto_zips_with_zopfli_only_near_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a layer zipped at deflate level 9, and zopfli for files of 64 KiB and more
    # (orjson's extension module is about 240 KB)
    monkeypatch.setattr(archive, "ZOPFLI_MIN_BYTES", 64 * 1024)
    plain = _build(tmp_path, "deflate", "deflate")
    deflate_bytes = plain["manifest"]["zip_bytes"]
    assert plain["report"]["zip"]["encoder"] == "deflate"
    # when the direct-upload limit is that size (deflate is near it), auto takes zopfli
    monkeypatch.setattr(archive, "largest_direct_zip", lambda params=None: deflate_bytes)
    near = _build(tmp_path, "near", "auto")
    zipped = near["report"]["zip"]
    assert (zipped["encoder"], zipped["zopfli_min_bytes"]) == ("zopfli", 64 * 1024)
    assert zipped["deflate_bytes"] == deflate_bytes
    assert zipped["zopfli_bytes"] == near["manifest"]["zip_bytes"] < deflate_bytes
    assert Path(near["zip"]).stat().st_size == zipped["zopfli_bytes"]
    assert any(
        note.startswith(f"zip: deflate level 9 gives {deflate_bytes:,} bytes, within 1% of")
        and "a direct upload takes it" in note
        for note in near["notes"]
    ), near["notes"]
    # then the zip holds the same files, standard deflate that unzip and Python read
    assert _files(near["zip"]) == _files(plain["zip"])
    proc = subprocess.run(["unzip", "-t", near["zip"]], capture_output=True, text=True)
    assert proc.returncode == 0 and "No errors detected" in proc.stdout, proc.stdout
    layer = tmp_path / "unzipped"
    with zipfile.ZipFile(near["zip"]) as z:
        z.extractall(layer)
    check = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c",
         f"import sys; sys.path.insert(0, {str(layer / 'python')!r}); import orjson, "
         "threadpoolctl; print(orjson.dumps({'a': [1, 2]}).decode(), orjson.__file__)"],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.split()[0] == '{"a":[1,2]}'
    assert str(layer) in check.stdout
    # and far under the limit, auto keeps deflate: the very zip of --zip-encoder deflate
    monkeypatch.setattr(archive, "largest_direct_zip", lambda params=None: 2 * deflate_bytes)
    # (not the cached build of the same inputs: that one was zipped against the small limit)
    far = _build(tmp_path, "far", "auto", "--no-cache")
    assert far["report"]["zip"]["encoder"] == "deflate"
    assert far["manifest"]["sha256"] == plain["manifest"]["sha256"]
    assert not any(note.startswith("zip:") for note in far["notes"])


@pytest.mark.parametrize("extra", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_the_zip_note_asks_needs_s3(extra: int) -> None:
    size = largest_direct_zip() + extra
    note = _zip_note(
        {"zip": {"encoder": "zopfli", "why": "why", "deflate_bytes": size + 1000,
                 "zopfli_bytes": size, "zopfli_seconds": 12.0}}
    )  # fmt: skip
    assert note is not None
    verdict = "still over what a direct upload takes" if needs_s3(size) else "a direct upload"
    assert verdict in note
    assert needs_s3(size) is bool(extra)


def test_zip_note_for_deflate() -> None:
    assert _zip_note({"zip": {"encoder": "deflate", "why": None}}) is None
    assert _zip_note({}) is None
    note = _zip_note({"zip": {"encoder": "deflate", "why": "zopfli is not installed"}})
    assert note == "zip: zopfli is not installed"

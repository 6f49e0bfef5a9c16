"""mlayer's own pip for layer builds: provisioned once into the cache, checked, refused
clearly when it cannot be had; the script refuses an old pip for another Python."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlayer.build_pip import PIP_SHA256, PIP_VERSION, PIP_WHEEL, ensure_pip, pip_home
from mlayer.errors import BuildError
from mlayer.layer_script import script_path

ROOT = Path(__file__).resolve().parent.parent
# No index, no find-links, no config file: as on a machine without network.
OFFLINE = {
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "",
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
}


@pytest.fixture(scope="module")
def pip_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned pip wheel, downloaded from the index as a user would elsewhere."""
    dest = tmp_path_factory.mktemp("pip-wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--dest", str(dest), f"pip=={PIP_VERSION}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return dest / PIP_WHEEL


def test_offline_without_the_wheel_says_how_to_provision(tmp_path: Path) -> None:
    # given no package index and an empty cache
    cache = tmp_path / "cache"
    # when building
    proc = subprocess.run(
        [sys.executable, "-c", "from mlayer.cli import main; main()", "build-deps", "-r",
         str(ROOT / "requirements.txt"), "--runtime", "python3.11", "--cache-dir", str(cache),
         "--layers-dir", str(tmp_path / "layers")],
        capture_output=True, text=True, env={**os.environ, **OFFLINE}, cwd=ROOT,
    )  # fmt: skip
    # then one Error line says what failed and the two ways out
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: could not download pip {PIP_VERSION}, which mlayer runs for every build so "
        f"that the pip you have does not matter ({sys.executable} -m pip download: ERROR: No "
        f"matching distribution found for pip=={PIP_VERSION}); run the build once where the "
        "package index is reachable, or download the wheel elsewhere (python -m pip download "
        f"--no-deps pip=={PIP_VERSION}) and copy {PIP_WHEEL} into {cache}"
    )
    assert not pip_home(cache).exists()


def test_the_wheel_copied_into_the_cache_provisions_offline(
    pip_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the wheel copied into the cache, and no index
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    shutil.copy(pip_wheel, tmp_path / PIP_WHEEL)
    # when mlayer's pip is asked for
    pip = ensure_pip(tmp_path, sys.executable)
    # then it is unpacked from the wheel and runs, whatever pip this interpreter has
    assert pip.home == tmp_path / f"pip-{PIP_VERSION}"
    proc = subprocess.run([*pip.command(), "--version"], capture_output=True, text=True, cwd="/")
    assert proc.stdout.startswith(f"pip {PIP_VERSION} from {pip.home / 'pip'} (python 3.")
    # and a second call reuses it as it is
    assert ensure_pip(tmp_path, sys.executable) == pip


def test_a_wheel_with_another_sha256_is_refused(tmp_path: Path) -> None:
    (tmp_path / PIP_WHEEL).write_bytes(b"not pip")
    with pytest.raises(BuildError) as caught:
        ensure_pip(tmp_path, sys.executable)
    assert str(caught.value) == (
        f"{tmp_path / PIP_WHEEL} has sha256 {hashlib.sha256(b'not pip').hexdigest()}, not "
        f"PyPI's {PIP_SHA256} for pip {PIP_VERSION}; delete it (or check the index that served "
        "it) and retry"
    )
    assert not pip_home(tmp_path).exists()


def test_the_script_refuses_an_old_pip_for_another_python(tmp_path: Path) -> None:
    # given a pip that says it is 23.2.1 (a stand-in: the check reads its --version line)
    fake = tmp_path / "oldpip" / "pip"
    fake.mkdir(parents=True)
    (fake / "__main__.py").write_text(
        "import sys\nprint('pip 23.2.1 from /somewhere/pip (python 3.11)')\n"
        "sys.exit(0 if sys.argv[1:] == ['--version'] else 3)\n"
    )
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy==2.5.5\n")
    # when the script installs for python3.13 with it, run by this Python 3.11
    proc = subprocess.run(
        ["bash", str(script_path()), "install", "--out", str(tmp_path / "out"), "--runtime",
         "python3.13", "--arch", "x86_64", "-r", str(requirements), "--python", sys.executable,
         "--pip", str(fake.parent)],
        capture_output=True, text=True,
    )  # fmt: skip
    # then it stops before installing, and says why and what to do
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "get-layer-package.sh: pip 23.2.1 checks Requires-Python against Python 3.11, not the "
        "target 3.13; use pip 24.2 or newer (--pip DIR, or "
        f"{sys.executable} -m pip install 'pip>=24.2'), or a Python 3.13 (--python)"
    )
    assert not (tmp_path / "out" / "python").exists()

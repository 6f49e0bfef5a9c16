"""The model store on the function side (function/model_store.py, docs/CONTRACTS.md).

Archives are written by ``mlayer.archive.write_model_tar`` from the sample models and served
by moto (in process, or moto's HTTP server for the handler run in a subprocess).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from function_support import FUNCTION_DIR
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from moto.server import ThreadedMotoServer

import model
import model_store
from mlayer.archive import iter_files, write_model_tar
from model import ModelLoadError
from model_store import MARKER, Fetched, fetch, parse_uri, start_fetch

BUCKET = "mlayer-models"
ZEROS = "0" * 64


def _tar_of(directory: Path, out: Path) -> tuple[str, int]:
    files = [path.relative_to(directory).as_posix() for path in iter_files(directory)]
    return write_model_tar(directory, files, out)


def _uri(key: str, sha: str, size: int, bucket: str = BUCKET) -> str:
    return f"s3://{bucket}/{key}#sha256={sha}&size={size}"


class Store:
    """A moto bucket and helpers to publish archives into it."""

    def __init__(self, tmp_path: Path) -> None:
        self.client = boto3.client("s3", region_name="us-east-1")
        self.client.create_bucket(Bucket=BUCKET)
        self.tmp_path = tmp_path
        self.root = tmp_path / "store"

    def publish(self, directory: Path, name: str = "scorer-model") -> str:
        """The model directory's archive, uploaded at its content address; its MODEL_URI."""
        out = self.tmp_path / f"{name}.tar"
        sha, size = _tar_of(directory, out)
        key = f"mlayer/{name}/{sha}.tar"
        self.client.upload_file(str(out), BUCKET, key)
        return _uri(key, sha, size)

    def put(self, key: str, data: bytes) -> str:
        """Raw bytes at ``key``; the MODEL_URI that names them exactly."""
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)
        return _uri(key, hashlib.sha256(data).hexdigest(), len(data))

    def leftovers(self) -> list[str]:
        return sorted(os.listdir(self.root)) if self.root.exists() else []


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with mock_aws():
        yield Store(tmp_path)


def _inputs(loaded: model.Model) -> list[Any]:
    if loaded.input.kind == "text":
        return ["great product, works", "broke after a day, awful", "fine", ""]
    width = len(loaded.input.features)
    return [[float(row * 7 + column) for column in range(width)] for row in range(6)]


@pytest.mark.parametrize("sample", ["text_model_dir", "numeric_model_dir"])
def test_fetched_model_predicts_as_the_directory(
    store: Store, sample: str, request: pytest.FixtureRequest
) -> None:
    # given a sample model's archive in the store
    directory: Path = request.getfixturevalue(sample)
    uri = store.publish(directory)
    # when the function fetches it
    fetched = fetch(uri, store.root)
    # then it is unpacked at <root>/<sha256>, marked verified, with the same files
    sha = parse_uri(uri).sha256
    assert fetched.directory == store.root / sha
    assert not fetched.reused
    assert fetched.size == parse_uri(uri).size
    assert fetched.fetch_ms > 0 and fetched.unpack_ms >= 0 and fetched.verify_ms >= 0
    for path in iter_files(directory):
        name = path.relative_to(directory)
        assert (fetched.directory / name).read_bytes() == path.read_bytes()
    assert json.loads((fetched.directory / MARKER).read_text())["sha256"] == sha
    assert store.leftovers() == [sha]  # no staging directory left
    # and the model loaded from it predicts exactly as the directory's
    direct = model.load(directory)
    stored = model.load(fetched.directory)
    inputs = _inputs(direct)
    assert stored.predict(inputs) == direct.predict(inputs)


def _big_archive(tmp_path: Path) -> tuple[Path, str, int]:
    """A 20 MiB archive (random bytes: nothing to gain from compression anywhere)."""
    directory = tmp_path / "big"
    directory.mkdir()
    (directory / "manifest.json").write_text("{}")
    (directory / "weights.bin").write_bytes(os.urandom(20 * 1_048_576))
    sha, size = write_model_tar(directory, ["manifest.json", "weights.bin"], tmp_path / "big.tar")
    return directory, sha, size


def _counting_gets(client: Any) -> list[str | None]:
    ranges: list[str | None] = []
    client.meta.events.register(
        "before-call.s3.GetObject",
        lambda params, **kwargs: ranges.append(params.get("headers", {}).get("Range")),
    )
    return ranges


def test_parts_arrive_in_order_through_the_stream(store: Store, tmp_path: Path) -> None:
    # given an archive of several 8 MiB parts on S3 (moto in process: not a loopback endpoint)
    directory, sha, size = _big_archive(tmp_path)
    key = f"mlayer/big/{sha}.tar"
    store.client.upload_file(str(tmp_path / "big.tar"), BUCKET, key)
    client = boto3.client("s3", region_name="us-east-1")
    ranges = _counting_gets(client)
    # when it is fetched
    fetched = fetch(_uri(key, sha, size), store.root, client=client)
    # then it came in ranged GETs (s3transfer's parts), written in order: sha256 and files match
    assert len(ranges) == 3 and all(part and part.startswith("bytes=") for part in ranges)
    assert (fetched.directory / "weights.bin").read_bytes() == (
        directory / "weights.bin"
    ).read_bytes()


def test_loopback_endpoint_fetches_in_one_get(moto_server: str, tmp_path: Path) -> None:
    # given the same archive behind moto_server, which reads the whole object for every range
    _, sha, size = _big_archive(tmp_path)
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    client.create_bucket(Bucket=BUCKET)
    key = f"mlayer/big/{sha}.tar"
    client.upload_file(str(tmp_path / "big.tar"), BUCKET, key)
    ranges = _counting_gets(client)
    # when it is fetched: one GET
    fetched = fetch(_uri(key, sha, size), tmp_path / "store", client=client)
    assert ranges == [None]
    assert fetched.size == size


def test_reinit_reuses_the_verified_directory(store: Store, text_model_dir: Path) -> None:
    # given a model fetched once in this environment
    uri = store.publish(text_model_dir)
    first = fetch(uri, store.root)
    # when the object is gone and the init runs again
    parsed = parse_uri(uri)
    store.client.delete_object(Bucket=BUCKET, Key=parsed.key)
    again = fetch(uri, store.root)
    # then nothing is downloaded: the verified directory is reused
    assert again.reused
    assert again.directory == first.directory
    assert (again.unpack_ms, again.verify_ms) == (0.0, 0.0)
    assert model.load(again.directory).name == model.load(text_model_dir).name


def test_unverified_leftovers_are_replaced(store: Store, text_model_dir: Path) -> None:
    # given an init that died: a final directory without the marker, and a staging
    # directory of a process that is gone
    uri = store.publish(text_model_dir)
    sha = parse_uri(uri).sha256
    (store.root / sha).mkdir(parents=True)
    (store.root / sha / "metadata.json").write_text("half written")
    dead = store.root / ".staging-4194305-abc"  # above Linux's pid_max: never a live pid
    dead.mkdir()
    (dead / "x.joblib").write_bytes(b"x" * 1000)
    # when the model is fetched
    fetched = fetch(uri, store.root)
    # then both are gone and the directory holds the archive's files
    assert not fetched.reused
    assert store.leftovers() == [sha]
    assert (fetched.directory / "metadata.json").read_bytes() == (
        text_model_dir / "metadata.json"
    ).read_bytes()


def test_start_fetch_runs_in_the_background(store: Store, numeric_model_dir: Path) -> None:
    uri = store.publish(numeric_model_dir)
    pending = start_fetch(uri, store.root)
    result = pending.result()
    assert pending.done()
    assert isinstance(result, Fetched)
    assert result.directory == store.root / parse_uri(uri).sha256
    assert pending.result() is result


def test_an_interrupt_goes_through_and_leaves_nothing(
    store: Store, text_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a download interrupted (a signal in the fetching thread) after its first bytes
    uri = store.publish(text_model_dir)
    parsed = parse_uri(uri)
    archive = store.client.get_object(Bucket=BUCKET, Key=parsed.key)["Body"].read()
    client = boto3.client("s3", region_name="us-east-1")

    def interrupted(bucket: str, key: str, fileobj: Any, **kwargs: Any) -> None:
        fileobj.write(archive[:1536])  # manifest.json's header and part of its bytes
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "download_fileobj", interrupted)
    # when it is fetched: the interrupt itself comes out, not a ModelLoadError
    with pytest.raises(KeyboardInterrupt):
        fetch(uri, store.root, client=client)
    # and the half-unpacked staging directory is gone
    assert store.leftovers() == []


def test_tampered_object_is_refused_and_removed(store: Store, text_model_dir: Path) -> None:
    # given the archive published, then changed in place (same size, one byte flipped)
    uri = store.publish(text_model_dir)
    parsed = parse_uri(uri)
    data = bytearray(store.client.get_object(Bucket=BUCKET, Key=parsed.key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    store.client.put_object(Bucket=BUCKET, Key=parsed.key, Body=bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    # when it is fetched: the init fails, naming both hashes
    with pytest.raises(ModelLoadError) as caught:
        fetch(uri, store.root)
    assert str(caught.value) == (
        f"the object s3://{BUCKET}/{parsed.key} has sha256 {actual} but MODEL_URI expects "
        f"{parsed.sha256}: it was changed after publishing, or damaged on the way. Nothing was "
        f"loaded: {model_store.REPUBLISH}"
    )
    # and nothing is left behind
    assert store.leftovers() == []


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (+100, "is {actual:,} bytes but MODEL_URI says size={size:,}"),
        (-100, "is larger than MODEL_URI's size={size:,}"),
    ],
    ids=["object-shorter", "object-longer"],
)
def test_wrong_size_is_refused(
    store: Store, text_model_dir: Path, delta: int, expected: str
) -> None:
    uri = store.publish(text_model_dir)
    parsed = parse_uri(uri)
    wrong = _uri(parsed.key, parsed.sha256, parsed.size + delta)
    with pytest.raises(ModelLoadError) as caught:
        fetch(wrong, store.root)
    assert expected.format(actual=parsed.size, size=parsed.size + delta) in str(caught.value)
    assert "it is not the archive this function version was deployed with" in str(caught.value)
    assert store.leftovers() == []


def test_missing_bucket(store: Store) -> None:
    with pytest.raises(ModelLoadError) as caught:
        fetch(_uri("mlayer/m/x.tar", ZEROS, 10_240, bucket="no-such-bucket"), store.root)
    assert str(caught.value) == (
        "the bucket 'no-such-bucket' of MODEL_URI does not exist (seen from us-east-1): "
        f"{model_store.REPUBLISH}, or set MODEL_URI to the bucket the archive is in"
    )
    assert store.leftovers() == []


def test_missing_object(store: Store) -> None:
    with pytest.raises(ModelLoadError) as caught:
        fetch(_uri("mlayer/m/gone.tar", ZEROS, 10_240), store.root)
    assert str(caught.value) == (
        f"the model archive s3://{BUCKET}/mlayer/m/gone.tar does not exist (the bucket does): "
        f"it was deleted (mlayer prune?) or never uploaded: {model_store.REPUBLISH}, or roll "
        "back to a function version whose model is there"
    )
    assert store.leftovers() == []


@set_initial_no_auth_action_count(4)
def test_access_denied(tmp_path: Path, text_model_dir: Path) -> None:
    with mock_aws():
        # given (the 4 unauthenticated calls) a bucket, and a user without s3 permissions
        s3 = Store(tmp_path)  # 1: CreateBucket
        uri = s3.put("mlayer/m/model.tar", b"\0" * 10_240)  # 2: PutObject
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_user(UserName="function")  # 3
        key = iam.create_access_key(UserName="function")["AccessKey"]  # 4
        client = boto3.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            aws_session_token=None,
        )
        # when its function fetches the model
        with pytest.raises(ModelLoadError) as caught:
            fetch(uri, s3.root, client=client)
    # then the reason names the permission the role needs
    assert str(caught.value).startswith(
        f"access to the model archive s3://{BUCKET}/mlayer/m/model.tar is denied: the "
        f"function's execution role needs s3:GetObject on arn:aws:s3:::{BUCKET}/mlayer/m/model.tar"
    )
    assert s3.leftovers() == []


def test_unreachable_endpoint(tmp_path: Path) -> None:
    # given nothing listening on the endpoint
    with socket_closed() as port:
        client = boto3.client(
            "s3",
            region_name="us-east-1",
            endpoint_url=f"http://127.0.0.1:{port}",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
        )
        with pytest.raises(ModelLoadError) as caught:
            fetch(_uri("mlayer/m/x.tar", ZEROS, 10_240), tmp_path / "store", client=client)
    message = str(caught.value)
    assert message.startswith(f"cannot download the model archive s3://{BUCKET}/mlayer/m/x.tar: ")
    assert "S3 was not reachable" in message and "EndpointConnectionError" in message


@contextlib.contextmanager
def socket_closed() -> Iterator[int]:
    """A loopback port with nothing listening on it (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port


def test_no_room_fails_before_any_request(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # given 100 MB free and a 300 MiB archive in a bucket that does not even exist
    usage = SimpleNamespace(total=512 * 1_048_576, used=412 * 1_048_576, free=100 * 1_048_576)
    monkeypatch.setattr(model_store.shutil, "disk_usage", lambda path: usage)
    uri = _uri("mlayer/m/big.tar", ZEROS, 300 * 1_048_576, bucket="not-created")
    # when it is fetched: the room check fails first (a request would say "no bucket")
    with pytest.raises(ModelLoadError) as caught:
        fetch(uri, store.root)
    assert str(caught.value) == (
        f"no room for the model from the store: it needs 300.0 MB in {store.root} and 100.0 MB "
        "are free (of 512.0 MB). Give the function at least 712 MB of ephemeral storage: "
        "mlayer deploy-function --ephemeral-storage 712 (the function's EphemeralStorage size)"
    )
    assert store.leftovers() == []


def _bad_tar(add: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        manifest = b"{}"
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
        add(archive)
    return buffer.getvalue()


def _file(name: str) -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))

    return add


def _special(name: str, kind: bytes, linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(archive: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        archive.addfile(info)

    return add


@pytest.mark.parametrize(
    ("add", "problem"),
    [
        (_file("../evil.txt"), "member '../evil.txt' that climbs out of its directory ('..')"),
        (_file("/tmp/evil.txt"), "member '/tmp/evil.txt' with an absolute path"),
        (
            _special("passwd", tarfile.SYMTYPE, "/etc/passwd"),
            "member 'passwd' that is a link (to '/etc/passwd')",
        ),
        (
            _special("again", tarfile.LNKTYPE, "manifest.json"),
            "member 'again' that is a link (to 'manifest.json')",
        ),
        (
            _special("null", tarfile.CHRTYPE),
            "member 'null' that is a device, FIFO or other special file",
        ),
        (
            _special("pipe", tarfile.FIFOTYPE),
            "member 'pipe' that is a device, FIFO or other special file",
        ),
        (_special("tenant-a", tarfile.DIRTYPE), "member 'tenant-a/' that is a directory entry"),
        (
            _file("models/" * 20 + "../" * 21 + "evil.txt"),  # a pax path: over 100 bytes
            f"member {'models/' * 20 + '../' * 21 + 'evil.txt'!r} that climbs out of its "
            "directory ('..')",
        ),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device", "fifo", "directory", "pax-dotdot"],
)
def test_unsafe_member_is_refused(
    store: Store, tmp_path: Path, add: Callable[[tarfile.TarFile], None], problem: str
) -> None:
    # given an archive whose sha256 and size are right, but with an unsafe member
    uri = store.put("mlayer/m/bad.tar", _bad_tar(add))
    # when it is fetched
    with pytest.raises(ModelLoadError) as caught:
        fetch(uri, store.root)
    # then the member is named, nothing is kept, nothing was written outside
    assert str(caught.value) == (
        f"the archive s3://{BUCKET}/mlayer/m/bad.tar has {problem}: it is not unpacked (the "
        f"model store's archives hold regular files only); {model_store.REPUBLISH}"
    )
    assert store.leftovers() == []
    assert not (tmp_path / "evil.txt").exists()


def test_an_unsafe_member_in_a_tampered_object_is_a_hash_error(store: Store) -> None:
    # given an archive with a symlink, and a MODEL_URI naming other bytes of the same size
    data = _bad_tar(_special("passwd", tarfile.SYMTYPE, "/etc/passwd"))
    key = "mlayer/m/bad.tar"
    store.put(key, data)
    # when it is fetched: unpacking stopped at the link, the rest was still hashed, and the
    # hash (the object is not what was published) is the reason given
    with pytest.raises(ModelLoadError, match=r"^the object .* has sha256 .* but MODEL_URI expects"):
        fetch(_uri(key, "1" * 64, len(data)), store.root)
    assert store.leftovers() == []


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda tar: b"not a tar archive at all" * 1000,
            "the tar header at byte 0 has a wrong checksum: the object is not a tar archive as "
            "mlayer writes them",
        ),
        (
            lambda tar: tar[: 1024 + 512],  # the marker's first block only
            "the archive stops at byte 1,536 without its end-of-archive marker (two zero "
            "blocks): it was cut short",
        ),
        (
            lambda tar: tar + b"\x00signature",
            "the archive has data after its end-of-archive marker (a non-zero byte at byte "
            "{size:,}): it is not one archive as mlayer writes them",
        ),
    ],
    ids=["not-a-tar", "truncated", "trailing-garbage"],
)
def test_malformed_archive_with_the_right_hash(
    store: Store, make: Callable[[bytes], bytes], reason: str
) -> None:
    # given bytes that are not an archive as mlayer writes it, published under their own hash
    tar = _bad_tar(lambda archive: None)  # manifest.json (header, 2 bytes, padding), then zeros
    assert len(tar) == 10240 and tar[1024:] == bytes(10240 - 1024)
    data = make(tar)
    uri = store.put("mlayer/m/junk.tar", data)
    # when they are fetched: the init fails with what is wrong, and the fix
    with pytest.raises(ModelLoadError) as caught:
        fetch(uri, store.root)
    assert str(caught.value) == (
        f"cannot unpack s3://{BUCKET}/mlayer/m/junk.tar into {store.root}: "
        + reason.format(size=len(tar) + 1)
        + f"; {model_store.REPUBLISH}"
    )
    assert store.leftovers() == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/opt/model", "is not s3://<bucket>/<key>#..."),
        ("s3://bucket/key.tar", "is not s3://<bucket>/<key>#..."),
        ("s3://bucket/key.tar#size=10", "has no sha256=<64 lowercase hex digits>"),
        (f"s3://bucket/key.tar#sha256={'A' * 64}&size=10", "has no sha256=<64 lowercase"),
        (f"s3://bucket/key.tar#sha256={ZEROS}", "has no size=<bytes>"),
        (f"s3://bucket/key.tar#sha256={ZEROS}&size=-1", "has no size=<bytes>"),
        (f"s3://bucket/key.tar#sha256={ZEROS}&size=0", "has no size=<bytes>"),
    ],
    ids=["path", "no-fragment", "no-sha", "upper-hex", "no-size", "negative", "zero"],
)
def test_malformed_uri(text: str, problem: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        start_fetch(text)
    message = str(caught.value)
    assert message.startswith(f"MODEL_URI {text!r} {problem}")
    assert message.endswith(
        "set it to s3://<bucket>/<key>#sha256=<hex64>&size=<bytes> as mlayer deploy-function "
        "writes it (from the archive's manifest in layers/)"
    )


def test_parse_uri_round_trips() -> None:
    text = f"s3://b/mlayer/scorer-model/{ZEROS}.tar#sha256={ZEROS}&size=123"
    parsed = parse_uri(text)
    assert (parsed.bucket, parsed.key, parsed.size) == (
        "b",
        f"mlayer/scorer-model/{ZEROS}.tar",
        123,
    )
    assert str(parsed) == text


def test_get_model_prefers_model_uri(
    store: Store, text_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given MODEL_URI and a MODEL_DIR that does not exist
    uri = store.publish(text_model_dir)
    monkeypatch.setattr(model, "_LOADED", {})
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    # when the environment's model is asked for
    loaded = model.get_model({"MODEL_URI": uri, "MODEL_DIR": str(tmp_path / "nowhere")})
    # then it comes from the store, unpacked under the temporary directory
    sha = parse_uri(uri).sha256
    assert loaded.directory == tmp_path / "tmp" / "mlayer-model" / sha
    assert loaded.store is not None
    assert set(loaded.store) == {
        "uri", "bytes", "fetch_ms", "unpack_ms", "verify_ms", "reused", "wait_ms"
    }  # fmt: skip
    assert loaded.store["uri"] == uri and loaded.store["reused"] is False
    assert model.get_model({"MODEL_URI": uri}) is loaded  # kept for the environment


def _function_env(url: str, tmp: Path, uri: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "TMPDIR": str(tmp),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        "MODEL_URI": uri,
        "PYTHONWARNINGS": "error",  # as the smoke test runs the function
    }


_INIT_AND_INVOKE = """
import json, lambda_function
try:
    response = lambda_function.lambda_handler({"records": %s}, None)
except Exception as exc:
    print(json.dumps({"message": "invoke raised", "type": type(exc).__name__}))
else:
    print(json.dumps({"message": "response", "labels": [p["label"] for p in response["predictions"]]}))
"""


def _run_function(env: dict[str, str], records: list[Any]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-c", _INIT_AND_INVOKE % json.dumps(records)],
        cwd=FUNCTION_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # no warning
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_handler_init_fetches_and_logs_the_store(
    moto_server: str, text_model_dir: Path, tmp_path: Path
) -> None:
    # given the text model's archive in a bucket behind an HTTP endpoint
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    s3.create_bucket(Bucket=BUCKET)
    sha, size = _tar_of(text_model_dir, tmp_path / "model.tar")
    key = f"mlayer/scorer-model/{sha}.tar"
    s3.upload_file(str(tmp_path / "model.tar"), BUCKET, key)
    uri = _uri(key, sha, size)
    environment_tmp = tmp_path / "environment-tmp"
    environment_tmp.mkdir()
    env = _function_env(moto_server, environment_tmp, uri)
    texts = ["great, works, love it", "awful, broke, refund"]
    expected = model.load(text_model_dir).predict(texts).labels

    # when the function's module is imported (its init) and invoked
    logs = _run_function(env, texts)
    # then "model loaded" carries the store's figures, and the predictions are the model's
    (loaded,) = [line for line in logs if line["message"] == "model loaded"]
    store = loaded["store"]
    assert store["uri"] == uri and store["bytes"] == size and store["reused"] is False
    assert store["fetch_ms"] > 0 and store["unpack_ms"] >= 0 and store["wait_ms"] >= 0
    assert loaded["load_ms"] > 0
    assert logs[-1] == {"message": "response", "labels": expected}
    assert (environment_tmp / "mlayer-model" / sha / MARKER).is_file()

    # when the environment initialises again (same /tmp), the object now gone
    s3.delete_object(Bucket=BUCKET, Key=key)
    logs = _run_function(env, texts)
    (loaded,) = [line for line in logs if line["message"] == "model loaded"]
    assert loaded["store"]["reused"] is True
    assert logs[-1] == {"message": "response", "labels": expected}

    # when another environment (its own /tmp) starts: the init fails, every invoke raises
    other_tmp = tmp_path / "other-tmp"
    other_tmp.mkdir()
    logs = _run_function(_function_env(moto_server, other_tmp, uri), texts)
    (failed,) = [line for line in logs if line["message"] == "model load failed"]
    assert failed["error"].startswith(f"the model archive s3://{BUCKET}/{key} does not exist")
    assert logs[-1] == {"message": "invoke raised", "type": "ModelLoadError"}
    assert os.listdir(other_tmp / "mlayer-model") == []

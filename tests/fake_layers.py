"""Small hand-made layer builds (zip + manifest, as docs/CONTRACTS.md "`layers/`: builds on disk" describes)
and a moto-backed function, for the publish / rollback / status / deploy tests; and the
givens those tests share (the deps layer published and a function linked to it, a model
version published), done through the CLI as a user would.

The zips are tiny but real: deterministic, with ``python/`` or ``model/`` at the root, and a
manifest whose sha256 and sizes are measured from the zip, exactly as the builds write them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from mlayer.cli import cli

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
REGION = "us-east-1"


def _zip(files: dict[str, bytes], path: Path, compress: bool = True) -> tuple[str, int, int]:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = method
            zf.writestr(info, files[name])
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), len(data), sum(len(v) for v in files.values())


def write_deps_build(
    layers_dir: Path,
    runtime: str = "python3.11",
    arch: str = "x86_64",
    *,
    marker: str = "1",
    filler_bytes: int = 0,
) -> Path:
    """layers/deps-<runtime>-<arch>.zip + .json; ``filler_bytes`` of random (incompressible) data."""
    files = {
        "python/fakelib/__init__.py": f"VERSION = {marker!r}\n".encode(),
        "python/fakelib-1.0.dist-info/METADATA": b"Name: fakelib\nVersion: 1.0\n",
    }
    if filler_bytes:
        files["python/fakelib/blob.bin"] = os.urandom(filler_bytes)
    path = layers_dir / f"deps-{runtime}-{arch}.zip"
    sha, zip_bytes, unzipped = _zip(files, path, compress=not filler_bytes)
    manifest = {
        "kind": "deps",
        "runtime": runtime,
        "arch": arch,
        "sha256": sha,
        "zip_bytes": zip_bytes,
        "unzipped_bytes": unzipped,
        "files": len(files),
        "packages": {"fakelib": "1.0"},
        "bytecode": False,
        "method": "pip",
        "requirements_sha256": "0" * 64,
        "created": "2026-11-23T06:00:00Z",
    }
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=2))
    return path


def write_model_build(
    layers_dir: Path,
    version: int,
    name: str = "sentiment",
    *,
    weights: str | None = None,
    content: str | None = None,
) -> Path:
    """layers/model-<name>-v<N>.zip + .json with model/manifest.json inside.

    The model file differs per version unless ``content`` names it: builds with the same
    ``content`` are the same model under other build numbers.
    """
    if content is not None:
        joblib_bytes = f"model {name} {content}".encode()
    else:
        joblib_bytes = f"model {name} v{version} {weights or ''}".encode()
    metadata = {
        "name": name,
        "stages": [f"{name}.joblib"],
        "input": {"kind": "text", "field": "text"},
        "labels": ["negative", "positive"],
        "versions": {"python": "3.11.7", "scikit-learn": "1.7.2", "numpy": "2.2.6"},
        "created": "2026-11-23T06:00:00Z",
        "examples": [{"text": "great product"}],
    }
    manifest = {
        **metadata,
        "version": version,
        "files": {f"{name}.joblib": hashlib.sha256(joblib_bytes).hexdigest()},
    }
    files = {
        f"model/{name}.joblib": joblib_bytes,
        "model/metadata.json": json.dumps(metadata).encode(),
        "model/manifest.json": json.dumps(manifest).encode(),
    }
    path = layers_dir / f"model-{name}-v{version}.zip"
    sha, zip_bytes, unzipped = _zip(files, path)
    sidecar = {
        "kind": "model",
        **manifest,
        "sha256": sha,
        "zip_bytes": zip_bytes,
        "unzipped_bytes": unzipped,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return path


def recorded(zip_path: Path) -> dict[str, Any]:
    """The sidecar manifest of a fake build, with its model identity added."""
    from mlayer.contracts import model_identity

    data: dict[str, Any] = json.loads(zip_path.with_suffix(".json").read_text())
    data["identity"] = model_identity(data)
    return data


def carries(zip_path: Path) -> str:
    """The Description publish-model gives a function version carrying this build."""
    data = recorded(zip_path)
    return (
        f"mlayer model {data['name']} v{data['version']} sha256={data['sha256']} "
        f"identity={data['identity']}"
    )


def role_arn(iam: Any) -> str:
    """A role moto's Lambda accepts (it checks the role exists in its IAM)."""
    try:
        return str(iam.get_role(RoleName="scorer-role")["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        trust = {"Version": "2012-10-17", "Statement": []}
        role = iam.create_role(RoleName="scorer-role", AssumeRolePolicyDocument=json.dumps(trust))
        return str(role["Role"]["Arn"])


def handler_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("lambda_function.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def create_function(
    lam: Any, iam: Any, name: str = "scorer", layers: list[str] | None = None
) -> dict[str, Any]:
    """A function created straight through boto3 (not deploy-function)."""
    result: dict[str, Any] = lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role_arn(iam),
        Handler="lambda_function.lambda_handler",
        Code={"ZipFile": handler_zip()},
        Layers=layers or [],
    )
    return result


def publish_raw_layer(lam: Any, name: str, description: str = "", body: bytes = b"x") -> str:
    """A layer version not published by mlayer (or with a hand-written Description)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("python/other.py", body)
    result = lam.publish_layer_version(
        LayerName=name, Description=description, Content={"ZipFile": buffer.getvalue()}
    )
    return str(result["LayerVersionArn"])


def layer_list(lam: Any, function: str, qualifier: str | None = None) -> list[str]:
    kwargs = {"FunctionName": function}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    config = lam.get_function_configuration(**kwargs)
    return [layer["Arn"] for layer in config.get("Layers") or []]


def layer_version_arn(lam: Any, layer: str, version: int) -> str:
    arn = lam.get_layer_version(LayerName=layer, VersionNumber=version)["LayerVersionArn"]
    return str(arn)


def _mlayer(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def function_on_deps_layer(lam: Any, iam: Any, layers: Path, name: str = "scorer") -> None:
    """Given (inside mock_aws): ``mlayer publish-deps`` of a fake deps build into ``layers``,
    and function ``name`` created linked to that layer version."""
    write_deps_build(layers)
    _mlayer("publish-deps", "--function", name, "--layers-dir", str(layers))
    create_function(lam, iam, name, layers=[layer_version_arn(lam, f"{name}-deps", 1)])


def publish_model(layers: Path, version: int, *extra: str) -> Result:
    """``mlayer publish-model`` of a fake model build ``version`` for function "scorer"."""
    return _mlayer(
        "publish-model", str(write_model_build(layers, version)), "--function", "scorer", *extra
    )


def write_model_archive(
    layers_dir: Path,
    version: int,
    name: str = "sentiment",
    *,
    content: str | None = None,
    peak_mb: float | None = 80.0,
    payload_bytes: int = 0,
) -> Path:
    """layers/model-<name>-v<N>.tar + .json, as ``build-model --store s3`` writes them.

    ``peak_mb`` is the smoke test's measured peak memory the sidecar records;
    ``payload_bytes`` pads the model file (a bigger archive).
    """
    from mlayer.archive import write_model_tar

    if content is not None:
        joblib_bytes = f"model {name} {content}".encode()
    else:
        joblib_bytes = f"model {name} v{version}".encode()
    joblib_bytes += b"\0" * payload_bytes
    source = layers_dir / f".src-{name}-v{version}"
    source.mkdir(parents=True, exist_ok=True)
    (source / f"{name}.joblib").write_bytes(joblib_bytes)
    manifest = {
        "name": name,
        "version": version,
        "stages": [f"{name}.joblib"],
        "input": {"kind": "text", "field": "text"},
        "labels": ["negative", "positive"],
        "examples": [{"text": "great product"}],
        "files": {f"{name}.joblib": hashlib.sha256(joblib_bytes).hexdigest()},
    }
    (source / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
    path = layers_dir / f"model-{name}-v{version}.tar"
    sha, size = write_model_tar(source, ["manifest.json", f"{name}.joblib"], path)
    sidecar = {
        "kind": "model",
        "package": "store",
        **manifest,
        "sha256": sha,
        "zip_bytes": size,
        "unzipped_bytes": len(joblib_bytes) + (source / "manifest.json").stat().st_size,
        "smoke_test": {"records": 1, "max_memory_mb": peak_mb} if peak_mb else {"skipped": "x"},
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return path

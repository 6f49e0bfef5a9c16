"""What to run locally for a deployed function: its code, its linked layers, its settings.

The function's configuration (or an alias's / version's) comes from the endpoint. Its layer
versions are fetched from ``Content.Location`` when the endpoint serves them (AWS: a
presigned URL); moto does not (``Location`` is ``s3://``), so a layer is then taken from a
local build in ``layers/`` whose sha256 equals the published ``CodeSha256`` (builds are
deterministic: the same inputs give the same sha256). The code is treated the same way:
the deployed ``CodeSha256`` must match the local ``function/`` directory zipped as
``deploy-function`` zips it, unless ``local_code`` asks to run the local code as it is.

Unzipped layers and code are cached under ``~/.cache/mlayer`` by content hash, so repeated
runs start in milliseconds instead of unzipping 180 MB each time.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlayer.errors import ConfigError, NotFoundError
from mlayer.lambda_env.environment import LambdaEnvironment, prepare_opt
from mlayer.lambda_env.runtime_dir import cache_root, inspect_interpreter
from mlayer.manifests import recorded_sha256

if TYPE_CHECKING:
    from mlayer.lambda_env.snapshot import SnapshotTemplate
    from mlayer.local.routing import Route


@dataclass(frozen=True)
class ResolvedLayer:
    arn: str
    sha256: str  # hex
    zip_path: Path
    source: str  # "endpoint" or "local build layers/<name>.zip"
    description: str = ""


@dataclass
class LocalFunction:
    """A deployed function, ready to run locally."""

    name: str
    arn: str
    version: str  # "$LATEST" or the version number an alias routes to
    qualifier: str | None
    runtime: str
    arch: str
    memory_mb: int
    timeout_s: float
    handler: str
    environment: dict[str, str]
    task_dir: Path
    opt_dir: Path
    layers: list[ResolvedLayer]
    code_source: str
    python: str
    role: str = ""
    notes: list[str] = field(default_factory=list)
    # A store-backed function's model manifest (MODEL_URI), read at resolve time.
    stored_manifest: dict[str, Any] | None = None
    # New environments are restored from one snapshot (SnapStart applied, or --snapstart).
    snapstart: bool = False

    def model_metadata(self) -> dict[str, Any] | None:
        """The model's manifest: a stored model's, else the model layer's manifest.json
        (else metadata.json) under MODEL_DIR, if any."""
        if self.stored_manifest is not None:
            return self.stored_manifest
        model_dir = Path(self.environment.get("MODEL_DIR") or self.opt_dir / "model")
        for name in ("manifest.json", "metadata.json"):
            path = model_dir / name
            if path.is_file():
                data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
                return data
        return None

    def environment_for(
        self,
        *,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        memory_mb: int | None = None,
        timeout_s: float | None = None,
        template: SnapshotTemplate | None = None,
    ) -> LambdaEnvironment:
        """A new (not yet started) execution environment of this function; with
        ``template`` (see :meth:`snapshot_template`), one restored from its snapshot."""
        if template is not None:
            return template.environment()
        return LambdaEnvironment(
            **self._environment_args(extra_env, log_path, memory_mb, timeout_s)
        )

    def snapshot_template(
        self, *, extra_env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> SnapshotTemplate:
        """The SnapStart template of this function (not yet initialised): the environments
        of a run restore from one template (:mod:`mlayer.lambda_env.snapshot`)."""
        from mlayer.lambda_env.snapshot import SnapshotTemplate

        return SnapshotTemplate(**self._environment_args(extra_env, log_path, None, None))

    def _environment_args(
        self,
        extra_env: dict[str, str] | None,
        log_path: Path | None,
        memory_mb: int | None,
        timeout_s: float | None,
    ) -> dict[str, Any]:
        env = dict(self.environment)
        env.update(extra_env or {})
        return dict(
            task_dir=self.task_dir,
            opt_dir=self.opt_dir,
            python=self.python,
            env=env,
            memory_mb=memory_mb or self.memory_mb,
            timeout_s=timeout_s or self.timeout_s,
            function_name=self.name,
            handler=self.handler,
            log_path=log_path,
            function_version=self.version,
            function_arn=self.arn,
        )


def _hex(code_sha256_b64: str) -> str:
    return base64.b64decode(code_sha256_b64).hex()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_builds(layers_dir: Path) -> dict[str, Path]:
    """sha256 (hex) -> zip of every build in ``layers_dir`` (from the manifests beside them)."""
    builds: dict[str, Path] = {}
    if not layers_dir.is_dir():
        return builds
    for manifest in sorted(layers_dir.glob("*.json")):
        sha256 = recorded_sha256(manifest)
        zip_path = manifest.with_suffix(".zip")
        if sha256 is not None and zip_path.is_file():
            builds[sha256] = zip_path
    return builds


def _download(url: str, sha256: str, what: str) -> Path:
    """Fetch a zip served by the endpoint into the cache, checked against its sha256."""
    target = cache_root() / "zips" / f"{sha256}.zip"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        got = _sha256_file(Path(tmp))
        if got != sha256:
            raise ConfigError(f"{what} downloaded with sha256 {got}, expected {sha256}; retry")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _build_hint(description: str, arn: str) -> str:
    from mlayer.contracts import parse_description

    record = parse_description(description)
    if record is not None and record.kind == "deps":
        return f"`mlayer build-deps --runtime {record.runtime} --arch {record.arch}`"
    if record is not None and record.kind == "model":
        return f"`mlayer build-model MODEL_DIR --version {record.version}` for model {record.name}"
    return f"the build that produced {arn}"


def resolve_layer(
    lam: Any,
    arn: str,
    layers_dir: Path,
    builds: dict[str, Path],
    *,
    carried: str = "",
    code_size: int | None = None,
) -> ResolvedLayer:
    """One linked layer version as a local zip.

    A deleted layer version (an alias rolled back to a function version that links one) is
    still served by Lambda but its content can no longer be fetched: the build in
    ``layers_dir`` whose sha256 the function version recorded (``carried``, its Description)
    and whose size is the linked ``code_size`` is used instead.

    Raises:
        NotFoundError: the version no longer exists and no local build holds it, or neither
            the endpoint nor a local build can provide its content; each names the fix.
    """
    from mlayer.lambda_api import get_layer_version

    version = get_layer_version(lam, arn)
    if version is None:
        return _deleted_layer(arn, layers_dir, builds, carried, code_size)
    content = version.get("Content") or {}
    sha256 = _hex(content.get("CodeSha256") or "")
    description = str(version.get("Description") or "")
    local = builds.get(sha256)
    if local is not None and _sha256_file(local) == sha256:
        return ResolvedLayer(arn, sha256, local, f"local build {local}", description)
    location = str(content.get("Location") or "")
    if location.startswith(("https://", "http://")):
        path = _download(location, sha256, f"layer {arn}")
        return ResolvedLayer(arn, sha256, path, "endpoint", description)
    raise NotFoundError(
        f"layer {arn} (sha256 {sha256[:12]}…) cannot be run locally: the endpoint does not "
        f"serve its content and no build in {layers_dir}/ has that sha256. Rebuild it with "
        f"{_build_hint(description, arn)} (the same inputs give the same sha256), or pass "
        "--layers-dir with the directory that holds it"
    )


def _deleted_layer(
    arn: str, layers_dir: Path, builds: dict[str, Path], carried: str, code_size: int | None
) -> ResolvedLayer:
    from mlayer.contracts import parse_version_record

    record = parse_version_record(carried)
    sha256 = record.sha256 if record else None
    local = builds.get(sha256) if sha256 else None
    # The sizes must agree too: the record is the model layer's, and this may be another.
    if (
        local is not None
        and sha256 is not None
        and (code_size is None or local.stat().st_size == code_size)
        and _sha256_file(local) == sha256
    ):
        return ResolvedLayer(arn, sha256, local, f"local build {local} (layer version deleted)")
    if record is not None and sha256 is not None:
        fix = (
            f"put the build of model {record.name} v{record.version} (sha256 {sha256[:12]}…) "
            f"back in {layers_dir}/ or pass --layers-dir with the directory that holds it; "
            f"else rebuild it (`mlayer build-model MODEL_DIR --version {record.version}`) and "
            "publish it again (mlayer publish-model)"
        )
    elif record is not None:
        fix = (
            f"rebuild model {record.name} v{record.version} (`mlayer build-model MODEL_DIR "
            f"--version {record.version}`) and publish it again (mlayer publish-model)"
        )
    else:
        fix = "publish the layer again (mlayer publish-model or publish-deps) and relink it"
    raise NotFoundError(
        f"layer version {arn} linked to the function was deleted, so its content cannot be "
        f"fetched; {fix}"
    )


def _unpack_cached(kind: str, key: str, fill: Any) -> Path:
    """A directory under the cache named by ``key``, filled once by ``fill(dir)``."""
    root = cache_root() / kind
    target = root / key
    if (target / ".complete").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
        try:
            fill(staging / "d")
            (staging / "d" / ".complete").write_text("")
            if target.exists():
                shutil.rmtree(target)
            (staging / "d").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def opt_for(layers: list[ResolvedLayer]) -> Path:
    """The layers unzipped in order (Lambda's /opt), cached by their hashes."""
    key = hashlib.sha256(":".join(layer.sha256 for layer in layers).encode()).hexdigest()[:24]
    return _unpack_cached("opt", key, lambda d: prepare_opt([x.zip_path for x in layers], d))


def _task_from_zip(data: bytes, sha256: str) -> Path:
    def fill(directory: Path) -> None:
        import io
        import zipfile

        directory.mkdir(parents=True)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.extractall(directory)

    return _unpack_cached("task", sha256[:24], fill)


def find_python(runtime: str, python: str | None) -> str:
    """An interpreter of the runtime's Python version: ``python``, this one, or on PATH.

    Raises:
        ConfigError: none found, with the ways out.
    """
    wanted = runtime.removeprefix("python")
    if python:
        found = inspect_interpreter(python)
        if found.version != wanted:
            raise ConfigError(
                f"--python {python} is Python {found.version} but the function runs {runtime}; "
                f"pass a Python {wanted} interpreter"
            )
        return python
    # The same search build-deps uses: a pyenv shim for an inactive version is on PATH but
    # does not run, so each candidate must start and report the right version.
    from mlayer.interpreters import locate_interpreter

    search = locate_interpreter(wanted)
    if search.path:
        return search.path
    raise ConfigError(
        f"the function runs {runtime}, and running it locally needs a Python {wanted} "
        f"interpreter (its layers hold cp{wanted.replace('.', '')} extension modules); none "
        f"was found (on PATH, in pyenv, or by uv). Install one and pass --python PATH, or "
        f"deploy with layers built for this Python ({sys.version_info.major}.{sys.version_info.minor}): mlayer build-deps "
        f"--runtime python{sys.version_info.major}.{sys.version_info.minor}"
    )


def _machine_arch() -> str:
    machine = os.uname().machine
    return {"aarch64": "arm64", "arm64": "arm64"}.get(machine, "x86_64")


def resolve_function(
    lam: Any,
    *,
    function: str,
    qualifier: str | None = None,
    layers_dir: Path = Path("layers"),
    function_dir: Path = Path("function"),
    local_code: bool = False,
    python: str | None = None,
    s3: Any | None = None,
    snapstart: bool | None = None,
) -> LocalFunction:
    """Everything needed to run ``function`` (at ``qualifier``) locally.

    ``snapstart`` None: new environments are restored from a snapshot when SnapStart
    applies to the version (:func:`mlayer.snapstart.applies`), as in Lambda; True / False
    force it on (python3.12+ only, as Lambda) or off for this run.

    An alias resolves to its primary version; :func:`resolve_routes` adds its canaries.

    A store-backed function (MODEL_URI) downloads its model itself, from the endpoint, into
    its own /tmp; its manifest (for sample records) comes from the archive's head through
    ``s3``, else from a local build with the archive's sha256.

    Raises:
        NotFoundError: unknown function, alias, or a layer no source can provide.
        ConfigError: the deployed code differs from ``function_dir``; no interpreter for the
            runtime; an architecture this machine cannot run.
    """
    from mlayer.deploy import zip_function
    from mlayer.lambda_api import get_configuration

    config = get_configuration(lam, function, qualifier)
    name = str(config["FunctionName"])
    notes: list[str] = []
    version = str(config.get("Version") or "$LATEST")
    runtime = str(config.get("Runtime") or "")
    if not runtime.startswith("python3."):
        raise ConfigError(f"function {name} has runtime {runtime or 'none'}; mlayer runs python3.x")
    arch = (config.get("Architectures") or ["x86_64"])[0]
    if arch != _machine_arch():
        raise ConfigError(
            f"function {name} is built for {arch} and this machine is {_machine_arch()}: its "
            f"layers' extension modules cannot load here. Deploy an {_machine_arch()} variant "
            f"for local runs (mlayer build-deps --arch {_machine_arch()})"
        )
    use_snapstart = _snapstart(lam, name, version, runtime, snapstart, notes)
    interpreter = find_python(runtime, python)

    local = zip_function(function_dir)
    deployed_sha = str(config.get("CodeSha256") or "")
    if local_code:
        code_source = f"local {function_dir}/ (--local-code)"
        if deployed_sha and deployed_sha != local.code_sha256_b64:
            notes.append(f"the local code in {function_dir}/ differs from the deployed code")
    elif deployed_sha == local.code_sha256_b64:
        code_source = f"{function_dir}/ (same sha256 as deployed)"
    else:
        raise ConfigError(
            f"the code deployed to {name} (CodeSha256 {deployed_sha}) is not the code in "
            f"{function_dir}/ ({local.code_sha256_b64}), and the endpoint does not serve "
            "deployed code. Deploy it (mlayer deploy-function), point --function-dir at the "
            "deployed code, or pass --local-code to run the local code as it is"
        )
    task_dir = _task_from_zip(local.data, local.sha256)

    builds = local_builds(layers_dir)
    carried = str(config.get("Description") or "")
    layers = [
        resolve_layer(
            lam, layer["Arn"], layers_dir, builds, carried=carried, code_size=layer.get("CodeSize")
        )
        for layer in config.get("Layers") or []
    ]
    opt_dir = opt_for(layers)
    env = dict((config.get("Environment") or {}).get("Variables") or {})
    for key, value in env.items():
        if value == "/opt" or value.startswith("/opt/"):  # paths into Lambda's /opt: ours
            env[key] = str(opt_dir) + value[len("/opt") :]
    return LocalFunction(
        name=name,
        arn=str(config.get("FunctionArn") or ""),
        version=version,
        qualifier=qualifier,
        runtime=runtime,
        arch=arch,
        memory_mb=int(config.get("MemorySize") or 128),
        timeout_s=float(config.get("Timeout") or 3),
        handler=str(config.get("Handler") or "lambda_function.lambda_handler"),
        environment=env,
        task_dir=task_dir,
        opt_dir=opt_dir,
        layers=layers,
        code_source=code_source,
        python=interpreter,
        role=str(config.get("Role") or ""),
        notes=notes,
        stored_manifest=_stored_manifest(env, layers_dir, s3),
        snapstart=use_snapstart,
    )


def _snapstart(
    lam: Any, name: str, version: str, runtime: str, forced: bool | None, notes: list[str]
) -> bool:
    from mlayer import snapstart as snapstart_setting

    if forced is None:
        return snapstart_setting.applies(lam, name, version)
    if forced and not snapstart_setting.runs_on(runtime):
        raise ConfigError(
            f"--snapstart: function {name} runs {runtime}, and SnapStart runs on python3.12 "
            "and later only; drop --snapstart, or deploy the function on python3.12+ "
            "(mlayer build-deps --runtime python3.13, deploy-function --runtime python3.13)"
        )
    if forced and version == "$LATEST":
        notes.append(
            "SnapStart forced on $LATEST (--snapstart): Lambda restores published versions "
            "and aliases only, so in AWS $LATEST starts on demand"
        )
    return forced


def _stored_manifest(
    env: dict[str, str], layers_dir: Path, s3: Any | None
) -> dict[str, Any] | None:
    from mlayer import model_store
    from mlayer.layers import model_build_with

    stored = model_store.StoreURI.parse(env.get(model_store.ENV_VAR, ""))
    if stored is None:
        return None
    if s3 is not None:  # the archive's own manifest.json (with its examples), 1 MB away
        inner = model_store.read_manifest(s3, stored)
        if inner is not None:
            return inner
    found = model_build_with(layers_dir, stored.sha256)
    if found is not None:
        return found[1]
    return None


def resolve_routes(
    lam: Any,
    *,
    function: str,
    qualifier: str | None = None,
    layers_dir: Path = Path("layers"),
    function_dir: Path = Path("function"),
    local_code: bool = False,
    python: str | None = None,
    s3: Any | None = None,
    snapstart: bool | None = None,
) -> list[Route]:
    """The versions an invocation of ``function`` at ``qualifier`` may run, with their
    weights: the primary version first, then an alias's additional versions
    (``RoutingConfig.AdditionalVersionWeights``, a canary) by version number.

    Each version is resolved on its own (its code, layers, memory, timeout and environment:
    a canary version may link other layers, e.g. a shadow layer, found in ``layers_dir``
    like any build), and keeps ``qualifier`` as the name it was invoked by.

    Raises:
        As :func:`resolve_function`, for any of the versions; a canary's error adds how to
        run the primary version alone.
    """
    from mlayer.arns import is_alias
    from mlayer.lambda_api import alias_weights, get_alias
    from mlayer.local.routing import Route

    def resolve(version_qualifier: str | None) -> LocalFunction:
        return resolve_function(
            lam,
            function=function,
            qualifier=version_qualifier,
            layers_dir=layers_dir,
            function_dir=function_dir,
            local_code=local_code,
            python=python,
            s3=s3,
            snapstart=snapstart,
        )

    primary = resolve(qualifier)
    alias = get_alias(lam, primary.name, str(qualifier)) if is_alias(qualifier) else None
    weights = alias_weights(alias) if alias is not None else {}
    # Lambda's additional versions are published version numbers, never $LATEST.
    extra = sorted(
        ((v, w) for v, w in weights.items() if v != primary.version), key=lambda vw: int(vw[0])
    )
    routes = [Route(primary, max(0.0, 1.0 - sum(w for _, w in extra)))]
    for version, weight in extra:
        try:
            canary = resolve(version)
        except (ConfigError, NotFoundError) as exc:
            raise type(exc)(
                f"{exc}. (Version {version} is alias {qualifier}'s {weight * 100:g}% canary; to "
                f"run its primary version alone, pass --alias {primary.version})"
            ) from exc
        canary.qualifier = qualifier  # invoked through the alias (metrics' Resource)
        routes.append(Route(canary, weight))
    return routes

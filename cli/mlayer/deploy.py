"""deploy-function: create or update the function from function/.

The stream trigger (its event source mapping) lives in :mod:`mlayer.trigger`; its names are
imported here too, where callers found them first. Functions take boto3 clients and return
dataclasses; nothing prints. Updates go through
:func:`mlayer.lambda_api.update_configuration`, which waits for the function to settle before
and after and retries while another update is in progress.
"""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlayer import model_store, snapstart
from mlayer.archive import Budget, iter_files, mb, needs_s3, write_zip
from mlayer.arns import function_name
from mlayer.contracts import (
    function_description,
    parse_description,
    parse_version_description,
    version_description,
)
from mlayer.errors import ConfigError, NotFoundError
from mlayer.lambda_api import (
    DEFAULT_PACE,
    Pace,
    call_with_backoff,
    find_layer,
    get_alias,
    get_configuration,
    get_layer_version,
    layer_arns,
    list_layer_versions,
    relinked,
    update_configuration,
    wait_active,
    wait_updated,
)
from mlayer.layers import check_budget, model_build_with
from mlayer.model_store import StoreURI
from mlayer.rollout import set_alias
from mlayer.sizing import EnvironmentSize, environment_size, memory_problem
from mlayer.trigger import (  # noqa: F401  (the trigger's names, where callers found them first)
    DEFAULT_TRIGGER,
    STARTING_POSITIONS,
    Trigger,
    TriggerSettings,
    describe_on_failure,
    resolve_stream,
    stream_kind,
    trigger,
)

HANDLER = "lambda_function.lambda_handler"
# 512 MB: the measured function peaks near 150 MB, but Lambda gives CPU in proportion to
# memory and the cold start (numpy/scipy/scikit-learn imports) is CPU-bound.
DEFAULT_MEMORY_MB = 512
# A batch of 100 predicts in milliseconds; 60 s leaves room for a cold start and slow sinks.
DEFAULT_TIMEOUT_S = 60
LOCAL_ROLE_NAME = "mlayer-local-lambda-role"
# The function's dead-letter settings (function/sinks.py holds the same figures: the function
# ships alone and cannot import them from here).
DEAD_LETTER_MAX_BYTES = 262_144
DEAD_LETTER_MAX_BYTES_RANGE = (1_024, 1_048_576)
# Not shipped: bytecode of the build machine's Python, test and tool caches.
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "tests"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass
class Deployment:
    """What deploy-function did."""

    function: str
    arn: str
    created: bool
    runtime: str
    arch: str
    memory_mb: int
    timeout_s: int
    role: str
    layers: list[str]
    environment: dict[str, str]
    code_sha256: str
    code_bytes: int
    code_unzipped_bytes: int
    code_changed: bool
    budget: Budget
    alias: str | None = None
    function_version: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ephemeral_mb: int = 512
    snapstart: bool = False  # SnapStart on (as set now, or as it was)


@dataclass(frozen=True)
class FunctionZip:
    """The function's code as a deterministic zip, in memory."""

    data: bytes
    sha256: str
    unzipped_bytes: int
    files: list[str]

    @property
    def code_sha256_b64(self) -> str:
        """The zip's sha256 as Lambda reports CodeSha256 (base64 of the digest)."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


def zip_function(function_dir: Path) -> FunctionZip:
    """Zip ``function_dir`` deterministically (archive.write_zip), without caches.

    Raises:
        NotFoundError: no such directory, or no lambda_function.py in it.
    """
    if not (function_dir / "lambda_function.py").is_file():
        raise NotFoundError(
            f"{function_dir}/lambda_function.py not found; run from the project root or pass "
            "--function-dir DIR (the directory holding the handler)"
        )
    pairs = [
        (path, path.relative_to(function_dir).as_posix())
        for path in iter_files(function_dir)
        if not _SKIP_DIRS.intersection(path.relative_to(function_dir).parts[:-1])
        and not path.name.endswith(_SKIP_SUFFIXES)
    ]
    with tempfile.TemporaryDirectory(prefix="mlayer-function-") as tmp:
        result = write_zip(pairs, Path(tmp) / "function.zip")
        data = result.path.read_bytes()
    if needs_s3(len(data), {"FunctionName": "x" * 140}):
        raise ConfigError(
            f"{function_dir} zips to {mb(len(data))}, over what Lambda's 50 MiB direct upload "
            "takes (the zip base64-encoded in the request); "
            "move dependencies into the dependency layer (requirements.txt, mlayer build-deps)"
        )
    return FunctionZip(
        data=data,
        sha256=result.sha256,
        unzipped_bytes=result.unzipped_bytes,
        files=sorted(name for _, name in pairs),
    )


def ensure_local_role(iam: Any) -> str:
    """A role for the local endpoint, which checks that a function's role exists in its IAM."""
    try:
        return str(iam.get_role(RoleName=LOCAL_ROLE_NAME)["Role"]["Arn"])
    except Exception as exc:
        if "NoSuchEntity" not in str(exc):
            raise
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=LOCAL_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    return str(role["Role"]["Arn"])


def newest_deps_version(
    lam: Any, layer_name: str, runtime: str | None, arch: str
) -> dict[str, Any] | None:
    """The newest published deps layer version for ``runtime`` (any, when None) and ``arch``."""
    for version in list_layer_versions(lam, layer_name):
        record = parse_description(version.get("Description"))
        if record is None or record.kind != "deps":
            continue
        if record.arch not in (None, arch):
            continue
        if runtime and record.runtime not in (None, runtime):
            continue
        return version
    return None


def _default_runtime(lam: Any, deps_layer: str, arch: str, layers_dir: Path) -> str | None:
    published = newest_deps_version(lam, deps_layer, None, arch)
    if published is not None:
        record = parse_description(published.get("Description"))
        if record and record.runtime:
            return record.runtime
    runtimes = set()
    for sidecar in layers_dir.glob(f"deps-*-{arch}.json"):
        try:
            runtime = json.loads(sidecar.read_text(encoding="utf-8")).get("runtime")
        except (OSError, json.JSONDecodeError):
            continue
        if runtime:
            runtimes.add(str(runtime))
    return runtimes.pop() if len(runtimes) == 1 else None


def _exists(lam: Any, function: str) -> dict[str, Any] | None:
    try:
        return get_configuration(lam, function)
    except NotFoundError:
        return None


def deploy_function(
    lam: Any,
    *,
    function: str,
    function_dir: Path,
    role: str | None,
    runtime: str | None,
    arch: str,
    memory_mb: int | None,
    timeout_s: int | None,
    environment: dict[str, str],
    deps_layer: str,
    model_layer: str,
    layers_dir: Path,
    alias: str | None = None,
    local_iam: Any | None = None,
    pace: Pace = DEFAULT_PACE,
    ephemeral_mb: int | None = None,
    s3: Any | None = None,
    snapstart_on: bool | None = None,
) -> Deployment:
    """Create or update ``function`` from ``function_dir`` with its layers linked.

    The runtime defaults to the dependency layer's (published, else built). Linked: the
    newest published dependency layer version for that runtime and architecture, and the
    model layer (the one already linked on update, else the newest published). On update,
    ``environment`` is merged into the existing variables (an empty value removes one), and
    memory / timeout / role keep their values unless given. Waits until the function is
    Active (create) or its update Successful. With ``alias``: publishes a version and points
    the alias at it. ``local_iam`` (an IAM client of a local endpoint) provides a stand-in
    role when none is given.

    A store-backed function (MODEL_URI in its environment) links no model layer; its /tmp
    (``ephemeral_mb``, else unchanged) must hold the stored archive and its files, and is
    raised to what the archive needs when not given. ``s3`` reads the archive's record for
    the version's Description.

    ``snapstart_on`` turns SnapStart on (True) or off (False) for published versions, and
    tags the function ``mlayer:snapstart`` with the setting; None keeps it as it is. While it
    is on, what SnapStart does not allow is refused before anything changes.

    Raises:
        ConfigError: no role to create with, or no runtime to choose; /tmp too small for the
            stored model; SnapStart on with what it does not allow (a runtime before
            python3.12, /tmp over 512 MB, EFS, provisioned concurrency).
        BudgetError: over 5 layers or 250 MB unzipped.
    """
    name = function_name(function)
    existing = _exists(lam, function)
    code = zip_function(function_dir)
    notes: list[str] = []
    if runtime is None:
        runtime = _default_runtime(lam, deps_layer, arch, layers_dir) or (
            existing.get("Runtime") if existing else None
        )
        if runtime is None:
            raise ConfigError(
                f"no runtime to deploy {name} with: pass --runtime (no dependency layer "
                f"{deps_layer} is published and no single build in {layers_dir}/ to take it from)"
            )

    current = layer_arns(existing) if existing else []
    deps = newest_deps_version(lam, deps_layer, runtime, arch)
    layers = list(current)
    if deps is not None:
        if find_layer(layers, deps_layer) is None:
            layers.insert(0, deps["LayerVersionArn"])
        else:
            layers = relinked(layers, deps["LayerVersionArn"])
    else:
        notes.append(
            f"no version of {deps_layer} published for {runtime} {arch}: the function cannot "
            f"import scikit-learn until you run `mlayer build-deps --runtime {runtime} --arch "
            f"{arch}` and `mlayer publish-deps`, then deploy again"
        )
    env = dict(((existing or {}).get("Environment") or {}).get("Variables", {}))
    for key, value in environment.items():
        if value == "":
            env.pop(key, None)
        else:
            env[key] = value
    stored = StoreURI.parse(env.get(model_store.ENV_VAR, ""))
    if env.get(model_store.ENV_VAR) and stored is None:
        raise ConfigError(
            f"{model_store.ENV_VAR}={env[model_store.ENV_VAR]!r} is not a model store URI "
            "(s3://BUCKET/KEY#sha256=HEX&size=BYTES): let mlayer publish-model --store s3 set "
            f"it, or remove it with --env {model_store.ENV_VAR}="
        )
    if stored is None and find_layer(layers, model_layer) is None:
        models = list_layer_versions(lam, model_layer)
        if models:
            layers.append(models[0]["LayerVersionArn"])
        else:
            notes.append(f"no model layer published yet ({model_layer}): run mlayer publish-model")
    storage = ephemeral_mb or int(((existing or {}).get("EphemeralStorage") or {}).get("Size", 512))
    memory = memory_mb or int((existing or {}).get("MemorySize") or DEFAULT_MEMORY_MB)
    warnings: list[str] = []
    needed = 0
    if stored is not None:
        size = _stored_size(stored, layers_dir)
        needed = size.ephemeral_mb
        problem = memory_problem(size, memory) if size.peak_mb else None
        if problem is not None and problem[1]:
            raise ConfigError(problem[0])
        if problem is not None:
            warnings.append(problem[0])
        if ephemeral_mb is not None and ephemeral_mb < needed:
            raise ConfigError(
                f"--ephemeral-storage {ephemeral_mb} MB cannot hold the stored model "
                f"({stored.location}, {stored.size / (1 << 20):,.0f} MiB, and its unpacked "
                f"files): pass at least {needed}"
            )
        if storage < needed:
            notes.append(f"/tmp {storage:,} -> {needed:,} MB for the stored model")
            storage = needed

    warnings += dead_letter_warnings(env)

    tags = snapstart.tags(lam, existing) if existing else {}
    snap = snapstart_on if snapstart_on is not None else snapstart.applied(existing or {}, tags)
    if snap:
        snapstart.check(
            lam, function=name, runtime=runtime, ephemeral_mb=storage,
            ephemeral_reason=(
                f"the model from the S3 model store, {stored.location}, needs {needed:,} MB"
                if stored is not None and needed > snapstart.MAX_EPHEMERAL_MB
                else None
            ),
            configuration=existing,
        )  # fmt: skip

    description = function_description(code.sha256, code.unzipped_bytes)
    planned = dict(existing or {})
    planned.update({"FunctionName": name, "Description": description})
    budget = check_budget(lam, planned, layers)

    if existing is None:
        if not role and local_iam is not None:
            role = ensure_local_role(local_iam)
            notes.append(f"created with the local endpoint's stand-in role {role}")
        if not role:
            raise ConfigError(
                f"function {name} does not exist yet: creating it needs --role ARN, an IAM role "
                "Lambda can assume with read access to the stream (e.g. the managed policy "
                "AWSLambdaKinesisExecutionRole or AWSLambdaDynamoDBExecutionRole)"
            )
        timeout = timeout_s or DEFAULT_TIMEOUT_S
        extra: dict[str, Any] = {}
        if snapstart_on is not None:
            extra["SnapStart"] = snapstart.setting(snapstart_on)
            extra["Tags"] = {snapstart.TAG: extra["SnapStart"]["ApplyOn"]}
        result = lam.create_function(
            FunctionName=name,
            Runtime=runtime,
            Role=role,
            Handler=HANDLER,
            Code={"ZipFile": code.data},
            Description=description,
            Timeout=timeout,
            MemorySize=memory,
            Environment={"Variables": env},
            Architectures=[arch],
            Layers=layers,
            PackageType="Zip",
            EphemeralStorage={"Size": storage},
            **extra,
        )
        wait_active(lam, name, pace)
        code_changed = True
    else:
        timeout = timeout_s or int(existing.get("Timeout") or DEFAULT_TIMEOUT_S)
        role = role or str(existing.get("Role"))
        old_arch = (existing.get("Architectures") or ["x86_64"])[0]
        code_changed = existing.get("CodeSha256") != code.code_sha256_b64 or old_arch != arch
        if code_changed:
            wait_updated(lam, name, pace)
            call_with_backoff(
                lambda: lam.update_function_code(
                    FunctionName=name, ZipFile=code.data, Architectures=[arch]
                ),
                lam,
                name,
                pace,
            )
        result = update_configuration(
            lam,
            name,
            pace,
            Runtime=runtime,
            Role=role,
            Handler=HANDLER,
            Description=description,
            Timeout=timeout,
            MemorySize=memory,
            Environment={"Variables": env},
            Layers=layers,
            EphemeralStorage={"Size": storage},
            **({} if snapstart_on is None else {"SnapStart": snapstart.setting(snapstart_on)}),
        )
        if snapstart_on is not None and tags.get(snapstart.TAG) != (
            snapstart.ON if snapstart_on else snapstart.OFF
        ):
            snapstart.tag(lam, result, snapstart_on)
    deployment = Deployment(
        function=name,
        arn=str(result.get("FunctionArn", "")).split(":$LATEST")[0],
        created=existing is None,
        runtime=runtime,
        arch=arch,
        memory_mb=memory,
        timeout_s=timeout,
        role=str(role),
        layers=layers,
        environment=env,
        code_sha256=code.sha256,
        code_bytes=len(code.data),
        code_unzipped_bytes=code.unzipped_bytes,
        code_changed=code_changed,
        budget=budget,
        notes=notes,
        warnings=warnings,
    )
    deployment.ephemeral_mb = storage
    deployment.snapstart = snap
    if alias:
        _point_alias(lam, name, alias, model_layer, layers, deployment, pace, stored, s3)
    return deployment


def _stored_size(stored: StoreURI, layers_dir: Path) -> EnvironmentSize:
    """What the stored model needs: from its build in ``layers_dir`` (the unpacked size and
    the smoke test's peak memory) when there, else from the archive's size alone."""
    found = model_build_with(layers_dir, stored.sha256)
    if found is not None:
        data = found[1]
        peak = (data.get("smoke_test") or {}).get("max_memory_mb")
        unpacked = int(data.get("unzipped_bytes") or stored.size)
        return environment_size(stored.size, unpacked, peak)
    return environment_size(stored.size, stored.size, None)


def dead_letter_warnings(env: dict[str, str]) -> list[str]:
    """What the function's environment leaves unprotected, said before a record is lost.

    Raises:
        ConfigError: DEAD_LETTER_MAX_BYTES is not a whole number from 1,024 to 1,048,576.
    """
    value = env.get("DEAD_LETTER_MAX_BYTES")
    max_bytes = DEAD_LETTER_MAX_BYTES
    if value is not None:
        low, high = DEAD_LETTER_MAX_BYTES_RANGE
        if not value.isdigit() or not low <= int(value) <= high:
            raise ConfigError(
                f"DEAD_LETTER_MAX_BYTES={value} is not a whole number of bytes from {low:,} to "
                f"{high:,}: set it to the dead-letter queue's MaximumMessageSize (aws sqs "
                "get-queue-attributes --attribute-names MaximumMessageSize), or remove it "
                f"(--env DEAD_LETTER_MAX_BYTES=) for {DEAD_LETTER_MAX_BYTES:,}"
            )
        max_bytes = int(value)
    if env.get("DEAD_LETTER_QUEUE_URL") and not env.get("DEAD_LETTER_BUCKET"):
        return [
            "DEAD_LETTER_QUEUE_URL is set but DEAD_LETTER_BUCKET is not: a bad record whose "
            f"dead-letter message is over {max_bytes:,} bytes (DEAD_LETTER_MAX_BYTES; a "
            f"Kinesis record of about {round(_record_bytes_for(max_bytes) / 1000):,} KB or more) "
            "cannot be dead-lettered, so it is "
            "reported in batchItemFailures, blocks its shard through the trigger's retries "
            "and is then kept only by the trigger's on-failure destination (none by default). "
            "Set --env DEAD_LETTER_BUCKET=BUCKET (the role needs s3:PutObject on it) to keep "
            "such records whole in S3, with a pointer in the queue"
        ]
    return []


def _record_bytes_for(message_bytes: int) -> int:
    # A Kinesis dead letter carries the record's data in base64 (4/3) plus about 1,000 bytes
    # of envelope and reason (measured: 196,000 bytes of data make a 262,201-byte message).
    return max(0, (message_bytes - 1_000) * 3 // 4)


def _point_alias(
    lam: Any,
    function: str,
    alias: str,
    model_layer: str,
    layers: list[str],
    deployment: Deployment,
    pace: Pace,
    stored: StoreURI | None = None,
    s3: Any | None = None,
) -> None:
    # Record the model this version carries as a rollout does (publish.carries): its name and
    # version, its zip's sha256 and its content identity, so that rollback still names it
    # after its layer version is deleted and knows it by content, not build number.
    description = "mlayer deploy-function"
    model_arn = find_layer(layers, model_layer)
    record = None
    if stored is not None:
        found = model_store.head(s3, stored) if s3 is not None else None
        record = found.record if found else None
    elif model_arn is not None:
        version = get_layer_version(lam, model_arn)
        record = parse_description((version or {}).get("Description"))
    if record is not None and record.name and record.version is not None:
        description = version_description(
            record.name, record.version, record.sha256, record.identity
        )
    new_version = snapstart.publish_version(lam, function, description, pace, deployment.notes)
    current = get_alias(lam, function, alias)
    if current is None:
        lam.create_alias(FunctionName=function, Name=alias, FunctionVersion=new_version)
    elif str(current["FunctionVersion"]) != new_version or current.get("RoutingConfig"):
        set_alias(lam, function, alias, new_version)
    deployment.alias = alias
    deployment.function_version = new_version
    if parse_version_description(description) is None:
        deployment.notes.append(
            f"alias {alias} -> version {new_version}, which has no model layer or stored model"
        )

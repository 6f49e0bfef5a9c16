"""What mlayer records in AWS: the Description grammar of layer and function versions, the
layer names it derives, and a model's identity.

What mlayer knows about a published layer version lives in the version itself, in its
Description:

    mlayer deps sha256=<hex64> unzipped=<bytes> runtime=python3.13 arch=x86_64
    mlayer model <name> v<N> sha256=<hex64> unzipped=<bytes> identity=<hex64>

so dedupe, the size budget, status and history need no state outside AWS. A function version
published by a rollout records the model it carries in its own Description
(``mlayer model <name> v<N> sha256=<hex64> identity=<hex64>``), which still names the model
after its layer version has been deleted; ``$LATEST`` as deploy-function leaves it records its
code (``mlayer function sha256=<hex64> unzipped=<bytes>``). ``identity`` (see
:func:`model_identity`) is the model's content, whatever its build number: rollouts compare
models by it. Descriptions written before it existed (no ``identity=``, or a bare
``mlayer model <name> v<N>``) still parse; their identity is unknown and never equal to
another.

Pure functions: no AWS calls, nothing printed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlayer.arns import function_name
from mlayer.errors import ConfigError

_DEPS_RE = re.compile(
    r"^mlayer deps sha256=(?P<sha>[0-9a-f]{64}) unzipped=(?P<unzipped>\d+)"
    r"(?: runtime=(?P<runtime>\S+))?(?: arch=(?P<arch>\S+))?"
)
_MODEL_RE = re.compile(
    r"^mlayer model (?P<name>\S+) v(?P<version>\d+) sha256=(?P<sha>[0-9a-f]{64})"
    r" unzipped=(?P<unzipped>\d+)(?: identity=(?P<identity>[0-9a-f]{64}))?"
)
# The record a rollout leaves on the function version it publishes. A model layer's own
# Description matches it too (sha256= then unzipped=, no identity in the group below).
_VERSION_RE = re.compile(
    r"^mlayer model (?P<name>\S+) v(?P<version>\d+)\b"
    r"(?: sha256=(?P<sha>[0-9a-f]{64})(?= |$))?(?: identity=(?P<identity>[0-9a-f]{64}))?"
)
# Lambda's limit for layer and function version descriptions.
DESCRIPTION_LIMIT = 256
# Files of a model that are not its content: training writes a timestamp into metadata.json
# (so retraining identical pickles would look new), and manifest.json carries the build
# number. Everything the function predicts with is in the identity instead.
IDENTITY_EXCLUDED = ("metadata.json", "manifest.json")
_FUNCTION_RE = re.compile(
    r"^mlayer function sha256=(?P<sha>[0-9a-f]{64}) unzipped=(?P<unzipped>\d+)"
)


def model_identity(manifest: Mapping[str, Any]) -> str:
    """A model's identity: the sha256 of its content, whatever its build number.

    The content is what the function predicts with: the model files (name -> sha256, from
    the manifest's ``files``, without ``metadata.json`` and ``manifest.json``, see
    ``IDENTITY_EXCLUDED``), the input schema (``input``), and the order of the stages and
    the labels (both change the answers). Two builds of the same files get the same identity
    though their versions, zips and sha256s differ; that is how a rerun of a failed publish
    finds what it published, and how rollback tells an older model from a copy of the live one.

    A model set's identity is its members' identities, field and default (its manifest's
    ``set``): the members' manifests and ``set.json`` carry build numbers.

    Raises:
        KeyError / AttributeError: no ``files`` mapping (validate the manifest first).
    """
    if isinstance(manifest.get("set"), Mapping):
        content_of_set = {"set": manifest["set"]}
        return hashlib.sha256(json.dumps(content_of_set, sort_keys=True).encode()).hexdigest()
    files = {
        name: sha256 for name, sha256 in manifest["files"].items() if name not in IDENTITY_EXCLUDED
    }
    content = {
        "files": files,
        "input": manifest.get("input"),
        "stages": manifest.get("stages"),
        "labels": manifest.get("labels"),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LayerRecord:
    """What an mlayer layer version's Description says about its content."""

    kind: str  # "deps" | "model"
    sha256: str
    unzipped_bytes: int
    name: str | None = None  # model name
    version: int | None = None  # model version
    runtime: str | None = None
    arch: str | None = None
    identity: str | None = None  # model content (None: recorded before identities existed)


def deps_description(sha256: str, unzipped_bytes: int, runtime: str, arch: str) -> str:
    """The Description of a published dependency layer version."""
    return f"mlayer deps sha256={sha256} unzipped={unzipped_bytes} runtime={runtime} arch={arch}"


def model_description(
    name: str, version: int, sha256: str, unzipped_bytes: int, identity: str | None = None
) -> str:
    """The Description of a published model layer version."""
    text = f"mlayer model {name} v{version} sha256={sha256} unzipped={unzipped_bytes}"
    if identity:
        text += f" identity={identity}"
    _check_name(name, text)
    return text


def _check_name(name: str, text: str) -> None:
    if len(text) > DESCRIPTION_LIMIT or not re.fullmatch(r"\S+", name):
        room = DESCRIPTION_LIMIT - (len(text) - len(name))
        raise ConfigError(
            f"model name {name!r} cannot be recorded in a description (no spaces, at most "
            f"{room} characters); rename it in metadata.json and rebuild"
        )


def function_description(sha256: str, unzipped_bytes: int) -> str:
    """The Description deploy-function gives $LATEST: its code's unzipped size for budgets."""
    return f"mlayer function sha256={sha256} unzipped={unzipped_bytes}"


def function_unzipped_bytes(text: str | None) -> int | None:
    """The unzipped code size a :func:`function_description` records; None for others."""
    m = _FUNCTION_RE.match(text or "")
    return int(m["unzipped"]) if m else None


def version_description(
    name: str, version: int, sha256: str | None = None, identity: str | None = None
) -> str:
    """The Description of a function version published by a rollout.

    With the model layer's ``sha256`` and ``identity``, which still name the model's zip and
    content after its layer version is deleted.
    """
    text = f"mlayer model {name} v{version}"
    if sha256:
        text += f" sha256={sha256}"
    if identity:
        text += f" identity={identity}"
    _check_name(name, text)
    return text


def parse_description(text: str | None) -> LayerRecord | None:
    """Parse an mlayer layer Description; None for layers mlayer did not publish."""
    text = text or ""
    if m := _DEPS_RE.match(text):
        return LayerRecord(
            kind="deps",
            sha256=m["sha"],
            unzipped_bytes=int(m["unzipped"]),
            runtime=m["runtime"],
            arch=m["arch"],
        )
    if m := _MODEL_RE.match(text):
        return LayerRecord(
            kind="model",
            sha256=m["sha"],
            unzipped_bytes=int(m["unzipped"]),
            name=m["name"],
            version=int(m["version"]),
            identity=m["identity"],
        )
    return None


@dataclass(frozen=True)
class VersionRecord:
    """What a function version's Description says about the model it carries."""

    name: str
    version: int
    sha256: str | None = None  # the model layer zip's (None in older descriptions)
    identity: str | None = None


def parse_version_record(text: str | None) -> VersionRecord | None:
    """The model a function version published by a rollout carries; None for others."""
    m = _VERSION_RE.match(text or "")
    if not m:
        return None
    return VersionRecord(m["name"], int(m["version"]), m["sha"], m["identity"])


def parse_version_description(text: str | None) -> tuple[str, int] | None:
    """(model name, model version) from a function version published by a rollout."""
    record = parse_version_record(text)
    return (record.name, record.version) if record else None


def default_layer_name(function: str, kind: str) -> str:
    """``<function>-deps`` / ``<function>-model``."""
    return f"{function_name(function)}-{kind}"

"""Durable checkpoints of ``mlayer run-local``: where each shard resumes after a restart.

Lambda keeps an event source mapping's checkpoints on its side, so a mapping that is
disabled, updated or failed over resumes where it left off. ``run-local`` keeps them in a
JSON file (``.mlayer/local/checkpoints.json`` by default), one entry per stream, function
(with its alias or version) and shard: the last sequence number fully resolved (handled by
the function, or given up on and sent to the on-failure destination). Records after it are
read again by the next run, so a run that is stopped, killed or crashes loses nothing and
repeats nothing it checkpointed.

The file is rewritten whole after each resolved batch: written to a temporary file in the
same directory and moved over the old one with ``os.replace``, so a reader (or a run killed
mid-write) sees the old file or the new one, never half of one. Several runs may share the
file (different functions or streams): each write takes an exclusive ``flock`` on a lock
file beside it, reads the current content and changes only its own entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlayer.errors import MlayerError

DEFAULT_PATH = Path(".mlayer") / "local" / "checkpoints.json"
FORMAT = 1


class CheckpointError(MlayerError):
    """The checkpoint file cannot be read or written, or does not fit the stream."""


class CheckpointFile:
    """The checkpoints of one function (alias or version included) on one stream.

    Args:
        path: the JSON file (created on the first save, with its directory).
        stream_arn: the stream.
        function: the qualified function name, e.g. ``scorer:live`` (``scorer:$LATEST``).
        stream_created: when the stream was created (ISO 8601), if the service says: a
            Kinesis stream deleted and created again keeps its ARN, and its sequence
            numbers start over, so checkpoints of the old one must not apply to the new one.
    """

    def __init__(
        self,
        path: Path,
        *,
        stream_arn: str,
        function: str,
        stream_created: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.stream_arn = stream_arn
        self.function = function
        self.stream_created = stream_created
        self._shards: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------

    def load(self) -> dict[str, str]:
        """shard id -> the last sequence number resolved, for this function on this stream.

        Raises:
            CheckpointError: the file is not a checkpoint file, or its checkpoints are of
                an earlier stream with the same ARN.
        """
        data = self._read()
        stream = data["streams"].get(self.stream_arn) or {}
        created = stream.get("created")
        shards = dict((stream.get("functions") or {}).get(self.function) or {})
        if shards and created and self.stream_created and created != self.stream_created:
            raise CheckpointError(
                f"the checkpoints in {self.path} for {self.function} on {self.stream_arn} are "
                f"of a stream created {created}; this one was created {self.stream_created} "
                "(deleted and created again?): pass --reset-checkpoints to start from the "
                "starting position"
            )
        self._shards = {
            shard: str(entry["sequence_number"])
            for shard, entry in shards.items()
            if isinstance(entry, dict) and entry.get("sequence_number")
        }
        return dict(self._shards)

    def reset(self) -> dict[str, str]:
        """Forget this function's checkpoints on this stream; return what they were."""
        with self._lock, self._locked():
            data = self._read()
            stream = data["streams"].get(self.stream_arn) or {}
            functions = stream.get("functions") or {}
            forgotten = functions.pop(self.function, None) or {}
            if not functions:
                data["streams"].pop(self.stream_arn, None)
            if forgotten:
                self._write(data)
            self._shards = {}
        return {s: str(e.get("sequence_number")) for s, e in forgotten.items()}

    # -- writing -------------------------------------------------------------------------

    def save(self, shard_id: str, sequence_number: str) -> None:
        """Record that every record of ``shard_id`` up to ``sequence_number`` is resolved.

        Raises:
            CheckpointError: the file cannot be written (the message names it).
        """
        with self._lock, self._locked():
            data = self._read()
            stream = data["streams"].setdefault(self.stream_arn, {})
            if self.stream_created:
                stream["created"] = self.stream_created
            shards = stream.setdefault("functions", {}).setdefault(self.function, {})
            shards[shard_id] = {
                "sequence_number": sequence_number,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self._write(data)
            self._shards[shard_id] = sequence_number

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": FORMAT, "streams": {}}
        except OSError as exc:
            raise CheckpointError(f"cannot read the checkpoint file {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("streams"), dict):
                raise ValueError("no 'streams' object")
        except ValueError as exc:
            raise CheckpointError(
                f"{self.path} is not an mlayer checkpoint file ({exc}); delete it or pass "
                "another --checkpoints"
            ) from exc
        return data

    def _write(self, data: dict[str, Any]) -> None:
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                # os.replace is atomic against the process dying at any point (SIGKILL,
                # crash): the file is the old one or the new one. No fsync: after an OS crash
                # an older checkpoint only means records processed again (at least once).
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            raise CheckpointError(f"cannot write the checkpoint file {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive among processes sharing the file (flock on ``<file>.lock``)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise CheckpointError(f"cannot write the checkpoint file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

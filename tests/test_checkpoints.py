"""run-local's checkpoint file: per stream, function (and qualifier) and shard, rewritten
atomically, shared by runs of other functions or streams, and refused when it cannot fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlayer.local.checkpoints import CheckpointError, CheckpointFile

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/reviews"


def store(
    path: Path, function: str = "scorer:live", created: str | None = "2026-11-01"
) -> CheckpointFile:
    return CheckpointFile(path, stream_arn=STREAM, function=function, stream_created=created)


def test_saved_checkpoints_are_loaded_by_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / ".mlayer" / "local" / "checkpoints.json"
    first = store(path)
    first.save("shardId-000000000000", "49001")
    first.save("shardId-000000000001", "49002")
    first.save("shardId-000000000000", "49010")
    assert store(path).load() == {"shardId-000000000000": "49010", "shardId-000000000001": "49002"}
    # Written whole each time, no temporary file left beside it
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "checkpoints.json",
        "checkpoints.json.lock",
    ]


def test_functions_and_aliases_sharing_the_file_keep_their_own(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    live, latest = store(path, "scorer:live"), store(path, "scorer:$LATEST")
    live.save("shardId-000000000000", "10")
    latest.save("shardId-000000000000", "20")
    live.save("shardId-000000000000", "11")
    assert store(path, "scorer:live").load() == {"shardId-000000000000": "11"}
    assert store(path, "scorer:$LATEST").load() == {"shardId-000000000000": "20"}
    assert store(path, "other:live").load() == {}
    # Resetting one forgets only its own
    assert store(path, "scorer:live").reset() == {"shardId-000000000000": "11"}
    assert store(path, "scorer:live").load() == {}
    assert store(path, "scorer:$LATEST").load() == {"shardId-000000000000": "20"}


def test_checkpoints_of_a_recreated_stream_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    store(path, created="2026-11-01T10:00:00+00:00").save("shardId-000000000000", "10")
    with pytest.raises(CheckpointError) as error:
        store(path, created="2026-11-02T09:00:00+00:00").load()
    assert str(error.value) == (
        f"the checkpoints in {path} for scorer:live on {STREAM} are of a stream created "
        "2026-11-01T10:00:00+00:00; this one was created 2026-11-02T09:00:00+00:00 (deleted "
        "and created again?): pass --reset-checkpoints to start from the starting position"
    )
    # --reset-checkpoints then starts over, and records the new stream
    fresh = store(path, created="2026-11-02T09:00:00+00:00")
    fresh.reset()
    assert fresh.load() == {}
    fresh.save("shardId-000000000000", "3")
    assert json.loads(path.read_text())["streams"][STREAM]["created"] == (
        "2026-11-02T09:00:00+00:00"
    )


@pytest.mark.parametrize(
    "content",
    [pytest.param("{not json", id="not-json"), pytest.param("[]", id="not-an-object")],
)
def test_a_file_that_is_not_a_checkpoint_file_is_an_error_naming_it(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "checkpoints.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=r"is not an mlayer checkpoint file .*; delete it"):
        store(path).load()


def test_an_unwritable_place_is_an_error_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "checkpoints.json"  # a directory that is a file
    with pytest.raises(CheckpointError, match=r"cannot write the checkpoint file .*checkpoints"):
        store(path).save("shardId-000000000000", "1")

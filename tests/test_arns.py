"""arns: every form of function, layer, stream, table and bucket reference, and the bad ones."""

from __future__ import annotations

import pytest

from mlayer.arns import (
    FunctionRef,
    LayerArn,
    StreamArn,
    bucket_name,
    function_name,
    layer_name,
    log_group,
    parse_arn,
    parse_function,
    parse_layer_arn,
    parse_stream_arn,
    table_name,
)
from mlayer.errors import ConfigError

ACCOUNT = "123456789012"
FUNCTION_ARN = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:scorer"
LAYER_ARN = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:scorer-model"
KINESIS_ARN = f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:stream/reviews"
TABLE_ARN = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/reviews"
# A DynamoDB stream's label is a timestamp, colons included.
TABLE_STREAM_ARN = f"{TABLE_ARN}/stream/2024-05-11T21:21:33.291"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("scorer", FunctionRef("scorer"), id="name"),
        pytest.param("scorer:live", FunctionRef("scorer", "live"), id="name-alias"),
        pytest.param("scorer:7", FunctionRef("scorer", "7"), id="name-version"),
        pytest.param("scorer:$LATEST", FunctionRef("scorer", "$LATEST"), id="name-latest"),
        pytest.param("my_scorer-2", FunctionRef("my_scorer-2"), id="name-punctuation"),
        pytest.param(
            f"{ACCOUNT}:function:scorer",
            FunctionRef("scorer", account=ACCOUNT),
            id="partial-arn",
        ),
        pytest.param(
            f"{ACCOUNT}:function:scorer:live",
            FunctionRef("scorer", "live", account=ACCOUNT),
            id="partial-arn-alias",
        ),
        pytest.param(FUNCTION_ARN, FunctionRef("scorer", None, "eu-west-1", ACCOUNT), id="arn"),
        pytest.param(
            f"{FUNCTION_ARN}:live",
            FunctionRef("scorer", "live", "eu-west-1", ACCOUNT),
            id="arn-alias",
        ),
        pytest.param(
            f"arn:aws-cn:lambda:cn-north-1:{ACCOUNT}:function:scorer:3",
            FunctionRef("scorer", "3", "cn-north-1", ACCOUNT),
            id="arn-other-partition",
        ),
    ],
)
def test_function_forms(text: str, expected: FunctionRef) -> None:
    assert parse_function(text) == expected
    assert function_name(text) == expected.name


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("scorer:", id="empty-qualifier"),
        pytest.param(":live", id="empty-name"),
        pytest.param("scorer:live:7", id="two-qualifiers"),
        pytest.param("scorer live", id="space"),
        pytest.param("x" * 65, id="name-too-long"),
        pytest.param(f"{ACCOUNT}:layer:scorer", id="partial-not-function"),
        pytest.param("12345:function:scorer", id="partial-short-account"),
        pytest.param(f"{ACCOUNT}:function:scorer:live:7", id="partial-two-qualifiers"),
        pytest.param(f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function", id="arn-no-name"),
        pytest.param(f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:scorer:1", id="arn-layer"),
        pytest.param(f"arn:aws:s3:::{ACCOUNT}", id="arn-other-service"),
        pytest.param(f"arn:aws:lambda::{ACCOUNT}:function:scorer", id="arn-no-region"),
        pytest.param(f"{FUNCTION_ARN}:live:7", id="arn-two-qualifiers"),
        pytest.param("arn:aws:lambda", id="arn-truncated"),
    ],
)
def test_function_bad_forms(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a function"):
        parse_function(text)


@pytest.mark.parametrize(
    "text",
    [
        "scorer",
        "scorer:live",
        "scorer:7",
        f"{ACCOUNT}:function:scorer:live",
        f"{FUNCTION_ARN}:live",
    ],
)
def test_log_group_is_the_functions_whatever_the_qualifier(text: str) -> None:
    """Lambda writes every version's and alias's logs to the function's one group."""
    assert log_group(text) == "/aws/lambda/scorer"


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        pytest.param(
            f"{LAYER_ARN}:12", LayerArn(f"{LAYER_ARN}:12", LAYER_ARN, "scorer-model", 12), id="aws"
        ),
        pytest.param(
            "arn:aws:lambda:us-east-1:000000000000:layer:scorer-model:0",
            LayerArn(
                "arn:aws:lambda:us-east-1:000000000000:layer:scorer-model:0",
                "arn:aws:lambda:us-east-1:000000000000:layer:scorer-model",
                "scorer-model",
                0,
            ),
            id="stand-in-slot",
        ),
    ],
)
def test_layer_version_arn(arn: str, expected: LayerArn) -> None:
    assert parse_layer_arn(arn) == expected
    assert layer_name(arn) == expected.name


def test_layer_arn_without_version() -> None:
    assert layer_name(LAYER_ARN) == "scorer-model"


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("scorer-model", id="name"),
        pytest.param(f"{LAYER_ARN}:latest", id="version-not-a-number"),
        pytest.param(f"{LAYER_ARN}:1:2", id="two-versions"),
        pytest.param(f"{FUNCTION_ARN}:1", id="function"),
    ],
)
def test_layer_bad_arns(arn: str) -> None:
    with pytest.raises(ConfigError, match="is not a layer version ARN"):
        parse_layer_arn(arn)
    with pytest.raises(ConfigError):
        layer_name(arn)


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        pytest.param(
            KINESIS_ARN,
            StreamArn(KINESIS_ARN, "kinesis", "reviews", "eu-west-1", ACCOUNT),
            id="kinesis",
        ),
        pytest.param(
            TABLE_STREAM_ARN,
            StreamArn(
                TABLE_STREAM_ARN,
                "dynamodb",
                "reviews",
                "eu-west-1",
                ACCOUNT,
                "2024-05-11T21:21:33.291",
            ),
            id="dynamodb-stream",
        ),
    ],
)
def test_stream_arns(arn: str, expected: StreamArn) -> None:
    assert parse_stream_arn(arn) == expected


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("reviews", id="name"),
        pytest.param(TABLE_ARN, id="table-without-stream"),
        pytest.param(f"arn:aws:kinesis:eu-west-1:{ACCOUNT}:reviews", id="kinesis-no-stream/"),
        pytest.param(f"arn:aws:sqs:eu-west-1:{ACCOUNT}:stream/reviews", id="other-service"),
    ],
)
def test_stream_bad_arns(arn: str) -> None:
    with pytest.raises(ConfigError, match="is not a Kinesis stream or DynamoDB stream ARN"):
        parse_stream_arn(arn)


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param(TABLE_ARN, id="table"),
        pytest.param(TABLE_STREAM_ARN, id="its-stream"),
        pytest.param(f"{TABLE_ARN}/index/by-date", id="its-index"),
    ],
)
def test_table_arns(arn: str) -> None:
    assert table_name(arn) == "reviews"


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("reviews", id="name"),
        pytest.param(KINESIS_ARN, id="kinesis"),
        pytest.param(f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:global-table/reviews", id="global"),
    ],
)
def test_table_bad_arns(arn: str) -> None:
    with pytest.raises(ConfigError, match="is not a DynamoDB table ARN"):
        table_name(arn)


def test_bucket_arn() -> None:
    assert bucket_name("arn:aws:s3:::scorer-failures") == "scorer-failures"


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("scorer-failures", id="name"),
        pytest.param("arn:aws:s3:::scorer-failures/key", id="object"),
        pytest.param("arn:aws:s3:::ab", id="too-short"),
        pytest.param("arn:aws:s3:::" + "b" * 64, id="too-long"),
        pytest.param(f"arn:aws:s3:eu-west-1:{ACCOUNT}:scorer-failures", id="region-account"),
        pytest.param("arn:aws:s3:::a:b", id="colon"),
        pytest.param(f"arn:aws:sqs:eu-west-1:{ACCOUNT}:scorer-failures", id="queue"),
    ],
)
def test_bucket_bad_arns(arn: str) -> None:
    with pytest.raises(ConfigError, match="is not an S3 bucket ARN"):
        bucket_name(arn)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("scorer", id="not-an-arn"),
        pytest.param("arn:aws:sqs:eu-west-1", id="too-few-fields"),
        pytest.param(f"arn:gcp:sqs:eu-west-1:{ACCOUNT}:q", id="not-aws"),
        pytest.param(f"arn:aws::eu-west-1:{ACCOUNT}:q", id="no-service"),
    ],
)
def test_bad_arns(text: str) -> None:
    with pytest.raises(ConfigError, match="is not an ARN"):
        parse_arn(text)

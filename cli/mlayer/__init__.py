"""mlayer: serve scikit-learn models from AWS Lambda on Kinesis and DynamoDB streams."""

from __future__ import annotations

__version__ = "0.1.0"

"""boto3 sessions and clients for the chosen region, profile and endpoint.

The same commands target real AWS or a local endpoint (moto_server) with no code change:
``--endpoint-url`` (or ``AWS_ENDPOINT_URL``, which boto3 reads itself) is the only switch.
boto3 is imported on first use so that ``mlayer --help`` stays fast.

What a user can get wrong here is checked before the first call, each with its fix: an
endpoint that is not ``http(s)://host[:port]``, a region that is not one, half a pair of
credentials in the environment. Every call is bounded in time (connect, read, attempts),
so an endpoint that accepts connections and never answers gives an error in seconds.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlayer.errors import ConfigError

if TYPE_CHECKING:
    import boto3

# The shape of a region name: us-east-1, eu-central-2, us-gov-west-1, ap-southeast-7.
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
CONNECT_TIMEOUT = 5  # seconds to open a connection: an endpoint that is up answers in ms
# Seconds to wait for an answer once the request is sent. Lambda answers its slowest
# calls (a 50 MB PublishLayerVersion) in seconds; the body's upload is not counted.
READ_TIMEOUT = 15
# Attempts per call, the first included: throttling and dropped connections are retried,
# yet a silent endpoint costs at most ATTEMPTS x (READ_TIMEOUT + backoff).
ATTEMPTS = 3


def region_problem(region: str) -> str | None:
    """Why ``region`` is not an AWS region name (without asking botocore), or None."""
    if REGION_RE.match(region):
        return None
    return f"{region!r} is not an AWS region name (like eu-west-1 or us-east-1)"


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` is not an endpoint of the form http(s)://host[:port], or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s)://host[:port] URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        return f"{url!r} has more than http(s)://host[:port]"
    if parts.path not in ("", "/"):
        return f"{url!r} has a path ({parts.path}); give only http(s)://host[:port]"
    if port == 0:
        return f"{url!r} has port 0"
    return None


@dataclass
class AwsSettings:
    """Where AWS calls go. Travels in ``ctx.obj``; library functions take clients from it."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    read_timeout: int = READ_TIMEOUT
    _session: boto3.Session | None = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def attempts(self) -> int:
        return ATTEMPTS

    def session(self) -> boto3.Session:
        """The boto3 session (created once).

        The region is ``region`` (--region, MLAYER_REGION, mlayer.toml), else AWS_REGION
        (which the Lambda runtime, the AWS CLI v2 and most SDKs read, boto3 does not), else
        boto3's own (AWS_DEFAULT_REGION, the profile's).

        Raises:
            ConfigError: half a pair of credentials in the environment; a region that is
                not a name of one, or that botocore does not know (for AWS endpoints).
        """
        if self._session is None:
            import boto3

            self._check_credentials()
            region = self.region or os.environ.get("AWS_REGION") or None
            session = boto3.Session(profile_name=self.profile, region_name=region)
            if session.region_name:
                self._check_region(session)
            self._session = session
        return self._session

    def _check_credentials(self) -> None:
        # boto3 fails on a key id without its secret only at the first call, and quietly
        # skips a secret without its key id (then finds other credentials, or none).
        if self.profile:
            return  # an explicit profile takes no credentials from the environment
        key = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if bool(key) != bool(secret):
            have, missing = (
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                if key
                else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
            )
            raise ConfigError(
                f"partial AWS credentials in the environment: {have} is set but {missing} is "
                f"not; set both (and AWS_SESSION_TOKEN for temporary ones), or unset {have} "
                "and pass --profile"
            )

    def _check_region(self, session: boto3.Session) -> None:
        region = str(session.region_name)
        if self.region:
            source = "--region, MLAYER_REGION or mlayer.toml"
        elif os.environ.get("AWS_REGION"):
            source = "AWS_REGION"
        elif os.environ.get("AWS_DEFAULT_REGION"):
            source = "AWS_DEFAULT_REGION"
        else:
            source = f"the region of profile {session.profile_name} (~/.aws/config)"
        problem = region_problem(region)
        if problem:
            raise ConfigError(f"{problem}, from {source}; set it to the function's region")
        if self.endpoint_url:
            return  # a local endpoint takes any region name
        known = {
            name
            for partition in session.get_available_partitions()
            for name in session.get_available_regions("lambda", partition_name=partition)
        }
        if region not in known:
            import botocore

            raise ConfigError(
                f"region {region} (from {source}) is not a region botocore "
                f"{botocore.__version__} knows Lambda in; check the spelling, or upgrade boto3 "
                "if the region is new"
            )

    def client(self, service: str) -> Any:
        """A cached client for ``service``: the chosen endpoint, bounded timeouts and retries."""
        if service not in self._clients:
            from botocore.config import Config

            kwargs: dict[str, Any] = {
                "config": Config(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=self.read_timeout,
                    retries={"total_max_attempts": self.attempts, "mode": "standard"},
                ),
            }
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
                # botocore gzips PutMetricData bodies over 10 KiB, and moto_server (5.2.1)
                # answers those with a 500 (BadGzipFile): an endpoint gets them plain.
                kwargs["config"] = kwargs["config"].merge(Config(disable_request_compression=True))
            self._clients[service] = self.session().client(service, **kwargs)
        return self._clients[service]

    @property
    def is_local(self) -> bool:
        """True when calls go to a loopback endpoint (moto_server), not AWS."""
        url = self.endpoint_url or ""
        return "127.0.0.1" in url or "localhost" in url

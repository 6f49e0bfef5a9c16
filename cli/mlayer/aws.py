"""boto3 sessions and clients for the chosen region, profile and endpoint.

The same commands target real AWS or a local endpoint (moto_server) with no code change:
``--endpoint-url`` (or ``AWS_ENDPOINT_URL``, which boto3 reads itself) is the only switch.
boto3 is imported on first use so that ``mlayer --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import boto3


@dataclass
class AwsSettings:
    """Where AWS calls go. Travels in ``ctx.obj``; library functions take clients from it."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    _session: boto3.Session | None = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def session(self) -> boto3.Session:
        """The boto3 session (created once)."""
        if self._session is None:
            import boto3

            self._session = boto3.Session(profile_name=self.profile, region_name=self.region)
        return self._session

    def client(self, service: str) -> Any:
        """A cached client for ``service`` with standard retries and the chosen endpoint."""
        if service not in self._clients:
            from botocore.config import Config

            kwargs: dict[str, Any] = {
                "config": Config(retries={"max_attempts": 5, "mode": "standard"}),
            }
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            self._clients[service] = self.session().client(service, **kwargs)
        return self._clients[service]

    @property
    def is_local(self) -> bool:
        """True when calls go to a loopback endpoint (moto_server), not AWS."""
        url = self.endpoint_url or ""
        return "127.0.0.1" in url or "localhost" in url

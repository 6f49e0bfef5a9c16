"""An alias's weighted routing, run locally: which version each invocation runs.

An alias with ``RoutingConfig.AdditionalVersionWeights`` (a canary) sends each invocation to
one of its versions: an additional version with its weight, the primary version otherwise.
Lambda draws at random per invocation; locally the draw is made deterministic where there is
a sequence to spread over:

- ``run-local``: smooth weighted round robin (:class:`SmoothWeightedRoundRobin`, nginx's),
  per concurrent batch slot (one per shard, times the parallelization factor): a 10%
  canary gets exactly one batch in every 10 of each shard, a 25% one one in every 4, spread
  as evenly as the weights allow, the primary version first. A retried batch is a new
  invocation and may go to either version, as in Lambda.
- ``invoke`` (a single invocation): a weighted random draw (:func:`draw`), as Lambda does.

:class:`RoutedInvoker` is one batch slot's execution environments: one per version, each
created on the first invocation routed to it (a canary that never gets a batch never
starts), each with its version's code, layers, memory, timeout and environment.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from mlayer.errors import MlayerError

if TYPE_CHECKING:
    from mlayer.lambda_env.environment import Invocation
    from mlayer.local.resolve import LocalFunction

SCALE = 1_000_000  # weights are taken in millionths (Lambda's are doubles in 0.0-1.0)


@dataclass(frozen=True)
class Route:
    """One version an invocation may run, with its share of the invocations."""

    function: LocalFunction  # that version's code, layers and settings
    weight: float  # 0-1; the primary version's is what the additional versions leave

    @property
    def version(self) -> str:
        return self.function.version


def shares(routes: Sequence[Route]) -> list[int]:
    """The routes' weights as integers (millionths, reduced by their common divisor), so
    that a round robin over them is exact."""
    ints = [max(0, round(route.weight * SCALE)) for route in routes]
    divisor = math.gcd(*ints) or 1
    return [n // divisor for n in ints]


def cadence(routes: Sequence[Route], index: int) -> Fraction:
    """The exact share of invocations route ``index`` gets under the round robin."""
    ints = shares(routes)
    return Fraction(ints[index], sum(ints) or 1)


class SmoothWeightedRoundRobin:
    """Picks indexes in proportion to integer weights, spread evenly, deterministically.

    Each pick adds every weight to its running total and takes the largest total (the
    lowest index on a tie), which then gives back the sum of the weights. Over any run of
    ``sum(weights)`` picks, index ``i`` is picked exactly ``weights[i]`` times. Weights 9
    and 1 pick index 1 at the 6th pick, then every 10th; weights 3 and 1 give 0, 0, 1, 0.
    """

    def __init__(self, weights: Sequence[int]) -> None:
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum: {list(weights)}")
        self.weights = list(weights)
        self.total = sum(weights)
        self.current = [0] * len(weights)

    def next(self) -> int:
        best = 0
        for i, weight in enumerate(self.weights):
            self.current[i] += weight
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return best


def draw(routes: Sequence[Route], rng: random.Random) -> int:
    """A weighted random pick among the routes (one invocation, as Lambda routes it)."""
    ints = shares(routes)
    point = rng.randrange(sum(ints))
    for index, weight in enumerate(ints):
        if point < weight:
            return index
        point -= weight
    raise AssertionError("unreachable: the point falls within the weights' sum")


class Environment(Protocol):
    """An execution environment (mlayer.lambda_env.environment.LambdaEnvironment fits)."""

    def invoke(self, event: Any) -> Invocation: ...
    def close(self) -> None: ...


class RoutedInvoker:
    """One batch slot's execution environments, one per routed version, created lazily.

    Args:
        routes: the versions, the primary first.
        make_environment: a new (not started) environment of one version.
        pick: which route the next invocation takes (default: a smooth weighted round
            robin over the routes' weights).
        on_invocation: called after each invocation with it and the version that ran it
            (the metrics publisher's ``record``); in the caller's thread.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        make_environment: Callable[[LocalFunction], Environment],
        *,
        pick: Callable[[], int] | None = None,
        on_invocation: Callable[[Invocation, str], None] | None = None,
    ) -> None:
        self.routes = list(routes)
        self.make_environment = make_environment
        self.pick = pick or SmoothWeightedRoundRobin(shares(self.routes)).next
        self.on_invocation = on_invocation
        self._environments: dict[int, Environment] = {}
        self._lock = threading.Lock()  # an abort may close from another thread
        self._closed = False

    def invoke(self, event: Any) -> Invocation:
        """Run ``event`` on the version the routing picks; the result says which
        (``executed_version``).

        Raises:
            MlayerError: the invoker was closed (the run is being aborted).
        """
        index = self.pick() if len(self.routes) > 1 else 0
        route = self.routes[index]
        with self._lock:
            if self._closed:
                raise MlayerError("the execution environments are closed")
            environment = self._environments.get(index)
            if environment is None:
                environment = self._environments[index] = self.make_environment(route.function)
        invocation = environment.invoke(event)
        if self.on_invocation is not None:
            self.on_invocation(invocation, route.version)
        return invocation

    def close(self) -> None:
        with self._lock:
            self._closed = True
            environments = list(self._environments.values())
        for environment in environments:
            environment.close()

"""meshbus.io/v1 RateLimit: global request limits shared by every replica of a workload.

The shape is Envoy Gateway's ``BackendTrafficPolicy.rateLimit.global.rules`` (which users of the
Envoy rate limit service already read), scoped like Istio's security policies: ``selector`` picks
workloads in the resource's namespace (every workload of it without one; in the root namespace, of
every namespace), and their inbound sidecars apply every rule.

- A rule applies to a request when every ``clientSelectors`` entry matches it (no selectors: every
  request). A selector matches when all its ``headers`` and its ``sourceCIDR`` do.
- ``type: Exact`` matches one value (``invert`` matches every other); ``type: Distinct`` matches any
  value and gives each value its own counter (per user, per API key, per client address).
- ``limit`` is ``requests`` per ``unit`` (Second, Minute, Hour, Day), counted in fixed windows aligned
  to the unit (as Envoy's rate limit service counts). Over it: 429 with ``x-ratelimit-*`` headers.
  A request counts against every rule it matches, and is refused when any of them is exhausted.
- ``shadowMode``: count, never refuse (the access log says which requests would have been).
- ``failureMode``: what the sidecar does while meshbus-policy cannot be asked: ``Open`` (default:
  requests pass) or ``Closed`` (500, flag RLSE); ``timeout`` bounds each question to it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshbus.bus.config.types import Duration, IstioModel, NonEmptyString, PolicySelector

MatchType = Literal["Exact", "Distinct"]
Unit = Literal["Second", "Minute", "Hour", "Day"]


class HeaderSelector(IstioModel):
    name: str = Field(min_length=1, pattern=r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")
    type: MatchType = "Exact"
    value: str | None = None
    invert: bool = False


class SourceCIDR(IstioModel):
    type: MatchType = "Exact"
    value: NonEmptyString


class ClientSelector(IstioModel):
    headers: tuple[HeaderSelector, ...] = Field(default=(), max_length=16)
    source_cidr: SourceCIDR | None = Field(default=None, alias="sourceCIDR")


class Limit(IstioModel):
    requests: int = Field(gt=0)
    unit: Unit


class RateLimitRule(IstioModel):
    name: str | None = None
    client_selectors: tuple[ClientSelector, ...] = Field(default=(), max_length=8)
    limit: Limit
    shadow_mode: bool = False


class RateLimitSpec(IstioModel):
    selector: PolicySelector | None = None
    rules: tuple[RateLimitRule, ...] = Field(min_length=1, max_length=64)
    failure_mode: Literal["Open", "Closed"] = "Open"
    timeout: Duration | None = None
    """How long a sidecar waits for meshbus-policy before the failure mode applies (default 100ms)."""

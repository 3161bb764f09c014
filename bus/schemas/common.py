"""Messages every component shares: the error envelope and health."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..codec import message


@message("meshbus.bus.v1.Error")
@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The one error envelope every endpoint answers with on failure."""

    code: str
    """Stable machine-readable code (`meshbus.bus.errors.BusError.code`)."""
    message: str
    """Human-readable message, prefixed ``meshbus: ``."""


@message("meshbus.bus.v1.HealthRequest")
@dataclass(frozen=True, slots=True)
class HealthRequest:
    """Ask a component instance for its health. No fields yet."""


@message("meshbus.bus.v1.Health")
@dataclass(frozen=True, slots=True)
class Health:
    """A component instance's health, answered on its `health` endpoint."""

    component: str
    """Component name, e.g. ``config``."""
    instance: str
    """Unique instance id (the NATS micro service id)."""
    version: str
    """meshbus version of the process."""
    ready: bool
    """True once the instance has synced what it needs to serve."""
    uptime_s: float = 0.0
    """Seconds since the instance started."""
    details: dict[str, str] = field(default_factory=dict)
    """Free-form component details (e.g. last applied revision)."""

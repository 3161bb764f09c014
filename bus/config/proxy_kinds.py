"""The resource envelope (apiVersion, kind, metadata, spec) and the kinds a proxy builds from.

``Resource.source`` is filled by the loader, never read from YAML, and is not dumped.
resources.py is the catalog of every kind meshbus reads and re-exports these; they live apart so a
proxy worker, which unpickles its config as these models, imports only their specs and not the
Gateway API, EnvoyFilter, WasmPlugin, ... models (about 6 MB less RSS per worker).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from meshbus.bus.config.destination_rule import DestinationRuleSpec
from meshbus.bus.config.mesh_config import MeshConfigSpec
from meshbus.bus.config.meshbus_kinds import LocalRateLimitSpec, PluginSpec
from meshbus.bus.config.rate_limit import RateLimitSpec
from meshbus.bus.config.security import (
    AuthorizationPolicySpec,
    PeerAuthenticationSpec,
    RequestAuthenticationSpec,
)
from meshbus.bus.config.service_entry import ServiceEntrySpec, WorkloadEntrySpec
from meshbus.bus.config.sidecar import SidecarSpec
from meshbus.bus.config.source import UNKNOWN_SOURCE, Source
from meshbus.bus.config.telemetry import TelemetrySpec
from meshbus.bus.config.types import IstioModel
from meshbus.bus.config.virtual_service import VirtualServiceSpec

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Metadata(IstioModel):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Written by Kubernetes/kubectl; accepted so `kubectl get -o yaml` output loads, and ignored.
    resource_version: str | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > 253 or not _DNS1123_SUBDOMAIN.match(v):
            raise PydanticCustomError(
                "dns1123",
                "name must be a lowercase DNS-1123 name (a-z, 0-9, '-', '.'; at most 253 characters)",
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if len(v) > 63 or not _DNS1123_LABEL.match(v):
            raise PydanticCustomError(
                "dns1123", "namespace must be a DNS-1123 label (a-z, 0-9, '-'; at most 63 characters)"
            )
        return v


class Resource(BaseModel):
    """One operator config object. Subclasses fix ``kind`` and the ``spec`` type."""

    model_config = ConfigDict(  # defer_build: as IstioModel's (types.py)
        extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True, defer_build=True
    )

    GROUP: ClassVar[str] = ""
    VERSIONS: ClassVar[tuple[str, ...]] = ()
    KIND: ClassVar[str] = ""
    KEY_KIND: ClassVar[str] = ""
    """The kind's unique name in store keys and KINDS; KIND unless two groups share a kind name."""
    SPEC_REQUIRED: ClassVar[bool] = False
    """The CRD declares ``required: [spec]``: a document without ``spec`` is refused."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "KEY_KIND" not in cls.__dict__:
            cls.KEY_KIND = cls.KIND

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata
    spec: IstioModel
    source: Source = Field(default=UNKNOWN_SOURCE, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _envelope_defaults(cls, data: Any) -> Any:
        """Code may build ``VirtualService(metadata=..., spec=...)``; YAML is checked by the loader first."""
        if isinstance(data, dict) and cls.KIND:
            data = dict(data)
            data.setdefault("kind", cls.KIND)
            if "apiVersion" not in data and "api_version" not in data:
                data["apiVersion"] = f"{cls.GROUP}/{cls.VERSIONS[0]}"
        return data

    @model_validator(mode="after")
    def _envelope_matches_kind(self) -> Resource:
        if self.KIND and self.kind != self.KIND:
            raise PydanticCustomError("kind", "kind must be {kind}", {"kind": self.KIND})
        if self.KIND and self.api_version not in supported_api_versions(type(self)):
            raise PydanticCustomError(
                "api_version",
                "apiVersion not supported for {kind} (use {allowed})",
                {"kind": self.KIND, "allowed": ", ".join(supported_api_versions(type(self)))},
            )
        return self

    def __eq__(self, other: object) -> bool:
        # Content equality: the same resource loaded from another file (or the store) is unchanged.
        if not isinstance(other, Resource):
            return NotImplemented
        return type(self) is type(other) and (self.api_version, self.kind, self.metadata, self.spec) == (
            other.api_version,
            other.kind,
            other.metadata,
            other.spec,
        )

    __hash__ = None  # type: ignore[assignment]  # specs hold dicts; use .key for identity

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        """``VirtualService default/reviews``: how messages name this resource."""
        return f"{self.KEY_KIND or self.kind} {self.metadata.namespace}/{self.metadata.name}"

    @property
    def key(self) -> tuple[str, str, str]:
        """(KEY_KIND, namespace, name): the identity used by stores and duplicate detection."""
        return (self.KEY_KIND or self.kind, self.metadata.namespace, self.metadata.name)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resource as the operator would write it (camelCase, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False, mode="json")


_NETWORKING = ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"))
_SECURITY = ("security.istio.io", ("v1", "v1beta1"))
_MESHBUS = ("meshbus.io", ("v1",))


class VirtualService(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "VirtualService"
    spec: VirtualServiceSpec


class DestinationRule(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "DestinationRule"
    spec: DestinationRuleSpec


class ServiceEntry(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "ServiceEntry"
    SPEC_REQUIRED = True
    spec: ServiceEntrySpec


class WorkloadEntry(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "WorkloadEntry"
    SPEC_REQUIRED = True
    spec: WorkloadEntrySpec


class Sidecar(Resource):
    GROUP, VERSIONS = _NETWORKING
    KIND = "Sidecar"
    spec: SidecarSpec


class PeerAuthentication(Resource):
    GROUP, VERSIONS = _SECURITY
    KIND = "PeerAuthentication"
    spec: PeerAuthenticationSpec


class RequestAuthentication(Resource):
    GROUP, VERSIONS = _SECURITY
    KIND = "RequestAuthentication"
    spec: RequestAuthenticationSpec


class AuthorizationPolicy(Resource):
    GROUP, VERSIONS = _SECURITY
    KIND = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec


class LocalRateLimit(Resource):
    GROUP, VERSIONS = _MESHBUS
    KIND = "LocalRateLimit"
    spec: LocalRateLimitSpec


class RateLimit(Resource):
    GROUP, VERSIONS = _MESHBUS
    KIND = "RateLimit"
    spec: RateLimitSpec


class Plugin(Resource):
    GROUP, VERSIONS = _MESHBUS
    KIND = "Plugin"
    spec: PluginSpec


class MeshConfig(Resource):
    GROUP, VERSIONS = _MESHBUS
    KIND = "MeshConfig"
    spec: MeshConfigSpec


class Telemetry(Resource):
    GROUP, VERSIONS = "telemetry.istio.io", ("v1", "v1alpha1")
    KIND = "Telemetry"
    spec: TelemetrySpec


def supported_api_versions(resource_type: type[Resource]) -> tuple[str, ...]:
    return tuple(f"{resource_type.GROUP}/{v}" for v in resource_type.VERSIONS)

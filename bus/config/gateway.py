"""networking.istio.io Gateway (gateway.proto).

meshbus has no gateway proxy yet: a Gateway is validated (so typos are caught) and stored, and
fates.py warns that it has no effect.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meshbus.bus.config.types import IstioModel, Port


class ServerPort(IstioModel):
    number: Port
    protocol: str
    name: str
    target_port: Port | None = None


class ServerTLSCertificate(IstioModel):
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None


TLSProtocol = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class ServerTLSSettings(IstioModel):
    https_redirect: bool | None = None
    mode: Literal[
        "PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"
    ] = "PASSTHROUGH"
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_crl: str | None = None
    credential_name: str | None = None
    credential_names: tuple[str, ...] = ()
    tls_certificates: tuple[ServerTLSCertificate, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    min_protocol_version: TLSProtocol | None = None
    max_protocol_version: TLSProtocol | None = None
    cipher_suites: tuple[str, ...] = ()


class Server(IstioModel):
    port: ServerPort
    bind: str | None = None
    hosts: tuple[str, ...]
    tls: ServerTLSSettings | None = None
    default_endpoint: str | None = None
    name: str | None = None


class GatewaySpec(IstioModel):
    servers: tuple[Server, ...] = ()
    selector: dict[str, str] = Field(default_factory=dict)

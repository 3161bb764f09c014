"""Semantic checks for Gateway (meshbus has no gateway proxy yet: fates.py warns that it has no effect)."""

from __future__ import annotations

from meshbus.bus.config.resources import Gateway, Resource
from meshbus.bus.config.validation.common import check_labels, check_namespaced_hosts
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.service_entry import PROTOCOLS


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, Gateway):
        return
    spec = resource.spec
    if not spec.servers:
        f.error(["spec", "servers"], "at least one server is required")
    check_labels(f, ["spec", "selector"], spec.selector)
    names: dict[str, int] = {}
    for i, server in enumerate(spec.servers):
        path: list[str | int] = ["spec", "servers", i]
        if not server.hosts:
            f.error([*path, "hosts"], "at least one host is required")
        check_namespaced_hosts(f, [*path, "hosts"], server.hosts)
        port = server.port
        if port.protocol.upper() not in PROTOCOLS:
            f.error(
                [*path, "port", "protocol"],
                f"unknown protocol (known: {', '.join(sorted(PROTOCOLS))})",
                port.protocol,
            )
        if port.name in names:
            f.error(
                [*path, "port", "name"], f"duplicate port name (also servers[{names[port.name]}])", port.name
            )
        names.setdefault(port.name, i)
        tls = server.tls
        if tls is not None and tls.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            has_files = bool(tls.server_certificate and tls.private_key)
            if not (tls.credential_name or tls.credential_names or tls.tls_certificates or has_files):
                f.error(
                    [*path, "tls"],
                    f"mode {tls.mode} needs credentialName or serverCertificate and privateKey",
                )
        if port.protocol.upper() == "HTTPS" and tls is None:
            f.error([*path, "tls"], "an HTTPS server needs tls settings")

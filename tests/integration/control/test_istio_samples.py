"""Istio's sample directories (tests/conformance/istio/istio-samples) applied through meshbus-config on a real
nats-server, as ``meshctl apply -f`` sends them: every one is stored, and every warning is about something
meshbus does not enforce (or a host only the workload registry can confirm)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from meshbus.bus import BusConnection
from meshbus.bus.embedded import EmbeddedNats
from meshbus.control.cli.manifests import collect
from meshbus.control.config.client import ConfigClient
from meshbus.control.config.service import ConfigService

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CORPUS = Path(__file__).resolve().parents[2] / "conformance" / "istio"
ISTIO_SAMPLES = CORPUS / "istio-samples"
MANIFEST: dict[str, Any] = YAML(typ="safe").load((CORPUS / "manifest.yaml").read_text())["istio-samples"]

# What an apply of Istio's samples may warn about: the kinds and fields meshbus accepts without enforcing
# them (bus/config/fates.py), deprecated spellings it converts, and hosts that only the workload registry
# can confirm.
ALLOWED_WARNINGS = (
    "NOT ENFORCED",
    "the host may be registered by a workload later",
    "is deprecated",
)


@pytest.fixture
async def config(bus: BusConnection) -> AsyncIterator[ConfigClient]:
    async with ConfigService(bus) as svc:
        await svc.wait_ready()
        yield ConfigClient(bus, timeout=10.0)


def _steps(sample: str) -> list[list[str]]:
    """The ``-f`` arguments of each apply: the listed files one by one, else the directory at once."""
    order = MANIFEST[sample].get("apply")
    if order:
        return [[str(ISTIO_SAMPLES / sample / f)] for f in order]
    return [[str(ISTIO_SAMPLES / sample)]]


@pytest.mark.parametrize("sample", sorted(MANIFEST))
async def test_sample(config: ConfigClient, sample: str) -> None:
    """Stored, with warnings only for what meshbus does not enforce (the test id stays short: the
    subject root, hence the config bucket, is made from its first 40 characters)."""
    stored = 0
    for paths in _steps(sample):
        reply = await config.apply(collect(paths))
        # A file of Kubernetes documents only (a Service and its Deployment) stores nothing and says so.
        assert reply.results or all(w.startswith("Info") for w in reply.warnings), paths
        stored += sum(r.action in ("created", "configured") for r in reply.results)
        for warning in reply.warnings:
            if warning.startswith("Info"):
                continue
            assert any(a in warning for a in ALLOWED_WARNINGS), warning
    assert stored
    listed = await config.list(all_namespaces=True)
    assert listed.items


async def test_gateway_api_gateway_and_istio_gateway_of_one_name_are_two_resources(
    config: ConfigClient,
) -> None:
    await config.apply(collect([str(ISTIO_SAMPLES / "helloworld")]))
    istio = await config.get("Gateway", "helloworld-gateway")
    kube = await config.get("KubernetesGateway", "helloworld-gateway")
    assert istio.api_version == "networking.istio.io/v1" and "servers" in istio.spec
    assert kube.api_version == "gateway.networking.k8s.io/v1" and kube.kind == "Gateway"
    assert kube.spec["gatewayClassName"] == "istio"
    assert (await config.get("gateway.gateway.networking.k8s.io", "helloworld-gateway")) == kube


async def test_meshctl_apply_quiet(nats_server: EmbeddedNats, subject_root: str, bus: BusConnection) -> None:
    """meshctl apply lists each skipped Kubernetes document once; -q hides those lines."""

    async def meshctl(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshbus.control.cli",
            *args,
            "--nats",
            nats_server.url,
            "--subject-root",
            subject_root,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    async with ConfigService(bus) as svc:
        await svc.wait_ready()
        code, out, err = await meshctl("apply", "-f", str(ISTIO_SAMPLES / "httpbin"))
        assert code == 0, err
        assert "gateway.networking.k8s.io/httpbin-gateway created" in out
        assert "virtualservice.networking.istio.io/httpbin created" in out
        skipped = [line for line in err.splitlines() if line.startswith("Info") and "skipped" in line]
        assert len(skipped) == 3  # ServiceAccount, Service, Deployment of httpbin.yaml
        assert "skipped v1 Service: not mesh config" in err
        assert "HTTPRoute default/httpbin: NOT ENFORCED — meshbus has no gateway proxy" in err
        code, out, err = await meshctl("apply", "-q", "-f", str(ISTIO_SAMPLES / "httpbin"))
        assert code == 0, err
        assert "skipped" not in err and "unchanged" in out

"""meshctl apply/get/delete/history/rollback/analyze as subprocesses against a real server + config service."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from meshbus.bus import BusConnection
from meshbus.bus.embedded import EmbeddedNats
from meshbus.control.config.service import ConfigService
from tests.support.processes import run_command
from tests.support.unenforced import (
    KEEPALIVE_FATE,
    REQUEST_AUTHENTICATION_FATE,
    UNEVALUABLE_POLICY_FATE,
    joined,
    keepalive_rule,
    request_authentication,
    unevaluable_authorization_policy,
)

pytestmark = pytest.mark.timeout(60)  # a dozen meshctl start-ups per test; slow on a loaded machine

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: SUBSET}
      weight: 50
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
async def meshctl(nats_server: EmbeddedNats, subject_root: str, bus: BusConnection) -> AsyncIterator[object]:
    async with ConfigService(bus) as svc:
        await svc.wait_ready()

        async def run(*args: str, nats: str = nats_server.url) -> Result:
            code, out, err = await run_command(
                sys.executable, "-m", "meshbus.control.cli", *args, "--nats", nats, "--subject-root", subject_root
            )  # fmt: skip
            return Result(code, out.decode(), err.decode())

        yield run


async def test_apply_get_history_rollback_delete(meshctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "dr.yaml").write_text(DR)
    (tmp_path / "vs.yaml").write_text(VS.replace("SUBSET", "v2"))
    r = await meshctl("apply", "-f", str(tmp_path))
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "destinationrule.networking.istio.io/reviews created",
        "virtualservice.networking.istio.io/reviews created",
    ]
    assert "Warning [IST0101]" in r.err and "Referenced host not found" in r.err  # warnings go to stderr

    again = await meshctl("apply", "-f", str(tmp_path / "vs.yaml"))
    assert again.out.strip() == "virtualservice.networking.istio.io/reviews unchanged"

    got = await meshctl("get", "VS", "reviews", "-o", "yaml")
    assert got.code == 0, got.err
    doc = YAML(typ="safe").load(got.out)
    assert doc["kind"] == "VirtualService" and doc["metadata"]["namespace"] == "default"
    assert doc["spec"]["http"][0]["route"][1]["destination"]["subset"] == "v2"
    rev1 = int(doc["metadata"]["resourceVersion"])

    table = await meshctl("get", "vs", "-A")
    header, row = table.out.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "GATEWAYS", "HOSTS", "REVISION", "AGE"]
    assert row.split()[:4] == ["default", "reviews", '["reviews"]', str(rev1)]

    (tmp_path / "vs.yaml").write_text(VS.replace("SUBSET", "v1"))
    stale = await meshctl("apply", "-f", str(tmp_path / "vs.yaml"), "--revision", str(rev1 - 1))
    assert stale.code == 1 and "conflict" not in stale.out and f"revision {rev1} is stored" in stale.err
    changed = await meshctl("apply", "-f", str(tmp_path / "vs.yaml"), "--revision", str(rev1))
    assert changed.out.strip() == "virtualservice.networking.istio.io/reviews configured"

    back = await meshctl("rollback", "vs", "reviews", "--to", str(rev1))
    assert back.code == 0 and back.out.strip() == "virtualservice.networking.istio.io/reviews rolled back"
    missing = await meshctl("rollback", "vs", "reviews", "--to", "999")
    assert missing.code == 1
    assert missing.err.strip() == (
        "Error: meshbus: VirtualService default/reviews has no revision 999; it can be rolled back to "
        f"{rev1}, {rev1 + 1}, {rev1 + 2} (meshctl history virtualservice reviews -n default)"
    ), missing.err
    hist = await meshctl("history", "virtualservice", "reviews", "-n", "default")
    lines = hist.out.splitlines()
    assert lines[1].split() == ["REVISION", "UPDATED", "OPERATION", "SOURCE", "CURRENT"]
    assert [ln.split()[2] for ln in lines[2:]] == ["apply", "apply", "rollback"]
    assert lines[-1].split()[-1] == "*" and f"rollback to {rev1}" in lines[-1]

    as_json = json.loads((await meshctl("get", "vs", "-o", "json")).out)
    assert (
        as_json["kind"] == "List"
        and as_json["items"][0]["spec"]["http"][0]["route"][1]["destination"]["subset"] == "v2"
    )

    live = await meshctl("analyze")  # no -f: the stored config
    assert (
        live.code == 0 and "No validation issues" not in live.out and "IST0101" in live.out
    )  # host warnings

    gone = await meshctl("delete", "-f", str(tmp_path))
    assert gone.code == 0, gone.err
    assert sorted(gone.out.splitlines()) == [
        'destinationrule.networking.istio.io "reviews" deleted',
        'virtualservice.networking.istio.io "reviews" deleted',
    ]
    missing = await meshctl("delete", "dr", "reviews")
    assert missing.code == 1 and "not found" in missing.err


async def test_invalid_apply_prints_every_error_and_exits_1(meshctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = VS.replace("SUBSET", "v2").replace(
        "weight: 50\n    - destination", "weight: -70\n    - destination"
    )
    bad = bad.replace("hosts: [reviews]", "hosts: [reviews]\n  exportTo: ['.']\n  hostz: [x]")
    (tmp_path / "dr.yaml").write_text(DR)
    (tmp_path / "bad.yaml").write_text(bad)
    r = await meshctl("apply", "-f", str(tmp_path))
    assert r.code == 1 and r.out == ""
    assert "bad.yaml:" in r.err and "spec.hostz" in r.err and "errors):" in r.err
    assert (await meshctl("get", "dr")).err.startswith("No resources found")  # all or nothing


async def test_analyze_is_offline_and_exit_code_follows_errors(meshctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "dr.yaml").write_text(DR)
    (tmp_path / "vs.yaml").write_text(VS.replace("SUBSET", "v3"))
    dead = "nats://127.0.0.1:1"  # analyze must not need NATS
    r = await meshctl("analyze", "-f", str(tmp_path), nats=dead)
    assert r.code == 1
    line = next(ln for ln in r.out.splitlines() if "IST0101" in ln and "subset" in ln)
    vs_file = tmp_path / "vs.yaml"
    assert (
        line
        == f'Error [IST0101] (VirtualService default/reviews {vs_file}:11) Referenced subset not found: "v3"'
    )
    assert "Analyzers found issues" in r.err

    (tmp_path / "vs.yaml").write_text(VS.replace("SUBSET", "v2"))
    ok = await meshctl("analyze", "-f", str(tmp_path), nats=dead)
    assert ok.code == 0, ok.out + ok.err
    assert "Error" not in ok.out


UNENFORCED = joined(
    unevaluable_authorization_policy("shelf-readers", "shelf"),
    request_authentication("shelf-jwt", "shelf"),
    keepalive_rule("shelf"),
)


def _fate_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "NOT ENFORCED" in ln]


async def test_apply_and_analyze_warn_what_meshbus_does_not_enforce(meshctl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 10: applying a field meshbus does not enforce (a RequestAuthentication's presence, an
    AuthorizationPolicy's experimental key, a DestinationRule's tcpKeepalive) says so, in the same words in apply
    (stderr, exit 0), analyze -f and analyze of the store."""
    f = tmp_path / "shelf.yaml"
    f.write_text(UNENFORCED)
    ap, ap_fate = "AuthorizationPolicy default/shelf-readers", UNEVALUABLE_POLICY_FATE
    ra, ra_fate = "RequestAuthentication default/shelf-jwt", REQUEST_AUTHENTICATION_FATE
    dr, dr_fate = "DestinationRule default/shelf", KEEPALIVE_FATE

    r = await meshctl("apply", "-f", str(f))
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "authorizationpolicy.security.istio.io/shelf-readers created",
        "requestauthentication.security.istio.io/shelf-jwt created",
        "destinationrule.networking.istio.io/shelf created",
    ]
    assert _fate_lines(r.err) == [
        f"Warning: {f}:10: {ap}: {ap_fate}",
        f"Warning: {f}:21: {ra}: {ra_fate}",
        f"Warning: {f}:31: {dr}: {dr_fate}",
    ]

    dead = "nats://127.0.0.1:1"
    offline = await meshctl("analyze", "-f", str(f), nats=dead)
    assert offline.code == 0, offline.out + offline.err
    expected = [
        f"Warning ({ap} {f}:10) {ap_fate}",
        f"Warning ({ra} {f}:21) {ra_fate}",
        f"Warning ({dr} {f}:31) {dr_fate}",
    ]
    assert _fate_lines(offline.out) == expected
    stored = await meshctl("analyze")  # what meshbus-config holds: the same words, sorted by kind;
    assert stored.code == 0, stored.out + stored.err  # the store keeps a resource's line, not its fields'
    stored_lines = [
        f"Warning ({ap} {f}:1) {ap_fate}",
        f"Warning ({ra} {f}:12) {ra_fate}",
        f"Warning ({dr} {f}:23) {dr_fate}",
    ]
    assert sorted(_fate_lines(stored.out)) == sorted(stored_lines)

    listing = await meshctl("analyze", "--fates", nats=dead)
    assert listing.code == 0
    assert (
        "AuthorizationPolicy spec.rules[].when[].key (experimental.envoy.filters.*): NOT ENFORCED"
        in listing.out
    )

"""AuthorizationPolicy CUSTOM with the ``meshbusAuthz`` provider: checks over a real nats-server,
answered by meshbus-policy's rule-driven authorizer (control/policy/authz_rules.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.connection import BusConnection
from meshbus.control.policy.authz_rules import AuthzRulesError, load_rules
from meshbus.control.policy.service import PolicyService
from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, yaml
from tests.integration.proxy.test_authz import policy
from tests.integration.proxy.test_authz_custom import shelf
from tests.integration.proxy.upstreams import fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

RULES = """
authorizers:
- name: backoffice
  rules:
  - action: allow
    methods: [GET]
    paths: [/private/*]
    headers: {x-user: alice}
    upstreamHeaders: {x-user-id: "42"}
    removeHeaders: [x-user]
  - action: deny
    status: 401
    body: "login first\\n"
    responseHeaders: {www-authenticate: Basic realm="backoffice"}
"""


def config(fail_open: bool = False, subject: str = "backoffice") -> str:
    return (
        yaml(f"""
        apiVersion: meshbus.io/v1
        kind: MeshConfig
        metadata: {{name: mesh, namespace: istio-system}}
        spec:
          extensionProviders:
          - name: backoffice
            meshbusAuthz: {{subject: {subject}, timeout: 1s, failOpen: {str(fail_open).lower()}}}
        """)
        + "\n---\n"
        + policy(
            "ext",
            """
        action: CUSTOM
        provider: {name: backoffice}
        rules: [{to: [{operation: {paths: ["/private/*"]}}]}]
        """,
        )
    )


async def test_meshbus_policy_decides_custom_rules_over_nats(
    tmp_path: Path, bus: BusConnection, upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    rules_file = tmp_path / "authz.yaml"
    rules_file.write_text(RULES)
    app = await upstreams()
    async with PolicyService(bus, authz_rules=load_rules(rules_file)):
        handle, log = await shelf(
            lambda text, **kw: proxy(text, nats=bus.settings.url, subject_root=bus.subjects.root, **kw),
            app,
            config(),
        )
        port = handle.inbound_port
        assert (await fetch(port, "/public")).status == 200  # no CUSTOM rule matched: nobody asked
        ok = await fetch(port, "/private/a", headers=[("x-user", "alice")])
        assert ok.status == 200, [(r.response_code_details, r.metadata) for r in log.records]
        seen = app.seen[-1].headers
        assert seen.get("x-user-id") == "42" and "x-user" not in seen  # set and removed upstream
        denied = await fetch(port, "/private/a", headers=[("x-user", "mallory")])
        assert denied.status == 401 and denied.body == b"login first\n"
        assert denied.headers.get("www-authenticate") == 'Basic realm="backoffice"'
        assert any(r.response_code == 401 and r.response_flags == "UAEX" for r in log.records)


@pytest.mark.parametrize(("fail_open", "status"), [(False, 403), (True, 200)])
async def test_no_authorizer_on_the_bus_gives_the_providers_fail_mode_at_once(
    bus: BusConnection, upstreams: UpstreamFactory, proxy: ProxyFactory, fail_open: bool, status: int
) -> None:
    app = await upstreams()
    handle, _log = await shelf(
        lambda text, **kw: proxy(text, nats=bus.settings.url, subject_root=bus.subjects.root, **kw),
        app,
        config(fail_open=fail_open, subject="nobody-serves-this"),
    )
    r = await fetch(handle.inbound_port, "/private/a", headers=[("x-user", "alice")], timeout=5)
    assert r.status == status


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("authorizers: [{name: a, rules: [{action: maybe}]}]", "authorizers.0.rules.0.action"),
        ("authorizers: [{name: 'a b'}]", "authorizers.0.name"),
        ("authorizers: [{name: a, colour: red}]", "authorizers.0.colour"),
        ("authorizers: [{name: a}, {name: a}]", "used twice"),
        ("authorizers: [", "authz.yaml"),
    ],
)
def test_a_bad_rules_file_is_refused_naming_the_file_and_field(
    tmp_path: Path, text: str, needle: str
) -> None:
    f = tmp_path / "authz.yaml"
    f.write_text(text)
    with pytest.raises(AuthzRulesError) as err:
        load_rules(f)
    assert needle in str(err.value) and "authz.yaml" in str(err.value)

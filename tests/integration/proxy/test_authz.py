"""AuthorizationPolicy in a standalone server sidecar (file config), real sockets, plaintext inbound.

Identity-based rules need mTLS: tests/integration/proxy/test_authz_mtls.py runs those between two
sidecars. Here: paths, methods, hosts, headers, DENY over ALLOW, dry run, audit, normalization, the
access log and the counters, and a config reload that adds and removes policies.
"""

from __future__ import annotations

import pytest

from tests.integration.proxy.conftest import LogCapture, ProxyFactory, ProxyHandle, UpstreamFactory, yaml
from tests.integration.proxy.upstreams import Client, Upstream, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def policy(name: str, spec: str, *, namespace: str = "default", annotations: str = "") -> str:
    meta = f"{{name: {name}, namespace: {namespace}{', annotations: ' + annotations if annotations else ''}}}"
    body = "\n".join("  " + line for line in yaml(spec).splitlines())
    return (
        f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {meta}\nspec:\n{body}\n---\n"
    )


SHELF_READERS = policy(
    "shelf-readers",
    """
    selector: {matchLabels: {app: shelf}}
    rules:
    - to: [{operation: {methods: [GET, HEAD], paths: ["/books/*", /health]}}]
    """,
)
NO_ADMIN = policy(
    "no-admin",
    """
    action: DENY
    rules:
    - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
    """,
)


async def shelf(proxy: ProxyFactory, app: Upstream, config: str) -> tuple[ProxyHandle, LogCapture]:
    handle = await proxy(config, app_port=app.port, labels={"app": "shelf"})
    log = LogCapture()
    handle.server.access_log = log
    return handle, log


def counter(handle: ProxyHandle, **labels: str) -> float:
    family = handle.server.registry.get("meshbus_authz_requests_total")
    if family is None:
        return 0
    total = 0.0
    for values, child in family.series():
        got = dict(zip(family.label_names, values, strict=True))
        if all(got.get(k) == v for k, v in labels.items()):
            total += child.value
    return total


async def test_allow_by_path_and_method_and_deny_wins(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    handle, log = await shelf(proxy, app, SHELF_READERS + NO_ADMIN)
    port = handle.inbound_port
    ok = await fetch(port, "/books/1")
    assert ok.status == 200, ok.body
    assert app.seen[-1].path == "/books/1"
    denied = await fetch(port, "/shelves")  # no ALLOW rule matches
    assert (denied.status, denied.body) == (403, b"RBAC: access denied")
    assert log.records[-1].response_code_details == "rbac_access_denied_matched_policy[none]"
    post = await fetch(port, "/books/1", method="POST")  # ALLOW rule is GET/HEAD only
    assert post.status == 403
    admin = await fetch(port, "/admin")  # DENY is tried before ALLOW
    assert admin.status == 403
    rec = log.records[-1]
    assert (
        rec.response_code_details == "rbac_access_denied_matched_policy[ns[default]-policy[no-admin]-rule[0]]"
    )
    assert rec.metadata == {"authz_result": "denied", "authz_policy": "ns[default]-policy[no-admin]-rule[0]"}
    assert len(app.seen) == 1  # nothing denied reached the app
    allowed = log.records[0]
    assert allowed.metadata == {
        "authz_result": "allowed",
        "authz_policy": "ns[default]-policy[shelf-readers]-rule[0]",
    }
    assert counter(handle, action="DENY", result="denied", policy="ns[default]-policy[no-admin]-rule[0]") == 1
    assert counter(handle, action="ALLOW", result="denied", policy="none") == 2
    assert counter(handle, action="ALLOW", result="allowed") == 1


async def test_traversal_and_encoding_cannot_slip_past_a_deny(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    everything = policy("everyone", "rules: [{}]")
    handle, _log = await shelf(proxy, app, everything + NO_ADMIN)
    port = handle.inbound_port
    for path in (
        "/books/../admin",
        "/books/%2e%2e/admin",
        "/./admin",
        "/books\\..\\admin",
        "/%61dmin",
        "/admin?x=1",
    ):
        r = await fetch(port, path)
        assert r.status == 403, (path, r.status)
    # The query is not part of the path, and the normalized path is what the app gets.
    r = await fetch(port, "/books/./x/../1?next=/admin")
    assert r.status == 200
    assert app.seen[-1].path == "/books/1?next=/admin"
    r = await fetch(port, "/books/../books/2?q=1#top")  # a fragment is dropped, as Envoy does
    assert r.status == 200 and app.seen[-1].path == "/books/2?q=1"
    bad = await fetch(port, "/books/%00")
    assert bad.status == 400


async def test_a_config_without_policies_has_no_filter_and_a_reload_adds_one(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    handle, _log = await shelf(proxy, app, "# nothing\n")
    assert handle.server.runtime.inbound.virtual_hosts[0].routes[0].chain.filters == ()
    assert (await fetch(handle.inbound_port, "/admin")).status == 200
    handle.write_config(NO_ADMIN)
    assert await handle.server.reload()
    assert (await fetch(handle.inbound_port, "/admin")).status == 403
    dump = handle.server.runtime.config_dump()["authorization"]
    assert dump["policies"] == ["default/no-admin"]
    assert [s["step"] for s in dump["steps"]] == ["DENY"]


async def test_a_policy_for_other_workloads_does_not_apply(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    other = policy("other-app", "selector: {matchLabels: {app: other}}\naction: DENY\nrules: [{}]")
    other_ns = policy("other-ns", "action: DENY\nrules: [{}]", namespace="payments")
    root = policy(
        "mesh-wide",
        "action: DENY\nrules: [{to: [{operation: {paths: [/secret]}}]}]",
        namespace="istio-system",
    )
    handle, _log = await shelf(proxy, app, other + other_ns + root)
    assert (await fetch(handle.inbound_port, "/books")).status == 200
    assert (await fetch(handle.inbound_port, "/secret")).status == 403  # root namespace: mesh-wide


async def test_empty_spec_denies_all_and_an_empty_rule_allows_all(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    handle, _log = await shelf(proxy, app, policy("deny-all", "{}"))
    assert (await fetch(handle.inbound_port, "/")).status == 403
    handle.write_config(policy("deny-all", "{}") + policy("allow-all", "rules: [{}]"))
    assert await handle.server.reload()
    assert (await fetch(handle.inbound_port, "/")).status == 200


async def test_hosts_headers_and_conditions(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    app = await upstreams()
    spec = """
    rules:
    - to: [{operation: {hosts: [Shelf.Example.com, "*.internal"]}}]
      when:
      - {key: "request.headers[x-team]", values: [books, "lib*"]}
      - {key: "request.headers[x-debug]", notValues: ["*"]}
    """
    handle, _log = await shelf(proxy, app, policy("by-host", spec))
    c = await Client.connect(handle.inbound_port)
    try:
        assert (await c.request(host="shelf.example.com", headers=[("x-team", "library")])).status == 200
        assert (await c.request(host="api.internal", headers=[("x-team", "books")])).status == 200
        # A Host with a port needs its own entry, as in Istio.
        assert (await c.request(host="shelf.example.com:80", headers=[("x-team", "books")])).status == 403
        assert (await c.request(host="shelf.example.com", headers=[("x-team", "music")])).status == 403
        assert (await c.request(host="shelf.example.com")).status == 403  # header absent: no value matches
        debug = [("x-team", "books"), ("x-debug", "1")]
        assert (await c.request(host="shelf.example.com", headers=debug)).status == 403
    finally:
        await c.close()


async def test_dry_run_reports_and_audit_marks_without_changing_the_answer(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    dry = policy(
        "would-deny",
        "action: DENY\nrules: [{to: [{operation: {paths: [/books/*]}}]}]",
        annotations='{istio.io/dry-run: "true"}',
    )
    audit = policy("audit-writes", "action: AUDIT\nrules: [{to: [{operation: {methods: [POST]}}]}]")
    handle, log = await shelf(proxy, app, dry + audit)
    assert (await fetch(handle.inbound_port, "/books/1")).status == 200
    md = log.records[-1].metadata
    assert md == {
        "authz_dry_run_deny_result": "denied",
        "authz_dry_run_deny_policy": "ns[default]-policy[would-deny]-rule[0]",
    }
    assert (await fetch(handle.inbound_port, "/music", method="POST", body=b"x")).status == 200
    md = log.records[-1].metadata
    assert md is not None and md["authz_dry_run_deny_result"] == "allowed"
    assert md["authz_audit_policy"] == "ns[default]-policy[audit-writes]-rule[0]"
    assert counter(handle, action="DENY", dry_run="true", result="denied") == 1
    assert counter(handle, action="AUDIT", result="audited") == 1
    assert len(app.seen) == 2


async def test_remote_ip_blocks_read_x_forwarded_for_through_the_trusted_proxies(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    app = await upstreams()
    mesh = yaml("""
        apiVersion: meshbus.io/v1
        kind: MeshConfig
        metadata: {name: mesh, namespace: istio-system}
        spec: {defaultConfig: {gatewayTopology: {numTrustedProxies: 2}}}
        """)
    blocked = policy(
        "blocked-net", "action: DENY\nrules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]"
    )
    handle, _log = await shelf(proxy, app, mesh + "---\n" + blocked)
    c = await Client.connect(handle.inbound_port)
    try:
        # Two trusted proxies: the client is the second entry from the right.
        assert (await c.request(headers=[("x-forwarded-for", "203.0.113.9, 10.0.0.7")])).status == 403
        assert (await c.request(headers=[("x-forwarded-for", "198.51.100.1, 10.0.0.7")])).status == 200
        assert (
            await c.request(headers=[("x-forwarded-for", "203.0.113.9")])
        ).status == 200  # too few: the peer
        assert (await c.request()).status == 200
    finally:
        await c.close()

"""AuthorizationPolicy CUSTOM against a real HTTP authorizer (Istio's envoyExtAuthzHttp provider).

The authorizer is a small HTTP server started here; it decides by the ``x-user`` header: ``alice``
is allowed (and gets ``x-user-id`` upstream), ``mallory`` denied with 401, ``broken`` answers 503,
``sleepy`` never answers in time. The check is sent only when a CUSTOM rule matches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from meshbus.proxy.codec.http1 import BODY, END, HEAD, RequestSession, serialize_response_head
from tests.integration.proxy.conftest import LogCapture, ProxyFactory, ProxyHandle, UpstreamFactory, yaml
from tests.integration.proxy.test_authz import policy
from tests.integration.proxy.upstreams import Client, Upstream, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@dataclass
class Check:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Authorizer:
    checks: list[Check] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on stop: a ``sleepy`` check is answered only then."""

    async def start(self) -> Authorizer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            self.release.set()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = RequestSession()
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        self.writers.add(writer)
        try:
            with contextlib.suppress(ConnectionError):
                await self._requests(session, reader, writer)
        finally:
            self.writers.discard(writer)
            self.tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _requests(
        self, session: RequestSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head, body = None, b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for kind, payload in session.feed(data):
                if kind == HEAD:
                    head, body = payload, b""
                elif kind == BODY:
                    body += payload
                elif kind == END and head is not None:
                    check = Check(head.method, head.target, dict(head.hdict), body)
                    self.checks.append(check)
                    writer.write(await self._answer(check))
                    await writer.drain()

    async def _answer(self, check: Check) -> bytes:
        user = check.headers.get("x-user", "")
        if user == "sleepy":
            await self.release.wait()
        if user == "alice":
            hdrs = [("x-user-id", "42"), ("x-trace", "t-1"), ("x-internal", "no"), ("content-length", "0")]
            return serialize_response_head(200, hdrs)
        if user == "broken":
            return serialize_response_head(503, [("content-length", "0")])
        body = b"who are you?"
        hdrs = [("www-authenticate", 'Bearer realm="shelf"'), ("x-reason", "unknown user"),
                ("x-internal", "no"), ("content-type", "text/html"), ("content-length", str(len(body)))]  # fmt: skip
        return serialize_response_head(401, hdrs) + body


@pytest.fixture
async def authorizer() -> AsyncIterator[Authorizer]:
    a = await Authorizer().start()
    yield a
    await a.stop()


def config(authz_port: int, provider: str = "", policies: str = "") -> str:
    provider = (
        provider
        or """
      timeout: 1s
      pathPrefix: /check
      includeRequestHeadersInCheck: [x-user, "x-trace-*"]
      includeAdditionalHeadersInCheck: {x-mesh: meshbus}
      headersToUpstreamOnAllow: [x-user-id]
      headersToDownstreamOnAllow: [x-trace]
      headersToDownstreamOnDeny: [x-reason]
    """
    )
    provider_yaml = "\n".join("      " + ln for ln in yaml(provider).splitlines())
    return (
        yaml(f"""
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: ext-authz, namespace: authz}}
        spec:
          hosts: [ext-authz.authz.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: 8181, name: http, protocol: HTTP}}]
          endpoints: [{{address: 127.0.0.1, ports: {{http: {authz_port}}}}}]
        ---
        apiVersion: meshbus.io/v1
        kind: MeshConfig
        metadata: {{name: mesh, namespace: istio-system}}
        spec:
          extensionProviders:
          - name: my-authz
            envoyExtAuthzHttp:
              service: ext-authz.authz.svc.cluster.local
              port: 8181
        """)
        + provider_yaml
        + "\n---\n"
        + policy(
            "ext",
            """
            action: CUSTOM
            provider: {name: my-authz}
            rules: [{to: [{operation: {paths: ["/private/*"]}}]}]
            """,
        )
        + policies
    )


async def shelf(proxy: ProxyFactory, app: Upstream, text: str) -> tuple[ProxyHandle, LogCapture]:
    handle = await proxy(text, app_port=app.port, labels={"app": "shelf"})
    log = LogCapture()
    handle.server.access_log = log
    return handle, log


async def test_the_check_goes_only_where_a_custom_rule_matches_and_shapes_the_request(
    upstreams: UpstreamFactory, proxy: ProxyFactory, authorizer: Authorizer
) -> None:
    app = await upstreams()
    no_drafts = policy("no-drafts", "action: DENY\nrules: [{to: [{operation: {paths: [/private/drafts]}}]}]")
    handle, log = await shelf(proxy, app, config(authorizer.port, policies=no_drafts))
    port = handle.inbound_port

    assert (await fetch(port, "/public", headers=[("x-user", "mallory")])).status == 200
    assert authorizer.checks == []  # no CUSTOM rule matched: nobody was asked

    headers = [
        ("x-user", "alice"),
        ("x-trace-id", "abc"),
        ("cookie", "secret"),
        ("authorization", "Bearer t"),
    ]
    ok = await fetch(port, "/private/./x?page=2", host="shelf.example", headers=headers)
    assert ok.status == 200, ok.body
    check = authorizer.checks[-1]
    assert (check.method, check.path) == (
        "GET",
        "/check/private/x?page=2",
    )  # prefix + normalized path + query
    assert check.headers["host"] == "shelf.example"
    assert {
        k: check.headers.get(k) for k in ("x-user", "x-trace-id", "authorization", "x-mesh", "cookie")
    } == {
        "x-user": "alice",
        "x-trace-id": "abc",
        "authorization": "Bearer t",  # always sent, as Envoy does
        "x-mesh": "meshbus",
        "cookie": None,  # not asked for
    }
    seen = app.seen[-1]
    assert seen.path == "/private/x?page=2" and seen.headers["x-user-id"] == "42"
    assert "x-internal" not in seen.headers
    assert ok.headers.get("x-trace") == "t-1"  # headersToDownstreamOnAllow
    assert log.records[-1].metadata == {
        "ext_authz_policy": "ns[default]-policy[ext]-rule[0]",
        "ext_authz_result": "ok",
    }

    denied = await fetch(port, "/private/x", headers=[("x-user", "mallory")])
    assert (denied.status, denied.body) == (401, b"who are you?")
    assert denied.headers.get("www-authenticate") == 'Bearer realm="shelf"'
    assert denied.headers.get("x-reason") == "unknown user" and "x-internal" not in denied.headers
    assert denied.headers.get("content-type") == "text/plain"  # not listed: Envoy's own
    rec = log.records[-1]
    assert (rec.response_code_details, rec.response_flags) == ("ext_authz_denied", "UAEX")

    # CUSTOM allowed it, DENY still applies.
    drafts = await fetch(port, "/private/drafts", headers=[("x-user", "alice")])
    assert (drafts.status, drafts.body) == (403, b"RBAC: access denied")
    assert len(app.seen) == 2
    family = handle.server.registry.get("meshbus_ext_authz_requests_total")
    assert family is not None
    counts = {tuple(values): child.value for values, child in family.series()}
    assert counts == {("my-authz", "ok"): 2, ("my-authz", "denied"): 1}


@pytest.mark.parametrize(
    ("provider", "user", "status"),
    [
        ("timeout: 1s", "broken", 403),  # 5xx is an error: statusOnError's default, 403
        ('timeout: 1s\nstatusOnError: "503"', "broken", 503),
        ("timeout: 1s\nfailOpen: true", "broken", 200),
        ("timeout: 200ms", "sleepy", 403),
        ("timeout: 200ms\nfailOpen: true", "sleepy", 200),
        ("timeout: 1s\nincludeRequestHeadersInCheck: [x-other]", "alice", 401),  # x-user not sent: unknown
    ],
)
async def test_errors_fail_closed_unless_the_provider_fails_open(
    upstreams: UpstreamFactory,
    proxy: ProxyFactory,
    authorizer: Authorizer,
    provider: str,
    user: str,
    status: int,
) -> None:
    app = await upstreams()
    if "includeRequestHeadersInCheck" not in provider:
        provider += "\nincludeRequestHeadersInCheck: [x-user]"
    handle, log = await shelf(proxy, app, config(authorizer.port, provider))
    r = await fetch(handle.inbound_port, "/private/x", headers=[("x-user", user)])
    assert r.status == status, r.body
    if status == 401:
        return
    md = log.records[-1].metadata
    assert md is not None and md["ext_authz_result"] == ("failed_open" if status == 200 else "error")
    if status != 200:
        assert log.records[-1].response_code_details == "ext_authz_error"


async def test_an_unreachable_authorizer_is_an_error(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    app = await upstreams()
    closed = await Authorizer().start()
    await closed.stop()  # nothing listens on its port now
    handle, log = await shelf(
        proxy, app, config(closed.port, "timeout: 1s\nincludeRequestHeadersInCheck: [x-user]")
    )
    r = await fetch(handle.inbound_port, "/private/x", headers=[("x-user", "alice")])
    assert r.status == 403
    assert "connect-failure" in (log.records[-1].metadata or {}).get("ext_authz_error", "")


async def test_the_body_goes_to_the_authorizer_up_to_its_limit(
    upstreams: UpstreamFactory, proxy: ProxyFactory, authorizer: Authorizer
) -> None:
    app = await upstreams()
    provider = "timeout: 1s\nincludeRequestHeadersInCheck: [x-user]\nincludeRequestBodyInCheck: {maxRequestBytes: 16}"
    handle, _log = await shelf(proxy, app, config(authorizer.port, provider))
    port = handle.inbound_port
    ok = await fetch(port, "/private/x", method="POST", headers=[("x-user", "alice")], body=b"hello")
    assert ok.status == 200 and authorizer.checks[-1].body == b"hello"
    assert authorizer.checks[-1].headers["content-length"] == "5"
    assert app.seen[-1].body == b"hello"  # the body still reaches the app
    big = await fetch(port, "/private/x", method="POST", headers=[("x-user", "alice")], body=b"x" * 40)
    assert big.status == 413  # over the limit without allowPartialMessage
    handle.write_config(config(authorizer.port, provider.replace("16}", "16, allowPartialMessage: true}")))
    assert await handle.server.reload()
    part = await fetch(port, "/private/x", method="POST", headers=[("x-user", "alice")], body=b"y" * 40)
    assert part.status == 200 and authorizer.checks[-1].body == b"y" * 16
    assert app.seen[-1].body == b"y" * 40


async def test_a_provider_the_sidecar_cannot_use_denies_what_its_rules_match(
    upstreams: UpstreamFactory, proxy: ProxyFactory, authorizer: Authorizer
) -> None:
    app = await upstreams()
    text = config(authorizer.port).replace(
        "name: my-authz\n", "name: other\n", 1
    )  # the policy names my-authz
    handle, log = await shelf(proxy, app, text)
    assert (await fetch(handle.inbound_port, "/public")).status == 200
    r = await fetch(handle.inbound_port, "/private/x", headers=[("x-user", "alice")])
    assert r.status == 403 and authorizer.checks == []
    assert log.records[-1].response_code_details == (
        "rbac_access_denied_matched_policy[ns[default]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action]"
    )


async def test_a_pipelined_request_whose_body_came_before_its_turn_is_checked_with_it(
    upstreams: UpstreamFactory, proxy: ProxyFactory, authorizer: Authorizer
) -> None:
    """The second request's body arrives while the first is served: the check still gets all of it."""
    app = await upstreams()
    provider = "timeout: 1s\nincludeRequestHeadersInCheck: [x-user]\nincludeRequestBodyInCheck: {maxRequestBytes: 64}"
    handle, _log = await shelf(proxy, app, config(authorizer.port, provider))
    two = b"".join(
        b"POST /private/%d HTTP/1.1\r\nHost: shelf\r\nx-user: alice\r\nContent-Length: 5\r\n\r\nbody%d"
        % (i, i)
        for i in (1, 2)
    )
    c = await Client.connect(handle.inbound_port)
    try:
        await c.send_raw(two)
        first, second = await c.read_response(), await c.read_response()
    finally:
        await c.close()
    assert (first.status, second.status) == (200, 200)
    assert [ch.body for ch in authorizer.checks] == [b"body1", b"body2"]
    assert [s.body for s in app.seen] == [b"body1", b"body2"]

"""One trace across three services arrives at a real OTLP/HTTP receiver, correctly parented.

frontend -> backend -> db, each app behind a mesh-mode sidecar, each app forwarding the trace
headers it gets (as Istio asks of apps: `meshbus-demo-app --call`). A Telemetry in the root
namespace samples every trace. The test's client sends one request, without trace context, to the
frontend's sidecar; meshbus-telemetry exports the spans with the OpenTelemetry OTLP/HTTP exporter
to a receiver in this test, which decodes them with opentelemetry-proto. Expected: five spans of one
trace, SERVER at each inbound and CLIENT at each outbound hop, each the child of the one before,
with the stable HTTP attributes, and the x-request-id the apps saw.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from meshbus.bus.embedded import EmbeddedNats
from meshbus.control.cli.demo_plan import children
from tests.support.mesh import DISCOVERY_FAST, DemoMesh
from tests.support.nats_server import require_binary
from tests.support.processes import PYTHON, ProcessGroup, free_port_block, http_get, is_ready, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

trace_pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

TELEMETRY = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 100
"""
CHAIN = (("frontend", "backend"), ("backend", "db"), ("db", None))


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, Span)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                req = trace_pb.ExportTraceServiceRequest()
                req.ParseFromString(body)
                with outer.lock:
                    for rs in req.resource_spans:
                        attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            outer.spans.extend((attrs, s) for s in ss.spans)
                out = trace_pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_one_trace_across_three_services(tmp_path: Path, processes: ProcessGroup, receiver: Receiver) -> None:
    require_binary()
    nats = EmbeddedNats(port=0, store_dir=str(tmp_path / "nats"))
    nats.start()
    try:
        _run(tmp_path, processes, receiver, nats)
    finally:
        processes.stop_all()
        nats.cleanup()


def _run(tmp_path: Path, group: ProcessGroup, receiver: Receiver, nats: EmbeddedNats) -> None:
    root = "trace"
    group.env.update(MESHBUS_NATS_URL=nats.url, MESHBUS_SUBJECT_ROOT=root)
    base = free_port_block(3 * 4)
    mesh = DemoMesh(nats, group, None, root)  # type: ignore[arg-type]  # operator actions only
    for child in children(tmp_path, python=PYTHON):
        if child.name in ("meshbus-config", "meshbus-discovery"):
            group.spawn(
                child.name, child.argv + (DISCOVERY_FAST if child.name == "meshbus-discovery" else ())
            )
    endpoint = f"http://127.0.0.1:{receiver.port}/v1/traces"
    group.spawn(
        "meshbus-telemetry",
        (PYTHON, "-m", "meshbus.telemetry", "--metrics-port", "0", "--otlp-endpoint", endpoint),
    )
    wait_for("meshbus-config to take the Telemetry", lambda: mesh.apply(TELEMETRY, "telemetry.yaml"), 20)
    ports: dict[str, tuple[int, int, int, int]] = {}
    for i, (name, calls) in enumerate(CHAIN):
        app, inbound, outbound, admin = (base + 4 * i + k for k in range(4))
        ports[name] = (app, inbound, outbound, admin)
        argv = (PYTHON, "-m", "meshbus.control.demo.app", "--name", name, "--port", str(app))
        if calls:
            argv += ("--call", calls, "--via", str(outbound))
        group.spawn(name, argv)
        group.spawn(
            f"{name}-sidecar",
            (
                PYTHON, "-m", "meshbus.proxy", "--service", name, "--namespace", "default",
                "--service-account", name, "--node-id", f"{name}-sidecar", "--labels", f"app={name},version=v1",
                "--admin", f"127.0.0.1:{admin}", "--inbound", f"127.0.0.1:{inbound}",
                "--outbound", f"127.0.0.1:{outbound}" if calls else "off",
                "--app-port", str(app), "--service-port", "http=9080",
            ),
        )  # fmt: skip
    for name, (_app, _in, _out, admin) in ports.items():
        wait_for(f"{name}-sidecar /ready", lambda admin=admin: is_ready(admin), 20)

    def through() -> dict[str, Any] | None:
        r = http_get(ports["frontend"][1], "/order", host="frontend", headers={"x-request-id": "rid-3hop"})
        doc = json.loads(r.body) if r.status == 200 else None
        ok = doc and doc["called"]["status"] == 200 and doc["called"]["body"]["called"]["status"] == 200
        return doc if ok else None

    # The sidecars learn each other's endpoints from discovery: the first calls may still get 503 NR/UH.
    doc = wait_for("frontend -> backend -> db", through, 20)
    assert doc["called"]["body"]["called"]["body"]["request_id"] == "rid-3hop"

    def trace() -> list[tuple[dict[str, Any], Any]] | None:
        with receiver.lock:
            mine = [
                (res, s)
                for res, s in receiver.spans
                if any(
                    a.key == "meshbus.request_id" and a.value.string_value == "rid-3hop" for a in s.attributes
                )
            ]
        ids = {s.trace_id for _, s in mine}
        if len(ids) > 1:  # the calls before the mesh was complete were traced too: keep the last whole one
            last = max(mine, key=lambda rs: rs[1].start_time_unix_nano)[1].trace_id
            mine = [(r, s) for r, s in mine if s.trace_id == last]
        return mine if len(mine) == 5 else None

    spans = wait_for("five spans of one trace at the OTLP receiver", trace, 20)
    by_parent = {s.parent_span_id: (res, s) for res, s in spans}
    assert len({s.trace_id for _, s in spans}) == 1
    chain = []
    parent = b""
    while parent in by_parent:
        res, s = by_parent.pop(parent)
        chain.append((res, s))
        parent = s.span_id
    assert not by_parent, "every span is the child of the one before"
    kinds = [s.kind for _, s in chain]
    server, client = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
    assert kinds == [server, client, server, client, server]
    services = [res["service.name"] for res, _ in chain]
    assert services == [
        "frontend.default",
        "frontend.default",
        "backend.default",
        "backend.default",
        "db.default",
    ]
    for _, s in chain:
        attrs = {a.key: a.value for a in s.attributes}
        assert attrs["http.request.method"].string_value == "GET"
        assert attrs["http.response.status_code"].int_value == 200
        assert attrs["url.scheme"].string_value == "http"
        assert "server.address" in attrs and "url.path" in attrs
        assert s.name.startswith("GET ")
    first = {a.key: a.value for a in chain[0][1].attributes}
    assert first["url.path"].string_value == "/order"
    assert first["network.peer.address"].string_value == "127.0.0.1"

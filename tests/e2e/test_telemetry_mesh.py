"""Telemetry of the `meshctl up` demo mesh, checked as an operator checks it.

One mesh for the module (NATS, the control plane, meshbus-telemetry, two reviews versions behind
mTLS sidecars, the productpage client sidecar); traffic goes through the productpage sidecar. Then:
both reporters' ``istio_requests_total`` on meshbus-telemetry's ``/metrics`` with Istio's labels and
the right counts; ``promtool check metrics`` on it; a real Prometheus scraping it answers the Istio
dashboards' queries; ``meshctl top --once -o json``; ``meshctl logs`` (filters, ``--follow``); and
the web view in a real headless Chromium, which finds the edges.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mesh import DemoMesh, start_demo
from tests.support.nats_server import require_binary
from tests.support.processes import ProcessGroup, free_port, http_get, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MESHCTL = str(Path(sys.executable).parent / "meshctl")
REQUESTS = 40
SA = "spiffe://cluster.local/ns/default/sa/"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoMesh]:
    require_binary()
    tmp = tmp_path_factory.mktemp("telemetry")
    group = ProcessGroup(tmp / "logs")
    m = start_demo(tmp, group)
    failed = True
    try:
        wait_for("meshbus-telemetry /ready", lambda: _get(m, "/ready").status == 200, 20)
        for _ in range(REQUESTS):
            m.get_reviews()
        failed = False
        yield m
    finally:
        group.stop_all()
        if failed:
            print("\n" + group.dump_logs())
        m.nats.cleanup()


def _get(mesh: DemoMesh, path: str) -> Any:
    try:
        return http_get(mesh.ports.telemetry, path)
    except OSError:
        return type("R", (), {"status": 0, "body": b""})()


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_part, _, value = line.rpartition(" ")
        body = labels_part[len(name) + 1 : -1]
        labels = dict(kv.split("=", 1) for kv in _split_labels(body))
        out.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
    return out


def _split_labels(body: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        parts.append(cur)
    return parts


def _requests_by(mesh: DemoMesh, reporter: str) -> list[tuple[dict[str, str], float]]:
    text = _get(mesh, "/metrics").body.decode()
    return [
        (labels, v)
        for labels, v in _samples(text, "istio_requests_total")
        if labels["reporter"] == reporter and labels["source_workload"] == "productpage-v1"
    ]


def test_both_reporters_count_every_request_with_istios_labels(mesh: DemoMesh) -> None:
    def counted() -> bool:
        return all(sum(v for _, v in _requests_by(mesh, r)) >= REQUESTS for r in ("source", "destination"))

    wait_for(f"{REQUESTS} requests from both reporters on /metrics", counted, 20)
    for reporter in ("source", "destination"):
        series = _requests_by(mesh, reporter)
        assert sum(v for _, v in series) == REQUESTS, series
        for labels, _ in series:
            assert labels["destination_service"] == "reviews.default.svc.cluster.local"
            assert labels["destination_service_name"] == "reviews"
            assert labels["destination_service_namespace"] == "default"
            assert labels["destination_workload"] in ("reviews-v1", "reviews-v2")
            assert labels["destination_version"] == labels["destination_workload"][-2:]
            assert labels["destination_app"] == labels["destination_canonical_service"] == "reviews"
            assert labels["destination_workload_namespace"] == "default"
            assert labels["destination_principal"] == SA + "reviews"
            assert labels["source_app"] == "productpage" and labels["source_version"] == "v1"
            assert labels["source_workload_namespace"] == "default"
            assert labels["source_principal"] == SA + "productpage"
            assert labels["request_protocol"] == "http" and labels["response_code"] == "200"
            assert labels["response_flags"] == "-" and labels["grpc_response_status"] == ""
            assert labels["source_cluster"] == labels["destination_cluster"] == "meshbus"
            expected = "mutual_tls" if reporter == "destination" else "unknown"
            assert labels["connection_security_policy"] == expected
    text = _get(mesh, "/metrics").body.decode()
    assert 'destination_service="inbound"' not in text
    assert "istio_request_duration_milliseconds_bucket{" in text and 'le="3600000"' in text


def test_promtool_accepts_the_exposition(mesh: DemoMesh) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    wait_for("series on /metrics", lambda: bool(_requests_by(mesh, "destination")), 20)
    text = _get(mesh, "/metrics").body
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    # promtool exits 1 for text it cannot parse, 3 for lint findings. Istio's duration metric carries
    # its unit in its name (istio_request_duration_milliseconds: dashboards depend on it), which
    # promtool's naming lint flags; that is the one finding allowed (as tests/unit/telemetry's).
    problems = [p for p in (r.stdout + r.stderr).decode().splitlines() if p.strip()]
    assert r.returncode in (0, 3) and problems == [
        'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'
    ], problems


DASHBOARD_QUERIES = {
    # Istio's Grafana dashboards (istio-workload / istio-service / istio-mesh), windows shortened.
    "request rate by destination workload": 'sum(rate(istio_requests_total{reporter="destination"}[30s])) by (destination_workload, destination_workload_namespace)',
    "success rate excluding 5xx": 'sum(rate(istio_requests_total{reporter="destination",response_code!~"5.*"}[30s])) by (destination_service) / sum(rate(istio_requests_total{reporter="destination"}[30s])) by (destination_service)',
    "p99 by destination service": 'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[30s])) by (le, destination_service))',
    "mTLS share by source principal": 'sum(rate(istio_requests_total{reporter="destination",connection_security_policy="mutual_tls"}[30s])) by (source_principal) / sum(rate(istio_requests_total{reporter="destination"}[30s])) by (source_principal)',
    "response bytes by app and version": 'sum(rate(istio_response_bytes_sum{reporter="destination"}[30s])) by (destination_app, destination_version)',
}


def test_a_real_prometheus_answers_the_istio_dashboard_queries(mesh: DemoMesh, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus; .ci/run installs it)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: meshbus-telemetry\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{mesh.ports.telemetry}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:

        def query(q: str) -> list[Any]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    doc = json.load(r)
            except OSError:
                return []
            return [s for s in doc["data"]["result"] if s["value"][1] not in ("NaN", "0")]

        wait_for(
            "Prometheus scraping meshbus-telemetry", lambda: query('up{job="meshbus-telemetry"} == 1'), 30
        )
        stop = time.monotonic() + 60
        while time.monotonic() < stop:  # rate() needs two scrapes with traffic between them
            mesh.get_reviews()
            if all(query(q) for q in DASHBOARD_QUERIES.values()):
                break
        answers = {name: query(q) for name, q in DASHBOARD_QUERIES.items()}
        assert all(answers.values()), {k: v for k, v in answers.items() if not v}
        workloads = {
            s["metric"]["destination_workload"] for s in answers["request rate by destination workload"]
        }
        assert workloads <= {"reviews-v1", "reviews-v2"} and workloads
        mtls = answers["mTLS share by source principal"]
        assert {s["metric"]["source_principal"]: float(s["value"][1]) for s in mtls} == {
            SA + "productpage": 1.0
        }
        assert float(answers["p99 by destination service"][0]["value"][1]) > 0
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_meshctl_top_once_json(mesh: DemoMesh) -> None:
    for _ in range(10):
        mesh.get_reviews()
    env = {**os.environ, "MESHBUS_NATS_URL": mesh.nats.url, "MESHBUS_SUBJECT_ROOT": mesh.root}

    def top() -> dict[str, Any] | None:
        r = subprocess.run(
            [MESHCTL, "top", "--once", "-o", "json", "--window", "60s"],
            capture_output=True,
            env=env,
            timeout=20,
        )
        doc = json.loads(r.stdout) if r.returncode == 0 else None
        return doc if doc and doc["services"] else None

    doc = wait_for("meshctl top rows", top, 20)
    svc = {r["name"]: r for r in doc["services"]}["reviews.default.svc.cluster.local"]
    assert svc["rps"] > 0 and svc["success_rate"] == 1.0 and svc["mtls_share"] == 1.0
    assert svc["p50_ms"] is not None and svc["p50_ms"] <= svc["p99_ms"]
    assert {r["name"] for r in doc["workloads"]} <= {"reviews-v1", "reviews-v2"}


def test_meshctl_logs_filters_and_follows(mesh: DemoMesh) -> None:
    env = {**os.environ, "MESHBUS_NATS_URL": mesh.nats.url, "MESHBUS_SUBJECT_ROOT": mesh.root}

    def logs(*args: str) -> list[dict[str, Any]]:
        r = subprocess.run([MESHCTL, "logs", "-o", "json", *args], capture_output=True, env=env, timeout=20)
        assert r.returncode == 0, r.stderr.decode()
        return [json.loads(line) for line in r.stdout.splitlines()]

    recs = wait_for(
        "access logs in the stream", lambda: logs("--service", "reviews", "--since", "5m") or None, 20
    )
    assert all(r["service"] == "reviews" and r["direction"] == "inbound" for r in recs)
    assert all(r["downstream_peer_principal"] == SA + "productpage" for r in recs)
    assert all(len(r["trace_id"]) == 32 and r["request_id"] for r in recs)
    both = {r["request_id"] for r in logs("--since", "5m")}
    assert {r["request_id"] for r in recs} <= both  # the client side logged the same ids
    assert logs("--status", "5xx") == []
    assert logs("--status", "2xx", "--service", "productpage")
    argv = [MESHCTL, "logs", "--follow", "-o", "json", "--since", "1s"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as follower:
        lines: queue.Queue[bytes] = queue.Queue()
        assert follower.stdout is not None
        out = follower.stdout
        reader = threading.Thread(target=lambda: [lines.put(line) for line in iter(out.readline, b"")])
        reader.start()
        rid = uuid.uuid4().hex
        deadline = time.monotonic() + 20
        seen: list[bytes] = []
        while time.monotonic() < deadline and not any(rid.encode() in line for line in seen):
            r = http_get(
                mesh.ports.client_outbound, "/followed", host="reviews", headers={"x-request-id": rid}
            )
            assert r.status == 200
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1.0))
                while True:
                    seen.append(lines.get_nowait())
        follower.terminate()
        follower.wait(10)
        reader.join(10)  # EOF after the exit: the pipe is closed only once the reader is done with it
    mine = [json.loads(line) for line in seen if rid.encode() in line]
    assert mine, "meshctl logs --follow never printed the new request"
    assert mine[0]["path"] == "/followed"


def test_web_view_draws_the_live_graph_in_headless_chromium(mesh: DemoMesh, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them as root)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    for _ in range(10):
        mesh.get_reviews()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,700",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        browser.get(f"http://127.0.0.1:{mesh.ports.telemetry}/")

        def edges() -> list[Any] | None:
            found = browser.find_elements(By.CSS_SELECTOR, "g.edge[data-target^='default/reviews-v']")
            return found or None

        found = wait_for("edges productpage -> reviews in the page", edges, 30, every=0.5)
        sources = {e.get_attribute("data-source") for e in found}
        assert sources == {"default/productpage-v1"}
        assert all(e.get_attribute("data-mtls") == "true" for e in found)
        assert "rps" in found[0].text and "p99" in found[0].text
        nodes = {n.get_attribute("data-id") for n in browser.find_elements(By.CSS_SELECTOR, "g.node")}
        assert {"default/productpage-v1", "default/reviews-v1"} <= nodes
        shot = os.environ.get("MESHBUS_SCREENSHOT") or str(tmp_path / "graph.png")
        assert browser.save_screenshot(shot)
    finally:
        browser.quit()

"""Chaos (`make chaos`, minutes; not in `make test`): steady traffic through two mTLS sidecars while, at
random, a NATS node, a control-plane process (meshbus-config, -discovery, -ca, -policy, -telemetry) or
the filter host of a REMOTE Plugin on the server sidecars is killed with SIGKILL (`meshctl up` restarts
its own children; the test restarts the filter host), config applies flip the traffic between v1 and
v2, and certificates rotate every ~45 s (90 s lifetimes, renewed at half). The Plugin is FAIL_OPEN: a
request whose filter host is dead goes on without the filter (its configured fail mode), so it is not a
failure. Figures printed at the end: requests sent and failed (target 0), applies made and converged,
rotations, longest convergence, and how many responses the remote filter stamped.

MESHBUS_CHAOS=1 runs it; MESHBUS_CHAOS_SECONDS sets how long (default 180).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from meshbus.control.cli.bus_auth import BUS_DIR, SERVER_CA, BusFiles, client_env
from meshbus.control.cli.up_state import read_state
from tests.support.processes import wait_for
from tests.support.traffic import Traffic, converged, meshctl, pid_of, start_up, vs_file

SECONDS = float(os.environ.get("MESHBUS_CHAOS_SECONDS", "180"))
pytestmark = [
    pytest.mark.timeout(int(SECONDS) + 300),
    pytest.mark.skipif(os.environ.get("MESHBUS_CHAOS") != "1", reason="long: MESHBUS_CHAOS=1 (make chaos)"),
]
FILTER_HOST = "filter-host"
VICTIMS = [
    "nats-n1",
    "nats-n2",
    "nats-n3",
    "meshbus-config",
    "meshbus-discovery",
    "meshbus-ca",
    "meshbus-policy",
    "meshbus-telemetry",
    FILTER_HOST,
]
PLUGIN = """\
apiVersion: meshbus.io/v1
kind: Plugin
metadata: {name: chaos-stamp, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  filter: header-transform
  placement: REMOTE
  failStrategy: FAIL_OPEN
  timeout: 0.5s
  match: [{mode: SERVER}]
  pluginConfig: {response: {set: {x-chaos-stamp: "1"}}}
"""


def start_filter_host(processes: list[subprocess.Popen[bytes]], data_dir: Path, url: str) -> int:
    """A meshbus-filter-host for the built-in header-transform, as the filter-host role on the bus."""
    files = BusFiles(data_dir / BUS_DIR, data_dir / BUS_DIR / SERVER_CA)
    env = dict(os.environ, MESHBUS_NATS_URL=url, **client_env(files, "filter-host"))
    log = open(data_dir / "logs" / "filter-host.log", "ab")  # the child keeps its own copy of the fd
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshbus.plugins.remote", "--filter", "header-transform"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    processes.append(proc)
    return proc.pid


def test_chaos(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("MESHBUS_CHAOS_SEED", "16")))
    kills: Counter[str] = Counter()
    applies = converges = refused = 0
    longest = 0.0
    with (
        start_up(tmp_path, "--nats-cluster", "3", env={"MESHBUS_WORKLOAD_CERT_TTL": "90s"}) as (
            _up,
            ports,
            url,
        ),
        Traffic(ports.client_outbound) as traffic,
    ):
        hosts: list[subprocess.Popen[bytes]] = []
        host_pid = start_filter_host(hosts, tmp_path, url)
        plugin_file = tmp_path / "plugin.yaml"
        plugin_file.write_text(PLUGIN)
        put = meshctl(tmp_path, url, "apply", "-f", str(plugin_file), timeout="30")
        assert put.returncode == 0, put.stderr
        wait_for("traffic", lambda: len(traffic.outcomes) > 50, 30)
        version = "v1"
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            state = read_state(tmp_path)
            assert state is not None
            victim = rng.choice(VICTIMS)
            before = host_pid if victim == FILTER_HOST else pid_of(state, victim)
            try:
                os.kill(before, signal.SIGKILL)
            except ProcessLookupError:  # down already (exited, being restarted): wait for it, pick again
                wait_for(
                    f"{victim} back",
                    lambda v=victim, b=before: (s := read_state(tmp_path)) is not None and pid_of(s, v) != b,
                    60,
                )
                continue
            kills[victim] += 1
            if victim == FILTER_HOST:  # no supervisor restarts it: we do, as a deployment would
                hosts[-1].wait(timeout=10)
                host_pid = start_filter_host(hosts, tmp_path, url)
            version = "v2" if version == "v1" else "v1"
            applied = meshctl(
                tmp_path,
                url,
                "apply",
                "-f",
                str(vs_file(tmp_path, 100 if version == "v1" else 0)),
                timeout="60",
            )
            if applied.returncode != 0:
                refused += 1
                print(f"apply refused after killing {victim}: {applied.stderr.strip()}")
                version = "v2" if version == "v1" else "v1"
            else:
                applies += 1
                # What meshbus-config answered (created / configured / unchanged), shown when a wait fails.
                print(f"apply {version} after killing {victim}: {applied.stdout.strip()}")
                started = time.monotonic()
                wait_for(
                    f"convergence on {version} after killing {victim}",
                    lambda v=version: converged(traffic, v),
                    60,
                )
                longest = max(longest, time.monotonic() - started)
                converges += 1
            if victim != FILTER_HOST:
                wait_for(
                    f"{victim} restarted",
                    lambda v=victim, b=before: (s := read_state(tmp_path)) is not None and pid_of(s, v) != b,
                    60,
                )
        for h in hosts:
            h.kill()
            h.wait(timeout=10)
        stamped = traffic.stamped
        rotations = sum(
            p.read_text().count("renewed certificate") for p in (tmp_path / "logs").glob("*-sidecar.log")
        )
        failures = traffic.failures()
        print(
            f"\nchaos {SECONDS:.0f}s: requests {len(traffic.outcomes)}, failed {len(failures)}; kills {dict(kills)}; "
            f"applies {applies} made, {converges} converged, {refused} refused; rotations {rotations}; "
            f"longest convergence {longest:.2f}s; stamped by the remote filter {stamped}"
        )
        assert failures == [], Counter(failures)
        assert stamped > len(traffic.outcomes) // 2  # the remote filter ran, most of the time
        assert refused == 0 and converges == applies > 0
        assert rotations >= 3 * (SECONDS // 60)  # three sidecars, each renewing about every 45 s

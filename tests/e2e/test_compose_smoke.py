"""docker-compose.yml run as local processes, as far as that is possible without an engine.

Every service's command runs as written (``sh -c`` scripts through a real ``sh``; programs from the
console scripts this venv installed, as the image installs them), in the order ``docker compose up``
starts them, honouring each ``depends_on`` condition (a healthy NATS, one-shot steps that must
succeed) and ``deploy.replicas``. NATS is a real nats-server with the config the compose file's
bus-init step writes (TLS only, a user per role), every process with its own certificate.

What stands in for the engine: named volumes and image paths become folders under the test's tmp
dir (the demo config comes from tests/fixtures/demo, never samples/); each container's network
becomes its own block of local ports (``--port``/``--app-port``/``--inbound``/``--outbound``/
``--admin`` values are remapped; ``network_mode: service:X`` shares X's); ``hostname -i`` is
127.0.0.1 and the service name ``nats`` is 127.0.0.1 too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from meshbus.bus.embedded import find_binary
from tests.support.compose import ROOT, Compose, Service
from tests.support.mesh import DEMO_CONFIG
from tests.support.nats_server import require_binary
from tests.support.processes import ProcessGroup, free_port, http_get, wait_for

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
_PORT_FLAG = re.compile(r"(--(?:port|app-port|metrics-port) )(\d+)")
_ADDR_FLAG = re.compile(r"(--(?:inbound|outbound|admin) )([\d.]+):(\d+)")


class Engine:
    """Starts compose services as local processes (see the module docstring for what stands in)."""

    def __init__(self, compose: Compose, tmp: Path, group: ProcessGroup, env_file: dict[str, str]) -> None:
        self.compose, self.tmp, self.group, self.env_file = compose, tmp, group, env_file
        self.ports: dict[str, dict[int, int]] = {}
        self.nats_url = ""

    def network(self, svc: Service) -> dict[int, int]:
        owner = str(svc.spec.get("network_mode", "")).removeprefix("service:") or svc.name
        return self.ports.setdefault(owner, {})

    def port(self, svc: Service, container_port: int) -> int:
        return self.network(svc).setdefault(container_port, free_port())

    def volume(self, name: str) -> str:
        path = self.tmp / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def localize(self, svc: Service, text: str) -> str:
        """Image paths, mounts, ports and host names of ``text`` as this machine has them."""
        # what the bootstrap applies is the user's to edit: the test applies its own copy instead
        paths = {
            w[w.index("-f") + 1]: str(DEMO_CONFIG) for w in svc.commands() if w[:2] == ["meshctl", "apply"]
        }
        for source, target, _ in svc.mounts:  # a bind mount (./...) is the repository's own file
            paths[target] = str(ROOT / source) if source.startswith(".") else self.volume(source)
        for target in sorted(paths, key=len, reverse=True):  # whole paths only: /ca is not in /bus/ca-key.pem
            text = re.sub(rf"(?<![\w./-]){re.escape(target)}(?![\w.-])", lambda _m, t=target: paths[t], text)
        text = _PORT_FLAG.sub(lambda m: f"{m[1]}{self.port(svc, int(m[2]))}", text)
        text = _ADDR_FLAG.sub(lambda m: f"{m[1]}{m[2]}:{self.port(svc, int(m[3]))}", text)
        return text.replace("$(hostname -i)", "127.0.0.1")

    def env(self, svc: Service) -> dict[str, str]:
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
        env.update({k: self.localize(svc, str(v)) for k, v in (svc.spec.get("environment") or {}).items()})
        if svc.spec.get("env_file") == [".env"]:
            env.update(self.env_file)
        if "MESHBUS_NATS_URL" in env and self.nats_url:
            env["MESHBUS_NATS_URL"] = env["MESHBUS_NATS_URL"].replace("nats://nats:4222", self.nats_url)
        return env

    def start(self, svc: Service) -> None:
        if svc.name == "nats":
            self.start_nats(svc)
            return
        script = svc.script
        argv = ["sh", "-c", self.localize(svc, script)] if script else self.argv(svc)
        for i in range(svc.replicas):
            proc = self.group.spawn(f"{svc.name}-{i + 1}", argv, env=self.env(svc))
            if svc.name in self.compose.one_shots():
                assert proc.popen.wait(timeout=60) == 0, f"{svc.name} failed:\n{proc.log_text()}"

    def argv(self, svc: Service) -> list[str]:
        return shlex.split(self.localize(svc, shlex.join(svc.spec["command"])))

    def start_nats(self, svc: Service) -> None:
        # the image's entrypoint runs nats-server with the command as its flags; the config file is
        # a bind mount of the repository's own; only the ports are this machine's
        client, monitor = self.port(svc, 4222), self.port(svc, 8222)
        argv = [find_binary(), *self.argv(svc), "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor)]
        self.group.spawn("nats", argv, env=self.env(svc))
        self.nats_url = f"nats://127.0.0.1:{client}"

    def healthy(self, svc: Service) -> bool:
        test = " ".join((svc.spec.get("healthcheck") or {}).get("test", []))
        url = re.search(r"http://127\.0\.0\.1:(\d+)(\S*?)['\"]?(?:\)|$|\s)", test)
        assert url, f"{svc.name}: no HTTP health check in {test!r}"
        port = self.port(svc, int(url[1]))
        try:
            return http_get(port, url[2] or "/", timeout=1).status == 200
        except OSError:
            return False


def test_compose_services_run_in_dependency_order(tmp_path: Path, processes: ProcessGroup) -> None:
    require_binary()
    compose = Compose()
    env_file = {"MESHBUS_CA_PASSPHRASE": secrets.token_urlsafe(16)}
    engine = Engine(compose, tmp_path, processes, env_file)
    processes.env = {}  # every variable comes from Engine.env, as a container gets only its own
    try:
        _run(compose, engine, processes)
    finally:
        processes.stop_all(last={"nats"})


def _run(compose: Compose, engine: Engine, processes: ProcessGroup) -> None:
    for name in compose.start_order():
        svc = compose.services[name]
        for dep, condition in svc.depends_on.items():
            if condition == "service_healthy":
                wait_for(f"{dep} healthy", lambda dep=dep: engine.healthy(compose.services[dep]), 20)
        engine.start(svc)
    for svc in compose.services.values():
        if svc.spec.get("healthcheck") and svc.name != "nats":
            wait_for(f"{svc.name} healthy", lambda svc=svc: engine.healthy(svc) or _no_deaths(processes), 30)

    # through the productpage sidecar's published port, over mTLS, to a reviews version
    outbound = engine.port(compose.services["productpage-sidecar"], 15001)
    r = http_get(outbound, "/", host="reviews")
    assert r.status == 200 and json.loads(r.body)["version"] in ("v1", "v2"), r

    # NATS takes TLS clients with a certificate of the mesh root only (bus-init's config): meshctl
    # without the operator's certificate fails the handshake and says so
    meshctl = [str(BIN / "meshctl"), "get", "vs", "--nats", engine.nats_url]
    bare = subprocess.run(
        meshctl,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "MESHBUS_DATA_DIR": str(engine.tmp / "nowhere")},
    )
    assert bare.returncode == 1 and "TLS handshake with NATS" in bare.stderr, bare.stderr
    ok = subprocess.run(  # the operator's certificate, as the bootstrap step has it
        meshctl, capture_output=True, text=True, timeout=30, env=engine.env(compose.services["bootstrap"])
    )
    assert ok.returncode == 0 and "reviews" in ok.stdout, ok.stderr


def _no_deaths(group: ProcessGroup) -> bool:
    dead = [p.name for p in group.dead() if p.name not in ("bootstrap-1", "bus-init-1")]  # one-shots
    if dead:
        raise AssertionError(f"exited: {dead}")
    return False

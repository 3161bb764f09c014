"""docker-compose.yml is checked, not run (no engine here): it must satisfy the compose
specification, agree with the Dockerfile it builds (every mount point exists in the image, owned by
the image's user; every command is a console script the image installs), run NATS secured as
`meshctl up` does (bus-init's config, a client certificate per role, an env file never committed), and use restart policies that fit one-shot
steps and sidecars that keep their state. tests/e2e/test_compose_smoke.py runs it as processes."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshbus.control.cli import bus_auth
from tests.support.compose import COMPOSE, ROOT, Compose, Service, final_stage, pyproject_scripts

# console script -> module whose build_parser() it runs
PARSERS = {
    "meshbus-proxy": "meshbus.proxy.__main__",
    "meshbus-config": "meshbus.control.config.__main__",
    "meshbus-discovery": "meshbus.control.discovery.__main__",
    "meshbus-ca": "meshbus.control.ca.__main__",
    "meshbus-policy": "meshbus.control.policy.__main__",
    "meshbus-telemetry": "meshbus.telemetry.__main__",
    "meshctl": "meshbus.control.cli.__main__",
}
COMPOSE_DOC = Compose()
OURS = sorted(n for n, s in COMPOSE_DOC.services.items() if s.builds_here)


def _sidecars() -> list[Service]:
    return [s for s in COMPOSE_DOC.services.values() if any(c[:1] == ["meshbus-proxy"] for c in s.commands())]


def test_compose_file_matches_the_compose_spec() -> None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("check-jsonschema not installed (it is in the dev extras)")
    r = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_component_has_a_service() -> None:
    used = {words[0] for svc in COMPOSE_DOC.services.values() for words in svc.commands()}
    assert {
        "meshbus-proxy",
        "meshbus-config",
        "meshbus-discovery",
        "meshbus-ca",
        "meshbus-policy",
        "meshbus-telemetry",
        "meshctl",
    } <= used


@pytest.mark.parametrize("name", OURS)
def test_every_command_is_an_installed_console_script_and_parses(name: str) -> None:
    scripts = pyproject_scripts()
    for words in COMPOSE_DOC.services[name].commands():
        program, args = words[0], words[1:]
        assert program in scripts, f"{name}: {program!r} is not a console script of pyproject.toml"
        if program not in PARSERS:
            continue
        parser = importlib.import_module(PARSERS[program]).build_parser()
        try:
            parser.parse_args(args)
        except SystemExit as exc:  # argparse exits on a bad flag
            pytest.fail(f"{name}: `{' '.join(words)}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("name", OURS)
def test_every_mount_point_exists_in_the_image_owned_by_its_user(name: str) -> None:
    stage = final_stage()
    assert stage.user != "root", "the image runs as a user of its own"
    for source, target, _ in COMPOSE_DOC.services[name].mounts:
        assert target in stage.made, f"{name}: {target} (volume {source}) is not created in the image"
        assert stage.owners.get(target) == stage.user, f"{name}: {target} is not chowned to {stage.user}"


def test_the_image_checks_see_what_the_old_dockerfile_got_wrong() -> None:
    old = "FROM python:3.11-slim\nRUN pip install x && useradd --create-home mesh\nUSER mesh\n"
    assert final_stage(old).made == set() and final_stage(old).user == "mesh"
    new = "FROM a AS b\nFROM c\nRUN useradd m \\\n  && mkdir -p /ca /tokens && chown m:m /ca\nUSER m\n"
    stage = final_stage(new)
    assert stage.made == {"/ca", "/tokens"} and stage.owners == {"/ca": "m"}


def test_the_config_bootstrap_applies_is_in_the_image() -> None:
    """The bootstrap's ``meshctl apply -f DIR`` names a folder the Dockerfile copies into the image.
    (Its content is the user's to edit, so no test reads it: tests/fixtures/demo is the tests' copy.)"""
    stage = final_stage()
    applied = [
        w[w.index("-f") + 1]
        for w in COMPOSE_DOC.services["bootstrap"].commands()
        if w[:2] == ["meshctl", "apply"]
    ]
    assert applied
    for target in applied:
        copied = next(dst for dst in stage.copies if target == dst or target.startswith(dst + "/"))
        assert (ROOT / stage.copies[copied] / Path(target).relative_to(copied)).is_dir(), target


def test_restart_policies_fit_one_shots_and_sidecar_state() -> None:
    one_shots = COMPOSE_DOC.one_shots()
    assert one_shots == {"bootstrap", "bus-init"}
    for name, svc in COMPOSE_DOC.services.items():
        policy = svc.spec.get("restart")
        assert policy == ("no" if name in one_shots else "unless-stopped"), f"{name}: restart {policy!r}"
    # A sidecar that restarts keeps its state (snapshot, key and certificate: a restart renews with
    # the kept certificate, not the spent token) in a named volume of its own, at its --state-dir.
    state_volumes = []
    for svc in _sidecars():
        words = next(c for c in svc.commands() if c[:1] == ["meshbus-proxy"])
        state_dir = words[words.index("--state-dir") + 1]
        mounted = {target: source for source, target, ro in svc.mounts if not ro}
        assert state_dir in mounted, f"{svc.name}: its state dir {state_dir} is not a volume"
        assert mounted[state_dir] in COMPOSE_DOC.volumes, (
            f"{svc.name}: {mounted[state_dir]} is not a named volume"
        )
        state_volumes.append(mounted[state_dir])
    assert len(state_volumes) == len(set(state_volumes)) == 3, "one state volume per sidecar"


def test_nats_runs_the_config_bus_init_writes_and_every_process_its_own_key() -> None:
    """The secured bus of `meshctl up` (docs/security-bus.md): bus-init writes nats-server's config and
    one client certificate per role into the `bus` volume before NATS starts; each process connects
    over TLS as its role (certificate, key and the root that checks the server; no nkey)."""
    nats, init = COMPOSE_DOC.services["nats"], COMPOSE_DOC.services["bus-init"]
    (words,) = init.commands()
    assert words[:3] == ["meshctl", "bus", "init"]
    bus_dir = words[words.index("--bus-dir") + 1]
    assert nats.depends_on == {"bus-init": "service_completed_successfully"}
    assert nats.spec["command"][:2] == ["--config", f"{bus_dir}/nats-server.conf"]
    assert "--by-role" in words
    assert ("bus/roles/nats", bus_dir, True) in nats.mounts and ("bus", bus_dir, False) in init.mounts
    roles = {
        "config": "config",
        "discovery": "discovery",
        "ca": "ca",
        "policy": "policy",
        "telemetry": "telemetry",
        "bootstrap": "operator",
    }
    for name, role in roles.items():
        svc = COMPOSE_DOC.services[name]
        env = svc.spec.get("environment") or {}
        for flag, var, file in (
            ("--nats-cert", "MESHBUS_NATS_CERT", f"{role}-cert.pem"),
            ("--nats-key", "MESHBUS_NATS_KEY", f"{role}-key.pem"),
            ("--nats-ca", "MESHBUS_NATS_CA", "server-ca.pem"),
        ):
            given = [w[w.index(flag) + 1] for w in svc.commands() if flag in w] or [env.get(var)]
            assert given == [f"{bus_dir}/{file}"] * len(given), (name, flag, given)
        assert not any("--nats-nkey" in w for w in svc.commands()) and "MESHBUS_NATS_NKEY" not in env, name
        assert (f"bus/roles/{role}", bus_dir, True) in svc.mounts, name
    named = set(words[i + 1] for i, w in enumerate(words) if w == "--proxy")
    for svc in _sidecars():
        proxy = next(c for c in svc.commands() if c[:1] == ["meshbus-proxy"])
        node, sa = proxy[proxy.index("--node-id") + 1], proxy[proxy.index("--service-account") + 1]
        assert f"{node}=default/{sa}" in named, f"{svc.name}: bus-init makes no user for {node}"
        assert proxy[proxy.index("--nats-ca") + 1] == f"{bus_dir}/server-ca.pem"
        assert proxy[proxy.index("--nats-bootstrap-cert") + 1] == f"{bus_dir}/bootstrap-cert.pem"
        assert proxy[proxy.index("--nats-bootstrap-key") + 1] == f"{bus_dir}/bootstrap-key.pem"
    for name in ["nats", *OURS]:  # everything gets the same env file (the CA passphrase)
        assert COMPOSE_DOC.services[name].spec.get("env_file") == [".env"], name
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(
        ["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert tracked.returncode == 0 and tracked.stdout.strip() == "", ".env is in git"
    assert all(p.startswith("127.0.0.1:") for p in nats.spec.get("ports", [])), "NATS is for this host only"


def test_each_container_mounts_only_its_own_credentials() -> None:
    """Only bus-init mounts the whole `bus` volume; every other service mounts its consumer's folder
    (bus_auth.hand_out), read-only, and every file under it that the service names is in that folder:
    a sidecar's container never holds the operator's or another role's key."""
    init = COMPOSE_DOC.services["bus-init"]
    bus_dir = next(w[w.index("--bus-dir") + 1] for w in init.commands())
    files = bus_auth.BusFiles(Path(bus_dir), Path(bus_dir) / bus_auth.SERVER_CA)
    handed = bus_auth.consumers(files)
    seen = set()
    for name, svc in COMPOSE_DOC.services.items():
        if name == "bus-init":
            continue
        bus_mounts = [(s, ro) for s, t, ro in svc.mounts if s.split("/")[0] == "bus"]
        text = " ".join(" ".join(c) for c in svc.commands())
        text += " " + " ".join(str(v) for v in (svc.spec.get("environment") or {}).values())
        named = set(re.findall(rf"{re.escape(bus_dir)}/([\w.-]+)", text))
        if not bus_mounts:
            assert not named, f"{name} names {named} under {bus_dir} but does not mount it"
            continue
        ((source, ro),) = bus_mounts
        assert ro, f"{name}: the credentials are mounted writable"
        consumer = source.removeprefix("bus/roles/")
        assert consumer in handed, f"{name} mounts {source}, not a consumer's folder"
        assert named and named <= set(handed[consumer]), f"{name}: {named} not all in roles/{consumer}"
        seen.add(consumer)
    assert {"nats", "proxy", "operator", "config", "discovery", "ca", "policy", "telemetry"} <= seen

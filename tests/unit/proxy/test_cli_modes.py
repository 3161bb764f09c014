"""meshbus-proxy's command line: standalone vs mesh mode, the common flags, workers in mesh mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.control.cli.demo_plan import DemoPorts, children
from meshbus.proxy.__main__ import build_parser, parse_command_line
from meshbus.proxy.bootstrap import Address, BootstrapError
from meshbus.proxy.mesh.agent import agent_settings_from_args

MESH = ["--service", "reviews", "--labels", "version=v1", "--app-port", "9080"]


def test_mesh_mode_takes_the_common_flags_and_runs_one_worker() -> None:
    cfg, args = parse_command_line(
        [*MESH, "--nats", "nats://10.0.0.1:4222", "--subject-root", "blue", "--log-format", "json"]
    )
    assert cfg.config_path == "" and cfg.workers == 1
    assert cfg.log_format == "json"
    assert (args.nats, args.subject_root) == ("nats://10.0.0.1:4222", "blue")
    s = agent_settings_from_args(args, inbound_port=15006)
    assert s.labels == {"version": "v1"} and s.app_port == 9080 and s.inbound_port == 15006
    assert s.workload().ports == {"http": 9080}


def test_identity_flags_default_to_cluster_local_without_token() -> None:
    _, args = parse_command_line(MESH)
    assert args.token is None and args.trust_domain == "cluster.local"


def test_mesh_mode_refuses_several_workers_with_a_reason() -> None:
    with pytest.raises(BootstrapError, match="mesh mode runs one worker"):
        parse_command_line([*MESH, "--workers", "2"])


@pytest.mark.parametrize(
    "argv", [[], ["--config", "x.yaml", "--service", "reviews"]], ids=["neither", "both"]
)
def test_exactly_one_of_config_or_service(argv: list[str]) -> None:
    with pytest.raises(BootstrapError, match=r"--config FILE_OR_DIR .* or --service NAME"):
        parse_command_line(argv)


def test_standalone_mode_is_unchanged() -> None:
    cfg, args = parse_command_line(["--config", "mesh.yaml", "--workers", "3"])
    assert cfg.config_path == "mesh.yaml" and cfg.workers == 3 and args.service is None


def test_demo_sidecars_parse_as_mesh_mode_on_their_ports(tmp_path: Path) -> None:
    ports = DemoPorts.starting_at(20000)
    assert sorted(getattr(ports, f) for f in DemoPorts.__slots__) == list(
        range(20000, 20000 + DemoPorts.count())
    )
    plan = {c.name: c for c in children(tmp_path, python="python", ports_from=20000)}
    sidecar = plan["reviews-v2-sidecar"]
    cfg, args = parse_command_line(list(sidecar.argv[3:]))  # after "python -m meshbus.proxy"
    assert cfg.inbound is not None and cfg.inbound.port == ports.v2_inbound
    assert cfg.outbound is None and cfg.app_port == ports.v2_app
    assert sidecar.admin_port == ports.v2_admin
    assert agent_settings_from_args(args).workload().ports == {"http": 9080}
    client = plan["productpage-sidecar"]
    cfg, _ = parse_command_line(list(client.argv[3:]))
    assert cfg.inbound is None and cfg.outbound is not None and cfg.outbound.port == ports.client_outbound


def test_standalone_labels_name_the_workload_for_source_scoped_routes() -> None:
    cfg, _ = parse_command_line(
        ["--config", "m.yaml", "--labels", "app=reviews,version=v2", "--labels", "tier=web"]
    )
    assert cfg.labels == {"app": "reviews", "version": "v2", "tier": "web"}
    with pytest.raises(BootstrapError, match="bad label 'oops'"):
        parse_command_line(["--config", "m.yaml", "--labels", "oops"])


def test_inbound_listens_for_peers_while_outbound_and_admin_stay_local() -> None:
    cfg, _ = parse_command_line(["--config", "x.yaml"])
    assert (cfg.inbound, cfg.outbound, cfg.admin) == (
        Address("0.0.0.0", 15006),
        Address("127.0.0.1", 15001),
        Address("127.0.0.1", 15000),
    )
    text = " ".join(build_parser().format_help().split())
    assert "inbound on 0.0.0.0 because peers on other hosts connect to it" in text
    assert "admin (it can fail health checks and reload config) on 127.0.0.1" in text

"""Finding 6 of issue 15: `meshctl apply` against the live mesh consults discovery's registry.

With both reviews workloads registered, re-applying the demo config warned ``IST0101 Referenced
host not found: "reviews"`` (and IST0174 for its DestinationRule), pointing at the first line of
the document from the stored copy instead of the field in the file applied. Now a registered host
is no finding, and one that is not is reported exactly as `meshctl analyze -f` reports it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.mesh import DEMO_CONFIG, SIDECARS, DemoMesh
from tests.support.processes import wait_for

pytestmark = pytest.mark.timeout(60)

SPLIT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
  namespace: default
spec:
  hosts:
    - ratings
  http:
    - route:
        - destination:
            host: reviews
            subset: v1
          weight: 50
        - destination:
            host: ratings
          weight: 50
"""


def _meshctl(mesh: DemoMesh, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "meshbus.control.cli",
            *args,
            "--nats",
            mesh.nats.url,
            "--subject-root",
            mesh.root,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
    )


def test_apply_knows_registered_hosts_and_reports_like_analyze(demo_mesh: DemoMesh, tmp_path: Path) -> None:
    wait_for(
        "every sidecar registered",
        lambda: sorted(v.row.node for v in demo_mesh.proxy_status()) == sorted(SIDECARS),
    )

    again = _meshctl(demo_mesh, tmp_path, "apply", "-f", str(DEMO_CONFIG))
    assert again.returncode == 0, again.stderr
    assert again.stderr == "", again.stderr  # "reviews" is registered: nothing to warn about
    assert "unchanged" in again.stdout

    (tmp_path / "split.yaml").write_text(SPLIT)
    applied = _meshctl(demo_mesh, tmp_path, "apply", "-f", "split.yaml")
    assert applied.returncode == 0, applied.stderr
    offline = _meshctl(demo_mesh, tmp_path, "analyze", "-f", "split.yaml")
    expected = (
        'Warning [IST0101] (VirtualService default/ratings split.yaml:16) Referenced host not found: "ratings"'
        " (the host may be registered by a workload later)"
    )
    # offline, analyze knows no workload, so "reviews" is reported there but not on apply
    assert expected in offline.stdout.splitlines(), offline.stdout
    assert '"reviews"' in offline.stdout
    assert applied.stderr.splitlines() == [expected], applied.stderr

    stored = _meshctl(demo_mesh, tmp_path, "analyze")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert '"reviews"' not in stored.stdout and "non-existent service reviews" not in stored.stdout, (
        stored.stdout
    )
    assert 'Referenced host not found: "ratings"' in stored.stdout

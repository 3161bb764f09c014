"""The stored value format (meshbus.bus.schemas.config) and Resource <-> value (manifest.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from meshbus.bus.config.loader import load_path
from meshbus.bus.errors import BadRequestError
from meshbus.bus.schemas.config import decode_value, encode_value, manifest_resource
from meshbus.control.config.manifest import record_manifest, split_key, to_record, to_stored

BOOKINFO = Path(__file__).parents[3] / "golden" / "config" / "bookinfo"


def test_every_bookinfo_resource_round_trips_through_the_stored_value() -> None:
    resources = load_path(BOOKINFO).resources
    assert len(resources) > 10
    for res in resources:
        stored = to_stored(res, updated="2026-11-27T19:00:00.000000Z")
        back = decode_value(encode_value(stored))
        assert back == stored
        again = back.to_resource()
        assert again.spec == res.spec and again.metadata.name == res.name, res.ref


def test_value_shape_is_the_documented_one() -> None:
    res = load_path(BOOKINFO / "destination-rule-all.yaml").resources[1]
    raw = orjson.loads(encode_value(to_stored(res, updated="U", created="C")))
    assert set(raw) == {"apiVersion", "kind", "metadata", "spec", "source", "change"}
    assert raw["metadata"] == {"name": "reviews", "namespace": "default"}
    assert raw["source"] == {"file": str(BOOKINFO / "destination-rule-all.yaml"), "line": 12}
    assert raw["change"] == {"operation": "apply", "updated": "U", "created": "C"}
    assert raw["spec"]["subsets"][0] == {"name": "v1", "labels": {"version": "v1"}}
    assert "trafficPolicy" not in raw["spec"]  # unset fields are omitted


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"kind": "VirtualService"}', b'{"metadata": 1}'])
def test_junk_values_are_bad_requests(data: bytes) -> None:
    with pytest.raises(BadRequestError):
        decode_value(data)


def test_records_print_like_kubectl_objects() -> None:
    res = load_path(BOOKINFO / "virtual-service-reviews-90-10.yaml").resources[0]
    rec = to_record(to_stored(res, updated="U", created="C"), 42)
    doc = record_manifest(rec)
    assert doc["metadata"] == {
        "name": "reviews",
        "namespace": "default",
        "creationTimestamp": "C",
        "resourceVersion": "42",
    }
    assert doc["spec"]["http"][0]["route"][1]["weight"] == 10
    assert split_key("VirtualService.default.a.b") == ("VirtualService", "default", "a.b")


def test_a_manifest_is_read_by_api_group_and_kind() -> None:
    """Discovery and the proxy read manifests through manifest_resource: the Gateway API's Gateway is not
    Istio's Gateway, though both are ``kind: Gateway``."""
    meta = {"name": "edge", "namespace": "default"}
    kube = manifest_resource(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": meta,
            "spec": {
                "gatewayClassName": "istio",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
            },
        },
        "test",
    )
    istio = manifest_resource(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": meta,
            "spec": {
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
            },
        },
        "test",
    )
    assert (kube.KEY_KIND, istio.KEY_KIND) == ("KubernetesGateway", "Gateway")
    with pytest.raises(ValueError, match=r"KubernetesGateway default/edge: spec\.listeners"):
        manifest_resource(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": meta,
                "spec": {"gatewayClassName": "istio", "listeners": "x"},
            },
            "test",
        )

"""meshctl's config output: kind aliases, kubectl lines and tables, istioctl analyze lines."""

from __future__ import annotations

import pytest

from meshbus.bus.config.result import FieldError, Level
from meshbus.bus.config.source import Source
from meshbus.bus.schemas.config import ResourceResult
from meshbus.control.cli.analyze import istio_line
from meshbus.control.cli.config_output import change_line, human_age, table
from meshbus.control.config.kinds import UnknownKindError, kubectl_name, resolve_kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("vs", "VirtualService"),
        ("VS", "VirtualService"),
        ("virtualservices", "VirtualService"),
        ("virtualservice.networking.istio.io", "VirtualService"),
        ("dr", "DestinationRule"),
        ("se", "ServiceEntry"),
        ("gw", "Gateway"),
        ("pa", "PeerAuthentication"),
        ("ra", "RequestAuthentication"),
        ("ap", "AuthorizationPolicy"),
        ("authorizationpolicies", "AuthorizationPolicy"),
        ("Sidecar", "Sidecar"),
    ],
)
def test_kind_aliases(text: str, kind: str) -> None:
    assert resolve_kind(text) == kind


def test_unknown_kind() -> None:
    with pytest.raises(UnknownKindError, match='unknown resource type "pods"'):
        resolve_kind("pods")


def test_kubectl_lines() -> None:
    assert kubectl_name("VirtualService", "reviews") == "virtualservice.networking.istio.io/reviews"
    r = ResourceResult("DestinationRule", "networking.istio.io", "default", "reviews", 3, "configured")
    assert change_line(r, False) == "destinationrule.networking.istio.io/reviews configured"
    assert change_line(r, True) == "destinationrule.networking.istio.io/reviews configured (server dry run)"
    d = ResourceResult("VirtualService", "networking.istio.io", "default", "reviews", 0, "deleted")
    assert change_line(d, False) == 'virtualservice.networking.istio.io "reviews" deleted'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (330, "5m30s"),
        (2700, "45m"),
        (5 * 3600 + 1800, "5h30m"),
        (40 * 3600, "40h"),
        (77 * 3600, "3d5h"),
        (200 * 86400, "200d"),
        (800 * 86400, "2y"),
    ],
)
def test_ages_like_kubectl(seconds: int, text: str) -> None:
    assert human_age(seconds) == text


def test_table_is_plain_aligned_columns() -> None:
    assert table(["NAME", "REVISION"], [["reviews", "12"], ["a", "3"]]).splitlines() == [
        "NAME      REVISION",
        "reviews   12",
        "a         3",
    ]


def test_istioctl_lines() -> None:
    src = Source("reviews.yaml", 12)
    coded = FieldError(
        src,
        "spec.http[0]",
        'Referenced subset not found: "v3"',
        resource="VirtualService default/reviews",
        code="IST0101",
    )
    assert (
        istio_line(coded)
        == 'Error [IST0101] (VirtualService default/reviews reviews.yaml:12) Referenced subset not found: "v3"'
    )
    field = FieldError(
        src,
        "spec.http[0].route[1].weight",
        "weights must add up to 100",
        90,
        "VirtualService default/reviews",
    )
    assert istio_line(field) == (
        "Error [IST0106] (VirtualService default/reviews reviews.yaml:12) Schema validation error: "
        "spec.http[0].route[1].weight: weights must add up to 100 (got 90)"
    )
    warn = FieldError(
        src, "spec.x", "not implemented", resource="VirtualService default/reviews", level=Level.WARNING
    )
    assert (
        istio_line(warn) == "Warning (VirtualService default/reviews reviews.yaml:12) spec.x: not implemented"
    )

"""Discovery puts meshbus-policy's key sets inline into RequestAuthentications (jwks_inline.py)."""

from __future__ import annotations

from typing import Any

import pytest

from meshbus.bus.schemas.jwks import JwksRecord, jwks_source
from meshbus.control.discovery.jwks_inline import JwksInliner

pytestmark = pytest.mark.unit

URI = "https://idp.test/jwks.json"


def ra(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"jwtRules": list(rules)},
    }


def record(src: str, jwks: str = '{"keys":[1]}', expires: float = 100.0) -> JwksRecord:
    return JwksRecord(src, jwks, fetched_at=0.0, expires_at=expires, checked_at=0.0)


class Clock:
    t = 10.0

    def __call__(self) -> float:
        return self.t


def test_rules_get_the_usable_key_set_of_their_source_and_others_are_left_alone() -> None:
    clock = Clock()
    inl = JwksInliner(clock)
    value = ra(
        "a",
        {"issuer": "i", "jwksUri": URI},
        {"issuer": "inline", "jwks": "{}"},
        {"issuer": "https://oidc.test"},
    )
    assert inl.inline(value) is value  # nothing fetched yet: unchanged (the proxy answers 401 for them)
    uri, oidc = jwks_source("i", URI, None), jwks_source("https://oidc.test", None, None)
    assert (uri, oidc) == (f"uri:{URI}", "oidc:https://oidc.test")
    assert inl.update(record(uri), uri) == {"RequestAuthentication.default.a"}
    out = inl.inline(value)
    assert [r.get("jwks") for r in out["spec"]["jwtRules"]] == ['{"keys":[1]}', "{}", None]
    assert out["spec"]["jwtRules"][0]["jwksUri"] == URI  # kept: Istio ignores jwksUri when jwks is set
    assert value["spec"]["jwtRules"][0].get("jwks") is None  # the stored value is not modified
    assert inl.inline({"kind": "VirtualService"}) == {"kind": "VirtualService"}


def test_only_a_change_of_the_usable_keys_remodels_the_resources_that_use_them() -> None:
    clock = Clock()
    inl = JwksInliner(clock)
    src = f"uri:{URI}"
    inl.inline(ra("a", {"issuer": "i", "jwksUri": URI}))
    inl.inline(ra("b", {"issuer": "j", "jwksUri": URI}))
    both = {"RequestAuthentication.default.a", "RequestAuthentication.default.b"}
    assert inl.update(record(src), src) == both
    assert inl.update(record(src), src) == set()  # a refresh that brought the same keys
    assert inl.update(record(src, '{"keys":[2]}'), src) == both  # rotated
    assert inl.update(None, src) == both


def test_keys_past_their_maximum_age_are_dropped_even_without_a_new_record() -> None:
    clock = Clock()
    inl = JwksInliner(clock)
    src = f"uri:{URI}"
    value = ra("a", {"issuer": "i", "jwksUri": URI})
    inl.inline(value)
    inl.update(record(src, expires=50.0), src)
    assert inl.next_expiry() == 50.0
    assert inl.expired() == set()
    clock.t = 50.0
    assert inl.expired() == {"RequestAuthentication.default.a"}
    assert inl.inline(value) is value and inl.next_expiry() is None

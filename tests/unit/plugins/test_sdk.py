"""The SDK's views and contracts (meshbus.plugins.api / http / loader), without a proxy."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from meshbus.plugins import STREAMED, Filter, Headers, LocalReply, Peer, Request, buffered
from meshbus.plugins.api import body_modes, check_filter_class, implemented_hooks
from meshbus.plugins.loader import PluginConfigError, config_problems, make_filter, schema_problems
from meshbus.plugins.registry import info_of

pytestmark = pytest.mark.unit


def test_headers_are_a_case_insensitive_multimap_edited_in_place() -> None:
    items = [("accept", "a"), ("x-a", "1"), ("x-a", "2")]
    changed: list[str] = []
    h = Headers(items, changed.append)
    assert h.get("X-A") == "1" and h.getall("x-a") == ["1", "2"] and h.get("nope") is None
    h.add("X-B", "3")
    h.set("x-a", "9")
    h.delete("ACCEPT")
    h.delete("absent")  # nothing removed: no change reported
    assert items == [("x-b", "3"), ("x-a", "9")]  # the caller's list itself
    assert changed == ["x-b", "x-a", "accept"]
    assert "x-b" in h and list(h) == ["x-b", "x-a"] and h["x-a"] == "9"
    with pytest.raises(KeyError):
        h["gone"]


def test_peers_and_trace_context_are_read_from_what_the_proxy_knows() -> None:
    p = Peer.from_principal("spiffe://cluster.local/ns/shop/sa/cart")
    assert (p.namespace, p.service_account) == ("shop", "cart")
    assert Peer.from_principal(None).namespace is None
    req = Request(
        "GET", "/", "svc", Headers.of({"traceparent": "00-abc-def-01"}), claims=lambda: {"sub": "me"}
    )
    assert req.trace is not None and (req.trace.trace_id, req.trace.span_id, req.trace.sampled) == (
        "abc",
        "def",
        True,
    )
    assert req.claims == {"sub": "me"}
    assert Request("GET", "/", "svc", Headers()).claims is None


def test_only_overridden_hooks_count_and_body_modes_follow_them() -> None:
    class Observe(Filter):
        def on_request_body(self, req: Request, chunk: bytes, end: bool) -> None: ...

    assert implemented_hooks(Observe) == ("on_request_body",)
    assert body_modes(Observe)[0] == STREAMED  # a body hook without a mode gets the body streamed

    class Wants(Filter):
        request_body = buffered(10)

        def on_request_headers(self, req: Request) -> None: ...

    with pytest.raises(TypeError, match="asks for the request body but has no on_request_body"):
        body_modes(Wants)
    with pytest.raises(ValueError, match="buffered body limit"):
        buffered(10 * 1024 * 1024)
    with pytest.raises(TypeError, match="implements none of the hooks"):
        check_filter_class(type("Empty", (Filter,), {}), "entry point 'empty'")
    with pytest.raises(TypeError, match=r"not a subclass of meshbus\.plugins\.Filter"):
        check_filter_class(object, "entry point 'x'")
    with pytest.raises(ValueError, match=r"status must be 100\.\.599"):
        LocalReply(42)


class Configured(Filter):
    class Config(BaseModel):
        value: str
        limit: int = 3

    def setup(self) -> None:
        if self.config.limit < 0:
            raise ValueError("limit must not be negative")

    def on_request_headers(self, req: Request) -> None: ...


def test_plugin_config_is_decoded_strictly_with_every_problem_and_its_path() -> None:
    info = info_of("configured", Configured)
    assert config_problems(info, {"value": "x"}) == []
    problems = config_problems(info, {"value": 1, "limit": "many", "extra": True})
    assert [(p, m) for p, m, _ in problems] == [
        (("value",), "Input should be a valid string"),
        (("limit",), "Input should be a valid integer, unable to parse string as an integer"),
        (("extra",), "Extra inputs are not permitted"),  # even though Config does not forbid extras
    ]
    assert make_filter(info, {"value": "v"}).config.value == "v"
    with pytest.raises(PluginConfigError, match="value: Field required"):
        make_filter(info, {})
    with pytest.raises(RuntimeError, match="filter 'configured' failed to start: ValueError: limit must not"):
        make_filter(info, {"value": "v", "limit": -1})
    schema = info.schema
    assert schema is not None and schema["additionalProperties"] is False
    assert [p for p, _, _ in schema_problems(schema, {"value": 1, "extra": 2})] == [("extra",), ("value",)]


def test_a_filter_without_config_refuses_one() -> None:
    class Bare(Filter):
        def on_request_headers(self, req: Request) -> None: ...

    assert config_problems(info_of("bare", Bare), {"x": 1}) == [((), "filter 'bare' takes no config", None)]


@pytest.mark.parametrize(
    ("name", "value"), [("x-a", "1\r\nx-injected: yes"), ("x-a", "1\nx"), ("x a", "1"), ("", "1")]
)
def test_headers_refuse_values_that_would_split_the_head(name: str, value: str) -> None:
    from meshbus.plugins.http import Headers

    h = Headers.of({"x-keep": "1"})
    with pytest.raises(ValueError, match="HTTP does not allow"):
        h.set(name, value)
    with pytest.raises(ValueError, match="HTTP does not allow"):
        h.add(name, value)
    assert h.getall("x-a") == [] and h.get("x-keep") == "1"

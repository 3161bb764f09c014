"""The built-in filters through FilterHarness (the hooks as the proxy runs them, no proxy)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from meshbus.plugins import Peer
from meshbus.plugins.loader import PluginConfigError
from meshbus.plugins.registry import load
from meshbus.plugins.testing import FilterHarness

pytestmark = pytest.mark.unit


async def test_header_transform_fills_templates_from_the_request_identity_and_response() -> None:
    h = FilterHarness(
        load("header-transform"),
        {
            "request": {"set": {"x-who": "${source.principal}", "x-where": "${method} ${path} ${header.x-id}"},
                        "remove": ["x-internal"]},
            "response": {"add": {"x-status": "${status}/${response.server}"}},
        },
    )  # fmt: skip
    out = await h.request(
        "PUT", "/b", headers={"x-id": "7", "x-internal": "1"}, response_headers={"server": "up"},
        source=Peer.from_principal("spiffe://td/ns/a/sa/b"),
    )  # fmt: skip
    assert out.request.headers.items() == [
        ("x-id", "7"),
        ("x-who", "spiffe://td/ns/a/sa/b"),
        ("x-where", "PUT /b 7"),
    ]
    assert out.response is not None and out.response.headers.get("x-status") == "200/up"
    with pytest.raises(PluginConfigError, match=r"unknown placeholder \$\{source.labels\}"):
        FilterHarness(load("header-transform"), {"request": {"set": {"x": "${source.labels}"}}})


async def test_json_schema_answers_400_with_the_schema_error_and_lets_good_bodies_through() -> None:
    schema = {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}
    h = FilterHarness(load("json-schema"), {"schema": schema})
    out = await h.request("POST", body=b'{"title": 3}')
    assert out.reply is not None and out.reply.status == 400
    assert json.loads(out.reply.body) == {"error": "3 is not of type 'string'", "path": "/title"}
    out = await h.request("POST", body=b"{nope")
    assert out.reply is not None and "not JSON" in json.loads(out.reply.body)["error"]
    assert (await h.request("POST", body=b'{"title": "t"}')).reply is None
    assert (await h.request("GET")).reply is None  # not a checked method
    with pytest.raises(PluginConfigError, match="not a valid JSON Schema"):
        FilterHarness(load("json-schema"), {"schema": {"type": "nonsense"}})


async def test_api_keys_and_basic_auth_let_in_known_callers_only_and_drop_the_credential() -> None:
    digest = "sha256:" + hashlib.sha256(b"k2").hexdigest()
    h = FilterHarness(load("api-key-auth"), {"keys": {"ci": "k1", "bot": digest}})
    for key, who in (("k1", "ci"), ("k2", "bot")):
        out = await h.request(headers={"x-api-key": key})
        assert out.reply is None and out.request.headers.items() == [("x-auth-user", who)]
    out = await h.request(headers={"x-api-key": "wrong"})
    assert out.reply is not None and out.reply.status == 401
    b = FilterHarness(load("basic-auth"), {"realm": "shelf", "users": {"al": "pw"}})
    good = "Basic " + base64.b64encode(b"al:pw").decode()
    assert (await b.request(headers={"authorization": good})).request.headers.get("x-auth-user") == "al"
    for bad in ("Basic " + base64.b64encode(b"al:no").decode(), "Bearer x", "Basic !!!"):
        out = await b.request(headers={"authorization": bad})
        assert out.reply is not None and out.reply.status == 401
        assert dict(out.reply.headers)["www-authenticate"] == 'Basic realm="shelf"'


async def test_request_log_redacts_named_headers_and_json_fields() -> None:
    h = FilterHarness(
        load("request-log"), {"redactFields": ["password"], "logBodies": True, "bodyLimit": 100}
    )
    out = await h.request(
        "POST", "/login", headers={"authorization": "secret", "x-a": "1"},
        body=b'{"user": "al", "nested": {"password": "pw"}}', response_body=b"plain text",
    )  # fmt: skip
    assert out.response is not None
    record = h.filter.record(out.request, out.response)
    assert record["request_headers"] == {"authorization": "[redacted]", "x-a": "1"}
    assert record["request_body"] == {"user": "al", "nested": {"password": "[redacted]"}}
    assert record["response_body"] == "plain text"

"""Fuzz targets: each takes bytes, drives one parser the way the running process does, and lets
through only the exceptions that parser promises (its typed refusal). Anything else is a crash.

Shared by the CI-sized hypothesis run (tests/fuzz/test_fuzz_*.py) and the long coverage-guided run
(`make fuzz`: tests/fuzz/atheris_main.py). Each target reads its parameters from the first bytes and
the input from the rest, so one byte string is one complete case (what atheris mutates and what a
crash file holds):

- ``http1_request``: the downstream codec (``RequestSession``), the input split in two reads.
- ``http1_response``: the upstream codec (``ResponseSession``), raw heads or not, HEAD or not, with the
  kept head read back (``headers``/``hdict``) and ``passthrough_head``.
- ``config``: the config loader and validators (``load_text``), then the cross-resource analysis and,
  when the loader accepted everything, the proxy's build of it (a valid config must build or be
  refused with ``RuntimeBuildError``, never crash the proxy).
- ``bus_message``: every registered bus message decoder (`meshbus.bus.codec.decode`), with and without
  the schema header.
- ``jwt``: tokens (as sent, or with fuzzed claims or header signed by a real key) through the inbound
  JWT filter's verification, and JWKS documents through their parser (tests/fuzz/jwt_case.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from meshbus.bus import codec, schemas
from meshbus.bus.config.analysis import analyze
from meshbus.bus.config.loader import load_text
from meshbus.bus.errors import BusError
from meshbus.proxy.build.errors import RuntimeBuildError
from meshbus.proxy.build.runtime import build_runtime
from meshbus.proxy.codec.http1 import HEAD, ProtocolError, RequestSession, ResponseSession, passthrough_head
from tests.fuzz import jwt_case

Target = Callable[[bytes], None]


def _split(data: bytes) -> tuple[int, bytes]:
    """(parameter byte, the rest)."""
    return (data[0], data[1:]) if data else (0, b"")


def http1_request(data: bytes) -> None:
    param, body = _split(data)
    cut = param * len(body) // 256
    session = RequestSession(max_header_bytes=4096)
    try:
        for piece in (body[:cut], body[cut:]):
            for kind, payload in session.feed(piece):
                if kind == HEAD:
                    assert payload.method and isinstance(payload.target, str), payload
                    assert payload.body in (0, 1, 2), payload.body  # NO_BODY, LENGTH, CHUNKED
                elif kind == 3:  # UPGRADE: a tunnel from here on, the codec is done
                    return
    except ProtocolError as exc:
        assert exc.status in (400, 431), exc.status


def http1_response(data: bytes) -> None:
    param, body = _split(data)
    session = ResponseSession(raw_heads=bool(param & 1))
    session.expect(head_request=bool(param & 2))
    cut = (param >> 2) * len(body) // 64
    try:
        for piece in (body[:cut], body[cut:]):
            for kind, payload in session.feed(piece):
                if kind == HEAD:
                    _ = payload.headers, payload.hdict  # parsed from the kept raw head on first use
                    if payload.raw is not None:
                        passthrough_head(payload.raw)
    except ProtocolError as exc:
        assert exc.status == 502, exc.status


def config(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    result = load_text(text, "fuzz.yaml")
    analyze(result.resources, kubernetes=result.kubernetes)
    if result.ok and result.resources:
        try:
            build_runtime(result.resources, app_port=9080)
        except RuntimeBuildError:
            pass


for _mod in pkgutil.iter_modules(schemas.__path__):  # every message type registers itself on import
    importlib.import_module(f"{schemas.__name__}.{_mod.name}")
SCHEMAS = sorted(
    (sid, cls) for sid, cls in codec.registered().items() if cls.__module__.startswith("meshbus.")
)
"""Every bus message type (bus/schemas/*), in a fixed order: a case's first byte picks one."""


def bus_message(data: bytes) -> None:
    param, body = _split(data)
    sid, cls = SCHEMAS[(param >> 1) % len(SCHEMAS)]
    headers = {codec.SCHEMA_HEADER: sid} if param & 1 else None
    try:
        codec.decode(body, headers, cls)
    except BusError:
        pass


TARGETS: dict[str, Target] = {
    "http1_request": http1_request,
    "http1_response": http1_response,
    "config": config,
    "bus_message": bus_message,
    "jwt": jwt_case.case,
}

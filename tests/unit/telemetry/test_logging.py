from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from meshbus.telemetry import fields
from meshbus.telemetry.errors import ConfigError
from meshbus.telemetry.logging import TRACE, configure_logging, parse_level

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root, access = logging.getLogger(), logging.getLogger(fields.ACCESS_LOGGER)
    saved = (root.handlers[:], root.level, access.handlers[:], access.level, access.propagate)
    saved_structlog = structlog.get_config()
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    access.handlers[:], access.level, access.propagate = saved[2], saved[3], saved[4]
    structlog.configure(**saved_structlog)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_the_canonical_fields() -> None:
    out = io.StringIO()
    configure_logging("discovery", "info", stream=out, access_stream=io.StringIO())
    log = logging.getLogger("meshbus.control.discovery.server")
    log.info(
        "applied snapshot v%d", 42,
        extra={fields.NODE_ID: "reviews-v1", fields.VERSION: 42, fields.NONCE: "n-7", fields.SUBJECT: "mb.v1.x"},
    )  # fmt: skip
    log.debug("not shown")
    (line,) = _lines(out)
    assert line["event"] == "applied snapshot v42"
    assert line["level"] == "info"
    assert line["logger"] == "meshbus.control.discovery.server"
    assert line[fields.COMPONENT] == "discovery"
    assert line[fields.NODE_ID] == "reviews-v1" and line[fields.VERSION] == 42 and line[fields.NONCE] == "n-7"
    assert str(line["timestamp"]).endswith("Z")


def test_trace_level_and_exceptions() -> None:
    out = io.StringIO()
    configure_logging("proxy", "trace", stream=out, access_stream=io.StringIO())
    log = logging.getLogger("meshbus.proxy.codec.http1")
    log.log(TRACE, "frame %r", b"GET /")
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("failed", extra={fields.ERROR_CODE: "upstream_reset"})
    trace, error = _lines(out)
    assert trace["level"] == "trace" and trace["event"] == "frame b'GET /'"
    assert error["level"] == "error" and error[fields.ERROR_CODE] == "upstream_reset"
    assert "RuntimeError: kaput" in str(error["exception"])


def test_structlog_loggers_share_the_pipeline() -> None:
    out = io.StringIO()
    configure_logging("ca", stream=out, access_stream=io.StringIO())
    structlog.get_logger("meshbus.control.ca").warning("renewed", **{fields.NODE_ID: "n1"})
    (line,) = _lines(out)
    assert line["event"] == "renewed" and line[fields.NODE_ID] == "n1" and line[fields.COMPONENT] == "ca"


def test_access_logger_writes_lines_verbatim_and_does_not_propagate() -> None:
    out, access = io.StringIO(), io.StringIO()
    configure_logging("proxy", stream=out, access_stream=access)
    logging.getLogger(fields.ACCESS_LOGGER).info('{"path":"/x"}')
    assert access.getvalue() == '{"path":"/x"}\n'
    assert out.getvalue() == ""


def test_reconfiguring_replaces_the_handler_and_console_is_plain_on_non_tty() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("proxy", stream=first, access_stream=io.StringIO())
    configure_logging("proxy", "debug", "console", stream=second, access_stream=io.StringIO())
    logging.getLogger("meshbus.proxy").debug("hello %s", "world", extra={fields.STREAM_ID: 3})
    assert first.getvalue() == ""
    text = second.getvalue()
    assert "hello world" in text and "stream_id=3" in text and "\x1b[" not in text


def test_bad_level_and_format() -> None:
    with pytest.raises(ConfigError, match="log level"):
        parse_level("verbose")
    with pytest.raises(ConfigError, match="log format"):
        configure_logging("x", fmt="xml")  # type: ignore[arg-type]
    assert parse_level("WARNING") == logging.WARNING

"""Process-wide logging setup: structlog rendering behind the stdlib ``logging`` API.

Library code only does ``log = logging.getLogger(__name__)`` (so loggers form the ``meshbus.*`` tree)
and logs with lazy %-args, passing context through ``extra=`` with the keys of
:mod:`meshbus.telemetry.fields`. Only a ``__main__`` calls :func:`configure_logging`, once.

- ``fmt="json"``: one JSON object per line on stderr with ``timestamp`` (ISO 8601 UTC), ``level``,
  ``logger``, ``event`` (the formatted message), ``component`` and every ``extra=`` field.
- ``fmt="console"``: structlog's console renderer (colours only when the stream is a TTY).
- ``TRACE`` (5) sits below DEBUG, for wire dumps: ``log.log(TRACE, "frame %r", data)``.
- ``meshbus.access`` does not propagate: its records are already formatted access-log lines and are
  written verbatim, one per line, to stdout.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, Final, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from meshbus.telemetry import fields
from meshbus.telemetry.errors import ConfigError

TRACE: Final = 5
LEVELS: Final[dict[str, int]] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_MARK: Final = "_meshbus_handler"


def parse_level(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ConfigError(f"log level must be one of {list(LEVELS)} (got {level!r})") from None


def _orjson_dumps(obj: Any, **_: Any) -> str:
    # default=str: extra= values that JSON cannot hold (paths, exceptions, ...) still render.
    return orjson.dumps(obj, default=str).decode()


def _component_adder(component: str) -> Processor:
    def add_component(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault(fields.COMPONENT, component)
        return event_dict

    return add_component


def _install(logger: logging.Logger, handler: logging.Handler) -> None:
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
    setattr(handler, _MARK, True)
    logger.addHandler(handler)


def configure_logging(
    component: str,
    level: str = "info",
    fmt: Literal["json", "console"] = "json",
    *,
    stream: IO[str] | None = None,
    access_stream: IO[str] | None = None,
) -> None:
    """Route all stdlib and structlog logging through one structlog formatter. Safe to call again.

    ``stream`` defaults to stderr, ``access_stream`` (the ``meshbus.access`` logger) to stdout.
    """
    if fmt not in ("json", "console"):
        raise ConfigError(f"log format must be 'json' or 'console' (got {fmt!r})")
    levelno = parse_level(level)
    logging.addLevelName(TRACE, "TRACE")
    out = stream if stream is not None else sys.stderr

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        _component_adder(component),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        tail: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        tail = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder only for stdlib records: it lifts the extra= fields into the event dict.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    _install(root, handler)
    root.setLevel(levelno)

    access = logging.getLogger(fields.ACCESS_LOGGER)
    access_handler = logging.StreamHandler(access_stream if access_stream is not None else sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    _install(access, access_handler)
    access.setLevel(logging.INFO)
    access.propagate = False

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

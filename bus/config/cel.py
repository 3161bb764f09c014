"""CEL expressions in config (Telemetry ``accessLogging[].filter.expression``, ``tagOverrides`` values).

Compiled with the ``common-expression-language`` package (bindings to the Rust CEL implementation,
~5 us per evaluation); meshbus writes no evaluator of its own. A compile error is a config error
with CEL's own message. The attributes an expression may read are Istio's (Envoy's attribute
vocabulary), as far as meshbus has them: see :data:`ATTRIBUTES`.
"""

from __future__ import annotations

import functools
from typing import Any, Final

ATTRIBUTES: Final[dict[str, str]] = {
    "request": "method, path, url_path, host, scheme, protocol, headers[...], id, useragent, size, total_size, duration (ms)",
    "response": "code, flags, code_details, size, total_size, grpc_status",
    "source": "address, principal, workload, namespace, app, version, labels[...]",
    "destination": "service, workload, namespace, app, version, principal, labels[...]",
    "connection": "mtls",
    "upstream": "address, cluster",
    "node": "id, namespace, labels[...]",
}
"""Top-level names an expression may use, and what each holds."""

PER_REQUEST: Final[frozenset[str]] = frozenset({"request", "response", "connection", "upstream"})
"""Names whose value changes from one request to the next (the others are fixed per peer pair)."""


class CelError(ValueError):
    """An expression that does not compile."""


@functools.lru_cache(maxsize=256)
def compile_expression(source: str) -> Any:
    """A compiled program (``.execute(activation)``); raises CelError naming what is wrong."""
    # Imported on first use: the package's __init__ also loads its CLI (typer, rich, asyncio: a
    # quarter of a second), which a proxy without CEL in its config should not pay for.
    import cel

    try:
        return cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        raise CelError(str(exc).replace("\n", " ")) from None


def unknown_attributes(source: str) -> list[str]:
    """Top-level names the expression reads that meshbus does not provide (Istio has more: peer
    metadata, filter state, xds); evaluating it there gives no value."""
    return sorted(set(compile_expression(source).variables()) - set(ATTRIBUTES))


def reads_request(source: str) -> bool:
    """Whether the expression reads per-request attributes (False if it does not compile)."""
    try:
        return bool(set(compile_expression(source).variables()) & PER_REQUEST)
    except CelError:
        return False

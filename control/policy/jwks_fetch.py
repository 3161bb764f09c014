"""Fetching a key set over HTTP(S): a ``jwksUri``, or the issuer's OIDC discovery document first.

Plain ``urllib`` in a worker thread (meshbus-policy fetches a few documents every 20 minutes; no
HTTP client library is worth a dependency for that), with the rule's ``timeout`` (default 5 s, as
Istio's) for each request, certificates checked against the system's roots for https, redirects
followed, and the document size bounded.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Final

from meshbus.bus.schemas.jwks import OIDC_PREFIX, URI_PREFIX

from .jwks import check_jwks

MAX_DOCUMENT: Final = 1024 * 1024
DEFAULT_TIMEOUT: Final = 5.0
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


class FetchError(Exception):
    """Why a key set could not be had (the message goes into the record and the log)."""


def _get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"accept": "application/json", "user-agent": "meshbus-policy"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"GET {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"GET {url}: {reason}") from None
    if len(body) > MAX_DOCUMENT:
        raise FetchError(f"GET {url}: document larger than {MAX_DOCUMENT} bytes")
    return body


def fetch_sync(source: str, timeout: float) -> tuple[str, str]:
    """(normalized JWKS text, the URL it came from) for a ``uri:`` or ``oidc:`` source."""
    if source.startswith(URI_PREFIX):
        url = source[len(URI_PREFIX) :]
    elif source.startswith(OIDC_PREFIX):
        issuer = source[len(OIDC_PREFIX) :]
        if not issuer.startswith(("https://", "http://")):
            raise FetchError(f"issuer {issuer!r} is not a URL: give the rule a jwksUri or jwks")
        doc_url = issuer + DISCOVERY_PATH
        try:
            doc = json.loads(_get(doc_url, timeout))
        except ValueError:
            raise FetchError(f"GET {doc_url}: not JSON") from None
        named = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(named, str) or not named.startswith(("https://", "http://")):
            raise FetchError(f"GET {doc_url}: no jwks_uri in the discovery document")
        url = named
    else:
        raise FetchError(f"unknown key set source {source!r}")
    try:
        return check_jwks(_get(url, timeout).decode("utf-8", "replace")), url
    except ValueError as exc:
        raise FetchError(f"GET {url}: {exc}") from None


async def fetch(source: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[str, str]:
    return await asyncio.to_thread(fetch_sync, source, timeout)

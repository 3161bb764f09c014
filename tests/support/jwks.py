"""JWT signing keys, tokens and a local JWKS / OIDC server for tests (nothing comes from the internet).

`Issuer` holds one key per algorithm meshbus accepts and mints tokens with any of them; `JwksServer`
serves its key set at ``/jwks.json`` and an OIDC discovery document at
``/.well-known/openid-configuration`` on 127.0.0.1 (a thread; ``fail`` makes it answer 500, and
``requests`` counts what it served), as an identity provider would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")


def _private_key(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


_RSA_KEY: list[Any] = []


def _key_for(alg: str) -> Any:
    # One RSA key serves the six RSA algorithms (generating a 2048-bit key costs ~50 ms).
    if alg.startswith(("RS", "PS")):
        if not _RSA_KEY:
            _RSA_KEY.append(_private_key("RS256"))
        return _RSA_KEY[0]
    return _private_key(alg)


@dataclass
class Issuer:
    """An identity provider's signing keys (one per algorithm) and its token factory."""

    iss: str = "https://issuer.test"
    algorithms: tuple[str, ...] = ALGORITHMS
    keys: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for alg in self.algorithms:
            self.keys.setdefault(alg, _key_for(alg))

    def kid(self, alg: str) -> str:
        return f"key-{alg.lower()}"

    def jwk(self, alg: str) -> dict[str, Any]:
        algo = jwt.get_algorithm_by_name(alg)
        jwk = json.loads(algo.to_jwk(self.keys[alg].public_key()))
        jwk.update(kid=self.kid(alg), alg=alg, use="sig")
        return dict(jwk)

    def jwks(self, *algs: str) -> str:
        return json.dumps({"keys": [self.jwk(a) for a in (algs or self.algorithms)]})

    def token(
        self,
        alg: str = "RS256",
        *,
        sub: str = "alice",
        aud: str | list[str] | None = "reviews",
        ttl: float = 600,
        iss: str | None = None,
        kid: str | None = "",
        **claims: Any,
    ) -> str:
        now = time.time()
        payload: dict[str, Any] = {"iss": self.iss if iss is None else iss, "sub": sub, "iat": int(now)}
        if aud is not None:
            payload["aud"] = aud
        if ttl is not None:
            payload["exp"] = int(now + ttl)
        payload.update(claims)
        headers = {"kid": self.kid(alg) if kid == "" else kid} if kid is not None else None
        return jwt.encode(payload, self.keys[alg], algorithm=alg, headers=headers)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append(self.path)
        if srv.fail:
            self._send(500, b"identity provider down\n", "text/plain")
        elif self.path == "/jwks.json":
            self._send(200, srv.jwks.encode(), "application/json")
        elif self.path == "/.well-known/openid-configuration":
            doc = {"issuer": srv.issuer_url, "jwks_uri": f"{srv.base}/jwks.json"}
            self._send(200, json.dumps(doc).encode(), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    jwks = ""
    fail = False
    base = ""
    issuer_url = ""
    requests: list[str]


class JwksServer:
    """An identity provider on 127.0.0.1: ``url`` (its JWKS), ``base`` (its issuer URL for OIDC)."""

    def __init__(self, jwks: str) -> None:
        self._srv = _Server(("127.0.0.1", 0), _Handler)
        self._srv.requests = []
        self._srv.jwks = jwks
        self.base = self._srv.base = self._srv.issuer_url = f"http://127.0.0.1:{self._srv.server_address[1]}"
        self.url = f"{self.base}/jwks.json"
        self._thread = threading.Thread(target=self._srv.serve_forever, name="test-jwks", daemon=True)

    @property
    def requests(self) -> list[str]:
        return self._srv.requests

    def set_jwks(self, jwks: str) -> None:
        self._srv.jwks = jwks

    def set_failing(self, failing: bool) -> None:
        self._srv.fail = failing

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._srv.shutdown()
        self._srv.server_close()


def serving(jwks: str) -> Iterator[JwksServer]:
    """A pytest-fixture body: the server for the test's length."""
    with JwksServer(jwks) as srv:
        yield srv

"""``api-key-auth`` and ``basic-auth``: let in only callers that present a key (or user and password)
the config holds; others get 401. The caller's name goes upstream in ``x-auth-user`` and the
credential does not (it is removed). Secrets may be written as ``sha256:<hex>`` instead of in clear.

    pluginConfig: {header: x-api-key, keys: {ci: "sha256:9f86d0...", alice: "s3cret"}}
    pluginConfig: {realm: shelf, users: {alice: "sha256:..."}}
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from pydantic import BaseModel, Field

from meshbus.plugins import Filter, LocalReply, Request


def _matches(secret: str, given: str) -> bool:
    if secret.startswith("sha256:"):
        return hmac.compare_digest(secret[7:].lower(), hashlib.sha256(given.encode()).hexdigest())
    return hmac.compare_digest(secret.encode(), given.encode())


def _who(secrets: dict[str, str], given: str) -> str | None:
    found = None
    for name, secret in secrets.items():  # every entry is compared: no early exit to time
        if _matches(secret, given) and found is None:
            found = name
    return found


class ApiKeyAuth(Filter):
    class Config(BaseModel):
        header: str = "x-api-key"
        keys: dict[str, str] = Field(min_length=1)
        """caller name -> key (or sha256:<hex> of it)."""

    def on_request_headers(self, req: Request) -> LocalReply | None:
        given = req.headers.get(self.config.header)
        who = _who(self.config.keys, given) if given else None
        if who is None:
            self.metrics.count("denied")
            return LocalReply(401, b"missing or unknown API key\n", details="api_key_denied")
        req.headers.delete(self.config.header)
        req.headers.set("x-auth-user", who)
        return None


class BasicAuth(Filter):
    class Config(BaseModel):
        realm: str = "meshbus"
        users: dict[str, str] = Field(min_length=1)
        """user -> password (or sha256:<hex> of it)."""

    def on_request_headers(self, req: Request) -> LocalReply | None:
        user = self._user(req.headers.get("authorization") or "")
        if user is None:
            self.metrics.count("denied")
            return LocalReply(
                401,
                b"authentication required\n",
                (("www-authenticate", f'Basic realm="{self.config.realm}"'),),
                details="basic_auth_denied",
            )
        req.headers.delete("authorization")
        req.headers.set("x-auth-user", user)
        return None

    def _user(self, value: str) -> str | None:
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        secret = self.config.users.get(user)
        return user if sep and secret is not None and _matches(secret, password) else None

"""meshbus-policy's own external authorizers: rules from its ``--authz-rules`` file, served over NATS.

Each entry of the file is one authorizer, served on ``<root>.v1.authz.<name>`` (bus/schemas/authz.py)
in the replicas' queue group; a MeshConfig ``meshbusAuthz`` provider with ``subject: <name>`` makes
CUSTOM AuthorizationPolicies ask it. The first rule whose conditions all hold decides; none -> the
authorizer's ``default``. The file::

    authorizers:
    - name: backoffice
      default: deny                  # allow | deny (default deny)
      denyStatus: 403                # the reply of a default deny
      rules:
      - action: allow
        methods: [GET, HEAD]         # any of; empty = any method
        paths: [/public/*, /health]  # exact, ``prefix*`` or ``*suffix``; matched without the query
        principals: ["spiffe://cluster.local/ns/default/sa/*"]
        headers: {x-role: admin}     # every one must equal (case-sensitive value)
        upstreamHeaders: {x-authz: backoffice}   # set on the request when allowed
      - action: deny
        status: 401
        body: "login first\\n"
        responseHeaders: {www-authenticate: Basic realm="backoffice"}

Strict like every meshbus config: an unknown field or a bad value is refused at start with the file
and the field named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from meshbus.bus.config.types import IstioModel
from meshbus.bus.schemas.authz import AuthzCheck, AuthzDecision


class AuthzRulesError(ValueError):
    """The rules file is unreadable or invalid (the message names the file and the field)."""


class Rule(IstioModel):
    action: Literal["allow", "deny"]
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()
    headers: dict[str, str] = Field(default_factory=dict)
    status: int = Field(default=403, ge=200, le=599)
    body: str = ""
    response_headers: dict[str, str] = Field(default_factory=dict)
    upstream_headers: dict[str, str] = Field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()
    reason: str = ""

    def matches(self, check: AuthzCheck, header_map: dict[str, str]) -> bool:
        if self.methods and check.method not in self.methods:
            return False
        if self.paths and not any(_glob(p, check.path.partition("?")[0]) for p in self.paths):
            return False
        if self.principals and not any(_glob(p, check.principal) for p in self.principals):
            return False
        return all(header_map.get(k.lower()) == v for k, v in self.headers.items())


class Authorizer(IstioModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    default: Literal["allow", "deny"] = "deny"
    deny_status: int = Field(default=403, ge=200, le=599)
    rules: tuple[Rule, ...] = ()

    def decide(self, check: AuthzCheck) -> AuthzDecision:
        header_map = {str(n).lower(): str(v) for n, v in check.headers}
        for i, rule in enumerate(self.rules):
            if rule.matches(check, header_map):
                why = rule.reason or f"{self.name} rule[{i}]"
                if rule.action == "allow":
                    return AuthzDecision(
                        True,
                        200,
                        upstream_headers=[[k.lower(), v] for k, v in rule.upstream_headers.items()],
                        remove_headers=[h.lower() for h in rule.remove_headers],
                        reason=why,
                    )
                return AuthzDecision(
                    False,
                    rule.status,
                    headers=[[k.lower(), v] for k, v in rule.response_headers.items()],
                    body=rule.body.encode(),
                    reason=why,
                )
        if self.default == "allow":
            return AuthzDecision(True, 200, reason=f"{self.name} default allow")
        return AuthzDecision(False, self.deny_status, body=b"denied\n", reason=f"{self.name} default deny")


class AuthzRules(IstioModel):
    authorizers: tuple[Authorizer, ...] = ()


def _glob(pattern: str, value: str) -> bool:
    if pattern == "*":
        return bool(value)
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def load_rules(path: str | Path) -> AuthzRules:
    p = Path(path)
    try:
        data = YAML(typ="safe").load(p.read_text())
    except (OSError, YAMLError) as exc:
        raise AuthzRulesError(f"meshbus-policy: {p}: {exc}") from None
    try:
        rules = AuthzRules.model_validate(data or {}, by_alias=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise AuthzRulesError(f"meshbus-policy: {p}: {where}: {first['msg']}") from None
    names = [a.name for a in rules.authorizers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise AuthzRulesError(f"meshbus-policy: {p}: authorizers: name {sorted(dup)[0]!r} is used twice")
    return rules

"""Config meshbus accepts but does not enforce (bus/config/fates.py), for the tests that show the warnings.

Each text is one YAML document ending in a newline; join them with ``---``. The fate lines the tests
expect name lines inside these texts: keep the layout when editing.
"""

from __future__ import annotations

EXPERIMENTAL_KEY = "experimental.envoy.filters.http.rbac[shadow]"
UNEVALUABLE_POLICY_FATE = (
    "spec.rules[0].when[0].key: NOT ENFORCED — meshbus cannot read Envoy filter metadata: in an ALLOW rule "
    "this condition never holds (the rule allows nothing); a DENY, AUDIT or CUSTOM rule is applied without "
    f'it, so it matches more requests (fails closed) (got "{EXPERIMENTAL_KEY}")'
)
"""What every place says of `unevaluable_authorization_policy` (document line 10)."""
REQUEST_AUTHENTICATION_FATE = (
    "spec.jwtRules[0].presence: NOT ENFORCED — meshbus treats every token as optional: a request without one "
    "passes without identity; require one with an AuthorizationPolicy whose rule names requestPrincipals "
    '(got "REQUIRED")'
)
"""RequestAuthentication is enforced; what `request_authentication` still asks for that is not (document
line 10: the ``presence`` field)."""
KEEPALIVE_FATE = (
    "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive: NOT ENFORCED — upstream sockets use the system's "
    "keepalive"
)


def unevaluable_authorization_policy(
    name: str, app: str, principal: str = "cluster.local/ns/default/sa/reader"
) -> str:
    """A DENY for one principal with a condition meshbus cannot evaluate (line 10): warned NOT ENFORCED
    (UNEVALUABLE_POLICY_FATE), and applied without it."""
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector:
    matchLabels: {{app: {app}}}
  action: DENY
  rules:
  - from: [{{source: {{principals: [{principal}]}}}}]
    when: [{{key: "{EXPERIMENTAL_KEY}", values: [on]}}]
"""


def request_authentication(name: str, app: str) -> str:
    """A JWT rule that asks for a token to be REQUIRED, which meshbus does not do (line 10)."""
    return f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: {name}, namespace: default}}
spec:
  selector:
    matchLabels: {{app: {app}}}
  jwtRules:
  - issuer: https://issuer.example.com
    jwksUri: https://issuer.example.com/jwks.json
    presence: REQUIRED
"""


def keepalive_rule(host: str) -> str:
    """A DestinationRule whose tcpKeepalive (document line 9) meshbus-proxy does not enforce."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp:
        tcpKeepalive: {{time: 7200s}}
"""


def joined(*documents: str) -> str:
    return "---\n".join(documents)

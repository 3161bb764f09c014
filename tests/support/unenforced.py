"""Config meshbus accepts but does not enforce (bus/config/fates.py), for the tests that show the warnings.

Each text is one YAML document ending in a newline; join them with ``---``. The fate lines the tests
expect name lines inside these texts: keep the layout when editing.
"""

from __future__ import annotations

AUTHORIZATION_POLICY_FATE = (
    "NOT ENFORCED — meshbus does not apply authorization policy yet; the workloads it selects still accept "
    "every caller"
)
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


def authorization_policy(name: str, app: str, principal: str = "cluster.local/ns/default/sa/reader") -> str:
    """ALLOW for one principal: on an enforcing mesh, every other caller of ``app`` would get 403."""
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  selector:
    matchLabels: {{app: {app}}}
  action: ALLOW
  rules:
  - from:
    - source: {{principals: [{principal}]}}
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

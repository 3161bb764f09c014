"""AuthorizationPolicy semantics, shared by the proxy and ``meshctl authz`` (sans-IO).

- ``normalize``: request paths as Istio's ``pathNormalization`` makes Envoy normalize them.
- ``matchers``: Istio's value syntax (exact, ``prefix*``, ``*suffix``, ``*``), path templates, CIDR blocks.
- ``engine``: the compiled decision tables of one workload and the per-request decision (hot: compiled
  with the proxy's request path).
- ``compile``: which policies apply to a workload (selector, namespace, root namespace from the
  MeshConfig) and their compilation into tables, with the CUSTOM provider they use.

Here, not in proxy/, because the control plane must read policies exactly as proxies enforce them
(``meshctl authz explain`` evaluates offline against stored config), as with bus/config/hosts.py.
"""

"""meshbus-ca: the mesh's certificate authority (Citadel's role).

Layers (sans-IO first, adapters last):

- `issuer`: CA material and X.509-SVID signing; `material`: the root/operator files on disk.
- `validator`: CSR rules and renewal proofs; `tokens`: bootstrap token rules; `bundle`: trust
  bundle rotation rules.
- `store`: JetStream KV adapters (token records with compare-and-set use counts, the bundle).
- `service`: the bus endpoints (``certify``, ``token``, ``bundle``) in the ``q`` queue group, so
  replicas that load the same material share the load; ``__main__``: the ``meshbus-ca`` command.

Data flow: proxy -> ``certify`` {CSR, token | current chain + proof} -> validate -> consume a
token use (CAS in KV) or verify the renewal -> sign -> {chain, bundle}. The bundle lives in KV
and each change is published on ``ca_bundle_changed()``.

Keep in sync: bus/schemas/identity.py (wire messages), bus/spiffe.py (ID and SVID rules),
proxy/mesh/identity.py (the client side).
"""

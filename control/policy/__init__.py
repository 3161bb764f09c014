"""meshbus.control.policy — meshbus-policy: decisions that need state shared by the whole mesh.

Layers (sans-IO first; service.py, jwks_resolver.py and jwks_fetch.py do the I/O):

- `jwks`          when each JWT key set is fetched (20 min; retry 1 min doubling to 60 min) and what
                  a fetch does to its record: the last good keys stay in force up to a maximum age
                  (24 h) while fetches fail, where istiod pushes keys that fail every token.
- `jwks_fetch`    HTTP(S) GET of a ``jwksUri``, or the issuer's OIDC discovery document first.
- `jwks_resolver` follows the config bucket's RequestAuthentications, fetches what is due, stores one
                  `JwksRecord` per source in ``<root>_jwks`` (compare-and-set: replicas coordinate
                  through the bucket). meshbus-discovery follows that bucket and puts the keys inline
                  into the selected proxies' snapshots (control/discovery/jwks_inline.py), so no
                  proxy ever fetches keys, least of all on the request path.
- `ratelimit`     global rate limit counters: one per descriptor and window in ``<root>_ratelimit``
                  (compare-and-set), leases that shrink as a window fills.
- `service`       `PolicyService`: the ``ratelimit`` endpoint (queue group ``q``) + the resolver.

Data flow: proxy -> ``policy.ratelimit`` {descriptor, limit, hits} -> counter CAS -> {granted,
remaining, reset}; config KV (RequestAuthentication) -> resolver -> HTTP -> jwks KV -> discovery ->
snapshot -> proxy.

Keep in sync: bus/schemas/jwks.py and bus/schemas/ratelimit.py (wire and KV records),
proxy/filters/global_ratelimit.py (the lease client side), README "meshbus-policy".
"""

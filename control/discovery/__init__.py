"""meshbus.control.discovery — the Pilot role: workload registry + config -> per-proxy snapshots.

Layers (sans-IO core first; only server.py, config_watch.py and versions.py touch asyncio/NATS):

- `registry`     workloads from Register/Heartbeat/Deregister; expiry with an injected clock.
- `model`        `MeshModel`: the stored config as immutable entries + indexes, rebuilt incrementally;
                 each entry holds the stored value (what snapshots carry) and its typed model (what
                 discovery reads: the proxy builds from the same models).
- `endpoints`    registered workloads -> one synthesized ServiceEntry per service.
- `visibility`   Istio Sidecar egress hosts -> which hosts a proxy may call.
- `generate`     model + registry -> per-node resource set and digest; which nodes a change concerns;
                 `check_consistent` before publishing.
- `push_request` / `debounce` / `push_queue`   the Istio push pipeline: merge, debounce, one pending
                 push per node.
- `delta`        full snapshot or delta against what the proxy ACKed.
- `acks`         ACK/NACK ledger: hold after NACK, stale nonces ignored, SYNCED/STALE/NACK.
- `replicas`     live replica set and rendezvous owner of each node.
- `versions`     monotonic versions from one JetStream KV sequence (one put per push cycle).
- `config_watch` KV watch -> MeshModel, resync after reconnect.
- `jwks_inline` / `jwks_watch`   the JWT key sets meshbus-policy fetched, followed from their bucket
                 and put inline into RequestAuthentications (dropped at their maximum age).
- `server`       `DiscoveryServer`: subscriptions, endpoints, push loop.

Data flow: KV change / heartbeat -> PushRequest -> Debouncer -> affected nodes owned by this
replica -> PushQueue -> generate -> skip unchanged / held -> Snapshot on ``xds.snapshot.<node>`` ->
proxy ACK/NACK on ``xds.ack.<node>`` -> ledger -> ``meshctl proxy-status``.

Concurrency: one asyncio loop; handlers only mutate in-memory state and wake the push loop; the push
loop yields every few nodes so ACKs and heartbeats are not starved during a large push.

Keep in sync: ../../shared/ARCHITECTURE.md "Discovery and config push", STYLE.md E4, and the
message flow in bus/schemas/discovery.py.
"""

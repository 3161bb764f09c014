"""meshbus.proxy: the data plane (Envoy's role), one process per workload or gateway.

Layers, sans-IO first (none of these import asyncio):
- ``http1``: HTTP/1.1 sessions over httptools (llhttp): bytes in, events out; head serializers.
- ``routing``/``match``/``runtime`` and friends (``cluster``, ``lb``, ``outlier``, ``breaker``, ``retry``,
  ``fault``, ``cors``, ``ratelimit``, ``headerops``): an immutable ``ProxyRuntime`` compiled once per config
  version from Istio resources; request-time work is lookups and small predicates.
- ``flags``: Envoy-style response flags (NR, UH, UF, UO, UT, URX, UC, UPE, RL, FI, DI, DC).
Thin asyncio adapters:
- ``listener``: downstream Protocol; one ``forward.Exchange`` per request, pipelined requests in order.
- ``forward``: the router as callbacks (no task per request): rate limit, CORS, fault, redirect/direct,
  weighted destination, LB pick, circuit breaker, retries with per-try timeout and backoff, route timeout,
  mirror, outlier feedback, metrics (Istio names) and one access-log record per request.
- ``upstream``: per-cluster keep-alive pools with Envoy's HTTP/1 circuit breaking (maxConnections,
  http1MaxPendingRequests -> 503 UO, maxRequestsPerConnection, connect/idle timeouts).
- ``server`` (lifecycle, config watch + atomic swap, timeouts sweep, drain), ``admin`` (Envoy-like admin
  API), ``config`` (bootstrap dataclass; YAML validated in a child interpreter), ``__main__`` (CLI, workers).
- ``mtls`` (mesh TLS decisions: PeerAuthentication on inbound, auto-mTLS / DestinationRule TLS on
  outbound, SVID checks) over ``tls_stream`` (the TLS record layer on OpenSSL memory BIOs).

The request path (the modules setup.py lists) is compiled with mypyc at install time; the sources stay
ordinary typed Python. What that asks of them: module constants are ``Final`` (inlined, not looked up
in the module dict on each use), annotations are true at run time (compiled functions check them), and
hot calls go to functions and classes of the compiled group rather than to aliases of them.

Data flow: client bytes -> RequestSession events -> Exchange -> pooled UpstreamConnection ->
ResponseSession events -> Exchange -> client. Bodies stream both ways; a request body is copied only
while a retry may need it (<= 64 KiB). Backpressure: a full client write buffer pauses the upstream
socket; a full upstream write buffer pauses the client socket.
Concurrency: one event loop per worker process (``--workers N`` share ports with SO_REUSEPORT); config
swaps replace one attribute, and each request keeps the runtime it started with.
Keep in sync with shared/ARCHITECTURE.md ("Data path performance") and notes/proxy-contract.md.
"""

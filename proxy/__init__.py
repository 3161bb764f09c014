"""meshbus.proxy: the data plane (Envoy's role), one process per workload or gateway.

Layout: the sub-packages are the architecture. Everything but the I/O adapters is sans-IO (no asyncio,
no sockets; the one list of modules allowed to do I/O is in tests/unit/proxy/test_sans_io.py).

- ``core``: the request-time data and decisions: compiled route tables and matching (``routing``,
  ``match``; host names follow meshbus.bus.config.hosts, the rules discovery uses too), clusters
  with load balancing, circuit breaking and outlier detection (``cluster``, ``lb``, ``endpoint``,
  ``breaker``, ``outlier``), retry policy (``retry``), the
  attempts of one forwarded request as a state machine (``attempts``: retries, backoff, per-try and
  route timeouts, the per-cluster retry budget, the stale-connection replay; events and ``now`` in,
  action codes out), Envoy's response flags (``flags``: NR, UH, UF, UO, UT, URX, UC, UPE, RL, FI, DI, DC,
  DPE, UAEX; and meshbus's FF).
- ``filters``: the built-in HTTP filters (local rate limit, CORS, fault injection, header operations,
  JWT authentication for RequestAuthentication, global rate limits with leased budgets, and ``authz``:
  AuthorizationPolicy in the server sidecar, its decisions from meshbus.bus.config.authz, CUSTOM checks
  through ``authz_providers``' clients), the listener-wide STATS phase (``observe``: trace context and
  spans in ``tracing``/``spans``, Istio's metrics in ``stats``, the access-log record), which every
  request passes, and ``filters.plugins``: meshbus.io/v1 Plugins, users'
  filters (meshbus.plugins SDK) run in process
  or called over NATS on a meshbus-filter-host, with their timeout and failStrategy.
- ``codec``: HTTP/1.1 sessions over httptools (llhttp): bytes in, events out; head serializers.
- ``build``: Istio resources -> an immutable ``ProxyRuntime``, compiled once per config version
  (incrementally: unchanged parts are reused); ``inbound_filters`` puts the workload's
  RequestAuthentication and RateLimit rules on its inbound route, ``authz_builder`` its
  AuthorizationPolicies.
- ``adapters`` (I/O): ``listener`` (the HTTP/1 downstream connection: pipelining, header/idle
  timeouts, and the stream calls an exchange answers through), ``exchange`` (one request through its
  route: the router as callbacks, performing what ``core.attempts`` decides), ``contracts`` (the
  typed Protocols between listener, exchange, pools and server), ``upstream`` (keep-alive
  pools with Envoy's HTTP/1 circuit breaking), ``write_batch``, ``server`` (lifecycle, config watch
  and atomic swap, timeouts sweep, drain), ``admin`` (Envoy-like admin API), ``ext_authz_http``
  (AuthorizationPolicy CUSTOM checks to an HTTP authorizer, through the pools).
- ``tls``: mesh TLS decisions from config (``policy``), contexts and SPIFFE checks (``contexts``),
  the per-connection glue (``mtls``) over the TLS record layer on OpenSSL memory BIOs (``stream``).
- ``mesh``: mesh mode: the agent (registration, heartbeats, snapshots with ACK/NACK), the identity
  client (CSR, renewal), the global rate limit's lease client (``ratelimit_client``), and ``mode``,
  which wires them to a running server.
- ``bootstrap`` (what the command line says: ports, limits, logging) and ``__main__`` (CLI, workers).

The filter chain (``filters.chain``). Every request passes the ordered HTTP filters of its route, in
Envoy's manner and with Istio's WasmPlugin meaning of phase and priority: AUTHN, AUTHZ, STATS, the
compiled built-ins (local rate limit, CORS, fault), UNSPECIFIED, header operations, then the router
(``adapters.exchange``). Hooks are symmetric (request headers, request body, response headers,
response body, done); each continues (None), answers (``LocalReply``: status, body, headers, response
flag, details for the access log), or pauses (``Delay``, or an ``async def`` hook, which the exchange
awaits in a task of its own while other requests go on; a response-header hook may pause too: the
response is held until it completes). Response hooks run in reverse order; a local
reply passes only the filters that ran before the one that sent it. A filter that raises gets a 500
with ``filter_error:<name>`` in the access log and never takes the worker down. Per-route config is a
typed map on the compiled route (``Route.filter_config``: filter name -> frozen config; the chain is
made from it once per config version by ``filters.builtin``), so new filters need no new ``Route``
fields. A route whose map is empty has the empty chain: each hook point costs one tuple check, and
request and response heads still go through as received when nothing changes them.

The request path (the modules setup.py lists) is compiled with mypyc at install time; the sources stay
ordinary typed Python. What that asks of them: module constants are ``Final`` (inlined, not looked up
in the module dict on each use), annotations are true at run time (compiled functions check them), and
hot calls go to functions and classes of the compiled group rather than to aliases of them.

Data flow: client bytes -> RequestSession events -> Exchange -> pooled UpstreamConnection ->
ResponseSession events -> Exchange -> client.

The codec seam (``adapters.contracts.Downstream``). The exchange and the filter chain see a request
as a ``RequestHead`` and events, and answer through the stream calls ``send_head``, ``send_data``,
``send_end``, ``send_local``, ``send_continue``; the HTTP/1 connection turns those into HTTP/1
framing (chunked or close-delimited bodies, ``Connection: close``, the head held back to share a
write with the first body bytes). An HTTP/2 connection gives each stream the same calls over frames,
so neither the exchange nor a filter changes. Two parts stay HTTP/1 by nature: the pass-through of a
head as received (``RequestHead.raw``, ``send_raw_head``; absent on other codecs, which take the
parsed path) and Upgrade tunnels. The upstream side speaks HTTP/1 (the exchange encodes the request
head; the connection frames the body: ``UpstreamConnection.send``, ``send_body``). Bodies stream both ways; a request body is copied only
while a retry may need it (<= 64 KiB). Backpressure: a full client write buffer pauses the upstream
socket; a full upstream write buffer pauses the client socket.
Concurrency: one event loop per worker process (``--workers N`` share ports with SO_REUSEPORT); config
swaps replace one attribute, and each request keeps the runtime it started with.
Keep in sync with shared/ARCHITECTURE.md ("Data path performance").
"""

"""The proxy's I/O: thin asyncio adapters around the sans-IO core.

``listener`` (downstream Protocol), ``exchange`` (one request through its route: the router as
callbacks), ``upstream`` (keep-alive pools), ``write_batch`` (upstream writes per loop iteration),
``server`` (lifecycle, config swap, timeouts sweep, drain) and ``admin`` (Envoy-like admin API).
"""

"""HTTP filters: the chain every request passes, and the built-in filters that run on it.

Built-ins are compiled with the request path (setup.py): local rate limit (``ratelimit``), CORS
(``cors``), fault injection (``fault``) and header operations (``headerops``). Sans-IO: a filter
decides from the request and the clock it is handed; the exchange (``proxy.adapters``) does the I/O.
"""

"""HTTP filters: the chain every request passes, and the built-in filters that run on it.

Built-ins are compiled with the request path (setup.py): local rate limit (``ratelimit``), CORS
(``cors``), fault injection (``fault``), header operations (``headerops``), JWT authentication
(``jwt_authn``, keys parsed by ``jwt_keys`` at build time) and global rate limits
(``global_ratelimit``). Sans-IO: a filter
decides from the request and the clock it is handed; the exchange (``proxy.adapters``) does the I/O.
"""

"""Mesh TLS: decisions from config (``policy``), contexts and SPIFFE peer checks (``contexts``), their
TLS 1.3 suite order (``suites``), the per-connection mTLS glue (``mtls``) and the TLS record layer on
OpenSSL memory BIOs (``stream``)."""

"""The sans-IO core of the proxy: plain data and decisions, no asyncio, no sockets.

Route tables and matching (``routing``, ``match``, ``hosts``), clusters with load balancing, circuit
breaking and outlier detection (``cluster``, ``lb``, ``endpoint``, ``breaker``, ``outlier``), retry
policy (``retry``) and Envoy's response flags (``flags``). Built once per config by ``proxy.build``;
per request only lookups and small predicates run. tests/test_imports.py checks that nothing here
imports an I/O module.
"""

"""User filters in the proxy: meshbus.io/v1 Plugin resources run through the SDK (meshbus.plugins).

- ``bindings``: Plugins -> the filters of one worker (selection by namespace, root namespace and
  selector; one instance per Plugin; closed when the Plugin goes), handed to the route builders.
- ``adapter``: ``PluginFilter``, an SDK filter as one HttpFilter of the chain: request/response views,
  body modes, the Plugin's timeout and failStrategy, per-Plugin metrics.
- ``remote``: the backend that calls a meshbus-filter-host over NATS (placement REMOTE).

``adapter`` runs on every request a Plugin sees and is compiled with mypyc (setup.py), as is the SDK's
``meshbus.plugins.http`` (the Request/Headers a filter reads); the user's filter stays plain Python.
``bindings`` and ``remote`` (config time, and a NATS round trip per call) are not. Keep in sync with
docs/plugins.md.
"""

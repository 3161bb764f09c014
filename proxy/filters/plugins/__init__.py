"""User filters in the proxy: meshbus.io/v1 Plugin resources run through the SDK (meshbus.plugins).

- ``bindings``: Plugins -> the filters of one worker (selection by namespace, root namespace and
  selector; one instance per Plugin; closed when the Plugin goes), handed to the route builders.
- ``adapter``: ``PluginFilter``, an SDK filter as one HttpFilter of the chain: request/response views,
  body modes, the Plugin's timeout and failStrategy, per-Plugin metrics.
- ``remote``: the backend that calls a meshbus-filter-host over NATS (placement REMOTE).

Not compiled with mypyc (the user's filter is plain Python anyway); the chain and exchange it plugs
into are. Keep in sync with docs/plugins.md.
"""

"""meshbus.control.config: the config store process (Galley role), ``meshbus-config``.

Layers:
- ``kinds``, ``manifest``, ``plan``, ``admission``: sans-IO. Kind aliases; Resource <-> stored value;
  request + stored state -> writes with the revision each is based on; validation (via
  meshbus.bus.config) and cross-resource analysis of the set a change would leave behind.
- ``store``: the JetStream KV bucket (meshbus.bus.kv) holding one key per resource.
- ``service``: the BusService endpoints apply/delete/get/list/history/rollback
  (``<root>.v1.config.<verb>``); ``__main__`` runs it.

Data flow of a change: validate every document -> read the stored state -> plan -> analyse
(new errors refuse the change) -> one atomic batch commit where every write names its base
revision (all keys stored or none; conflicts refuse or retry) -> publish ``config.changed``.
Discovery watches the bucket directly; the value format is specified in
meshbus.bus.schemas.config (keep in sync).
"""

"""Filters that ship with meshbus, each small and meant as an example to copy.

Installed as entry points of the ``meshbus.filters`` group (pyproject.toml), like any third-party
filter: ``header-transform`` (headers.py), ``json-schema`` (json_schema.py), ``api-key-auth`` and
``basic-auth`` (auth.py), ``request-log`` (request_log.py). docs/plugins.md shows each in a Plugin.
"""

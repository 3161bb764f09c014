"""The build from typed config to a compiled, immutable ``ProxyRuntime`` (sans-IO).

``runtime`` assembles route tables (``route_builder``, ``outbound_build``) and clusters
(``cluster_builder``) for one config version; ``memo`` reuses unchanged parts between versions so a
change costs what changed; ``errors`` names the resource and field a build failure comes from.
"""

"""Mesh mode: the agent beside a running proxy (registration, heartbeats, snapshot fetch/apply/ACK in
``agent`` and ``snapshot_apply``), the workload identity client (``identity``), what a sidecar keeps
across restarts (``state_dir``: snapshot, key and certificate), the readiness probe of the local app
(``probe`` decides, ``prober`` probes), and ``mode``, which wires them to the server."""

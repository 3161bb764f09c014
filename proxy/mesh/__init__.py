"""Mesh mode: the agent beside a running proxy (registration, heartbeats, snapshot fetch/apply/ACK in
``agent`` and ``snapshot_apply``), the workload identity client (``identity``), and ``mode``, which
wires them to the server."""

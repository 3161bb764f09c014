"""Typed client of meshbus-config (what meshctl, tests and other components call)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from meshbus.bus import rpc
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.config import (
    ApplyReply,
    ApplyRequest,
    DeleteReply,
    DeleteRequest,
    Document,
    GetRequest,
    HistoryReply,
    HistoryRequest,
    ListReply,
    ListRequest,
    ResourceRecord,
    ResourceRef,
    RollbackRequest,
)

DEFAULT_TIMEOUT = 10.0


class ConfigClient:
    """Each call raises the typed BusError the service answered (bad_request, conflict, not_found, ...)."""

    def __init__(self, bus: BusConnection, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout

    def _subject(self, verb: str) -> str:
        return self.bus.subjects.config(verb)

    async def apply(
        self,
        documents: Sequence[Document],
        *,
        dry_run: bool = False,
        expected_revision: int = 0,
        expected_revisions: dict[str, int] | None = None,
    ) -> ApplyReply:
        req = ApplyRequest(list(documents), dry_run, expected_revision, dict(expected_revisions or {}))
        deadline = time.monotonic() + self.timeout
        pause = 0.2
        while True:
            left = max(deadline - time.monotonic(), 0.01)
            try:
                return await rpc.request(
                    self.bus, self._subject("apply"), req, ApplyReply, timeout=left, wait_for_service=True
                )
            except UnavailableError:
                # JetStream timed out (a NATS node died and its streams are electing leaders): an
                # apply is idempotent (one that landed is "unchanged" the second time), so ask again
                # while the deadline allows; not with expected revisions, which a landed one moved.
                if expected_revision or expected_revisions or deadline - time.monotonic() <= pause:
                    raise
                await asyncio.sleep(pause)  # the election announces nothing a client could await
                pause = min(pause * 2, 2.0)

    async def apply_text(
        self, text: str, file: str = "<stdin>", *, dry_run: bool = False, expected_revision: int = 0
    ) -> ApplyReply:
        return await self.apply([Document(file, text)], dry_run=dry_run, expected_revision=expected_revision)

    async def delete(
        self,
        targets: Sequence[ResourceRef],
        *,
        dry_run: bool = False,
        ignore_not_found: bool = False,
        force: bool = False,
        expected_revisions: dict[str, int] | None = None,
    ) -> DeleteReply:
        req = DeleteRequest(list(targets), dry_run, dict(expected_revisions or {}), ignore_not_found, force)
        return await rpc.request(
            self.bus, self._subject("delete"), req, DeleteReply, timeout=self.timeout, wait_for_service=True
        )

    async def get(self, kind: str, name: str, namespace: str = "default") -> ResourceRecord:
        req = GetRequest(kind, name, namespace)
        return await rpc.request(
            self.bus, self._subject("get"), req, ResourceRecord, timeout=self.timeout, wait_for_service=True
        )

    async def list(
        self, kind: str = "", namespace: str = "default", *, all_namespaces: bool = False
    ) -> ListReply:
        req = ListRequest(kind, namespace, all_namespaces)
        return await rpc.request(
            self.bus, self._subject("list"), req, ListReply, timeout=self.timeout, wait_for_service=True
        )

    async def history(self, kind: str, name: str, namespace: str = "default") -> HistoryReply:
        req = HistoryRequest(kind, name, namespace)
        return await rpc.request(
            self.bus, self._subject("history"), req, HistoryReply, timeout=self.timeout, wait_for_service=True
        )

    async def rollback(
        self,
        kind: str,
        name: str,
        to_revision: int,
        namespace: str = "default",
        *,
        expected_revision: int = 0,
        dry_run: bool = False,
    ) -> ApplyReply:
        req = RollbackRequest(kind, name, to_revision, namespace, expected_revision, dry_run)
        return await rpc.request(
            self.bus, self._subject("rollback"), req, ApplyReply, timeout=self.timeout, wait_for_service=True
        )

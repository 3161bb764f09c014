"""TLS over a plain transport: OpenSSL with memory BIOs, as thin as a record layer can be in Python.

`TlsStream` is the protocol of a TCP transport and the transport of the protocol above it (the
HTTP listener or an upstream connection), the same sandwich as asyncio's and uvloop's SSLProtocol.
It exists because the mesh's sidecar-to-sidecar hop pays the record layer on every request, and
those general-purpose layers pay for generality there: a write goes through a buffer queue and
state machine, and every read ends by raising and catching SSLWantReadError. Here one inbound record
is ``incoming.write``, one ``read`` and a check that nothing is left; one outbound write is
``write`` then ``outgoing.read`` into the TCP transport (compiled by mypyc, see setup.py).

What it does beyond that, because a mesh needs it:
- a failed handshake sends OpenSSL's alert before closing, so the peer learns why (asyncio drops it);
- a fatal alert or bad record after the handshake reaches the protocol above as the
  ``connection_lost`` exception (an `ssl.SSLError` naming the alert);
- close sends close_notify; a received close_notify is an EOF; TLS cannot half-close, so
  ``can_write_eof`` is False (HTTP tunnels close instead);
- ``pause_reading`` also holds records already decrypted, ``resume_reading`` delivers them;
- ``get_extra_info("ssl_object" | "peercert" | "cipher")``, everything else from the TCP transport.

The handshake's outcome goes to ``on_handshake(stream, exc)`` exactly once; on success the caller
checks the peer and calls `set_protocol` with the protocol above (or `abort`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Final

HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSED: Final = 2
RECORD_MAX: Final = 16384  # the largest plaintext of one TLS record: what one SSL_read can return
APPLICATION_DATA: Final = 23  # the outer content type of every TLS 1.3 record after the handshake


def _one_record(data: bytes) -> bool:
    """Whether ``data`` is exactly one whole protected record: its 5-byte header's length is the rest."""
    n = len(data)
    return n > 5 and data[0] == APPLICATION_DATA and (data[3] << 8 | data[4]) + 5 == n


class TlsStream:
    """One TLS connection over a TCP transport (see the module doc)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None,
        on_handshake: Callable[[TlsStream, BaseException | None], None],
        handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        # ssl.SSLObject is a Python class whose methods each call its C object (_ssl._SSLSocket) with
        # the same arguments: calling that object directly saves a Python frame per record.
        self._tls: Any = getattr(self._ssl, "_sslobj", self._ssl)
        # Bound once: a call through an Any attribute (mypyc) looks the method up by name every time,
        # and a chain request makes eight of these calls per hop.
        tls = self._tls
        self._tls_read: Any = tls.read
        self._tls_write: Any = tls.write
        self._tls_pending: Any = tls.pending
        self._bio_in: Any = self._incoming.write
        self._bio_out: Any = self._outgoing.read
        self._server_side = server_side
        self._on_handshake: Callable[[TlsStream, BaseException | None], None] | None = on_handshake
        self._handshake_timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._raw: Any = None
        self._raw_write: Any = None  # the TCP transport's write, bound once
        self._app: Any = None
        self._deliver: Any = None  # the protocol above's data_received, bound in set_protocol
        # The incoming BIO is known to hold no ciphertext (and OpenSSL no plaintext): then a read of
        # exactly one whole record leaves both empty, with nothing to ask them (see _read).
        self._drained = False
        self._state = HANDSHAKE
        self._paused = False
        self._exc: BaseException | None = None  # why we closed: handed to the protocol above
        self._lost = False  # the TCP transport is gone

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._ssl

    # ---- protocol of the TCP transport -----------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._raw = transport
        self._raw_write = transport.write
        self._timer = self._loop.call_later(self._handshake_timeout, self._timed_out)
        if not self._server_side:
            self._handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        self._bio_in(data)
        drained = self._drained
        self._drained = False
        state = self._state
        if state == OPEN:
            # until the protocol above is set (a client between its handshake and the pool taking the
            # connection) records wait in the BIO: only post-handshake messages can come then
            if not self._paused and self._app is not None:
                self._read(len(data), drained and _one_record(data))
        elif state == HANDSHAKE:
            self._handshake()

    def eof_received(self) -> bool | None:
        # the TCP stream ended without close_notify (a truncation TLS would call an attack; peers that
        # crash do it too): an EOF above, then the transport closes
        if self._state == HANDSHAKE:
            self._handshake_failed(
                ConnectionResetError("peer closed the connection during the TLS handshake")
            )
        elif self._state == OPEN and self._app is not None:
            self._app.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == HANDSHAKE:
            self._handshake_failed(exc or ConnectionResetError("connection lost during the TLS handshake"))
        self._state = CLOSED
        self._lost = True
        if exc is not None and self._exc is None:
            self._exc = exc
        self._tell_lost()

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # ---- handshake --------------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except Exception as exc:  # SSLError, SSLCertVerificationError, ValueError from the context
            self._flush()  # OpenSSL's alert: the peer hears why before the close
            self._handshake_failed(exc)
            return
        self._flush()
        self._cancel_timer()
        self._state = OPEN
        self._report(None)
        # a client's first request can arrive with its Finished message
        if self._state == OPEN and self._app is not None and self._buffered():
            self._read()

    def _handshake_failed(self, exc: BaseException) -> None:
        self._cancel_timer()
        self._state = CLOSED
        self._exc = exc
        raw = self._raw
        if raw is not None:
            raw.close()  # after the alert already written
        self._report(exc)

    def _report(self, exc: BaseException | None) -> None:
        cb = self._on_handshake
        if cb is not None:
            self._on_handshake = None
            cb(self, exc)

    def _timed_out(self) -> None:
        self._timer = None
        if self._state == HANDSHAKE:
            self._handshake_failed(TimeoutError("TLS handshake timed out"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- records ----------------------------------------------------------------------------------

    def _buffered(self) -> bool:
        return bool(self._incoming.pending or self._tls.pending())

    def _read(self, received: int = 0, whole: bool = False) -> None:
        """Delivers what the buffered records hold. ``whole``: the BIO held nothing before it was given
        ``received`` bytes that are one whole record (the steady state of a request or response that
        fits a record): once that record is read, both the BIO and OpenSSL are empty, and it held no
        post-handshake message that could call for an answer, so neither is asked (two BIO
        ``pending`` reads, ~600 instructions a record)."""
        read = self._tls_read
        pending = self._tls_pending
        incoming = self._incoming
        # the ciphertext just received: nearly always all the BIO holds, known without asking it
        n = received
        while True:
            # Ask for what the buffered ciphertext can hold, not a fixed 64 KiB: ``read(n)`` allocates n
            # bytes then shrinks them, so a small record costs a small (pymalloc) block instead of a
            # large malloc and realloc. Plaintext is shorter than its ciphertext; what does not fit
            # (a record whose start came in an earlier read) stays pending and the loop reads it next.
            if n == 0:
                n = incoming.pending
            if n == 0 or n > RECORD_MAX:
                n = pending() or RECORD_MAX
                if n > RECORD_MAX:
                    n = RECORD_MAX
            try:
                data = read(n)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: the peer is done
                if self._app is not None:
                    self._app.eof_received()
                self.close()
                return
            except ssl.SSLError as exc:  # a fatal alert from the peer, or a record that fails to decrypt
                self._fatal(exc)
                return
            if not data:
                break
            if whole:
                # read(n) returned all of the one record (its plaintext is shorter than n): nothing is
                # left in the BIO or OpenSSL, and no answer can be due
                self._drained = True
                self._deliver(data)
                return
            self._deliver(data)
            if self._state != OPEN or self._paused:
                return
            # The common case ends here, without the SSLWantReadError a further read would raise, and
            # without asking ``pending()`` (which releases and retakes the GIL): ``read`` returns at
            # most one record, so a read that did not fill ``n`` left nothing of its record behind.
            if not incoming.pending and (len(data) < n or not pending()):
                self._drained = True
                break
            n = 0
        if self._outgoing.pending:  # TLS 1.3 post-handshake messages (key update) call for an answer
            self._flush()

    def _flush(self) -> None:
        out = self._outgoing
        if out.pending and self._raw is not None:
            self._raw_write(out.read())

    def _fatal(self, exc: BaseException) -> None:
        self._state = CLOSED
        self._exc = exc
        self._flush()
        if self._raw is not None:
            self._raw.abort()

    # ---- transport of the protocol above -----------------------------------------------------------

    def set_protocol(self, protocol: Any) -> None:
        self._app = protocol
        self._deliver = protocol.data_received
        if self._lost:
            # the connection died between the handshake and this call (a client's pool takes the
            # stream one loop iteration after the handshake): the protocol hears it after connection_made
            self._loop.call_soon(self._tell_lost)

    def _tell_lost(self) -> None:
        """connection_lost to the protocol above, once."""
        app = self._app
        if app is not None:
            self._app = None
            self._deliver = None
            app.connection_lost(self._exc)

    def get_protocol(self) -> Any:
        return self._app

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != OPEN:
            return  # as asyncio's transports do after close: the protocol hears connection_lost
        self._tls_write(data)
        self._raw_write(self._bio_out())

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS cannot half-close a connection")

    def close(self) -> None:
        if self._state == CLOSED:
            return
        self._state = CLOSED
        self._cancel_timer()
        try:
            self._tls.shutdown()  # writes close_notify; the peer's answer is not waited for
        except (ssl.SSLError, ValueError):
            pass
        self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._state = CLOSED
        self._cancel_timer()
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._state == CLOSED or self._raw is None or bool(self._raw.is_closing())

    def pause_reading(self) -> None:
        self._paused = True
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._raw is not None:
            self._raw.resume_reading()
        if self._state == OPEN and self._buffered():
            self._loop.call_soon(self._resume_read)

    def _resume_read(self) -> None:
        if self._state == OPEN and not self._paused and self._app is not None:
            self._read()

    def is_reading(self) -> bool:
        return not self._paused and self._state != CLOSED

    def get_write_buffer_size(self) -> int:
        return int(self._raw.get_write_buffer_size()) if self._raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if name == "sslcontext":
            return self._ssl.context
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)

"""Access-log records kept as columns as each request ends, for a logger whose only sink is the bus.

The bus ships a batch's records as columns (bus.schemas.telemetry.ROWS_JSON_COLUMNS_3), and most
fields of a sidecar's requests repeat from one request to the next. Queued as rows, each request
made a 19-item tuple that the bus sink transposed back into columns and then freed: ~1,800
instructions a request. Here each field goes straight to its column: a field still equal to the
batch's first value costs one identity (or string) compare and is stored once; the fields that
change every request (start time, duration, request and trace ids) are one list append. The columns
read back as the same records (tests/unit/telemetry/test_logcolumns.py); ``rows`` gives the rows for
a sink that wants them.

Start times and durations, while each is a finite float (always, from the proxy), are written as
little-endian doubles as they come (librt.strings: compiled, a native store, no float object kept),
which is what `ROWS_JSON_COLUMNS_3` ships for them (``ship_columns``). Kept as float objects until the
flush, each record's two floats were allocated and freed outside CPython's float free list, then
type-checked and packed by struct at the flush: ~430 (client sidecar) and ~500 (server sidecar)
instructions a request of the ~2,300 the log cost (bench/telemetry_cost.py --callgrind), and 64 bytes
a record (two floats, two list slots) held until the flush, not 16.

Compiled (setup.py NATIVE_MODULES): typed attributes read and compared natively.
"""

from __future__ import annotations

from typing import Any

from librt.strings import BytesWriter, read_f64_le, write_f64_le

from meshbus.telemetry.rowcolumns import columns, same_value


def _floats(w: BytesWriter) -> list[Any]:
    """The doubles written to ``w``, as floats."""
    b = w.getvalue()
    return [read_f64_le(b, i) for i in range(0, len(b), 8)]


def _cut(v: Any, c: list[Any] | None, lo: int, hi: int) -> tuple[Any, list[Any] | None]:
    """A field of records ``lo`` to ``hi - 1`` (`LogColumns.part`): its first value and its column."""
    return (v, None) if c is None else (c[lo], c[lo:hi])


def _spread(v: Any, n: int, x: Any) -> list[Any]:
    """A column whose ``n`` first values were ``v``, and then ``x``."""
    col = [v] * n
    col.append(x)
    return col


class LogColumns:
    """The records of one batch, by field; ``add`` takes an :data:`AccessLogRow`'s 19 items as
    arguments (no tuple made). A ``v_*`` field is the batch's first value and ``c_*`` None while every
    record repeats it, else the column of all its values."""

    def __init__(self) -> None:
        self.n = 0
        self.packed = True
        """Start times and durations are in ``w_start`` and ``w_duration`` (every one so far a finite
        float), else in the lists ``start`` and ``duration``."""
        self.w_start = BytesWriter()
        self.w_duration = BytesWriter()
        self.start: list[Any] = []
        self.duration: list[Any] = []
        self.rid: list[Any] = []
        self.trace: list[Any] = []
        self.v_method: Any = None
        self.c_method: list[Any] | None = None
        self.v_path: Any = None
        self.c_path: list[Any] | None = None
        self.v_protocol: Any = None
        self.c_protocol: list[Any] | None = None
        self.v_status: Any = None
        self.c_status: list[Any] | None = None
        self.v_flags: Any = None
        self.c_flags: list[Any] | None = None
        self.v_details: Any = None
        self.c_details: list[Any] | None = None
        self.v_bin: Any = None
        self.c_bin: list[Any] | None = None
        self.v_bout: Any = None
        self.c_bout: list[Any] | None = None
        self.v_xff: Any = None
        self.c_xff: list[Any] | None = None
        self.v_agent: Any = None
        self.c_agent: list[Any] | None = None
        self.v_authority: Any = None
        self.c_authority: list[Any] | None = None
        self.v_uhost: Any = None
        self.c_uhost: list[Any] | None = None
        self.v_remote: Any = None
        self.c_remote: list[Any] | None = None
        self.v_principal: Any = None
        self.c_principal: list[Any] | None = None
        self.v_tail: tuple[Any, ...] = ()
        self.c_tail: list[tuple[Any, ...]] | None = None
        """Tails by identity: the proxy hands one tuple to a route's requests (proxy/filters/observe.py)."""

    def add(
        self, start: float, method: Any, path: Any, protocol: Any, status: Any, flags: Any, details: Any,
        bin_: Any, bout: Any, duration: float, xff: Any, agent: Any, rid: Any, authority: Any, uhost: Any,
        remote: Any, principal: Any, trace: Any, tail: tuple[Any, ...],
    ) -> None:  # fmt: skip
        """A request's record; its start time and duration are floats (the proxy's): compiled, passed
        and written as doubles, never a float object (boxed by the caller, checked and unboxed here,
        freed after: ~270 instructions a request of the log's ~1,850 on either sidecar,
        bench/telemetry_cost.py --callgrind). Other values come by `add_row`."""
        n = self.n
        self.n = n + 1
        if self.packed and start - start == 0.0 and duration - duration == 0.0:  # finite: ships as doubles
            write_f64_le(self.w_start, start)
            write_f64_le(self.w_duration, duration)
        elif self.packed:
            self._unpack(start, duration)
        else:
            self.start.append(start)
            self.duration.append(duration)
        self.rid.append(rid)
        self.trace.append(trace)
        if n == 0:
            self.v_method, self.v_path, self.v_protocol, self.v_status = method, path, protocol, status
            self.v_flags, self.v_details, self.v_bin, self.v_bout = flags, details, bin_, bout
            self.v_xff, self.v_agent, self.v_authority, self.v_uhost = xff, agent, authority, uhost
            self.v_remote, self.v_principal, self.v_tail = remote, principal, tail
            return
        # one block a field, written out: compiled, each is a native attribute read and a pointer compare
        c = self.c_method
        if c is not None:
            c.append(method)
        elif method is not self.v_method and not same_value(method, self.v_method):
            self.c_method = _spread(self.v_method, n, method)
        c = self.c_path
        if c is not None:
            c.append(path)
        elif path is not self.v_path and not same_value(path, self.v_path):
            self.c_path = _spread(self.v_path, n, path)
        c = self.c_protocol
        if c is not None:
            c.append(protocol)
        elif protocol is not self.v_protocol and not same_value(protocol, self.v_protocol):
            self.c_protocol = _spread(self.v_protocol, n, protocol)
        c = self.c_status
        if c is not None:
            c.append(status)
        elif status is not self.v_status and not same_value(status, self.v_status):
            self.c_status = _spread(self.v_status, n, status)
        c = self.c_flags
        if c is not None:
            c.append(flags)
        elif flags is not self.v_flags and not same_value(flags, self.v_flags):
            self.c_flags = _spread(self.v_flags, n, flags)
        c = self.c_details
        if c is not None:
            c.append(details)
        elif details is not self.v_details and not same_value(details, self.v_details):
            self.c_details = _spread(self.v_details, n, details)
        c = self.c_bin
        if c is not None:
            c.append(bin_)
        elif bin_ is not self.v_bin and not same_value(bin_, self.v_bin):
            self.c_bin = _spread(self.v_bin, n, bin_)
        c = self.c_bout
        if c is not None:
            c.append(bout)
        elif bout is not self.v_bout and not same_value(bout, self.v_bout):
            self.c_bout = _spread(self.v_bout, n, bout)
        c = self.c_xff
        if c is not None:
            c.append(xff)
        elif xff is not self.v_xff and not same_value(xff, self.v_xff):
            self.c_xff = _spread(self.v_xff, n, xff)
        c = self.c_agent
        if c is not None:
            c.append(agent)
        elif agent is not self.v_agent and not same_value(agent, self.v_agent):
            self.c_agent = _spread(self.v_agent, n, agent)
        c = self.c_authority
        if c is not None:
            c.append(authority)
        elif authority is not self.v_authority and not same_value(authority, self.v_authority):
            self.c_authority = _spread(self.v_authority, n, authority)
        c = self.c_uhost
        if c is not None:
            c.append(uhost)
        elif uhost is not self.v_uhost and not same_value(uhost, self.v_uhost):
            self.c_uhost = _spread(self.v_uhost, n, uhost)
        c = self.c_remote
        if c is not None:
            c.append(remote)
        elif remote is not self.v_remote and not same_value(remote, self.v_remote):
            self.c_remote = _spread(self.v_remote, n, remote)
        c = self.c_principal
        if c is not None:
            c.append(principal)
        elif principal is not self.v_principal and not same_value(principal, self.v_principal):
            self.c_principal = _spread(self.v_principal, n, principal)
        ct = self.c_tail
        if ct is not None:
            ct.append(tail)
        elif tail is not self.v_tail:
            ct = self.c_tail = [self.v_tail] * n
            ct.append(tail)

    def _unpack(self, start: Any, duration: Any) -> None:
        """A value that does not ship as a double: the start times and durations as lists from now on."""
        self.start = _floats(self.w_start)
        self.start.append(start)
        self.duration = _floats(self.w_duration)
        self.duration.append(duration)
        self.packed = False

    def add_row(self, row: tuple[Any, ...]) -> None:
        """``add`` of a queued row (accesslog.AccessLogRow), whatever its start time and duration are."""
        start = row[0]
        duration = row[9]
        if type(start) is float and type(duration) is float:
            self.add(*row)
            return
        if self.packed:  # a value that is not a float (an int stays an int): lists from now on
            self.start = _floats(self.w_start)
            self.duration = _floats(self.w_duration)
            self.packed = False
        r = row  # the row with 0.0 for its times, then its own values in their place
        self.add(0.0, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], 0.0, r[10], r[11], r[12], r[13], r[14],
                 r[15], r[16], r[17], r[18])  # fmt: skip
        self.start[-1] = start
        self.duration[-1] = duration

    def part(self, lo: int, hi: int) -> LogColumns:
        """Records ``lo`` to ``hi - 1`` as a batch of their own, each column sliced (a column of one
        value stays that value): how a drain too large for one bus message is cut
        (proxy/mesh/telemetry_ship.py). Cut as rows (``rows`` and `accesslog.wire_columns` again), each
        record cost ~2,400 instructions more a sidecar (bench/telemetry_cost.py --callgrind, drains of
        800 records cut at 500)."""
        p = LogColumns()
        p.n = hi - lo
        p.packed = self.packed
        if self.packed:
            p.w_start.write(self.w_start.getvalue()[8 * lo : 8 * hi])
            p.w_duration.write(self.w_duration.getvalue()[8 * lo : 8 * hi])
        else:
            p.start = self.start[lo:hi]
            p.duration = self.duration[lo:hi]
        p.rid = self.rid[lo:hi]
        p.trace = self.trace[lo:hi]
        p.v_method, p.c_method = _cut(self.v_method, self.c_method, lo, hi)
        p.v_path, p.c_path = _cut(self.v_path, self.c_path, lo, hi)
        p.v_protocol, p.c_protocol = _cut(self.v_protocol, self.c_protocol, lo, hi)
        p.v_status, p.c_status = _cut(self.v_status, self.c_status, lo, hi)
        p.v_flags, p.c_flags = _cut(self.v_flags, self.c_flags, lo, hi)
        p.v_details, p.c_details = _cut(self.v_details, self.c_details, lo, hi)
        p.v_bin, p.c_bin = _cut(self.v_bin, self.c_bin, lo, hi)
        p.v_bout, p.c_bout = _cut(self.v_bout, self.c_bout, lo, hi)
        p.v_xff, p.c_xff = _cut(self.v_xff, self.c_xff, lo, hi)
        p.v_agent, p.c_agent = _cut(self.v_agent, self.c_agent, lo, hi)
        p.v_authority, p.c_authority = _cut(self.v_authority, self.c_authority, lo, hi)
        p.v_uhost, p.c_uhost = _cut(self.v_uhost, self.c_uhost, lo, hi)
        p.v_remote, p.c_remote = _cut(self.v_remote, self.c_remote, lo, hi)
        p.v_principal, p.c_principal = _cut(self.v_principal, self.c_principal, lo, hi)
        ct = self.c_tail
        if ct is None:
            p.v_tail = self.v_tail
        else:
            p.v_tail = ct[lo]
            p.c_tail = ct[lo:hi]
        return p

    def _col(self, v: Any, c: list[Any] | None) -> list[Any]:
        return [v] if c is None else c

    def row_columns(self) -> list[Any]:
        """The 19 columns of the records' rows (accesslog.AccessLogRow order), a column of one value
        being that value for every record."""
        if self.packed:
            return self._columns(_floats(self.w_start), _floats(self.w_duration))
        return self._columns(self.start, self.duration)

    def ship_columns(self) -> list[Any]:
        """`row_columns`, but for the start times and durations of more than one record while they are
        doubles: their little-endian doubles (bytes), as rowcolumns.float_columns takes them."""
        if self.packed and self.n > 1:
            return self._columns(self.w_start.getvalue(), self.w_duration.getvalue())
        return self.row_columns()

    def _columns(self, start: Any, duration: Any) -> list[Any]:
        col = self._col
        return [
            start, col(self.v_method, self.c_method), col(self.v_path, self.c_path),
            col(self.v_protocol, self.c_protocol), col(self.v_status, self.c_status),
            col(self.v_flags, self.c_flags), col(self.v_details, self.c_details), col(self.v_bin, self.c_bin),
            col(self.v_bout, self.c_bout), duration, col(self.v_xff, self.c_xff),
            col(self.v_agent, self.c_agent), self.rid, col(self.v_authority, self.c_authority),
            col(self.v_uhost, self.c_uhost), col(self.v_remote, self.c_remote),
            col(self.v_principal, self.c_principal), self.trace,
        ]  # fmt: skip

    def tail_columns(self) -> list[list[Any]]:
        """The six columns of the records' tails (accesslog.AccessLogTail)."""
        ct = self.c_tail
        if ct is None:
            return [[v] for v in self.v_tail]
        return columns(ct)

    def rows(self) -> list[tuple[Any, ...]]:
        """The records as rows (accesslog.AccessLogRow), for a sink that takes rows."""
        n = self.n
        if n == 0:
            return []
        cols = [c if len(c) == n else c * n for c in self.row_columns()]
        cols.append(self.c_tail if self.c_tail is not None else [self.v_tail] * n)
        return list(zip(*cols, strict=True))

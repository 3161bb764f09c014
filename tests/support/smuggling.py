"""Request smuggling and desync vectors, sent raw through a proxy to an origin that counts requests.

Each vector is one client request (marked ``/a<i>``) that hides a second one (``/s<i>``) in a way
some HTTP/1.1 parser would take as a request of its own, followed on the same connection by an
innocent ``/n<i>``. The origin (`Origin`) is deliberately lax, like the back-ends smuggling preys
on: it ends lines at a bare LF, drops whitespace before a colon, takes a body as chunked when any
Transfer-Encoding mentions "chunked" (else the first Content-Length), reads chunk sizes with 64-bit
wraparound and ignores extensions. So if the bytes a proxy forwards can be read two ways, the origin
finds the hidden request: a proxy passes a vector only when it refuses it (4xx) or forwards it
normalized, so that even this origin sees exactly the one request the client meant.

`run_all` sends every vector at once (one connection each; the markers keep them apart), waits until
each connection is answered or quiet, then gives the origin a quiet period to receive anything a proxy
would still send (absence has no event to await). ``python -m tests.support.smuggling`` prints the
table of docs/smuggling.md (meshbus vs HAProxy, when haproxy is installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

QUIET = 0.4
"""Seconds without a byte after which a connection is taken as done (client side and origin)."""
HOST = b"reviews"


@dataclass(frozen=True)
class Vector:
    name: str
    build: Callable[[int], bytes]
    """The attack request for marker ``i`` (its target ``/a<i>``, the hidden request ``/s<i>``)."""
    note: str = ""


def hidden(i: int) -> bytes:
    return b"GET /s%d HTTP/1.1\r\nHost: reviews\r\n\r\n" % i


def _post(i: int, headers: bytes, body: bytes) -> bytes:
    return b"POST /a%d HTTP/1.1\r\nHost: reviews\r\n%s\r\n%s" % (i, headers, body)


def _cl_te(te_lines: bytes) -> Callable[[int], bytes]:
    """Content-Length covers everything; a chunked reader stops after "0" and finds the hidden request."""

    def build(i: int) -> bytes:
        body = b"0\r\n\r\n" + hidden(i)
        return _post(i, b"Content-Length: %d\r\n%s" % (len(body), te_lines), body)

    return build


def _te_cl(i: int) -> bytes:
    """Chunked covers everything; a Content-Length reader stops after 4 bytes and finds the hidden one."""
    h = hidden(i)
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(h), h)
    return _post(i, b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", body)


def _dup_cl(i: int) -> bytes:
    h = hidden(i)
    return _post(i, b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(h), h)


def _cl_space_colon(i: int) -> bytes:
    h = hidden(i)
    return _post(i, b"Content-Length : %d\r\n" % len(h), h)


def _cl_obs_fold(i: int) -> bytes:
    h = hidden(i)
    return _post(i, b"Content-Length: 0\r\n %d\r\n" % len(h), h)


def _bare_lf_hides_te(i: int) -> bytes:
    body = b"0\r\n\r\n" + hidden(i)
    return _post(i, b"X-Pad: a\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(body), body)


def _bare_lf_head(i: int) -> bytes:
    body = b"0\r\n\r\n" + hidden(i)
    return b"POST /a%d HTTP/1.1\nHost: reviews\nContent-Length: %d\nTransfer-Encoding: chunked\n\n%s" % (
        i,
        len(body),
        body,
    )


def _nul_in_te(i: int) -> bytes:
    return _cl_te(b"Transfer-Encoding: chunked\x00\r\n")(i)


def _ctl_in_name(i: int) -> bytes:
    body = b"0\r\n\r\n" + hidden(i)
    return _post(i, b"Content-Length: %d\r\nTransfer\x01Encoding: chunked\r\n" % len(body), body)


def _nul_in_cl(i: int) -> bytes:
    h = hidden(i)
    return _post(i, b"Content-Length: 0\x00%d\r\n" % len(h), h)


def _chunk_overflow(i: int) -> bytes:
    # 0x10000000000000005 wraps to 5 in 64 bits: a wrapping reader takes "hello", then a last chunk
    body = b"10000000000000005\r\nhello\r\n0\r\n\r\n" + hidden(i)
    return _post(i, b"Transfer-Encoding: chunked\r\n", body)


def _chunk_ext(i: int) -> bytes:
    return _post(i, b"Transfer-Encoding: chunked\r\n", b"5;name=value\r\nhello\r\n0\r\n\r\n")


def _chunk_ext_lf(i: int) -> bytes:
    # a bare LF inside the extension: a lax reader ends the size line there and reads "hello" as data
    body = b"5;x\nhello\r\n0\r\n\r\n" + hidden(i)
    return _post(i, b"Transfer-Encoding: chunked\r\n", body)


def _chunk_size_lf(i: int) -> bytes:
    body = b"5\nhello\n0\n\n" + hidden(i)
    return _post(i, b"Transfer-Encoding: chunked\r\n", body)


def _method(method: bytes) -> Callable[[int], bytes]:
    return lambda i: b"%s /a%d HTTP/1.1\r\nHost: reviews\r\nContent-Length: 0\r\n\r\n" % (method, i)


def _version(version: bytes) -> Callable[[int], bytes]:
    return lambda i: b"GET /a%d %s\r\nHost: reviews\r\n\r\n" % (i, version)


def _absolute_form(i: int) -> bytes:
    return b"GET http://evil.example/a%d HTTP/1.1\r\nHost: reviews\r\n\r\n" % i


def _absolute_form_routable(i: int) -> bytes:
    return b"GET http://reviews/a%d HTTP/1.1\r\nHost: evil.example\r\n\r\n" % i


def _no_host(i: int) -> bytes:
    return b"GET /a%d HTTP/1.1\r\nX-Pad: 1\r\n\r\n" % i


def _cl_plus(i: int) -> bytes:
    h = hidden(i)
    return _post(i, b"Content-Length: +%d\r\n" % len(h), h)


def _http10_te(i: int) -> bytes:
    body = b"0\r\n\r\n" + hidden(i)
    return (
        b"POST /a%d HTTP/1.0\r\nHost: reviews\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s"
        % (
            i,
            len(body),
            body,
        )
    )


def _two_hosts(i: int) -> bytes:
    return b"GET /a%d HTTP/1.1\r\nHost: reviews\r\nHost: evil.example\r\n\r\n" % i


def _get_with_body(i: int) -> bytes:
    h = hidden(i)
    return b"GET /a%d HTTP/1.1\r\nHost: reviews\r\nContent-Length: %d\r\n\r\n%s" % (i, len(h), h)


def _trailers(i: int) -> bytes:
    # A reader that knows no trailer section ends the body at the first line after "0" and takes the
    # next for a request line (its target /s<i>); a proxy that took trailer fields for the next
    # request's headers (meshbus before it told them apart) sends /s<i> to the origin in /n<i>'s head.
    body = b"1\r\nx\r\n0\r\nX-Pad: 1\r\nX-A: /s%d\r\n\r\n" % i
    return _post(i, b"Transfer-Encoding: chunked\r\n", body)


def _trailer_too_large(i: int) -> bytes:
    # a trailer field twice the size a head may have (60 KiB by default in meshbus, as in Envoy)
    return _post(
        i, b"Transfer-Encoding: chunked\r\n", b"1\r\nx\r\n0\r\nX-Big: " + b"b" * 131072 + b"\r\n\r\n"
    )


VECTORS: list[Vector] = [
    Vector(
        "CL.TE",
        _cl_te(b"Transfer-Encoding: chunked\r\n"),
        "both framings; Content-Length covers the hidden request",
    ),
    Vector("TE.CL", _te_cl, "both framings; chunked covers the hidden request"),
    Vector("TE.TE: xchunked", _cl_te(b"Transfer-Encoding: xchunked\r\n")),
    Vector("TE.TE: chunked, identity", _cl_te(b"Transfer-Encoding: chunked, identity\r\n")),
    Vector("TE.TE: identity, chunked", _cl_te(b"Transfer-Encoding: identity, chunked\r\n")),
    Vector("TE.TE: CHUNKED (case)", _cl_te(b"Transfer-Encoding: CHUNKED\r\n")),
    Vector("TE.TE: tab before value", _cl_te(b"Transfer-Encoding:\tchunked\r\n")),
    Vector("TE.TE: second TE header", _cl_te(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n")),
    Vector("TE.TE: space before colon", _cl_te(b"Transfer-Encoding : chunked\r\n")),
    Vector("TE.TE: obs-fold", _cl_te(b"Transfer-Encoding:\r\n chunked\r\n")),
    Vector("TE.TE: quoted", _cl_te(b'Transfer-Encoding: "chunked"\r\n')),
    Vector("duplicate Content-Length (0, N)", _dup_cl),
    Vector("whitespace before colon (Content-Length :)", _cl_space_colon),
    Vector("obs-fold in Content-Length", _cl_obs_fold),
    Vector("bare LF hides a TE line", _bare_lf_hides_te),
    Vector("bare LF line endings (CL + TE)", _bare_lf_head),
    Vector("NUL after chunked", _nul_in_te),
    Vector("control byte in a header name", _ctl_in_name),
    Vector("NUL in Content-Length", _nul_in_cl),
    Vector("chunk size overflow (2^64 + 5)", _chunk_overflow),
    Vector(
        "chunk extension (valid)", _chunk_ext, "a legitimate request: forwarded, extension dropped or kept"
    ),
    Vector("chunk extension with bare LF", _chunk_ext_lf),
    Vector("chunk lines with bare LF", _chunk_size_lf),
    Vector("GET with a body", _get_with_body, "legitimate: the body is the body"),
    Vector("invalid method (G ET)", _method(b"G ET")),
    Vector("invalid method (NUL)", _method(b"GE\x00T")),
    Vector("invalid version HTTP/1.2", _version(b"HTTP/1.2")),
    Vector("invalid version HTTP/2.0", _version(b"HTTP/2.0")),
    Vector("invalid version (garbage)", _version(b"HTTP/1.1x")),
    Vector(
        "absolute-form vs Host", _absolute_form, "origin must not see a Host that disagrees with the target"
    ),
    Vector("absolute-form (routable) vs another Host", _absolute_form_routable),
    Vector("two Host headers", _two_hosts),
    Vector("no Host (HTTP/1.1)", _no_host),
    Vector("Content-Length with a sign (+N)", _cl_plus),
    Vector("HTTP/1.0 with Transfer-Encoding", _http10_te),
    Vector("trailer fields after the last chunk", _trailers),
    Vector("trailer field over the head size limit (128 KiB)", _trailer_too_large),
]


# -- the origin -----------------------------------------------------------------------------------


@dataclass
class Seen:
    target: str
    host: str
    head: bytes


@dataclass
class Origin:
    """A lax HTTP/1.1 server that records every request it reads (see the module docstring)."""

    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None
    activity: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at every read: `_origin_quiet` waits for a stretch without one."""

    async def start(self) -> Origin:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.activity.set()
                buf += data
                while (parsed := _lax_parse(buf)) is not None:
                    seen, buf = parsed
                    self.seen.append(seen)
                    body = seen.target.encode("latin-1", "replace")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except (ConnectionError, ValueError):
            return
        finally:
            writer.close()


def _lax_parse(buf: bytes) -> tuple[Seen, bytes] | None:
    """One request off the front of ``buf`` the lax way, or None if it is not all there yet."""
    buf = buf.lstrip(b"\r\n")
    end = re.search(rb"\r?\n\r?\n", buf)
    if end is None:
        return None
    head, rest = buf[: end.start()], buf[end.end() :]
    lines = [ln.rstrip(b"\r") for ln in head.split(b"\n")]
    parts = lines[0].split(b" ")
    target = parts[1].decode("latin-1") if len(parts) > 1 else ""
    fields: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and fields:  # obs-fold: continue the last field
            fields[-1] = (fields[-1][0], fields[-1][1] + b" " + line.strip())
            continue
        name, _, value = line.partition(b":")
        fields.append((name.strip().lower(), value.strip()))
    host = next((v.decode("latin-1") for n, v in fields if n == b"host"), "")
    te = b",".join(v for n, v in fields if n == b"transfer-encoding").lower()
    cl = next((v for n, v in fields if n == b"content-length"), None)
    if b"chunked" in te:
        body_end = _lax_chunked(rest)
        if body_end is None:
            return None
        rest = rest[body_end:]
    elif cl is not None:
        digits = re.match(rb"\d+", cl)
        n = int(digits.group()) if digits else 0
        if len(rest) < n:
            return None
        rest = rest[n:]
    return Seen(target, host, head), rest


def _lax_chunked(data: bytes) -> int | None:
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return None
        size_text = data[pos:nl].split(b";")[0].strip() or b"0"
        try:
            size = int(size_text, 16) & 0xFFFFFFFFFFFFFFFF  # 64-bit wraparound
        except ValueError:
            size = 0
        pos = nl + 1
        if size == 0:
            end = data.find(b"\n", pos)  # the blank line after the last chunk (no trailers)
            return None if end < 0 else end + 1
        if len(data) < pos + size:
            return None
        pos += size
        if data[pos : pos + 2] == b"\r\n":
            pos += 2
        elif data[pos : pos + 1] == b"\n":
            pos += 1


# -- the client -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    vector: str
    statuses: list[int]
    attack_seen: int
    hidden_seen: int
    hosts: list[str]
    targets: list[str]
    leaked_field: bool = False
    """The innocent request reached the origin carrying the hidden marker in its head."""

    @property
    def smuggled(self) -> bool:
        return self.hidden_seen > 0 or self.attack_seen > 1 or self.host_mismatch or self.leaked_field

    @property
    def host_mismatch(self) -> bool:
        return any(
            t.startswith("http://evil") and h != "evil.example"
            for t, h in zip(self.targets, self.hosts, strict=True)
        ) or any(h == "evil.example" for h in self.hosts)

    def text(self) -> str:
        """The cell of this outcome through a proxy."""
        if self.hidden_seen and len(self.statuses) >= 3:
            return "**TWO REQUESTS** (the proxy itself read the hidden one as a request)"
        if self.smuggled:
            what = (
                "the origin read a request the proxy did not"
                if self.hidden_seen
                else "the next request carried this one's fields"
                if self.leaked_field
                else "the origin saw another Host"
            )
            return f"**DESYNC** ({what})"
        first = self.statuses[0] if self.statuses else None
        if self.attack_seen == 0:
            return f"refused {first}" if first else "connection closed, nothing forwarded"
        return "forwarded once, normalized" + (f" ({first})" if first and first != 200 else "")

    def direct_text(self) -> str:
        """The cell of this outcome sent straight to the origin: how the vector reads to a lax server."""
        if self.hidden_seen:
            return "reads the hidden request"
        if self.host_mismatch:
            return "takes the other Host"
        if self.leaked_field:
            return "the next request carries its fields"
        return "one request" if self.attack_seen else "no request it recognizes"


async def _client(port: int, request: bytes, i: int) -> list[int]:
    """Send ``request`` then ``/n<i>`` on one connection; the statuses of what comes back until the
    proxy closes or the connection is quiet."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return []
    out = b""
    try:
        writer.write(request + b"GET /n%d HTTP/1.1\r\nHost: reviews\r\n\r\n" % i)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), QUIET)
            except TimeoutError:
                break
            if not data:
                break
            out += data
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3})", out)]


async def run_all(port: int, origin: Origin, base: int = 0) -> list[Outcome]:
    """Every vector at once through the proxy at ``port``; markers from ``base``."""
    statuses = await asyncio.gather(
        *(_client(port, v.build(base + n), base + n) for n, v in enumerate(VECTORS))
    )
    await _origin_quiet(origin)
    out = []
    for n, (v, st) in enumerate(zip(VECTORS, statuses, strict=True)):
        i = base + n
        mine = [s for s in origin.seen if re.search(rf"/[as]{i}$", s.target)]
        out.append(
            Outcome(
                v.name,
                st,
                sum(s.target.endswith(f"/a{i}") for s in mine),
                sum(s.target.endswith(f"/s{i}") for s in mine),
                [s.host for s in mine],
                [s.target for s in mine],
                any(s.target.endswith(f"/n{i}") and b"/s%d\r" % i in s.head + b"\r" for s in origin.seen),
            )
        )
    return out


async def _origin_quiet(origin: Origin) -> None:
    """Return once the origin has read nothing for `QUIET` seconds (absence has no event of its own)."""
    while True:
        origin.activity.clear()
        try:
            await asyncio.wait_for(origin.activity.wait(), QUIET)
        except TimeoutError:
            return


# -- HAProxy --------------------------------------------------------------------------------------

HAPROXY_CFG = """global
    log stderr format raw local0 emerg
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend f
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server origin 127.0.0.1:{origin}
"""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (Path("/usr/sbin/haproxy").is_file() and "/usr/sbin/haproxy") or None


def haproxy_version(binary: str) -> str:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "?"


def start_haproxy(binary: str, port: int, origin_port: int, workdir: Path) -> subprocess.Popen[bytes]:
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port, origin=origin_port))
    return subprocess.Popen(
        [binary, "-db", "-f", str(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


COLUMNS = ("meshbus", "origin alone", "haproxy")


async def measure(workdir: Path) -> tuple[dict[str, list[Outcome]], str]:
    """Every vector through meshbus (in-process, outbound listener), straight to the origin (what the
    vectors do to it: the test's sensitivity) and through HAProxy when installed; and HAProxy's label."""
    from meshbus.proxy.adapters.server import ProxyServer
    from meshbus.proxy.bootstrap import Address, BootstrapConfig

    out: dict[str, list[Outcome]] = {}
    origin = await Origin().start()
    config = workdir / "mesh.yaml"
    config.write_text(service_entry_yaml(origin.port))
    local = Address("127.0.0.1", 0)
    server = ProxyServer(BootstrapConfig(config_path=str(config), outbound=local, inbound=local, admin=local))
    await server.start()
    try:
        out["meshbus"] = await run_all(server.ports["outbound"], origin)
    finally:
        await server.shutdown(0)
        await origin.stop()
    origin = await Origin().start()
    try:
        out["origin alone"] = await run_all(origin.port, origin)
    finally:
        await origin.stop()
    binary = haproxy_binary()
    if binary is None:
        return out, "HAProxy (not installed)"
    origin = await Origin().start()
    port = _free_port()
    proc = start_haproxy(binary, port, origin.port, workdir)
    try:
        await _wait_listening(port)
        out["haproxy"] = await run_all(port, origin)
    finally:
        proc.terminate()
        proc.wait(10)
        await origin.stop()
    return out, f"HAProxy {haproxy_version(binary)}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table(outcomes: dict[str, list[Outcome]], haproxy_label: str) -> str:
    head = f"| vector | meshbus | {haproxy_label} | origin alone |\n|---|---|---|---|\n"
    rows = []
    for n, v in enumerate(VECTORS):
        ha = outcomes["haproxy"][n].text() if "haproxy" in outcomes else "not run"
        rows.append(
            f"| {v.name} | {outcomes['meshbus'][n].text()} | {ha} | {outcomes['origin alone'][n].direct_text()} |"
        )
    return head + "\n".join(rows) + "\n"


def parse_table(markdown: str) -> tuple[str, dict[str, list[str]]]:
    """(HAProxy label, column -> cells) of the table `table` wrote into a document."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:] if not ln.startswith("|---")]
    cols = {"vector": [r[0] for r in rows], "meshbus": [r[1] for r in rows], "haproxy": [r[2] for r in rows]}
    cols["origin alone"] = [r[3] for r in rows]
    return header[2], cols


async def _main() -> None:  # pragma: no cover - a developer's tool (make smuggling)
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, label = await measure(Path(tmp))
    print(table(outcomes, label), end="")


async def _wait_listening(port: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)


def service_entry_yaml(origin_port: int) -> str:
    from tests.integration.proxy.conftest import service_entry

    return service_entry("reviews", [SimpleNamespace(port=origin_port, version="v1")])  # type: ignore[list-item]


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())

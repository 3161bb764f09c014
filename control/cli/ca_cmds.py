"""meshctl token create / ca bundle / cert inspect: the identity side of meshctl.

- ``meshctl token create --namespace NS --service-account SA [--ttl 1h] [--uses N]`` prints the
  bootstrap token (only the token on stdout, so ``T=$(meshctl token create ...)`` works;
  ``-o json|yaml`` prints the details too).
- ``meshctl ca bundle`` prints the trust bundle as PEM, for ``openssl verify -CAfile`` and friends.
- ``meshctl cert inspect --file CERT.pem [--bundle BUNDLE.pem]`` shows identity, issuer, validity,
  time to renewal (half life, as the proxy does) and, with a bundle, whether the chain verifies.
- ``meshctl cert inspect PROXY_ID`` asks that mesh-mode proxy (``xds_certs(node)``, answered by the
  proxy itself, as ``proxy-config`` is) for the certificate it serves with: identity, issuer,
  validity, its scheduled renewal and trust bundle (``istioctl proxy-config secret``). Exit 1 when
  the proxy is unknown, or wants an identity and holds no valid certificate (waiting, refused, expired).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from meshbus.bus import rpc
from meshbus.bus.cert_report import certs_doc
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.identity import (
    CERT_ACTIVE,
    CERT_NO_IDENTITY,
    CERT_REFUSED,
    CERT_WAITING,
    BundleReply,
    BundleRequest,
    ProxyCertsReply,
    ProxyCertsRequest,
    TokenCreateReply,
    TokenCreateRequest,
)
from meshbus.bus.spiffe import (
    DEFAULT_TRUST_DOMAIN,
    SvidError,
    has_svid_eku,
    load_pem_chain,
    svid_id,
    verify_svid,
)
from meshbus.control.ca.durations import format_duration, parse_duration

from .bus_call import call, timeout_args

DEFAULT_TIMEOUT = 5.0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    conn = timeout_args(DEFAULT_TIMEOUT, "meshbus-ca")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")

    token = sub.add_parser("token", help="bootstrap tokens for proxies").add_subparsers(
        dest="token_command", metavar="COMMAND", required=True
    )
    p = token.add_parser("create", parents=[common, conn, out], help="mint a token bound to one identity")
    p.add_argument("-n", "--namespace", required=True)
    p.add_argument("--service-account", "--sa", dest="service_account", required=True)
    p.add_argument("--ttl", default="1h", help="lifetime (default 1h; max 30d)")
    p.add_argument("--uses", type=int, default=1, help="how many certificates it may obtain (default 1)")
    p.set_defaults(func=run_token_create)

    ca = sub.add_parser("ca", help="the mesh certificate authority").add_subparsers(
        dest="ca_command", metavar="COMMAND", required=True
    )
    p = ca.add_parser("bundle", parents=[common, conn, out], help="print the trust bundle (PEM)")
    p.set_defaults(func=run_ca_bundle)

    cert = sub.add_parser("cert", help="workload certificates").add_subparsers(
        dest="cert_command", metavar="COMMAND", required=True
    )
    p = cert.add_parser(
        "inspect",
        parents=[common, out, timeout_args(DEFAULT_TIMEOUT, "the proxy (with PROXY_ID)")],
        help="show a certificate's identity and validity",
    )
    p.add_argument(
        "proxy", nargs="?", metavar="PROXY_ID", help="ask this mesh-mode proxy for its certificate"
    )
    p.add_argument("--file", "-f", dest="file", metavar="CERT.pem", help="PEM chain, leaf first")
    p.add_argument("--bundle", metavar="BUNDLE.pem", help="verify the chain against these roots")
    p.add_argument(
        "--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="expected trust domain (with --bundle)"
    )
    p.set_defaults(func=run_cert_inspect)


def _dump(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2) + "\n"
    buf = io.StringIO()
    y = YAML()
    y.default_flow_style = False
    y.dump(obj, buf)
    return buf.getvalue()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def run_token_create(args: argparse.Namespace) -> int:
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    req = TokenCreateRequest(
        namespace=args.namespace,
        service_account=args.service_account,
        ttl_seconds=round(ttl),
        max_uses=args.uses,
    )
    reply = call(
        args,
        lambda bus: rpc.request(
            bus, bus.subjects.ca("token"), req, TokenCreateReply, timeout=args.timeout, wait_for_service=True
        ),
    )
    if args.output == "text":
        print(reply.token)
        print(
            f"token {reply.token_id} for {reply.spiffe_id}: {reply.max_uses} use(s), expires {_iso(reply.expires_at)}",
            file=sys.stderr,
        )
        return 0
    doc = {
        "token": reply.token,
        "tokenId": reply.token_id,
        "spiffeId": reply.spiffe_id,
        "maxUses": reply.max_uses,
        "expiresAt": _iso(reply.expires_at),
    }
    sys.stdout.write(_dump(doc, args.output))
    return 0


def run_ca_bundle(args: argparse.Namespace) -> int:
    reply = call(
        args,
        lambda bus: rpc.request(
            bus,
            bus.subjects.ca("bundle"),
            BundleRequest(),
            BundleReply,
            timeout=args.timeout,
            wait_for_service=True,
        ),
    )
    if args.output == "text":
        sys.stdout.write(reply.bundle_pem)
        return 0
    b = reply.bundle
    doc = {
        "trustDomain": b.trust_domain,
        "version": b.version,
        "roots": [
            {
                "subject": load_pem_chain(r.cert_pem)[0].subject.rfc4514_string(),
                "active": r.active,
                "trustedUntil": _iso(r.trusted_until),
                "pem": r.cert_pem,
            }
            for r in b.roots
        ],
    }
    sys.stdout.write(_dump(doc, args.output))
    return 0


def describe_certificate(
    chain: list[x509.Certificate], now: dt.datetime, roots: list[x509.Certificate] | None, trust_domain: str
) -> dict[str, Any]:
    """The facts `cert inspect` shows, as a plain dict (also the json/yaml output)."""
    leaf = chain[0]
    nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    life = (na - nb).total_seconds()
    renew_at = nb + dt.timedelta(seconds=life / 2)
    try:
        identity = str(svid_id(leaf))
    except SvidError as exc:
        identity = f"(not an SVID: {exc})"
    doc: dict[str, Any] = {
        "identity": identity,
        "serial": f"{leaf.serial_number:x}",
        "issuer": leaf.issuer.rfc4514_string(),
        "notBefore": nb.isoformat(timespec="seconds"),
        "notAfter": na.isoformat(timespec="seconds"),
        "lifetime": format_duration(life),
        "expiresIn": format_duration(max(0.0, (na - now).total_seconds())) if na > now else "EXPIRED",
        "renewalIn": format_duration((renew_at - now).total_seconds()) if renew_at > now else "due",
        "serverAndClientAuth": has_svid_eku(leaf),
        "chainLength": len(chain),
    }
    if roots is not None:
        try:
            verify_svid(leaf, chain[1:], roots, trust_domain=trust_domain, now=now)
            doc["chain"] = "verified against the bundle"
        except SvidError as exc:
            doc["chain"] = f"NOT valid ({exc.reason.value}): {exc}"
    return doc


def proxy_cert_doc(reply: ProxyCertsReply, now: float) -> dict[str, Any]:
    """`certs_doc` (what the proxy's admin /certs shows) plus the --file form's human durations."""
    doc = certs_doc(reply, now)
    c = reply.certificate
    if c is None or "notAfter" not in doc:
        return doc
    doc["lifetime"] = format_duration(c.not_after - c.not_before)
    doc["expiresIn"] = "EXPIRED" if doc["expired"] else format_duration(c.not_after - now)
    if c.renewal_at:
        doc["renewalIn"] = format_duration(c.renewal_at - now) if c.renewal_at > now else "due"
    else:
        doc["renewalIn"] = "not scheduled"
    return doc


_STATE_TEXT = {
    CERT_NO_IDENTITY: "no mesh identity: started without a bootstrap token, so it serves plaintext only",
    CERT_WAITING: "no certificate yet: waiting for meshbus-ca",
    CERT_REFUSED: "no certificate: meshbus-ca refused its bootstrap token",
}
_TEXT_KEYS = (
    "proxy",
    "identity",
    "serial",
    "issuer",
    "notBefore",
    "notAfter",
    "lifetime",
    "expiresIn",
    "renewalAt",
    "renewalIn",
    "renewals",
    "chainLength",
)


def proxy_cert_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The text form of `proxy_cert_doc`: one (label, value) per fact; the PEM is left to -o json."""
    rows = [(key, str(doc[key])) for key in _TEXT_KEYS if doc.get(key) not in (None, "")]
    state = str(doc.get("state", ""))
    if state != CERT_ACTIVE:
        rows.insert(1, ("state", f"{state} ({_STATE_TEXT[state]})" if state in _STATE_TEXT else state))
    if "trustBundle" in doc:
        tb = doc["trustBundle"]
        rows.append(("trustBundle", f"version {tb['version']}, {tb['roots']} root(s)"))
    for key in ("lastError", "renewalFailures"):
        if key in doc:
            rows.append((key, str(doc[key])))
    return rows


def _print_rows(rows: list[tuple[str, str]]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    Console(highlight=False, soft_wrap=True).print(table)


def run_proxy_cert_inspect(args: argparse.Namespace) -> int:
    node = args.proxy.split(".", 1)[0]  # accept NAME.NAMESPACE as proxy-status prints it

    async def ask(bus: BusConnection) -> ProxyCertsReply:
        try:
            subject = bus.subjects.xds_certs(node)
        except ValueError as exc:
            raise UnavailableError(f"no proxy {node!r}: {str(exc).removeprefix('meshbus: ')}") from None
        try:
            return await rpc.request(bus, subject, ProxyCertsRequest(), ProxyCertsReply, timeout=args.timeout)
        except UnavailableError:
            raise UnavailableError(
                f"proxy {node!r} did not answer (unknown id, or not in mesh mode; see meshctl proxy-status)"
            ) from None

    reply = call(args, ask)
    doc = proxy_cert_doc(reply, dt.datetime.now(dt.UTC).timestamp())
    if args.output == "yaml" and "certChainPem" in doc:
        doc["certChainPem"] = LiteralScalarString(doc["certChainPem"])  # a PEM block, not one long line
    if args.output != "text":
        sys.stdout.write(_dump(doc, args.output))
    else:
        _print_rows(proxy_cert_rows(doc))
    if reply.state == CERT_NO_IDENTITY:
        return 0
    return 0 if reply.state == CERT_ACTIVE and not doc.get("expired") else 1


def run_cert_inspect(args: argparse.Namespace) -> int:
    if bool(args.proxy) == bool(args.file):
        print("Error: give a PROXY_ID or --file CERT.pem (one of them)", file=sys.stderr)
        return 2
    if args.proxy:
        return run_proxy_cert_inspect(args)
    try:
        chain = load_pem_chain(Path(args.file).read_bytes())
        roots = load_pem_chain(Path(args.bundle).read_bytes()) if args.bundle else None
    except (OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if not chain:
        print(f"Error: {args.file} holds no PEM certificate", file=sys.stderr)
        return 1
    doc = describe_certificate(chain, dt.datetime.now(dt.UTC), roots, args.trust_domain)
    if args.output != "text":
        sys.stdout.write(_dump(doc, args.output))
        return 0
    _print_rows([(key, str(value)) for key, value in doc.items()])
    return 0 if "NOT valid" not in str(doc.get("chain", "")) else 1

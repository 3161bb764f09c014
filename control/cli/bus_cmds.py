"""meshctl bus init: a secured bus's server config and credentials, for a mesh `meshctl up` does not run.

    meshctl bus init --ca-dir /ca --bus-dir /bus --proxy reviews-v1-sidecar=default/reviews ...

Creates the mesh root in ``--ca-dir`` if there is none (as meshbus-ca would: the same files), then
writes into ``--bus-dir`` what `meshbus.control.cli.bus_auth.ensure_bus` writes: nats-server's config
(run it with ``--config <bus-dir>/nats-server.conf``: TLS only), its certificate, one client
certificate and key per role, the bootstrap one and the snapshot signing key. Each ``--proxy
NODE=NAMESPACE/SERVICE_ACCOUNT`` is a sidecar that will run with ``--node-id NODE`` and that
identity's certificate; ``--proxy NODE`` (no identity) one that presents ``proxy-NODE-cert.pem``. docker-compose.yml's ``bus-init`` step runs it
with ``--by-role``: each container then mounts only its own folder of credentials (`bus_auth.hand_out`).
Existing keys are kept; the config is rewritten (a new sidecar: add it, run again, reload nats-server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from meshbus.bus.errors import BadRequestError
from meshbus.bus.spiffe import DEFAULT_TRUST_DOMAIN, InvalidSpiffeIdError, SpiffeId
from meshbus.control.ca.material import load_or_create_root, read_passphrase

from . import bus_auth


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bus", help="secured bus: nats-server config and credentials")
    verbs = p.add_subparsers(dest="bus_command", metavar="VERB", required=True)
    init = verbs.add_parser("init", parents=[common], help="write the server config and every credential")
    init.add_argument(
        "--ca-dir", required=True, help="the mesh root (created if missing; meshbus-ca's --ca-dir)"
    )
    init.add_argument(
        "--bus-dir", required=True, help="where the config and credentials go (0700, files 0600)"
    )
    init.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="NODE[=NS/SA]",
        help="a sidecar's node id and identity (repeatable)",
    )
    init.add_argument(
        "--by-role",
        action="store_true",
        help=f"also copy each consumer's files into <bus-dir>/{bus_auth.BY_ROLE_DIR}/<consumer>/ "
        "(nats, each role, proxy, proxy-NODE) for containers that mount only their own",
    )
    init.add_argument(
        "--trust-domain", default=os.environ.get(bus_auth.ENV_TRUST_DOMAIN) or DEFAULT_TRUST_DOMAIN
    )
    init.set_defaults(func=run_init)


def parse_proxy(text: str, trust_domain: str) -> bus_auth.ProxyPrincipal:
    node, _, identity = text.partition("=")
    if not node:
        raise BadRequestError(f"--proxy {text!r}: give NODE or NODE=NAMESPACE/SERVICE_ACCOUNT")
    if not identity:
        return bus_auth.ProxyPrincipal(node)
    ns, _, sa = identity.partition("/")
    try:
        return bus_auth.ProxyPrincipal(node, str(SpiffeId.workload(trust_domain, ns, sa)))
    except InvalidSpiffeIdError as exc:
        raise BadRequestError(f"--proxy {text!r}: {exc}") from None


def run_init(args: argparse.Namespace) -> int:
    proxies = [parse_proxy(p, args.trust_domain) for p in args.proxy]
    now = dt.datetime.now(dt.UTC)
    material, created = load_or_create_root(Path(args.ca_dir), args.trust_domain, read_passphrase(None), now)
    files = bus_auth.ensure_bus(
        Path(args.bus_dir),
        material,
        root=args.subject_root,
        proxies=proxies,
        trust_domain=args.trust_domain,
        now=now,
    )
    print(f"{'created' if created else 'kept'} the mesh root in {args.ca_dir}")
    print(f"wrote {files.conf} ({len(files.principals)} client certificates, {sum(1 for p in proxies if p.spiffe_id)} "
          f"certificate-mapped proxies) and the credentials beside it")  # fmt: skip
    if args.by_role:
        base = bus_auth.hand_out(files)
        print(f"copied each consumer's files into {base}/<consumer>/")
    return 0

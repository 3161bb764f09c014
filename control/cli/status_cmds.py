"""meshctl proxy-status / proxy-config: what every proxy runs, as istioctl shows it.

    meshctl proxy-status [PROXY_ID] [-n NS | -A] [-o table|json|yaml]
    meshctl proxy-config PROXY_ID [-o json|yaml]

STATUS is SYNCED (the proxy ACKed the latest snapshot sent), STALE (sent, no answer yet), NACK
(the proxy refused it, with its error; it keeps running VERSION) or NOT SENT.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from typing import Any

from ruamel.yaml import YAML

from meshbus.bus.schemas.discovery import APP_HEALTHY, ProxyConfigReply
from meshbus.control.discovery.client import proxy_config, proxy_status
from meshbus.control.discovery.status import ProxyView

from .bus_call import call, timeout_args
from .config_output import human_age, table


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "proxy-status",
        parents=[common, timeout_args(1.0, "replies from discovery")],
        help="sync status of every proxy (istioctl proxy-status)",
    )
    p.add_argument("proxy", nargs="?", metavar="PROXY_ID", help="only this proxy")
    p.add_argument("-n", "--namespace", default=None, help="only proxies in this namespace")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (the default)")
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    p.set_defaults(func=run_status)

    p = sub.add_parser(
        "proxy-config", parents=[common, timeout_args(2.0, "the proxy")], help="the snapshot a proxy runs"
    )
    p.add_argument("proxy", metavar="PROXY_ID")
    p.add_argument("-o", "--output", choices=["json", "yaml"], default="json")
    p.set_defaults(func=run_config)


def _workload(v: ProxyView) -> str:
    version = v.row.labels.get("version")
    return f"{v.row.service}-{version}" if version else v.row.service


def _app(v: ProxyView) -> str:
    """``HEALTHY``, ``UNHEALTHY: <why>``, ``UNKNOWN: <why>``; ``-`` when the sidecar does not probe."""
    r = v.row
    if r.app_health in ("", APP_HEALTHY) or not r.app_health_detail:
        return r.app_health or "-"
    return f"{r.app_health}: {r.app_health_detail}"


def status_rows(views: list[ProxyView], now: float) -> list[list[str]]:
    return [
        [
            f"{v.row.node}.{v.row.namespace}",
            _workload(v),
            v.row.namespace,
            str(v.row.acked_version) if v.row.acked_version else "-",
            v.status_text,
            _app(v),
            human_age(now - v.row.registered_at) if v.row.registered_at else "<unknown>",
        ]
        for v in views
    ]


def status_doc(v: ProxyView) -> dict[str, Any]:
    r = v.row
    return {
        "proxy": r.node,
        "workload": _workload(v),
        "service": r.service,
        "namespace": r.namespace,
        "labels": dict(r.labels),
        "address": r.address,
        "proxyVersion": r.proxy_version,
        "version": r.acked_version,
        "sentVersion": r.sent_version,
        "status": v.status,
        "error": r.nack_error if v.status == "NACK" else "",
        "registeredAt": r.registered_at,
        "lastSeen": r.last_seen,
        "appHealth": r.app_health or "NOT_PROBED",
        "appHealthDetail": r.app_health_detail,
    }


def _dump(doc: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False)
    buf = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(doc, buf)
    return buf.getvalue().rstrip("\n")


def run_status(args: argparse.Namespace) -> int:
    views: list[ProxyView] = call(args, lambda bus: proxy_status(bus, timeout=args.timeout))
    if args.namespace and not args.all_namespaces:
        views = [v for v in views if v.row.namespace == args.namespace]
    if args.proxy:
        views = [v for v in views if args.proxy in (v.row.node, f"{v.row.node}.{v.row.namespace}")]
        if not views:
            print(f"error: proxy {args.proxy!r} is not registered", file=sys.stderr)
            return 1
    if args.output == "table":
        if not views:
            print("No proxies found.", file=sys.stderr)
            return 0
        print(
            table(
                ["NAME", "WORKLOAD", "NAMESPACE", "VERSION", "STATUS", "APP", "AGE"],
                status_rows(views, time.time()),
            )
        )
    else:
        print(_dump([status_doc(v) for v in views], args.output))
    return 0


def config_doc(reply: ProxyConfigReply) -> dict[str, Any]:
    return {
        "proxy": reply.node,
        "version": reply.version,
        "digest": reply.digest,
        "configRevision": reply.config_revision,
        "appliedAt": reply.applied_at,
        "resources": reply.resources,
        "runtime": reply.runtime,
    }


def run_config(args: argparse.Namespace) -> int:
    node = args.proxy.split(".", 1)[0]  # accept NAME.NAMESPACE as proxy-status prints it
    reply: ProxyConfigReply = call(args, lambda bus: proxy_config(bus, node, timeout=args.timeout))
    print(_dump(config_doc(reply), args.output))
    return 0

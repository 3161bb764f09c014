"""meshbus-policy: global rate limit counters and JWT key sets for the mesh.

    meshbus-policy [--nats URL] [--subject-root mesh] [--jwks-refresh 20m] [--jwks-retry 1m]
                   [--jwks-retry-max 60m] [--jwks-max-age 24h] [--authz-rules FILE]

Run as many replicas as you like against one NATS: they serve ``ratelimit`` in a queue group and
share counters and key sets through JetStream KV. Only this module exits the process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from meshbus.bus.config.types import parse_duration
from meshbus.bus.connection import BusConnection
from meshbus.bus.process import add_common_args, run_until_signalled, settings_from_args, use_uvloop
from meshbus.telemetry.logging import configure_logging

from .authz_rules import AuthzRules, AuthzRulesError, load_rules
from .jwks import JwksPolicy
from .service import PolicyService


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshbus-policy", description="meshbus policy: global rate limit counters and JWT key sets"
    )
    add_common_args(p)
    p.add_argument("--jwks-refresh", default="20m", help="fetch each key set again after (default 20m)")
    p.add_argument("--jwks-retry", default="1m", help="retry a failed fetch after (default 1m), doubling")
    p.add_argument("--jwks-retry-max", default="60m", help="longest wait between retries (default 60m)")
    p.add_argument(
        "--jwks-max-age",
        default="24h",
        help="how long the last good key set stays in force while fetches fail (default 24h)",
    )
    p.add_argument(
        "--authz-rules",
        default=None,
        metavar="FILE",
        help="YAML file of meshbusAuthz authorizers to serve (control/policy/authz_rules.py)",
    )
    p.add_argument("--grace", type=float, default=5.0, help="seconds to drain on shutdown")
    return p


def jwks_policy(args: argparse.Namespace) -> JwksPolicy:
    try:
        policy = JwksPolicy(
            refresh=parse_duration(args.jwks_refresh),
            retry=parse_duration(args.jwks_retry),
            retry_max=parse_duration(args.jwks_retry_max),
            max_age=parse_duration(args.jwks_max_age),
        )
    except ValueError as exc:  # pydantic_core's PydanticCustomError is one
        raise SystemExit(f"meshbus-policy: {exc}") from None
    if policy.retry > policy.retry_max:
        raise SystemExit("meshbus-policy: --jwks-retry must not exceed --jwks-retry-max")
    return policy


async def serve(
    args: argparse.Namespace, policy: JwksPolicy, rules: AuthzRules | None, stop: asyncio.Event
) -> None:
    async with (
        BusConnection(settings_from_args(args, "meshbus-policy", role="policy")) as bus,
        PolicyService(bus, policy, authz_rules=rules),
    ):
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    policy = jwks_policy(args)
    try:
        rules = load_rules(args.authz_rules) if args.authz_rules else None
    except AuthzRulesError as exc:
        raise SystemExit(str(exc)) from None
    configure_logging("policy", args.log_level, args.log_format)
    use_uvloop()
    asyncio.run(run_until_signalled(lambda stop: serve(args, policy, rules, stop), grace=args.grace))
    sys.exit(0)


if __name__ == "__main__":
    main()

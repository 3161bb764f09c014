"""The outbound route table of one build, reusing the previous build's virtual hosts (sans-IO).

Each virtual host (one service port, a VirtualService host that is no service, a wildcard host) is
compiled by `OutboundBuilder.host`, which first asks the memo (build/memo.py) for the previous
build's one: reused when the VirtualService is the same object and every host its routes resolved
still resolves to the same Service and RuleSet; then it asks for the same clusters again, in the
same order, so the cluster table comes out as a full build makes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from meshbus.bus.config.hosts import authority_aliases, host_matches, to_fqdn
from meshbus.bus.config.proxy_kinds import VirtualService
from meshbus.proxy.build.cluster_builder import RuleSet, Service, rules_for
from meshbus.proxy.build.memo import CompiledHost, Memos, OutboundParts
from meshbus.proxy.build.route_builder import Entry, RouteContext, compile_http_route, default_route
from meshbus.proxy.core.routing import RouteTable, VirtualHost

log = logging.getLogger(__name__)


def _applies_to_sidecar(vs: VirtualService) -> bool:
    gateways = vs.spec.gateways
    return not gateways or "mesh" in gateways


def vs_hosts(vs: VirtualService) -> tuple[str, ...] | None:
    if not _applies_to_sidecar(vs):
        return None
    return tuple(to_fqdn(h, vs.metadata.namespace) for h in vs.spec.hosts)


def vs_for(
    fqdn: str, exact: Mapping[str, VirtualService], wildcard: list[tuple[str, VirtualService]]
) -> VirtualService | None:
    vs = exact.get(fqdn)
    if vs is not None:
        return vs
    best: tuple[str, VirtualService] | None = None
    for pattern, cand in wildcard:
        if host_matches(pattern, fqdn) and (best is None or len(pattern) > len(best[0])):
            best = (pattern, cand)
    return best[1] if best else None


def _entries(ctx: RouteContext, vs: VirtualService, fqdn: str, port: int | None) -> list[Entry]:
    out: list[Entry] = []
    for i, http in enumerate(vs.spec.http):
        out.extend(compile_http_route(ctx, vs, i, http, fqdn, port))
    return out


class OutboundBuilder:
    """The outbound route table; each virtual host is reused from the previous build when its
    VirtualService and every host its routes resolved are unchanged (memo.CompiledHost)."""

    def __init__(self, ctx: RouteContext, memos: Memos, ensure: Callable[[str, int, str], str]) -> None:
        self.ctx = ctx
        self.memos = memos
        self.ensure = ensure
        self._wild_rules = any(h.startswith("*") for h in ctx.rules)

    def _current(self, host: str) -> tuple[Service | None, RuleSet | None]:
        rules = self.ctx.rules
        rs = rules.get(host) if not self._wild_rules else rules_for(rules, host)
        return self.ctx.services.get(host), rs

    def host(
        self,
        slot: str,
        fqdn: str,
        port: int | None,
        vs: VirtualService | None,
        domains: list[str],
        vh_port: int | None,
    ) -> VirtualHost:
        key = (slot, fqdn, port)
        hit = self.memos.compiled_host(key, vs, self._current)
        if hit is not None:
            for f, p, sub in hit.ensured:  # the clusters a full build would create, in the same order
                self.ensure(f, p, sub)
            if hit.vh.domains != domains:  # the service's default port changed: same routes, new domains
                hit = CompiledHost(
                    vs,
                    hit.looked_up,
                    hit.ensured,
                    hit.entries,
                    VirtualHost(fqdn, vh_port, list(hit.entries), domains),
                )
            self.memos.keep_host(key, hit, True)
            return hit.vh
        ctx = self.ctx
        ctx.start_recording()
        if vs is None:
            entries: list[Entry] = [((), default_route(ctx, fqdn, vh_port or 0))]
        else:
            entries = _entries(ctx, vs, fqdn, vh_port)
        vh = VirtualHost(fqdn, vh_port, entries, domains)
        looked_up = tuple((h, *self._current(h)) for h in sorted(ctx.looked_up))
        self.memos.keep_host(key, CompiledHost(vs, looked_up, tuple(ctx.ensured), tuple(entries), vh), False)
        return vh

    def vs_by_host(
        self, virtual_services: list[VirtualService]
    ) -> tuple[dict[str, VirtualService], list[tuple[str, VirtualService]]]:
        exact: dict[str, VirtualService] = {}
        wildcard: list[tuple[str, VirtualService]] = []
        claims = self.memos.new.claims = {}
        for vs in virtual_services:
            hosts = self.memos.vs_hosts(vs, vs_hosts)
            for fq in hosts or ():
                if fq.startswith("*"):
                    if all(p != fq for p, _ in wildcard):
                        wildcard.append((fq, vs))
                    continue
                claims[fq] = claims.get(fq, 0) + 1
                if fq in exact:
                    log.warning(
                        "%s: host %s is already routed by %s; ignored here", vs.ref, fq, exact[fq].ref
                    )
                else:
                    exact[fq] = vs
        return exact, wildcard

    def build(
        self, virtual_services: list[VirtualService], services: Mapping[str, Service], namespace: str
    ) -> RouteTable:
        exact, wildcard = self.vs_by_host(virtual_services)
        vhosts: list[VirtualHost] = []
        by_authority: dict[str, VirtualHost] = {}
        aliased: list[tuple[list[str], int, VirtualHost, bool]] = []
        for fqdn, svc in services.items():
            vs = vs_for(fqdn, exact, wildcard)
            default_port = svc.default_port()
            aliases = authority_aliases(fqdn, namespace)
            for sp in svc.ports:
                domains = [d for a in aliases for d in (a, f"{a}:{sp.number}")]
                vh = self.host(
                    "service",
                    fqdn,
                    sp.number,
                    vs,
                    domains if sp.number == default_port else domains[1::2],
                    sp.number,
                )
                vhosts.append(vh)
                aliased.append((aliases, sp.number, vh, sp.number == default_port))
        # FQDNs first so a short alias can never shadow a full name.
        for aliases, port, vh, is_default in aliased:
            by_authority.setdefault(f"{aliases[0]}:{port}", vh)
            if is_default:
                by_authority.setdefault(aliases[0], vh)
        for aliases, port, vh, is_default in aliased:
            for a in aliases[1:]:
                by_authority.setdefault(f"{a}:{port}", vh)
                if is_default:
                    by_authority.setdefault(a, vh)
        # VirtualService hosts that are not services (e.g. an external name): routes on any port.
        for fq, vs in exact.items():
            if fq in services:
                continue
            vh = self.host("host", fq, None, vs, [fq], None)
            vhosts.append(vh)
            by_authority.setdefault(fq, vh)
        wild_vhs: list[tuple[str, VirtualHost]] = []
        catch_all = None
        for pattern, vs in wildcard:
            vh = self.host("wildcard", pattern, None, vs, [pattern], None)
            vhosts.append(vh)
            if pattern == "*":
                catch_all = vh
            else:
                wild_vhs.append((pattern[1:], vh))
        new = self.memos.new
        new.vs_exact, new.vs_wild = exact, tuple(wildcard)
        new.table = OutboundParts(vhosts, by_authority, wild_vhs, catch_all)
        new.positions = {("service", vh.fqdn, vh.port): i for i, vh in enumerate(vhosts[: len(aliased)])}
        if len(new.positions) != len(aliased):
            new.table = None  # a port declared twice: keys are not unique, patching could pick the wrong one
        at = {id(vh): i for i, vh in enumerate(vhosts[: len(aliased)])}
        authorities: dict[int, list[str]] = {}
        for a, vh in by_authority.items():
            i = at.get(id(vh))
            if i is not None:
                authorities.setdefault(i, []).append(a)
        new.authorities = {i: tuple(keys) for i, keys in authorities.items()}
        return RouteTable(vhosts, by_authority, wild_vhs, catch_all)

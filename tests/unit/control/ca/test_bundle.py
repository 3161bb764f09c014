"""Trust bundle rotation: both roots trusted during the overlap, the old one dropped after it."""

from __future__ import annotations

import datetime as dt

from meshbus.bus.spiffe import load_pem_chain
from meshbus.control.ca import bundle

from .pki import NOW, TD, root

H = dt.timedelta(hours=1)


def _fps(b):  # type: ignore[no-untyped-def]
    return [(load_pem_chain(r.cert_pem)[0], r.active) for r in b.roots]


def test_first_bundle_holds_the_active_root() -> None:
    a = root()
    b = bundle.merge(None, trust_domain=TD, active=[a.root], extra=[], now=NOW, overlap=48 * H)
    assert _fps(b) == [(a.root, True)]
    assert b.roots[0].trusted_until == a.root.not_valid_after_utc.timestamp()
    assert b.pem().count("BEGIN CERTIFICATE") == 1


def test_rotation_keeps_old_root_for_the_overlap_then_drops_it() -> None:
    old, new = root(), root()
    b1 = bundle.merge(None, trust_domain=TD, active=[old.root], extra=[], now=NOW, overlap=48 * H)
    b2 = bundle.merge(b1, trust_domain=TD, active=[new.root], extra=[], now=NOW + H, overlap=48 * H)
    assert _fps(b2) == [(new.root, True), (old.root, False)]
    assert b2.roots[1].trusted_until == (NOW + 49 * H).timestamp()
    assert {c.serial_number for c in bundle.roots_of(b2, NOW + 2 * H)} == {
        old.root.serial_number,
        new.root.serial_number,
    }
    # a later merge (another replica, or the sweep) keeps the overlap end, does not restart it
    b3 = bundle.merge(b2, trust_domain=TD, active=[new.root], extra=[], now=NOW + 10 * H, overlap=48 * H)
    assert b3.roots == b2.roots and bundle.same_roots(b2, b3)
    b4 = bundle.merge(b3, trust_domain=TD, active=[new.root], extra=[], now=NOW + 50 * H, overlap=48 * H)
    assert _fps(b4) == [(new.root, True)]


def test_extra_roots_are_trusted_not_active() -> None:
    a, nxt = root(), root()
    b = bundle.merge(None, trust_domain=TD, active=[a.root], extra=[nxt.root, a.root], now=NOW, overlap=H)
    assert _fps(b) == [(a.root, True), (nxt.root, False)]


def test_other_trust_domain_bundle_is_not_merged() -> None:
    a, foreign = root(), root("other.td")
    prev = bundle.merge(None, trust_domain="other.td", active=[foreign.root], extra=[], now=NOW, overlap=H)
    b = bundle.merge(prev, trust_domain=TD, active=[a.root], extra=[], now=NOW, overlap=H)
    assert _fps(b) == [(a.root, True)]

"""plan.py: which writes a change makes, based on which revisions."""

from __future__ import annotations

from meshbus.bus.schemas.config import StoredConfig
from meshbus.control.config.plan import Current, plan_apply, plan_delete


def value(name: str = "reviews", weight: int = 100, created: str = "t0") -> StoredConfig:
    spec = {"hosts": [name], "http": [{"route": [{"destination": {"host": name}, "weight": weight}]}]}
    return StoredConfig("networking.istio.io/v1", "VirtualService", "default", name, spec, created=created)


KEY = "VirtualService.default.reviews"


def test_create_configure_unchanged() -> None:
    state = {KEY: Current(7, value(created="first"))}
    plan = plan_apply([value(), value("ratings")], state, {})
    assert [r.action for r in plan.results] == ["unchanged", "created"]
    assert plan.results[0].revision == 7
    assert [(w.key, w.last) for w in plan.writes] == [("VirtualService.default.ratings", 0)]

    plan = plan_apply(
        [value(weight=100, created="later")], {KEY: Current(7, value(weight=50, created="first"))}, {}
    )
    assert plan.results[0].action == "configured" and plan.results[0].previous_revision == 7
    write = plan.writes[0]
    assert write.last == 7 and write.value is not None and write.value.created == "first"
    assert plan.settle([9])[0].revision == 9


def test_source_and_timestamps_do_not_make_a_change() -> None:
    stored = StoredConfig(
        "networking.istio.io/v1",
        "VirtualService",
        "default",
        "reviews",
        value().spec,
        source_file="a.yaml",
        updated="x",
    )
    again = StoredConfig(
        "networking.istio.io/v1",
        "VirtualService",
        "default",
        "reviews",
        value().spec,
        source_file="b.yaml",
        updated="y",
    )
    assert plan_apply([again], {KEY: Current(3, stored)}, {}).writes == []


def test_recreate_after_delete_is_based_on_the_delete_marker() -> None:
    plan = plan_apply([value()], {KEY: Current(12, None)}, {})
    assert plan.results[0].action == "created" and plan.writes[0].last == 12


def test_stated_revisions() -> None:
    state = {KEY: Current(7, value(weight=50))}
    assert plan_apply([value()], state, {KEY: 7}).conflicts == []
    stale = plan_apply([value()], state, {KEY: 5})
    assert stale.writes == [] and "revision 5 was expected but revision 7 is stored" in stale.conflicts[0]
    assert "expected not to exist" in plan_apply([value()], state, {KEY: 0}).conflicts[0]
    assert plan_apply([value()], {}, {KEY: 0}).conflicts == []
    assert "does not exist" in plan_apply([value()], {}, {KEY: 3}).conflicts[0]
    assert plan_apply([value()], {KEY: Current(12, None)}, {KEY: 12}).conflicts == []  # saw the delete


def test_delete() -> None:
    state = {KEY: Current(7, value()), "VirtualService.default.gone": Current(9, None)}
    plan = plan_delete([("VirtualService", "default", "reviews")] * 2, state, {})
    assert [(w.key, w.value, w.last) for w in plan.writes] == [(KEY, None, 7)]
    assert [r.action for r in plan.results] == ["deleted"]
    missing = plan_delete([("VirtualService", "default", "gone")], state, {})
    assert (
        missing.writes == [] and 'virtualservice.networking.istio.io "gone" not found' in missing.not_found[0]
    )
    assert (
        plan_delete([("VirtualService", "default", "gone")], state, {}, ignore_not_found=True).not_found == []
    )
    assert plan_delete([("VirtualService", "default", "reviews")], state, {KEY: 6}).conflicts

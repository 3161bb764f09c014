"""meshbus-config against a real nats-server: apply/get/list/delete/history/rollback, all-or-nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from meshbus.bus import BusConnection, BusSettings, codec
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import BadRequestError, ConflictError, NotFoundError
from meshbus.bus.kv import BucketConfig, KeyValueStore
from meshbus.bus.schemas.config import ConfigChanged, Document, ResourceRef, decode_value
from meshbus.control.config.client import ConfigClient
from meshbus.control.config.service import ConfigService
from tests.support.unenforced import KEEPALIVE_FATE, keepalive_rule

pytestmark = pytest.mark.timeout(30)

BOOKINFO = Path(__file__).parents[2] / "golden" / "config" / "bookinfo"

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"""


def vs(
    weights: tuple[int, int] = (100, 0), subsets: tuple[str, str] = ("v1", "v2"), name: str = "reviews"
) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subsets[0]}}}
      weight: {weights[0]}
    - destination: {{host: reviews, subset: {subsets[1]}}}
      weight: {weights[1]}
"""


def plain_vs(name: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination: {{host: {name}}}
"""


@pytest.fixture
async def config(bus: BusConnection) -> AsyncIterator[ConfigClient]:
    async with ConfigService(bus) as svc:
        await svc.wait_ready()
        yield ConfigClient(bus, timeout=5.0)


def bookinfo_docs() -> list[Document]:
    return [
        Document(f.name, f.read_text())
        for f in (BOOKINFO / "destination-rule-all.yaml", BOOKINFO / "virtual-service-all-v1.yaml")
    ]


async def test_apply_bookinfo_then_get_and_list(config: ConfigClient) -> None:
    reply = await config.apply(bookinfo_docs())
    actions = {(r.kind, r.name): r.action for r in reply.results}
    assert len(actions) == 8 and set(actions.values()) == {"created"}
    revisions = [r.revision for r in reply.results]
    assert len(set(revisions)) == 8 and min(revisions) > 0

    rec = await config.get("VirtualService", "reviews")
    assert rec.spec == {
        "hosts": ["reviews"],
        "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}],
    }
    assert rec.source_file == "virtual-service-all-v1.yaml" and rec.source_line > 0
    assert rec.revision == next(
        r.revision for r in reply.results if (r.kind, r.name) == ("VirtualService", "reviews")
    )
    assert rec.created and rec.updated

    by_alias = await config.get("vs", "reviews")  # kubectl short names work server-side too
    assert by_alias == rec
    listed = await config.list("DestinationRule")
    assert [r.name for r in listed.items] == ["details", "productpage", "ratings", "reviews"]
    assert len((await config.list()).items) == 8
    assert (await config.list("vs", "other")).items == []
    assert len((await config.list("vs", "other", all_namespaces=True)).items) == 4
    with pytest.raises(BadRequestError):  # no wildcard may reach the key filter
        await config.list("vs", ">")
    with pytest.raises(BadRequestError, match="unknown resource type"):
        await config.get("pods", "reviews")


async def test_unchanged_reapply_makes_no_new_revision(config: ConfigClient) -> None:
    first = await config.apply(bookinfo_docs())
    again = await config.apply(bookinfo_docs())
    assert {r.action for r in again.results} == {"unchanged"}
    assert [r.revision for r in again.results] == [r.revision for r in first.results]
    # Same content spelled differently (flow style, explicit default namespace) is still unchanged.
    assert (await config.apply_text(DR, "dr.yaml")).results[0].action == "configured"
    respelled = DR.replace("name: reviews\n", "name: reviews\n  namespace: default\n", 1).replace(
        "labels: {version: v1}", "labels:\n      version: v1"
    )
    assert (await config.apply_text(respelled, "other.yaml")).results[0].action == "unchanged"
    hist = await config.history("DestinationRule", "reviews")
    assert len(hist.entries) == 2


async def test_invalid_apply_names_file_and_field_path_and_stores_nothing(config: ConfigClient) -> None:
    docs = [Document("dr.yaml", DR), Document("bad.yaml", vs(weights=(90, -20)))]
    with pytest.raises(BadRequestError) as err:
        await config.apply(docs)
    msg = str(err.value)
    assert "bad.yaml:" in msg and "VirtualService default/reviews" in msg and "spec.http[0].route" in msg
    assert (await config.list()).items == []

    unknown = DR.replace("host: reviews", "host: reviews\n  hostt: typo")
    with pytest.raises(BadRequestError, match=r"dr\.yaml:\d+: DestinationRule default/reviews: spec\.hostt"):
        await config.apply_text(unknown, "dr.yaml")
    with pytest.raises(BadRequestError, match=r"syntax|mapping|could not|expected"):
        await config.apply_text("kind: [unclosed", "broken.yaml")
    assert (await config.list()).items == []


async def test_missing_subset_is_ist0101_error_and_nothing_is_stored(config: ConfigClient) -> None:
    docs = [Document("dr.yaml", DR), Document("vs.yaml", vs(weights=(50, 50), subsets=("v1", "v3")))]
    with pytest.raises(BadRequestError) as err:
        await config.apply(docs)
    assert "IST0101" in str(err.value) and 'Referenced subset not found: "v3"' in str(err.value)
    assert "vs.yaml:" in str(err.value)
    assert (await config.list()).items == []
    # A host no ServiceEntry declares is only a warning: workloads register later.
    reply = await config.apply([Document("dr.yaml", DR), Document("vs.yaml", vs(weights=(50, 50)))])
    assert {r.action for r in reply.results} == {"created"}
    assert any("IST0101" in w and "Referenced host not found" in w for w in reply.warnings)


async def test_unchanged_reapply_reports_the_file_and_lines_applied(config: ConfigClient) -> None:
    await config.apply([Document("first/dr.yaml", DR), Document("first/vs.yaml", vs(weights=(50, 50)))])
    again = await config.apply([Document("vs.yaml", vs(weights=(50, 50)))])
    assert [r.action for r in again.results] == ["unchanged"]
    # the findings name the file just applied and each destination's host line (9 and 11), as
    # `meshctl analyze -f vs.yaml` does, not the stored copy's file and first line
    hosts = [w for w in again.warnings if "Referenced host not found" in w]
    assert [w.split(") ")[0].rsplit(" ", 1)[1] for w in hosts] == ["vs.yaml:9", "vs.yaml:11"], hosts


async def test_stale_revision_is_a_conflict(config: ConfigClient) -> None:
    await config.apply_text(DR, "dr.yaml")
    r1 = (await config.apply_text(vs(), "vs.yaml")).results[0].revision
    r2 = (await config.apply_text(vs((50, 50)), "vs.yaml", expected_revision=r1)).results[0]
    assert r2.action == "configured" and r2.revision > r1 and r2.previous_revision == r1
    with pytest.raises(
        ConflictError, match=f"revision {r1} was expected but revision {r2.revision} is stored"
    ):
        await config.apply_text(vs((80, 20)), "vs.yaml", expected_revision=r1)
    assert (await config.get("VirtualService", "reviews")).revision == r2.revision
    # Several resources, one stale: nothing of the request is stored.
    key = "VirtualService.default.reviews"
    with pytest.raises(ConflictError):
        await config.apply(
            [Document("vs.yaml", vs((80, 20))), Document("vs2.yaml", vs(name="reviews-b"))],
            expected_revisions={key: r1},
        )
    with pytest.raises(NotFoundError):
        await config.get("VirtualService", "reviews-b")
    with pytest.raises(BadRequestError, match="one resource only"):
        await config.apply([Document("two.yaml", DR + "---\n" + vs())], expected_revision=r1)


async def test_history_and_rollback(config: ConfigClient) -> None:
    await config.apply_text(DR, "dr.yaml")
    r1 = (await config.apply_text(vs(), "vs.yaml")).results[0].revision
    r2 = (await config.apply_text(vs((50, 50)), "vs.yaml")).results[0].revision
    back = (await config.rollback("vs", "reviews", r1, expected_revision=r2)).results[0]
    assert back.action == "rolled back" and back.revision > r2
    assert (await config.get("VirtualService", "reviews")).spec["http"][0]["route"][0]["weight"] == 100

    hist = await config.history("VirtualService", "reviews")
    assert [(e.revision, e.operation) for e in hist.entries] == [
        (r1, "apply"),
        (r2, "apply"),
        (back.revision, "rollback"),
    ]
    assert hist.entries[-1].rolled_back_to == r1 and hist.current_revision == back.revision
    assert all(e.updated for e in hist.entries)

    with pytest.raises(ConflictError):  # stale: it is at back.revision now
        await config.rollback("VirtualService", "reviews", r2, expected_revision=r2)
    kept = f"{r1}, {r2}, {back.revision}"
    with pytest.raises(NotFoundError, match=f"has no revision 10000; it can be rolled back to {kept} "):
        await config.rollback("VirtualService", "reviews", 10_000)
    with pytest.raises(NotFoundError, match=f"rolled back to {kept}"):  # a revision of another key
        await config.rollback("VirtualService", "reviews", 1)
    same = await config.rollback("VirtualService", "reviews", r1)  # same content as now
    assert same.results[0].action == "unchanged"


async def test_apply_and_rollback_carry_the_warnings_of_what_meshbus_does_not_enforce(
    config: ConfigClient,
) -> None:
    capped = keepalive_rule("reviews")
    fate = f"dr.yaml:9: DestinationRule default/reviews: {KEEPALIVE_FATE}"
    first = await config.apply_text(capped, "dr.yaml")
    assert fate in first.warnings
    plain = await config.apply_text(DR, "dr.yaml")
    assert not [w for w in plain.warnings if "NOT ENFORCED" in w]
    back = await config.rollback("DestinationRule", "reviews", first.results[0].revision)
    assert back.results[0].action == "rolled back"
    # the store keeps the resource's line, not its fields': the finding points at the resource
    assert [w for w in back.warnings if "NOT ENFORCED" in w] == [fate.replace("dr.yaml:9:", "dr.yaml:1:")]


async def test_delete_and_references(config: ConfigClient) -> None:
    await config.apply([Document("dr.yaml", DR), Document("vs.yaml", vs((50, 50)))])
    dr_ref = ResourceRef("DestinationRule", "default", "reviews")
    with pytest.raises(BadRequestError, match=r'IST0101.*Referenced subset not found: "v1"'):
        await config.delete([dr_ref])  # the VirtualService still routes to its subsets
    assert (await config.get("dr", "reviews")).name == "reviews"

    reply = await config.delete([ResourceRef("vs", "default", "reviews"), dr_ref])
    assert {(r.kind, r.action) for r in reply.results} == {
        ("VirtualService", "deleted"),
        ("DestinationRule", "deleted"),
    }
    assert (await config.list()).items == []
    with pytest.raises(NotFoundError, match="not found"):
        await config.delete([dr_ref])
    assert (await config.delete([dr_ref], ignore_not_found=True)).results == []
    hist = await config.history("VirtualService", "reviews")
    assert [e.operation for e in hist.entries] == ["apply", "delete"]
    # A deleted resource is restored by rolling back to its last value (references still checked).
    with pytest.raises(BadRequestError, match="IST0101"):
        await config.rollback("VirtualService", "reviews", hist.entries[0].revision)
    dr_hist = await config.history("dr", "reviews")
    await config.rollback(
        "dr", "reviews", dr_hist.entries[0].revision, expected_revision=dr_hist.current_revision
    )
    restored = await config.rollback("VirtualService", "reviews", hist.entries[0].revision)
    assert restored.results[0].action == "created"


async def test_dry_run_stores_nothing(config: ConfigClient) -> None:
    reply = await config.apply([Document("dr.yaml", DR)], dry_run=True)
    assert reply.dry_run and reply.results[0].action == "created"
    assert (await config.list()).items == []


async def test_stored_value_format_is_the_documented_one(bus: BusConnection, config: ConfigClient) -> None:
    changed: asyncio.Queue[ConfigChanged] = asyncio.Queue()

    async def on_changed(msg: Msg) -> None:
        changed.put_nowait(codec.decode(msg.data, msg.headers, ConfigChanged))

    sub = await bus.subscribe(bus.subjects.config_changed(), on_changed)
    await bus.flush()
    rev = (await config.apply_text(DR, "dr.yaml")).results[0].revision
    event = await asyncio.wait_for(changed.get(), 5)
    assert event == ConfigChanged(rev, ["DestinationRule.default.reviews"])
    await sub.unsubscribe()
    kv = KeyValueStore(bus, BucketConfig(bus.subjects.kv_bucket("config")), create=False)
    entry = await kv.get(bus.subjects.config_key("DestinationRule", "default", "reviews"))
    assert entry is not None and entry.value is not None
    value = decode_value(entry.value)
    assert value.manifest()["spec"]["subsets"][1] == {"name": "v2", "labels": {"version": "v2"}}
    assert value.source_file == "dr.yaml" and value.operation == "apply"
    assert value.to_resource().spec.host == "reviews"


async def test_two_replicas_share_the_work_and_concurrent_applies_all_land(
    nats_server: EmbeddedNats, subject_root: str, bus: BusConnection
) -> None:
    other = BusConnection(BusSettings(url=nats_server.url, name="replica-2", root=subject_root))
    await other.connect()
    try:
        async with ConfigService(bus) as a, ConfigService(other) as b:
            await a.wait_ready()
            await b.wait_ready()
            client = ConfigClient(bus, timeout=10.0)
            await client.apply_text(DR, "dr.yaml")
            # 12 VirtualServices in parallel, plus 8 racing writes to one key without a stated revision.
            names = [f"vs-{i}" for i in range(12)]
            await asyncio.gather(
                *(client.apply_text(plain_vs(n), f"{n}.yaml") for n in names),
                *(client.apply_text(vs((100 - i, i)), "race.yaml") for i in range(8)),
            )
            assert a.service.counters["apply"].requests > 0 and b.service.counters["apply"].requests > 0
            stored = {r.name for r in (await client.list("vs")).items}
            assert stored == {*names, "reviews"}
            assert len((await client.history("vs", "reviews")).entries) == 8  # every racing write landed
    finally:
        await other.close()


async def test_survives_nats_restart_and_a_lost_bucket(private_nats: EmbeddedNats, subject_root: str) -> None:
    conn = BusConnection(BusSettings(url=private_nats.url, name="t", root=subject_root))
    await conn.connect()
    try:
        async with ConfigService(conn) as svc:
            await svc.wait_ready()
            client = ConfigClient(conn, timeout=5.0)
            await client.apply_text(DR, "dr.yaml")
            await asyncio.to_thread(private_nats.restart)
            await conn.wait_connected(timeout=10)
            assert (await client.get("dr", "reviews")).name == "reviews"  # the store survived
            await client.apply_text(vs(), "vs.yaml")
            # The bucket vanishes (a server that lost its store): the next write re-creates it.
            await conn.nc.jetstream().delete_key_value(conn.subjects.kv_bucket("config"))
            reply = await client.apply([Document("dr.yaml", DR), Document("vs.yaml", vs())])
            assert {r.action for r in reply.results} == {"created"}
    finally:
        await conn.close()

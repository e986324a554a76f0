"""A tracker restarted on the same database: what is durable survives, what is soft state
comes back only as agents register and re-sync."""

from __future__ import annotations

import pytest

from tests.integration.helpers import holder_ids, make_blob, origin
from tracker.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from tracker.model import DigestQuery, HeartbeatAction, HolderState, Manifest, NameQuery, SourceQuery

DATASET = make_blob("dataset.tar", 5000)
IMAGE = make_blob("image.iso", 7000)


def test_manifests_and_url_mappings_survive_but_no_holder_is_live(trackers, clients):
    first = trackers.start()
    alpha = clients.agent(first, "alpha").join(DATASET.whole())
    alpha.client.publish_manifest(alpha.id, DATASET.manifest)
    alpha.client.publish_source(alpha.id, origin(), DATASET.sha256)

    second = trackers.restart(first)
    asker = clients.agent_api(second)

    (match,) = asker.locate(SourceQuery(origin()))
    assert match.sha256 == DATASET.sha256
    assert match.manifest == DATASET.manifest
    assert match.size == DATASET.size
    assert match.holders == ()
    assert asker.locate(NameQuery("dataset.tar")) == [], "names come from holdings, which are soft"
    stats = clients.admin_api(second).stats()
    assert (stats.manifests, stats.sources) == (1, 1)
    assert (stats.live_agents, stats.dead_agents, stats.holdings) == (0, 1, 0)
    (status,) = clients.admin_api(second).agents()
    assert (status.agent.agent_id, status.live, status.last_seen_age) == ("alpha", False, None)


def test_a_pre_restart_agent_is_told_to_register_and_is_handed_out_after_it_resyncs(trackers, clients):
    first = trackers.start()
    clients.agent(first, "alpha").join(DATASET.whole())

    second = trackers.restart(first)
    alpha = clients.agent(second, "alpha")
    alpha.generation = 1
    asker = clients.agent_api(second)

    assert alpha.beat() is HeartbeatAction.REGISTER
    assert holder_ids(asker, DATASET.sha256) == []
    alpha.register()
    assert alpha.beat() is HeartbeatAction.RESYNC
    assert holder_ids(asker, DATASET.sha256) == []
    alpha.full_sync(DATASET.whole())
    assert alpha.beat() is HeartbeatAction.NONE
    assert holder_ids(asker, DATASET.sha256) == ["alpha"]


def test_a_dropped_url_mapping_stays_dropped_after_a_restart(trackers, clients):
    first = trackers.start()
    alpha = clients.agent(first, "alpha").join(DATASET.whole(), IMAGE.whole())
    alpha.client.publish_source(alpha.id, origin(), DATASET.sha256)
    with pytest.raises(FailedPrecondition):
        alpha.client.publish_source(alpha.id, origin(), IMAGE.sha256)

    second = trackers.restart(first)
    alpha = clients.agent(second, "alpha").join(DATASET.whole())

    assert alpha.locate(SourceQuery(origin())) == []
    with pytest.raises(FailedPrecondition):
        alpha.client.publish_source(alpha.id, origin(), DATASET.sha256)


def test_bans_survive_a_restart(trackers, clients):
    first = trackers.start()
    clients.agent(first, "rogue").join(DATASET.whole())
    clients.admin_api(first).evict("rogue", ban=True)

    second = trackers.restart(first)
    rogue = clients.agent(second, "rogue")

    with pytest.raises(PermissionDenied, match="rogue"):
        rogue.register()
    assert clients.admin_api(second).stats().banned_agents == 1
    clients.admin_api(second).unban("rogue")
    rogue.join(DATASET.whole())
    assert holder_ids(clients.agent_api(second), DATASET.sha256) == ["rogue"]


def test_bad_source_marks_and_counts_survive_a_restart(trackers, clients):
    first = trackers.start()
    clients.agent(first, "liar").join(DATASET.whole(), IMAGE.whole())
    victim = clients.agent(first, "victim").join()
    victim.client.report_bad_source(
        reporter=victim.id, holder="liar", sha256=DATASET.sha256, piece_index=0, reason="hash mismatch"
    )

    second = trackers.restart(first)
    clients.agent(second, "liar").join(DATASET.whole(), IMAGE.whole())
    admin = clients.admin_api(second)
    asker = clients.agent_api(second)

    assert holder_ids(asker, DATASET.sha256) == []
    assert holder_ids(asker, IMAGE.sha256) == ["liar"]
    (details,) = admin.inspect(DigestQuery(DATASET.sha256))
    assert [(v.agent.agent_id, s) for v, s in details.holders] == [("liar", HolderState.BAD)]
    reports = {a.agent.agent_id: a.bad_source_reports for a in admin.agents()}
    assert reports == {"liar": 1, "victim": 0}
    assert admin.stats().bad_source_reports == 1


def test_a_manifest_the_tracker_refused_is_not_remembered_after_a_restart(trackers, clients):
    first = trackers.start()
    alpha = clients.agent(first, "alpha").join(DATASET.whole())
    # A well-formed manifest for the same digest, but for a size the holders contradict.
    other = make_blob("dataset.tar", 6000).manifest
    wrong = Manifest(DATASET.sha256, other.size, other.piece_size, other.piece_hashes)
    with pytest.raises(InvalidArgument, match="size"):
        alpha.client.publish_manifest(alpha.id, wrong)
    assert clients.admin_api(first).stats().manifests == 0

    second = trackers.restart(first)

    assert clients.admin_api(second).stats().manifests == 0
    matches = clients.agent_api(second).locate(DigestQuery(DATASET.sha256))
    assert [m.manifest for m in matches] == [], "the refused manifest came back from the database"


def test_stats_that_are_durable_do_not_change_across_a_restart(trackers, clients):
    first = trackers.start()
    alpha = clients.agent(first, "alpha").join(DATASET.whole())
    alpha.client.publish_manifest(alpha.id, DATASET.manifest)
    alpha.client.publish_source(alpha.id, origin(), DATASET.sha256)
    clients.agent(first, "liar").join(IMAGE.whole())
    alpha.client.report_bad_source(
        reporter=alpha.id, holder="liar", sha256=IMAGE.sha256, piece_index=0, reason="hash mismatch"
    )
    admin = clients.admin_api(first)
    admin.evict("liar", ban=True)
    before = admin.stats()

    second = trackers.restart(first)
    after = clients.admin_api(second).stats()

    durable = ("manifests", "sources", "banned_agents", "bad_source_reports")
    assert {k: getattr(after, k) for k in durable} == {k: getattr(before, k) for k in durable}

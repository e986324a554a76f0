"""Round trips through the agent API: register, sync, heartbeat, locate, publish, leave."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.helpers import (
    Agent,
    holder_ids,
    make_blob,
    origin,
    snapshot,
    three_piece_blob,
)
from tracker.errors import FailedPrecondition, NotFound
from tracker.model import (
    DigestQuery,
    HeartbeatAction,
    HolderState,
    Load,
    NameQuery,
    SourceQuery,
)

DATASET = make_blob("dataset.tar", 5000)
IMAGE = make_blob("image.iso", 7000)


def test_register_full_sync_and_heartbeat_round_trip(tracker, clients):
    alpha = clients.agent(tracker, "alpha")
    assert alpha.register() == 10.0
    assert alpha.beat() is HeartbeatAction.RESYNC, "no snapshot yet"
    result = alpha.full_sync(DATASET.whole())
    assert (result.resync_needed, result.generation) == (False, 1)
    assert alpha.beat() is HeartbeatAction.NONE


def test_locate_by_digest_returns_the_holder_its_url_the_manifest_and_the_names(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    assert alpha.client.publish_manifest(alpha.id, DATASET.manifest) is True
    assert alpha.client.publish_manifest(alpha.id, DATASET.manifest) is False
    asker = clients.agent_api(tracker)

    (match,) = asker.locate(DigestQuery(DATASET.sha256))

    assert (match.sha256, match.size, match.names) == (DATASET.sha256, DATASET.size, ("dataset.tar",))
    assert match.manifest == DATASET.manifest
    (holder,) = match.holders
    assert holder.agent.agent_id == "alpha"
    assert holder.agent.hostname == "host-alpha"
    assert holder.agent.base_url == "http://alpha.lab:7071"
    assert holder.holding.complete


def test_locate_by_name_finds_every_content_held_under_that_name(tracker, clients):
    clients.agent(tracker, "alpha").join(DATASET.whole("data.tar"))
    clients.agent(tracker, "beta").join(IMAGE.whole("data.tar"), make_blob("other").whole())
    asker = clients.agent_api(tracker)

    matches = asker.locate(NameQuery("data.tar"))

    assert {m.sha256: [h.agent.agent_id for h in m.holders] for m in matches} == {
        DATASET.sha256: ["alpha"],
        IMAGE.sha256: ["beta"],
    }
    assert all(m.names == ("data.tar",) for m in matches)
    assert asker.locate(NameQuery("nothing-by-this-name")) == []


def test_locate_by_source_after_publish_source(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    alpha.client.publish_manifest(alpha.id, DATASET.manifest)
    source = origin()
    assert alpha.client.publish_source(alpha.id, source, DATASET.sha256) is True
    assert alpha.client.publish_source(alpha.id, source, DATASET.sha256) is False
    asker = clients.agent_api(tracker)

    (match,) = asker.locate(SourceQuery(source))

    assert match.sha256 == DATASET.sha256
    assert match.manifest == DATASET.manifest
    assert [h.agent.base_url for h in match.holders] == ["http://alpha.lab:7071"]
    assert asker.locate(SourceQuery(origin(etag='"v2"'))) == [], "another version is not mapped"


def test_a_validator_that_names_two_contents_drops_the_mapping_for_good(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole(), IMAGE.whole())
    source = origin()
    alpha.client.publish_source(alpha.id, source, DATASET.sha256)

    with pytest.raises(FailedPrecondition, match=r"origin\.example"):
        alpha.client.publish_source(alpha.id, source, IMAGE.sha256)
    assert alpha.locate(SourceQuery(source)) == []
    with pytest.raises(FailedPrecondition):
        alpha.client.publish_source(alpha.id, source, DATASET.sha256)
    assert alpha.locate(SourceQuery(source)) == []


def test_locate_of_unknown_content_matches_nothing(tracker, clients):
    clients.agent(tracker, "alpha").join(DATASET.whole())
    assert clients.agent_api(tracker).locate(DigestQuery(IMAGE.sha256)) == []


def test_delta_sync_adds_and_removes_holdings(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    asker = clients.agent_api(tracker)

    result = alpha.delta(add=(IMAGE.whole(),))
    assert (result.resync_needed, result.generation) == (False, 2)
    assert holder_ids(asker, IMAGE.sha256) == ["alpha"]
    assert holder_ids(asker, DATASET.sha256) == ["alpha"]

    result = alpha.delta(remove=(DATASET.sha256,))
    assert (result.resync_needed, result.generation) == (False, 3)
    assert holder_ids(asker, DATASET.sha256) == []
    assert holder_ids(asker, IMAGE.sha256) == ["alpha"]
    assert alpha.beat() is HeartbeatAction.NONE


def test_a_full_snapshot_replaces_what_was_held(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    alpha.full_sync(IMAGE.whole())
    asker = clients.agent_api(tracker)
    assert holder_ids(asker, DATASET.sha256) == []
    assert holder_ids(asker, IMAGE.sha256) == ["alpha"]


def test_a_delta_with_a_generation_gap_asks_for_a_resync_and_changes_nothing(tracker, clients, admin):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    asker = clients.agent_api(tracker)
    before = snapshot(admin, asker, (DATASET.sha256, IMAGE.sha256))

    result = alpha.client.sync(
        alpha.id,
        generation=alpha.generation + 2,
        full=False,
        holdings=[IMAGE.whole()],
        removed=[DATASET.sha256],
    )

    assert result.resync_needed
    assert result.generation == alpha.generation
    assert snapshot(admin, asker, (DATASET.sha256, IMAGE.sha256)) == before
    assert alpha.beat() is HeartbeatAction.NONE, "the accepted generation did not move"


def test_a_delta_before_any_full_snapshot_asks_for_a_resync(tracker, clients):
    alpha = clients.agent(tracker, "alpha")
    alpha.register()
    result = alpha.client.sync(alpha.id, generation=1, full=False, holdings=[DATASET.whole()])
    assert result.resync_needed
    assert holder_ids(clients.agent_api(tracker), DATASET.sha256) == []


def test_a_heartbeat_with_another_generation_says_resync(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    assert alpha.client.heartbeat(alpha.id, alpha.generation + 1, Load()) is HeartbeatAction.RESYNC
    assert alpha.client.heartbeat(alpha.id, alpha.generation - 1, Load()) is HeartbeatAction.RESYNC
    assert alpha.beat() is HeartbeatAction.NONE


def test_a_heartbeat_from_an_unknown_agent_says_register(tracker, clients):
    stranger = clients.agent(tracker, "stranger")
    assert stranger.beat() is HeartbeatAction.REGISTER


def test_sync_from_an_unknown_agent_is_not_found(tracker, clients):
    stranger = clients.agent(tracker, "stranger")
    with pytest.raises(NotFound, match="stranger"):
        stranger.full_sync(DATASET.whole())


def test_registering_again_forgets_holdings_until_the_next_full_snapshot(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    asker = clients.agent_api(tracker)
    alpha.register()
    assert holder_ids(asker, DATASET.sha256) == []
    assert alpha.beat() is HeartbeatAction.RESYNC
    alpha.full_sync(DATASET.whole())
    assert alpha.beat() is HeartbeatAction.NONE
    assert holder_ids(asker, DATASET.sha256) == ["alpha"]


def test_a_partial_holding_comes_back_with_its_piece_bitmap(tracker, clients):
    blob = three_piece_blob()
    assert blob.pieces == 3
    seeder = clients.agent(tracker, "seeder").join(blob.whole())
    seeder.client.publish_manifest(seeder.id, blob.manifest)
    # Pieces 0 and 2: bit 7 of byte 0 is piece 0.
    leecher = clients.agent(tracker, "leecher").join(blob.partial(bytes([0b1010_0000])))
    asker = clients.agent_api(tracker)

    (match,) = asker.locate(DigestQuery(blob.sha256))

    holders = {h.agent.agent_id: h.holding for h in match.holders}
    assert holders["seeder"].complete
    assert not holders["leecher"].complete
    assert holders["leecher"].bitmap == bytes([0b1010_0000])
    assert match.manifest == blob.manifest
    (status,) = [a for a in clients.admin_api(tracker).agents() if a.agent.agent_id == leecher.id]
    assert status.bytes_held == 2 * blob.manifest.piece_size


def test_a_partial_holding_before_its_manifest_is_known_is_a_failed_precondition(tracker, clients):
    blob = three_piece_blob()
    alpha = clients.agent(tracker, "alpha")
    alpha.register()
    with pytest.raises(FailedPrecondition, match="manifest"):
        alpha.full_sync(blob.partial(bytes([0b1000_0000])))
    assert holder_ids(clients.agent_api(tracker), blob.sha256) == []


def test_the_requester_is_never_handed_itself(tracker, clients):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole())
    beta = clients.agent(tracker, "beta").join(DATASET.whole())
    assert alpha.holders_of(DATASET.sha256) == ["beta"]
    assert beta.holders_of(DATASET.sha256) == ["alpha"]
    beta.client.leave(beta.id)
    (match,) = alpha.locate(DigestQuery(DATASET.sha256))
    assert match.holders == ()


def test_leave_withdraws_the_holdings_at_once(tracker, clients, admin):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole(), IMAGE.whole())
    beta = clients.agent(tracker, "beta").join(DATASET.whole())
    alpha.client.leave(alpha.id)
    asker = clients.agent_api(tracker)

    assert holder_ids(asker, DATASET.sha256) == ["beta"]
    assert holder_ids(asker, IMAGE.sha256) == []
    assert admin.stats().holdings == 1
    (status,) = [a for a in admin.agents() if a.agent.agent_id == alpha.id]
    assert (status.live, status.files) == (False, 0)
    assert alpha.beat() is HeartbeatAction.REGISTER
    assert beta.beat() is HeartbeatAction.NONE


def test_leave_from_an_unknown_agent_is_not_found(tracker, clients):
    with pytest.raises(NotFound):
        clients.agent_api(tracker).leave("stranger")


def test_admin_views_agree_with_what_agents_reported(tracker, clients, admin):
    alpha = clients.agent(tracker, "alpha").join(DATASET.whole(), IMAGE.whole())
    clients.agent(tracker, "beta").join(DATASET.whole())
    alpha.client.publish_manifest(alpha.id, DATASET.manifest)
    alpha.client.publish_source(alpha.id, origin(), DATASET.sha256)

    stats = admin.stats()
    assert (stats.live_agents, stats.dead_agents, stats.banned_agents) == (2, 0, 0)
    assert (stats.distinct_files, stats.holdings) == (2, 3)
    assert stats.bytes_held == 2 * DATASET.size + IMAGE.size
    assert (stats.manifests, stats.sources, stats.bad_source_reports) == (1, 1, 0)

    files = {f.sha256: f for f in admin.files()}
    assert (files[DATASET.sha256].holders, files[DATASET.sha256].live_holders) == (2, 2)
    assert files[DATASET.sha256].has_manifest
    assert files[DATASET.sha256].sources == (origin(),)
    assert not files[IMAGE.sha256].has_manifest

    (details,) = admin.inspect(DigestQuery(DATASET.sha256))
    assert [(v.agent.agent_id, s) for v, s in details.holders] == [
        ("alpha", HolderState.LIVE),
        ("beta", HolderState.LIVE),
    ]


def test_a_name_held_by_more_live_agents_is_listed_first(tracker, clients):
    clients.agent(tracker, "alpha").join(DATASET.whole("data.tar"))
    clients.agent(tracker, "beta").join(IMAGE.whole("data.tar"))
    clients.agent(tracker, "gamma").join(IMAGE.whole("data.tar"))
    matches = clients.agent_api(tracker).locate(NameQuery("data.tar"))
    assert [m.sha256 for m in matches] == [IMAGE.sha256, DATASET.sha256]


def test_content_held_without_a_name_has_no_names(tracker, clients):
    clients.agent(tracker, "alpha").join(DATASET.whole(name=""))
    (match,) = clients.agent_api(tracker).locate(DigestQuery(DATASET.sha256))
    assert match.names == ()
    assert [h.agent.agent_id for h in match.holders] == ["alpha"]


def test_a_partial_holding_can_become_complete_in_a_delta(tracker, clients):
    blob = three_piece_blob()
    seeder = clients.agent(tracker, "seeder").join(blob.whole())
    seeder.client.publish_manifest(seeder.id, blob.manifest)
    leecher = clients.agent(tracker, "leecher").join(blob.partial(bytes([0b1000_0000])))

    leecher.delta(add=(blob.whole(),))

    (match,) = seeder.locate(DigestQuery(blob.sha256))
    (holder,) = match.holders
    assert (holder.agent.agent_id, holder.holding.complete, holder.holding.bitmap) == ("leecher", True, b"")


def test_files_are_listed_in_pages(tracker, clients, admin):
    blobs = [make_blob(f"file-{i}", 100 + i) for i in range(5)]
    clients.agent(tracker, "alpha").join(*(b.whole() for b in blobs))

    pages = []
    token = ""
    while True:
        page = admin.files_page(page_size=2, page_token=token)
        pages.append([f.sha256 for f in page.files])
        token = page.next_page_token
        if not token:
            break

    assert [len(p) for p in pages] == [2, 2, 1]
    assert [d for p in pages for d in p] == sorted(b.sha256 for b in blobs)
    assert [f.sha256 for f in admin.files()] == sorted(b.sha256 for b in blobs)


def test_many_agents_reporting_at_once_are_all_indexed(tracker, clients, admin):
    blobs = [make_blob(f"shared-{i}", 500 + i) for i in range(10)]
    agents = [clients.agent(tracker, f"agent-{i:02d}") for i in range(24)]

    def life(agent: Agent) -> list[str]:
        agent.join(*(b.whole() for b in blobs))
        agent.delta(remove=(blobs[0].sha256,))
        return agent.holders_of(blobs[1].sha256)

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(life, agents))

    assert all(agent.id not in others for agent, others in zip(agents, seen, strict=True))
    stats = admin.stats()
    assert (stats.live_agents, stats.distinct_files, stats.holdings) == (24, 9, 24 * 9)
    assert holder_ids(clients.agent_api(tracker), blobs[0].sha256) == []
    assert len(holder_ids(clients.agent_api(tracker), blobs[1].sha256, max_holders=100)) == 24

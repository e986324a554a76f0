"""Bad sources: a holder reported for bytes that failed their hash is not handed out for
that content until it withdraws it."""

from __future__ import annotations

import pytest

from tests.integration.helpers import Agent, holder_ids, make_blob, three_piece_blob
from tracker.errors import InvalidArgument, NotFound
from tracker.model import DigestQuery, HolderState

DATASET = make_blob("dataset.tar", 5000)
IMAGE = make_blob("image.iso", 7000)


@pytest.fixture
def swarm(tracker, clients):
    """Agents "honest" and "liar" both hold the dataset and the image; "victim" downloads."""
    honest = clients.agent(tracker, "honest").join(DATASET.whole(), IMAGE.whole())
    liar = clients.agent(tracker, "liar").join(DATASET.whole(), IMAGE.whole())
    victim = clients.agent(tracker, "victim").join()
    return honest, liar, victim


def report(reporter: Agent, holder: str, sha256: str, piece_index: int = 0) -> int:
    return reporter.client.report_bad_source(
        reporter=reporter.id, holder=holder, sha256=sha256, piece_index=piece_index, reason="hash mismatch"
    )


def states(admin, sha256: str) -> dict[str, HolderState]:
    (details,) = admin.inspect(DigestQuery(sha256))
    return {view.agent.agent_id: state for view, state in details.holders}


def test_a_reported_holder_is_not_handed_out_for_that_content(swarm):
    _, _, victim = swarm
    assert report(victim, "liar", DATASET.sha256) == 1
    assert victim.holders_of(DATASET.sha256) == ["honest"]


def test_a_reported_holder_is_still_handed_out_for_other_content(swarm):
    _, _, victim = swarm
    report(victim, "liar", DATASET.sha256)
    assert sorted(victim.holders_of(IMAGE.sha256)) == ["honest", "liar"]


def test_reports_are_counted_per_holder_and_in_all(swarm, admin):
    honest, _, victim = swarm
    assert report(victim, "liar", DATASET.sha256) == 1
    assert report(victim, "liar", DATASET.sha256, piece_index=3) == 2
    assert report(honest, "liar", IMAGE.sha256) == 3

    reports = {a.agent.agent_id: a.bad_source_reports for a in admin.agents()}
    assert reports == {"honest": 0, "liar": 3, "victim": 0}
    assert admin.stats().bad_source_reports == 3


def test_inspect_shows_a_reported_holder_as_bad(swarm, admin):
    _, _, victim = swarm
    report(victim, "liar", DATASET.sha256)
    assert states(admin, DATASET.sha256) == {"honest": HolderState.LIVE, "liar": HolderState.BAD}
    assert states(admin, IMAGE.sha256) == {"honest": HolderState.LIVE, "liar": HolderState.LIVE}


def test_withdrawing_the_content_in_a_delta_clears_the_mark(tracker, clients, swarm, admin):
    _, liar, victim = swarm
    liar.generation = 1
    report(victim, "liar", DATASET.sha256)

    liar.delta(remove=(DATASET.sha256,))
    assert victim.holders_of(DATASET.sha256) == ["honest"]
    liar.delta(add=(DATASET.whole(),))

    assert sorted(victim.holders_of(DATASET.sha256)) == ["honest", "liar"]
    assert states(admin, DATASET.sha256)["liar"] is HolderState.LIVE
    assert admin.stats().bad_source_reports == 1, "the count stays"


def test_withdrawing_the_content_in_a_full_snapshot_clears_the_mark(swarm):
    _, liar, victim = swarm
    liar.generation = 1
    report(victim, "liar", DATASET.sha256)

    liar.full_sync(IMAGE.whole())
    liar.full_sync(IMAGE.whole(), DATASET.whole())

    assert sorted(victim.holders_of(DATASET.sha256)) == ["honest", "liar"]


def test_a_snapshot_without_the_content_after_registering_again_clears_the_mark(swarm):
    # An agent that restarts, finds its copy corrupt and drops it re-registers and sends a
    # snapshot without it: that is a withdrawal too.
    _, liar, victim = swarm
    report(victim, "liar", DATASET.sha256)

    liar.register()
    liar.full_sync(IMAGE.whole())
    assert victim.holders_of(DATASET.sha256) == ["honest"]
    liar.delta(add=(DATASET.whole(),))

    assert sorted(victim.holders_of(DATASET.sha256)) == ["honest", "liar"], (
        "the mark outlived the holder's withdrawal"
    )


def test_an_agent_cannot_report_itself(swarm, admin):
    _, liar, victim = swarm
    with pytest.raises(InvalidArgument, match="itself"):
        report(liar, "liar", DATASET.sha256)
    assert sorted(victim.holders_of(DATASET.sha256)) == ["honest", "liar"]
    assert admin.stats().bad_source_reports == 0


def test_reporting_an_unknown_holder_is_not_found(swarm, admin):
    _, _, victim = swarm
    with pytest.raises(NotFound, match="stranger"):
        report(victim, "stranger", DATASET.sha256)
    assert admin.stats().bad_source_reports == 0


def test_an_unknown_reporter_is_not_found(tracker, clients, swarm, admin):
    stranger = clients.agent(tracker, "stranger")
    with pytest.raises(NotFound, match="stranger"):
        report(stranger, "liar", DATASET.sha256)
    assert admin.stats().bad_source_reports == 0


def test_a_piece_index_past_the_manifest_is_an_invalid_argument(tracker, clients, admin):
    blob = three_piece_blob()
    holder = clients.agent(tracker, "holder").join(blob.whole())
    holder.client.publish_manifest(holder.id, blob.manifest)
    victim = clients.agent(tracker, "victim").join()

    with pytest.raises(InvalidArgument, match="piece_index"):
        report(victim, "holder", blob.sha256, piece_index=3)
    assert report(victim, "holder", blob.sha256, piece_index=2) == 1
    assert holder_ids(victim.client, blob.sha256) == []

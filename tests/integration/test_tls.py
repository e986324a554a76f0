"""A tracker serving TLS with a self-signed certificate for localhost and 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.integration.helpers import agent_info, holder_ids, make_blob
from tracker.errors import TrackerError, TrackerUnavailable

DATASET = make_blob("dataset.tar", 5000)


@pytest.fixture
def tls_tracker(trackers, tls_files):
    return trackers.start(tls_cert=tls_files.cert, tls_key=tls_files.key)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_clients_trusting_the_certificate_round_trip(tls_tracker, clients, tls_files, host):
    target = f"{host}:{tls_tracker.port}"
    agent = clients.agent(target, "alpha", tls_ca=tls_files.cert).join(DATASET.whole())
    assert agent.holders_of(DATASET.sha256) == [], "never handed itself"
    asker = clients.agent_api(target, tls_ca=tls_files.cert)
    assert holder_ids(asker, DATASET.sha256) == ["alpha"]
    assert clients.admin_api(target, tls_ca=tls_files.cert).stats().live_agents == 1


def test_a_plaintext_client_cannot_talk_to_a_tls_tracker(tls_tracker, clients):
    client = clients.agent_api(f"localhost:{tls_tracker.port}", timeout=2.0)
    with pytest.raises(TrackerUnavailable):
        client.register(agent_info("alpha"))
    with pytest.raises(TrackerUnavailable):
        clients.admin_api(tls_tracker, timeout=2.0).stats()


def test_a_client_trusting_another_ca_cannot_talk_to_it(tls_tracker, clients, other_tls_files):
    client = clients.agent_api(f"localhost:{tls_tracker.port}", tls_ca=other_tls_files.cert, timeout=2.0)
    with pytest.raises(TrackerUnavailable):
        client.register(agent_info("alpha"))


def test_a_tls_client_cannot_talk_to_a_plaintext_tracker(tracker, clients, tls_files):
    client = clients.agent_api(f"localhost:{tracker.port}", tls_ca=tls_files.cert, timeout=2.0)
    with pytest.raises(TrackerUnavailable):
        client.register(agent_info("alpha"))


def test_a_missing_key_file_is_a_clear_error_at_start_up(trackers, tls_files, tmp_path):
    with pytest.raises(TrackerError, match="TLS"):
        trackers.start(tls_cert=tls_files.cert, tls_key=tmp_path / "missing-key.pem")

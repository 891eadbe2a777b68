"""The cutover's lease: grant, renew, finish, expiry and the watchdog's take-over, on plain dicts."""
import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_lease as lease_mod
from ansible_collections.greenflow.platform.plugins.module_utils._release_lease import LeaseError

T0 = 1_800_000_000.0


def _entry(entry_id=7, outcome="in_progress"):
    return {"id": entry_id, "action": "deploy", "outcome": outcome, "color": "green", "previous_color": "blue"}


def _granted(ttl=10):
    entry = _entry()
    lease_mod.grant(entry, "ctl:1", "blue", "green", ttl, T0)
    return entry


def test_grant_sets_expiry_from_now():
    lease = _granted()["lease"]
    assert lease["state"] == "held"
    assert lease["expires_epoch"] == T0 + 10
    assert (lease["from_color"], lease["to_color"]) == ("blue", "green")


@pytest.mark.parametrize("ttl", [0, 4.9, 301, "soon", None])
def test_grant_refuses_a_bad_ttl(ttl):
    with pytest.raises(LeaseError, match="ttl"):
        lease_mod.grant(_entry(), "ctl:1", "blue", "green", ttl, T0)


def test_grant_refuses_a_closed_entry():
    with pytest.raises(LeaseError, match="closed"):
        lease_mod.grant(_entry(outcome="failed"), "ctl:1", "blue", "green", 10, T0)


def test_grant_refuses_while_another_holder_is_alive_and_allows_after_expiry():
    entry = _granted()
    with pytest.raises(LeaseError, match="held by ctl:1"):
        lease_mod.grant(entry, "ctl:2", "blue", "green", 10, T0 + 5)
    assert lease_mod.grant(entry, "ctl:2", "blue", "green", 10, T0 + 11)["holder"] == "ctl:2"


def test_renew_extends_from_the_renewal():
    entry = _granted()
    lease = lease_mod.renew(entry, "ctl:1", T0 + 9)
    assert lease["expires_epoch"] == T0 + 19
    assert lease_mod.alive(entry, T0 + 18)


def test_renew_after_expiry_is_refused_for_good():
    entry = _granted()
    with pytest.raises(LeaseError, match="ran out"):
        lease_mod.renew(entry, "ctl:1", T0 + 10.5)
    assert not lease_mod.alive(entry, T0 + 10.5)


def test_renew_by_someone_else_is_refused():
    with pytest.raises(LeaseError, match="not ctl:9"):
        lease_mod.renew(_granted(), "ctl:9", T0 + 1)


def test_expired_lists_only_held_leases_past_their_time():
    record = {"releases": [_granted(), _entry(entry_id=8)]}
    assert lease_mod.expired(record, T0 + 10) == []          # at the boundary: still good
    assert [e["id"] for e in lease_mod.expired(record, T0 + 10.01)] == [7]


def test_finished_lease_is_never_taken_over():
    entry = _granted()
    lease_mod.finish(entry, "ctl:1", T0 + 3)
    assert lease_mod.expired({"releases": [entry]}, T0 + 100) == []
    assert not lease_mod.alive(entry, T0 + 4)


def test_mark_lost_fails_the_entry_and_blocks_the_old_holder():
    entry = _granted()
    lease_mod.mark_lost(entry, T0 + 11, "traffic put back on blue")
    assert entry["outcome"] == "failed"
    assert entry["reason"].startswith("controller lost")
    assert "traffic put back on blue" in entry["reason"]
    assert entry["finished_at"] == "2027-01-15T08:00:11Z"
    assert lease_mod.expired({"releases": [entry]}, T0 + 20) == []
    with pytest.raises(LeaseError, match="watchdog put traffic back on blue"):
        lease_mod.renew(entry, "ctl:1", T0 + 12)


def test_a_renewed_lease_keeps_the_deploy_lock_fresh_past_stale_after():
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
    from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model
    entry = _granted()
    entry["started_epoch"] = T0
    record = {"releases": [entry]}
    stale_after = 7200
    late = T0 + stale_after + 60
    assert rr.in_progress(record, late, stale_after) is None          # not renewed: stale
    entry["lease"]["expires_epoch"] = late                             # renewed until then
    lease_mod.renew(entry, "ctl:1", late - 1)
    assert model.last_seen(entry) == late - 1
    assert rr.in_progress(record, late, stale_after) is entry         # a long cutover still holds the lock


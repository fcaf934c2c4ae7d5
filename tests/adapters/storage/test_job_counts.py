"""``SqlJobQueue.count_by_payload`` (the health model's "N messages waiting") on both backends."""

from __future__ import annotations

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import NewJob, utcnow


def test_counts_unfinished_jobs_by_a_payload_field(store: Database) -> None:
    for i, session in enumerate(["s1", "s1", "s2"]):
        store.jobs.enqueue(NewJob(kind="wa.inbound", payload={"session_id": session, "n": i}))
    for i, location in enumerate(["L1", "L1", "L2"]):
        store.jobs.enqueue(NewJob(kind="ghl.outbound_message", payload={"event": {"locationId": location, "n": i}}))
    store.jobs.enqueue(NewJob(kind="other", payload={"session_id": "s1"}))
    # one s2 job is leased (running: still waiting), one L1 job dies
    [leased] = store.jobs.lease("w", now=utcnow(), lease_seconds=60, limit=1, kinds=["ghl.outbound_message"])
    store.jobs.dead_letter(leased.id, "w", error="refused")
    assert store.jobs.count_by_payload("wa.inbound", ("session_id",)) == {"s1": 2, "s2": 1}
    assert store.jobs.count_by_payload("ghl.outbound_message", ("event", "locationId")) == {"L1": 1, "L2": 1}
    assert store.jobs.count_by_payload("ghl.outbound_message", ("event", "locationId"), ("dead",)) == {"L1": 1}
    assert store.jobs.count_by_payload("wa.inbound", ("missing",)) == {}

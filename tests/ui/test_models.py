"""The locations and numbers models obey Qt's model contract (qtmodeltester) — empty, filled, with
health applied, with rows changed and removed — and show the computed health, not the raw state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import SessionState
from ghl_desktop.services.health import Health, HealthAction, HealthLevel
from ghl_desktop.ui.models import LocationsModel, SessionsModel, format_expiry
from tests.ui.seed import seed

STALLED = Health(HealthLevel.NEEDS_YOU, "bridging stalled: location needs reconnect — 2 waiting",
                 HealthAction.RECONNECT_LOCATION)


def test_models_pass_the_model_tester_empty_filled_and_with_health(qtmodeltester, db: Database) -> None:  # type: ignore[no-untyped-def]
    locations, sessions = LocationsModel(), SessionsModel()
    for model in (locations, sessions):
        qtmodeltester.check(model)
    seed(db)
    locations.set_records(db.locations.list())
    sessions.set_location_names(locations.names())
    sessions.set_records(db.sessions.list())
    for model in (locations, sessions):
        qtmodeltester.check(model)
    assert locations.rowCount() == 2 and sessions.rowCount() == 2
    sessions.set_health({"s-dental": STALLED})
    qtmodeltester.check(sessions)
    assert sessions.index(0, 2).data() == "Bridging stalled"
    assert sessions.index(0, 3).data() == STALLED.reason
    assert sessions.index(1, 2).data() == "Waiting for QR scan"  # no health known: its own state


def test_expiry_text() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert format_expiry(None, now=now) == "—"
    assert format_expiry(now - timedelta(days=2), now=now) == "expired 2 d ago"
    assert format_expiry(now + timedelta(hours=20, minutes=5), now=now) == "in 20 h"
    assert format_expiry(now + timedelta(minutes=30), now=now) == "in 30 min"


def test_sessions_upsert_and_remove_pass_the_model_tester(qtmodeltester, db: Database) -> None:  # type: ignore[no-untyped-def]
    seed(db)
    sessions = SessionsModel()
    qtmodeltester.check(sessions)
    records = db.sessions.list()
    sessions.upsert(records[0])
    sessions.upsert(records[1])
    assert sessions.rowCount() == 2
    sessions.upsert(replace(records[0], state=SessionState.LOGGED_OUT, detail="Unlinked on the phone"))
    assert sessions.rowCount() == 2 and sessions.index(0, 2).data() == "Logged out — pair again"
    assert sessions.index(0, 3).data() == "Unlinked on the phone"
    qtmodeltester.check(sessions)
    sessions.remove(records[0].id)
    sessions.remove("unknown")
    assert sessions.rowCount() == 1 and sessions.row_of(records[1].id) == 0
    qtmodeltester.check(sessions)

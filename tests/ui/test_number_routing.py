"""The reply settings dialog of a location with several numbers (issue 15): it shows what is stored
and saves the default number and the fallback through the cockpit (a real SQLite database)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ghl_desktop.app import App
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession
from ghl_desktop.core.routing import NumberRouting
from ghl_desktop.services.cockpit import Cockpit
from ghl_desktop.ui.panels.base import Tasks
from ghl_desktop.ui.panels.number_routing import ANY_NUMBER, NumberRoutingDialog, several_numbers


def _numbers(app: App) -> list[WhatsAppSession]:
    app.db.locations.upsert(Location(id="loc1", name="Clinic"))
    app.db.locations.upsert(Location(id="loc2", name="Gym"))
    made = []
    for sid, loc, phone in (("s1", "loc1", "+15550100001"), ("s2", "loc1", "+15550100002"),
                            ("s3", "loc1", None), ("t1", "loc2", "+15550100009")):
        made.append(app.db.sessions.create(WhatsAppSession(
            id=sid, location_id=loc, state=SessionState.CONNECTED if phone else SessionState.WAITING_FOR_SCAN,
            store_path=f"/tmp/{sid}", phone=phone)))
    return made


def test_the_action_is_offered_only_where_a_location_has_several_numbers(app: App) -> None:
    s1, s2, s3, t1 = _numbers(app)
    assert several_numbers([s1, s2, s3, t1], s1) == [s1, s2]
    assert several_numbers([s1, s2, s3, t1], s3) == [s1, s2]  # a number being linked there sees them too
    assert several_numbers([s1, s2, s3, t1], t1) == []
    assert several_numbers([s1, s3, t1], s1) == []


@pytest.mark.asyncio
async def test_the_dialog_shows_and_saves_the_settings(app: App, qtbot: Any) -> None:
    s1, s2, _s3, _t1 = _numbers(app)
    await app.db.aio.routing.set_default("loc1", s2.id)
    cockpit = Cockpit(app)
    tasks = Tasks()
    dialog = NumberRoutingDialog(cockpit, tasks, "loc1", [s1, s2])
    qtbot.addWidget(dialog)
    try:
        assert not dialog.default.isEnabled()  # until the stored settings are read
        assert await dialog.load() == NumberRouting("loc1", s2.id, False)
        assert dialog.default.currentText() == "+15550100002" and not dialog.fallback.isChecked()
        assert [dialog.default.itemText(i) for i in range(dialog.default.count())] == [
            ANY_NUMBER, "+15550100001", "+15550100002"]
        dialog.default.setCurrentIndex(dialog.default.findData(s1.id))
        dialog.fallback.setChecked(True)
        dialog.save()
        await asyncio.wait_for(_drain(tasks), 10)
        assert await cockpit.number_routing("loc1") == NumberRouting("loc1", s1.id, True)
        assert dialog.result() == NumberRoutingDialog.DialogCode.Accepted

        dialog.default.setCurrentIndex(0)  # "any connected number": no default
        dialog.save()
        await asyncio.wait_for(_drain(tasks), 10)
        assert (await cockpit.number_routing("loc1")).default_session_id is None
    finally:
        cockpit.close()


async def _drain(tasks: Tasks) -> None:
    while tasks._tasks:  # the dialog's save task (Tasks keeps each until done)
        await asyncio.gather(*list(tasks._tasks))


def test_the_message_log_row_shows_a_waiting_reply_s_reason_and_its_number() -> None:
    from datetime import UTC, datetime

    from ghl_desktop.core.message_log import LogColumn, LogRow
    from ghl_desktop.core.models import Direction, MessageKind, MessageStatus
    from ghl_desktop.ui.message_log_models import MessageLogModel, status_text

    row = LogRow(id=1, time=datetime(2026, 12, 4, 20, 0, tzinfo=UTC), direction=Direction.OUTBOUND,
                 kind=MessageKind.TEXT, status=MessageStatus.PENDING, location_id="loc1",
                 chat_jid="4915112340001@s.whatsapp.net", session_id="s1", number="+15550100001",
                 text="Sent while number one is down", error="waiting: +15550100001 is disconnected")
    assert MessageLogModel._display(row, LogColumn.NUMBER) == "+15550100001"
    assert MessageLogModel._display(row, LogColumn.TEXT) == (
        "waiting: +15550100001 is disconnected — Sent while number one is down")
    assert status_text(row).endswith(": waiting: +15550100001 is disconnected")

"""services/bridge/intake.GroupCommit: concurrent intake stores share one transaction; each caller
is answered only after the transaction holding its message committed, with its own result."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.core.errors import StorageBusy
from ghl_desktop.core.models import Direction, Location, Message, MessageKind, NewJob, SessionState, WhatsAppSession
from ghl_desktop.services.bridge.intake import GroupCommit


def _message(i: int, session: str = "s1") -> Message:
    return Message(location_id="loc1", session_id=session, direction=Direction.INBOUND, kind=MessageKind.TEXT,
                   chat_jid=f"{i}@s.whatsapp.net", wa_message_id=f"WA{i}", body=f"m{i}")


@pytest.mark.asyncio
async def test_concurrent_records_share_commits_and_are_stored_before_they_return(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}", migrate=True)
    try:
        db.locations.upsert(Location(id="loc1", name="Clinic"))
        db.sessions.create(WhatsAppSession(id="s1", location_id="loc1", state=SessionState.CONNECTED,
                                           store_path=str(tmp_path / "s1")))
        intake = GroupCommit(db.aio.run, db.messages.record_many)

        async def one(i: int) -> tuple[Message, bool]:
            stored, created = await intake.record(
                _message(i, session="s1" if i != 7 else "gone"),
                NewJob(kind="inbound.post", payload={}, dedupe_key=f"wa:{i}", ordering_key=f"chat:{i}"))
            # answered only once it is committed: a fresh read sees the message and its job
            assert db.messages.by_wa_id("s1", f"WA{i}") == stored
            return stored, created

        results = await asyncio.gather(*(one(i) for i in range(20)), return_exceptions=True)
        assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [7]  # its own failure
        assert intake.messages == 20 and intake.batches < 20  # shared commits
        assert db.jobs.count() == 19
        again = await intake.record(_message(3), None)
        assert again == (results[3][0], False)  # type: ignore[index]
    finally:
        db.close()


@pytest.mark.asyncio
async def test_a_failed_transaction_is_every_callers_failure_and_the_next_batch_runs() -> None:
    calls: list[int] = []

    async def run(fn: Any, *args: Any) -> Any:
        await asyncio.sleep(0)
        return fn(*args)

    def record_many(items: Sequence[tuple[Message, NewJob | None]]) -> list[Any]:
        calls.append(len(items))
        if len(calls) == 1:
            raise StorageBusy("database is locked")
        return [(m, True) for m, _ in items]

    intake = GroupCommit(run, record_many)
    first = await asyncio.gather(*(intake.record(_message(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, StorageBusy) for r in first)
    second = await asyncio.gather(*(intake.record(_message(i)) for i in range(3)))
    assert [m.wa_message_id for m, _ in second] == ["WA0", "WA1", "WA2"]
    assert calls[0] == 3 and sum(calls[1:]) == 3

"""Several numbers per location (issue 15): the reply settings and the per-contact stickiness, on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from ghl_desktop.adapters.storage import Database, RecordNotFound
from ghl_desktop.adapters.storage.routing import SqlRoutingRepository
from ghl_desktop.core.models import Direction, Location, Message, MessageKind, SessionState, WhatsAppSession
from ghl_desktop.core.routing import AsyncRoutingRepository, NumberRouting, RoutingRepository
from tests.adapters.storage.test_offloop import _methods, _params

CHAT = "4915112340001@s.whatsapp.net"
LID = "123456789012345@lid"


@pytest.fixture
def two(store: Database) -> Database:
    for loc in ("loc1", "loc2"):
        store.locations.upsert(Location(id=loc, name=loc))
    for sid, loc in (("s1", "loc1"), ("s2", "loc1"), ("t1", "loc2")):
        store.sessions.create(WhatsAppSession(id=sid, location_id=loc, state=SessionState.CONNECTED,
                                              store_path=f"/tmp/{sid}", phone=f"+1555{sid}"))
    return store


def _in(session_id: str, wa_id: str, chat: str = CHAT, **kw: object) -> Message:
    fields: dict[str, object] = dict(location_id="loc1", session_id=session_id, direction=Direction.INBOUND,
                                     kind=MessageKind.TEXT, chat_jid=chat, wa_message_id=wa_id, body="hi")
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


def test_settings_default_to_none_and_are_kept_per_location(two: Database) -> None:
    _typed: RoutingRepository = two.routing
    assert two.routing.get("loc1") == NumberRouting("loc1")
    assert two.routing.set_default("loc1", "s2") == NumberRouting("loc1", "s2", False)
    assert two.routing.set_fallback("loc1", True) == NumberRouting("loc1", "s2", True)
    assert two.routing.get("loc2") == NumberRouting("loc2")
    with pytest.raises(RecordNotFound):
        two.routing.set_default("loc1", "t1")  # a number of another location
    with pytest.raises(RecordNotFound):
        two.routing.set_default("loc1", "nope")
    assert two.routing.get("loc1") == NumberRouting("loc1", "s2", True)
    assert two.routing.set_default("loc1", None).default_session_id is None
    two.routing.set_default("loc1", "s2")
    two.sessions.delete("s2")  # the default number removed: no default any more
    assert two.routing.get("loc1") == NumberRouting("loc1", None, True)
    two.locations.delete("loc1")
    assert two.routing.get("loc1") == NumberRouting("loc1")


def test_the_number_a_chat_last_wrote_to(two: Database) -> None:
    repo = two.routing
    assert repo.last_inbound_session("loc1", [CHAT], ["s1", "s2"]) is None
    two.messages.record(_in("s1", "A1"))
    two.messages.record(_in("s2", "A2", chat=LID))  # the same contact under its LID, later, to s2
    two.messages.record(_in("s1", "A3", direction=Direction.OUTBOUND, from_me=True))  # typed on s1: not "wrote"
    two.messages.record(_in("s1", "X1", chat="4915100000000@s.whatsapp.net"))  # someone else
    assert repo.last_inbound_session("loc1", [CHAT], ["s1", "s2"]) == "s1"
    assert repo.last_inbound_session("loc1", [CHAT, LID], ["s1", "s2"]) == "s2"
    assert repo.last_inbound_session("loc1", [CHAT, LID], ["s1"]) == "s1"  # s2 not a number of it any more
    assert repo.last_inbound_session("loc2", [CHAT, LID], ["s1", "s2"]) is None
    assert repo.last_inbound_session("loc1", [], ["s1"]) is None


def test_assign_names_the_number_and_sets_or_clears_the_note(two: Database) -> None:
    row, _ = two.messages.record(_in("s1", "B1", direction=Direction.OUTBOUND, ghl_message_id="g1", wa_message_id=None))
    assert row.id is not None
    waiting = two.routing.assign(row.id, "s2", note="waiting: +1555s2 is disconnected")
    assert waiting.session_id == "s2" and waiting.error == "waiting: +1555s2 is disconnected"
    assert waiting.wa_message_id is None
    sent = two.routing.assign(row.id, "s2", note=None, wa_message_id="3EB0AA")
    assert sent.error is None and sent.wa_message_id == "3EB0AA" and sent.session_id == "s2"
    with pytest.raises(RecordNotFound):
        two.routing.assign(10**9, "s1", note=None)


def test_the_async_routing_port_is_the_sync_port_awaited() -> None:
    import inspect

    awaited, blocking, implemented = (_methods(c) for c in
                                      (AsyncRoutingRepository, RoutingRepository, SqlRoutingRepository))
    assert set(awaited) == set(blocking) <= set(implemented)
    for name, sig in awaited.items():
        assert inspect.iscoroutinefunction(vars(AsyncRoutingRepository)[name]), name
        assert _params(sig) == _params(blocking[name]) == _params(implemented[name]), name


@pytest.mark.asyncio
async def test_the_facade_runs_off_the_loop(db: Database) -> None:
    import threading

    db.locations.upsert(Location(id="loc1", name="x"))
    seen: list[int] = []
    real = db.routing.get

    def spy(location_id: str) -> NumberRouting:
        seen.append(threading.get_ident())
        return real(location_id)

    db.routing.get = spy  # type: ignore[method-assign]
    assert await db.aio.routing.get("loc1") == NumberRouting("loc1")
    assert seen and seen[0] != threading.get_ident()

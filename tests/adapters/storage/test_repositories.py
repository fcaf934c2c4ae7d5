"""Contract suite for the location, session, contact and message repositories (SQLite + PostgreSQL)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghl_desktop.adapters.storage import Database, RecordNotFound, StorageConflict
from ghl_desktop.core import ports
from ghl_desktop.core.models import (
    ContactLink,
    Direction,
    Location,
    LocationState,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
    SessionState,
    WhatsAppSession,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _protocols_hold(db: Database) -> None:
    """Static check (mypy) that the repositories implement the ports exactly."""
    _l: ports.LocationRepository = db.locations
    _s: ports.SessionRepository = db.sessions
    _c: ports.ContactRepository = db.contacts
    _m: ports.MessageRepository = db.messages
    _j: ports.JobQueue = db.jobs


@pytest.fixture
def loc(store: Database) -> Location:
    return store.locations.upsert(Location(id="loc1", name="Clinic", company_id="co1", provider_id="prov1"))


@pytest.fixture
def sess(store: Database, loc: Location) -> WhatsAppSession:
    return store.sessions.create(
        WhatsAppSession(id="s1", location_id=loc.id, state=SessionState.WAITING_FOR_SCAN, store_path="/tmp/s1.db")
    )


def inbound(wa_id: str | None = "WA1", **kw: object) -> Message:
    fields: dict[str, object] = dict(
        location_id="loc1", session_id="s1", direction=Direction.INBOUND, kind=MessageKind.TEXT,
        chat_jid="15551234567@s.whatsapp.net", sender_jid="15551234567@s.whatsapp.net",
        wa_message_id=wa_id, body="hello", sent_at=T0,
    )
    fields.update(kw)
    return Message(**fields)  # type: ignore[arg-type]


# --- locations -------------------------------------------------------------------------------


def test_location_upsert_get_list_and_state(store: Database) -> None:
    _protocols_hold(store)
    assert store.locations.get("loc1") is None
    first = store.locations.upsert(Location(id="loc1", name="Clinic", company_id="co1", installed_at=T0))
    assert first.installed_at == T0 and first.state is LocationState.CONNECTED
    store.locations.upsert(Location(id="loc0", name="Bakery"))
    again = store.locations.upsert(Location(id="loc1", name="Clinic North", company_id="co1",
                                            installed_at=T0 + timedelta(days=9)))
    assert again.name == "Clinic North"
    assert again.installed_at == T0  # first install date kept
    assert [loc.name for loc in store.locations.list()] == ["Bakery", "Clinic North"]

    store.locations.set_state("loc1", LocationState.NEEDS_RECONNECT)
    expiry = T0 + timedelta(hours=24)
    store.locations.set_token_expiry("loc1", expiry)
    got = store.locations.get("loc1")
    assert got is not None and got.state is LocationState.NEEDS_RECONNECT and got.token_expires_at == expiry
    store.locations.set_token_expiry("loc1", None)
    assert store.locations.get("loc1").token_expires_at is None  # type: ignore[union-attr]

    with pytest.raises(RecordNotFound):
        store.locations.set_state("missing", LocationState.UNINSTALLED)
    with pytest.raises(ValueError):
        store.locations.set_state("loc1", "bogus")  # type: ignore[arg-type]


def test_deleting_a_location_removes_its_sessions_contacts_and_messages(
    store: Database, sess: WhatsAppSession
) -> None:
    store.contacts.save(ContactLink(location_id="loc1", phone="+15551234567"))
    store.messages.record(inbound())
    store.locations.delete("loc1")
    store.locations.delete("loc1")  # idempotent
    assert store.locations.get("loc1") is None
    assert store.sessions.list() == []
    assert store.contacts.find("loc1", phone="+15551234567") is None
    assert store.messages.recent() == []


# --- sessions --------------------------------------------------------------------------------


def test_session_lifecycle(store: Database, loc: Location) -> None:
    created = store.sessions.create(
        WhatsAppSession(id="s1", location_id="loc1", state=SessionState.WAITING_FOR_SCAN,
                        store_path="/data/s1.db", proxy="socks5://127.0.0.1:9050", created_at=T0)
    )
    assert created.created_at == T0 and created.proxy == "socks5://127.0.0.1:9050"
    with pytest.raises(StorageConflict, match="already exists"):
        store.sessions.create(dataclasses.replace(created))
    with pytest.raises(StorageConflict, match="location"):
        store.sessions.create(WhatsAppSession(id="s2", location_id="nope", state=SessionState.CONNECTING,
                                              store_path="/x"))

    banned_until = T0 + timedelta(hours=6)
    s = store.sessions.set_state("s1", SessionState.TEMPORARILY_BANNED, detail="ban 101", state_until=banned_until)
    assert (s.state, s.detail, s.state_until) == (SessionState.TEMPORARILY_BANNED, "ban 101", banned_until)
    s = store.sessions.set_state("s1", SessionState.CONNECTING)
    assert (s.state, s.detail, s.state_until) == (SessionState.CONNECTING, None, None)
    s = store.sessions.set_identity("s1", "+15550001111", "15550001111@s.whatsapp.net")
    assert (s.phone, s.jid, s.state) == ("+15550001111", "15550001111@s.whatsapp.net", SessionState.CONNECTING)
    assert store.sessions.get("s1") == s

    store.locations.upsert(Location(id="loc2", name="Other"))
    store.sessions.create(WhatsAppSession(id="s9", location_id="loc2", state=SessionState.CONNECTED,
                                          store_path="/data/s9.db"))
    assert [x.id for x in store.sessions.list()] == ["s1", "s9"]
    assert [x.id for x in store.sessions.list("loc2")] == ["s9"]
    with pytest.raises(RecordNotFound):
        store.sessions.set_state("nope", SessionState.CONNECTED)
    with pytest.raises(RecordNotFound):
        store.sessions.set_identity("nope", None, None)


def test_deleting_a_session_keeps_its_message_history(store: Database, sess: WhatsAppSession) -> None:
    stored, _ = store.messages.record(inbound())
    store.sessions.delete("s1")
    assert store.sessions.get("s1") is None
    kept = store.messages.get(stored.id)  # type: ignore[arg-type]
    assert kept is not None and kept.session_id is None and kept.body == "hello"


# --- contacts --------------------------------------------------------------------------------


def test_contact_find_by_each_key_in_priority_order(store: Database, loc: Location) -> None:
    a = store.contacts.save(ContactLink(location_id="loc1", phone="+15551234567",
                                        wa_jid="15551234567@s.whatsapp.net", ghl_contact_id="c1", name="Ann"))
    b = store.contacts.save(ContactLink(location_id="loc1", phone=None, wa_lid="987@lid", ghl_contact_id="c2"))
    assert a.id is not None and b.id is not None and a.id != b.id
    assert store.contacts.find("loc1", phone="+15551234567") == a
    assert store.contacts.find("loc1", wa_jid="15551234567@s.whatsapp.net") == a
    assert store.contacts.find("loc1", wa_lid="987@lid") == b
    assert store.contacts.find("loc1", ghl_contact_id="c2") == b
    # phone is tried before LID
    assert store.contacts.find("loc1", phone="+15551234567", wa_lid="987@lid") == a
    assert store.contacts.find("loc1", phone="+10000000000", wa_lid="987@lid") == b
    assert store.contacts.find("loc1") is None
    store.locations.upsert(Location(id="loc2", name="Other"))
    assert store.contacts.find("loc2", phone="+15551234567") is None  # per location


def test_contact_save_updates_and_merges_without_losing_data(store: Database, loc: Location) -> None:
    first = store.contacts.save(ContactLink(location_id="loc1", phone="+15551234567", ghl_contact_id="c1",
                                            ghl_conversation_id="conv1", name="Ann"))
    # same phone, more facts: updates the row; None fields keep what is stored
    upd = store.contacts.save(ContactLink(location_id="loc1", phone="+15551234567",
                                          wa_jid="15551234567@s.whatsapp.net", on_whatsapp=True))
    assert upd.id == first.id
    assert (upd.ghl_contact_id, upd.name, upd.wa_jid, upd.on_whatsapp) == (
        "c1", "Ann", "15551234567@s.whatsapp.net", True)
    # a LID-only link appears (no phone known)
    lid = store.contacts.save(ContactLink(location_id="loc1", phone=None, wa_lid="987@lid", name="Ann (lid)"))
    assert lid.id != first.id
    # later we learn the LID belongs to the same phone: the two rows become one
    merged = store.contacts.save(ContactLink(location_id="loc1", phone="+15551234567", wa_lid="987@lid"))
    assert merged.id == first.id
    assert (merged.wa_jid, merged.wa_lid, merged.ghl_contact_id, merged.name) == (
        "15551234567@s.whatsapp.net", "987@lid", "c1", "Ann")
    assert store.contacts.find("loc1", wa_lid="987@lid") == merged
    # save by id with new values
    renamed = store.contacts.save(dataclasses.replace(merged, name="Ann B", ghl_contact_id="c9"))
    assert (renamed.id, renamed.name, renamed.ghl_contact_id) == (first.id, "Ann B", "c9")
    with pytest.raises(RecordNotFound):
        store.contacts.save(dataclasses.replace(merged, id=10_000))


def test_forget_ghl_contact(store: Database, loc: Location) -> None:
    store.contacts.save(ContactLink(location_id="loc1", phone="+15550000001", ghl_contact_id="gone",
                                    ghl_conversation_id="conv"))
    store.contacts.save(ContactLink(location_id="loc1", phone="+15550000002", ghl_contact_id="keep"))
    assert store.contacts.forget_ghl_contact("loc1", "gone") == 1
    assert store.contacts.forget_ghl_contact("loc1", "gone") == 0
    cleared = store.contacts.find("loc1", phone="+15550000001")
    assert cleared is not None and (cleared.ghl_contact_id, cleared.ghl_conversation_id) == (None, None)
    assert store.contacts.find("loc1", ghl_contact_id="keep") is not None


def test_group_links_and_duplicate_keys(store: Database, loc: Location) -> None:
    g = store.contacts.save(ContactLink(location_id="loc1", phone=None, wa_jid="123-456@g.us", is_group=True,
                                        name="Team"))
    again = store.contacts.save(ContactLink(location_id="loc1", phone=None, wa_jid="123-456@g.us"))
    assert again.id == g.id and again.is_group and again.name == "Team"


# --- messages --------------------------------------------------------------------------------


def test_record_stores_message_and_job_in_one_go(store: Database, sess: WhatsAppSession) -> None:
    msg, created = store.messages.record(
        inbound(media_ref="/media/a.jpg", media_mime="image/jpeg", media_name="a.jpg", media_size=3_000_000_000,
                kind=MessageKind.IMAGE, quoted_wa_id="WA0"),
        NewJob(kind="inbound.post", payload={"x": 1}, dedupe_key="in:s1:WA1", ordering_key="chat:1"),
    )
    assert created and msg.id is not None
    assert store.messages.get(msg.id) == msg
    assert msg.media_size == 3_000_000_000 and msg.sent_at == T0 and msg.kind is MessageKind.IMAGE
    jobs = store.jobs.list()
    assert len(jobs) == 1 and jobs[0].payload == {"x": 1, "message_id": msg.id}
    assert (jobs[0].dedupe_key, jobs[0].ordering_key) == ("in:s1:WA1", "chat:1")
    assert store.messages.by_wa_id("s1", "WA1") == msg
    assert store.messages.by_wa_id("s1", "WA2") is None


def test_same_whatsapp_id_twice_writes_nothing(store: Database, sess: WhatsAppSession) -> None:
    first, created = store.messages.record(inbound(), NewJob(kind="inbound.post", payload={}))
    assert created
    again, created_again = store.messages.record(inbound(body="different body"),
                                                 NewJob(kind="inbound.post", payload={}))
    assert created_again is False and again == first
    assert len(store.messages.recent()) == 1
    assert store.jobs.count() == 1  # the second job was not written either


def test_same_highlevel_id_twice_writes_nothing(store: Database, loc: Location) -> None:
    out = Message(location_id="loc1", direction=Direction.OUTBOUND, kind=MessageKind.TEXT, chat_jid="1@s.whatsapp.net",
                  ghl_message_id="ghl-1", status=MessageStatus.PENDING, from_me=True, body="hi")
    first, created = store.messages.record(out, NewJob(kind="outbound.send", payload={}))
    again, created_again = store.messages.record(dataclasses.replace(out, body="dup"),
                                                 NewJob(kind="outbound.send", payload={}))
    assert created and not created_again and again == first
    assert store.messages.by_ghl_id("loc1", "ghl-1") == first
    assert store.messages.by_ghl_id("loc2", "ghl-1") is None
    assert store.jobs.count() == 1


def test_messages_without_ids_are_all_kept(store: Database, sess: WhatsAppSession) -> None:
    store.messages.record(inbound(wa_id=None))
    store.messages.record(inbound(wa_id=None))
    assert len(store.messages.recent()) == 2


def test_concurrent_record_of_the_same_message_stores_it_once(store: Database, sess: WhatsAppSession) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: list[tuple[Message, bool]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(store.messages.record(
                inbound(wa_id="RACE", body=f"copy {i}"), NewJob(kind="inbound.post", payload={"i": i})))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(results) == n
    assert sum(created for _, created in results) == 1
    assert len({m.id for m, _ in results}) == 1
    assert len(store.messages.recent()) == 1
    assert store.jobs.count() == 1


def test_status_never_moves_backwards_except_to_failed(store: Database, sess: WhatsAppSession) -> None:
    out, _ = store.messages.record(Message(location_id="loc1", session_id="s1", direction=Direction.OUTBOUND,
                                           kind=MessageKind.TEXT, chat_jid="1@s.whatsapp.net",
                                           status=MessageStatus.PENDING, ghl_message_id="g1"))
    assert out.id is not None
    m = store.messages.update(out.id, status=MessageStatus.SENT, wa_message_id="WA-OUT")
    assert (m.status, m.wa_message_id) == (MessageStatus.SENT, "WA-OUT")
    assert store.messages.update(out.id, status=MessageStatus.READ).status is MessageStatus.READ
    late = store.messages.update(out.id, status=MessageStatus.DELIVERED)  # late receipt
    assert late.status is MessageStatus.READ
    assert store.messages.update(out.id, status=MessageStatus.PENDING).status is MessageStatus.READ
    assert store.messages.update(out.id, status=MessageStatus.PLAYED).status is MessageStatus.PLAYED
    failed = store.messages.update(out.id, status=MessageStatus.FAILED, error="recipient blocked")
    assert (failed.status, failed.error) == (MessageStatus.FAILED, "recipient blocked")
    assert store.messages.update(out.id, status=MessageStatus.DELIVERED).status is MessageStatus.FAILED
    assert store.messages.get(out.id).status is MessageStatus.FAILED  # type: ignore[union-attr]


def test_update_other_fields_and_errors(store: Database, sess: WhatsAppSession) -> None:
    a, _ = store.messages.record(inbound("A"))
    b, _ = store.messages.record(inbound("B"))
    assert a.id is not None and b.id is not None
    m = store.messages.update(a.id, ghl_message_id="g-a", media_ref="/m/a.ogg", error="first try failed")
    assert (m.ghl_message_id, m.media_ref, m.error, m.status) == ("g-a", "/m/a.ogg", "first try failed",
                                                                MessageStatus.RECEIVED)
    assert m.updated_at >= a.updated_at
    assert store.messages.update(a.id).ghl_message_id == "g-a"  # nothing given: nothing changes
    with pytest.raises(StorageConflict):
        store.messages.update(b.id, ghl_message_id="g-a")  # would duplicate a HighLevel id
    with pytest.raises(StorageConflict):
        store.messages.update(b.id, wa_message_id="A")  # would duplicate a WhatsApp id
    assert store.messages.get(b.id) == b  # refused update changed nothing
    with pytest.raises(RecordNotFound):
        store.messages.update(10_000, status=MessageStatus.SENT)


def test_recent_is_newest_first_and_filters_by_location(store: Database, sess: WhatsAppSession) -> None:
    store.locations.upsert(Location(id="loc2", name="Other"))
    for i in range(5):
        store.messages.record(inbound(f"W{i}"))
    store.messages.record(Message(location_id="loc2", direction=Direction.OUTBOUND, kind=MessageKind.TEXT,
                                  chat_jid="2@s.whatsapp.net", ghl_message_id="g2"))
    assert [m.wa_message_id for m in store.messages.recent(limit=3, location_id="loc1")] == ["W4", "W3", "W2"]
    assert [m.ghl_message_id for m in store.messages.recent(location_id="loc2")] == ["g2"]
    assert len(store.messages.recent()) == 6


_STATUSES = list(MessageStatus)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_STATUSES), min_size=1, max_size=8))
def test_status_sequence_property(db: Database, statuses: list[MessageStatus]) -> None:
    """Whatever order receipts arrive in, the stored status is the highest-ranked one seen (FAILED
    highest of all), i.e. what the user saw last can only be confirmed or overtaken, never undone."""
    if db.locations.get("loc1") is None:
        db.locations.upsert(Location(id="loc1", name="Clinic"))
    m, _ = db.messages.record(Message(location_id="loc1", direction=Direction.OUTBOUND, kind=MessageKind.TEXT,
                                      chat_jid="1@s.whatsapp.net", status=MessageStatus.PENDING))
    assert m.id is not None
    shown = MessageStatus.PENDING
    for status in statuses:
        shown = db.messages.update(m.id, status=status).status
    top = max(s.rank for s in [MessageStatus.PENDING, *statuses])
    assert shown.rank == top


def test_record_is_all_or_nothing(store: Database, sess: WhatsAppSession) -> None:
    """The job is written after the message in the same transaction; when it cannot be stored, the
    message is rolled back too (no message without the job that carries it on)."""
    with pytest.raises(ValueError, match="JSON"):
        store.messages.record(inbound(), NewJob(kind="inbound.post", payload={"at": datetime.now(UTC)}))
    assert store.messages.recent() == [] and store.jobs.count() == 0
    _, created = store.messages.record(inbound(), NewJob(kind="inbound.post", payload={}))
    assert created and store.jobs.count() == 1


def test_concurrent_saves_of_one_new_contact_make_one_row(store: Database, loc: Location) -> None:
    n = 6
    barrier = threading.Barrier(n)
    out: list[ContactLink] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            out.append(store.contacts.save(ContactLink(location_id="loc1", phone="+15557654321",
                                                       name=f"writer {i}")))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len({link.id for link in out}) == 1
    final = store.contacts.find("loc1", phone="+15557654321")
    assert final is not None and final.name in {f"writer {i}" for i in range(n)}


def test_reset_failed_lets_a_retried_message_move_forward_again(store: Database, sess: WhatsAppSession) -> None:
    out, _ = store.messages.record(Message(location_id="loc1", session_id="s1", direction=Direction.OUTBOUND,
                                           kind=MessageKind.TEXT, chat_jid="1@s.whatsapp.net",
                                           status=MessageStatus.PENDING, ghl_message_id="g1"))
    inb, _ = store.messages.record(inbound())
    assert out.id is not None and inb.id is not None
    store.messages.update(out.id, status=MessageStatus.FAILED, error="timeout")
    store.messages.update(inb.id, status=MessageStatus.FAILED, error="HighLevel 500")
    again = store.messages.reset_failed(out.id)
    assert (again.status, again.error) == (MessageStatus.PENDING, None)
    assert store.messages.update(out.id, status=MessageStatus.SENT).status is MessageStatus.SENT
    assert store.messages.reset_failed(out.id).status is MessageStatus.SENT  # only FAILED is reset
    assert store.messages.reset_failed(inb.id).status is MessageStatus.RECEIVED
    with pytest.raises(RecordNotFound):
        store.messages.reset_failed(10_000)

"""The sessions service on the simulated WhatsApp network (real loopback WebSocket, real SQLite)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport, simulated_transport_factory
from ghl_desktop.core.errors import SessionLoggedOut, SessionNotConnected
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession
from ghl_desktop.core.whatsapp import IncomingMessage, Receipt
from ghl_desktop.sandbox.whatsapp import NetworkConfig
from ghl_desktop.services.events import SessionChanged, SessionPairCode, SessionQr, SessionRemoved
from ghl_desktop.services.sessions import LINK_INTERRUPTED, QR_EXPIRED, SessionOptions, SessionService
from tests.sandbox.wa_harness import Network, running_network, wait_until

LINKED = "+15550001000"
ALICE = "+4917011112222"
LOC = "loc-1"

FAST = SessionOptions(
    qr_timeout=30.0,
    backoff_initial=0.02,
    backoff_max=0.08,
    backoff_multiplier=2.0,
    backoff_jitter=0.0,
    phone_offline_grace=30.0,
    send_min_gap=0.0,
    send_jitter=0.0,
    store_suffix=".json",
)
SLOW_QR = NetworkConfig(qr_first_seconds=30.0, qr_next_seconds=30.0, qr_count=6)


@dataclass
class Harness:
    network: Network
    service: SessionService
    bus: EventBus
    db: Database
    events: list[Any] = field(default_factory=list)
    inbox: list[IncomingMessage] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)

    def states(self, session_id: str) -> list[SessionState]:
        out: list[SessionState] = []
        for e in self.events:
            if isinstance(e, SessionChanged) and e.session.id == session_id:
                if not out or out[-1] is not e.session.state:
                    out.append(e.session.state)
        return out

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def row(self, session_id: str) -> WhatsAppSession:
        row = self.db.sessions.get(session_id)
        assert row is not None
        return row

    async def reach(self, session_id: str, state: SessionState, within: float = 5.0) -> WhatsAppSession:
        await wait_until(lambda: self.row(session_id).state is state, within, f"state {state.value}")
        return self.row(session_id)

    async def attempts(self) -> int:
        for item in (await self.network.state())["linked_numbers"]:
            if item["phone"] == LINKED:
                return int(item["connect_attempts"])
        return 0

    async def drop(self, kind: str, **extra: Any) -> None:
        await self.network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": kind, **extra})

    async def linked_session(self) -> str:
        """A new session for LOC, paired by scanning its QR code, CONNECTED."""
        session = await self.service.create_session(LOC)
        qr = await wait_until(lambda: [e for e in self.of(SessionQr) if e.session_id == session.id], what="QR")
        await self.network.post("/_sandbox/whatsapp/scan", {"qr": qr[-1].code, "phone": LINKED})
        await self.reach(session.id, SessionState.CONNECTED)
        return session.id


def exists(path: str) -> bool:
    return Path(path).exists()


def new_service(network: Network, db: Database, bus: EventBus, tmp_path: Path,
                options: SessionOptions = FAST) -> SessionService:
    factory = simulated_transport_factory(network.url, rpc_timeout=5.0)
    return SessionService(db.sessions, factory, bus, sessions_dir=tmp_path / "sessions", options=options)


@asynccontextmanager
async def harness(db: Database, tmp_path: Path, options: SessionOptions = FAST,
                  config: NetworkConfig = SLOW_QR) -> AsyncIterator[Harness]:
    db.locations.upsert(Location(id=LOC, name="Dental Clinic"))
    async with running_network(config=config) as network:
        bus = EventBus()
        service = new_service(network, db, bus, tmp_path, options)
        h = Harness(network, service, bus, db)
        bus.subscribe(object, h.events.append)

        async def sink(_session: WhatsAppSession, message: IncomingMessage) -> None:
            h.inbox.append(message)

        async def receipts(_session: WhatsAppSession, receipt: Receipt) -> None:
            h.receipts.append(receipt)

        service.on_message = sink
        service.on_receipt = receipts
        try:
            yield h
        finally:
            await service.close()


@pytest.mark.asyncio
async def test_pair_by_qr_publishes_codes_and_every_state_change(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path, config=NetworkConfig(qr_first_seconds=0.2, qr_next_seconds=0.1,
                                                          qr_count=50)) as h:
        session = await h.service.create_session(LOC)
        assert session.state is SessionState.WAITING_FOR_SCAN and session.jid is None
        codes = await wait_until(lambda: h.of(SessionQr) if len(h.of(SessionQr)) >= 2 else None, what="2 QR")
        assert codes[0].code != codes[1].code and codes[0].session_id == session.id
        await h.network.post("/_sandbox/whatsapp/scan", {"qr": h.of(SessionQr)[-1].code, "phone": LINKED})
        row = await h.reach(session.id, SessionState.CONNECTED)
        assert (row.phone, row.jid) == (LINKED, "15550001000@s.whatsapp.net")
        assert h.states(session.id) == [SessionState.WAITING_FOR_SCAN, SessionState.CONNECTING,
                                        SessionState.CONNECTED]
        # published events carry the stored rows
        assert h.of(SessionChanged)[-1].session == row
        assert exists(row.store_path) and Path(row.store_path).parent == tmp_path / "sessions"
        assert h.service.transport_for(session.id) is not None


@pytest.mark.asyncio
async def test_qr_timeout_fails_the_session_and_stops_showing_codes(db: Database, tmp_path: Path) -> None:
    options = SessionOptions(**{**FAST.__dict__, "qr_timeout": 0.3})
    async with harness(db, tmp_path, options=options) as h:
        session = await h.service.create_session(LOC)
        row = await h.reach(session.id, SessionState.FAILED)
        assert row.detail == QR_EXPIRED
        await wait_until(lambda: not (h.network.net.state()["pending_qr"]), what="QR connection closed")
        # Link again starts over with fresh codes
        before = len(h.of(SessionQr))
        await h.service.link_again(session.id)
        await wait_until(lambda: len(h.of(SessionQr)) > before, what="new QR")
        assert h.row(session.id).state is SessionState.WAITING_FOR_SCAN


@pytest.mark.asyncio
async def test_network_side_qr_runout_also_fails_with_the_same_message(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path, config=NetworkConfig(qr_first_seconds=0.1, qr_next_seconds=0.05,
                                                          qr_count=2)) as h:
        session = await h.service.create_session(LOC)
        row = await h.reach(session.id, SessionState.FAILED)
        assert row.detail == QR_EXPIRED


@pytest.mark.asyncio
async def test_pair_by_phone_code(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        session = await h.service.create_session(LOC, pair_phone=LINKED)
        [event] = h.of(SessionPairCode)
        assert event.session_id == session.id and "Enter the pairing code" in (h.row(session.id).detail or "")
        await h.network.post("/_sandbox/whatsapp/pair-code", {"phone": LINKED, "code": event.code})
        row = await h.reach(session.id, SessionState.CONNECTED)
        assert row.phone == LINKED


@pytest.mark.asyncio
async def test_resume_after_restart_connects_without_a_scan(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        sid = await h.linked_session()
        waiting = await h.service.create_session(LOC)  # never scanned
        await h.service.close()  # the app quits

        bus = EventBus()
        events: list[Any] = []
        bus.subscribe(object, events.append)
        service = new_service(h.network, db, bus, tmp_path)
        try:
            resumed = await service.resume_all()
            assert [s.id for s in resumed] == [sid]
            await h.reach(sid, SessionState.CONNECTED)
            assert not [e for e in events if isinstance(e, SessionQr)]
            assert h.row(waiting.id).state is SessionState.FAILED
            assert h.row(waiting.id).detail == LINK_INTERRUPTED
        finally:
            await service.close()


@pytest.mark.asyncio
async def test_drop_disconnect_reconnects_with_capped_backoff(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        sid = await h.linked_session()
        before = await h.attempts()
        h.events.clear()
        await h.drop("disconnect", refuse_connects=4)  # the network refuses the next 4 dials
        await h.reach(sid, SessionState.RECONNECTING)
        await h.reach(sid, SessionState.CONNECTED)
        assert await h.attempts() - before == 5  # 4 refused + 1 that worked
        details = [e.session.detail for e in h.of(SessionChanged) if e.session.state is SessionState.RECONNECTING]
        delays = [float(d.split("retrying in ")[1].split(" s")[0]) for d in details]
        assert delays == [0.02, 0.04, 0.08, 0.08, 0.08]  # doubling, capped at backoff_max
        assert [d.split("attempt ")[1].rstrip(")") for d in details] == ["1", "2", "3", "4", "5"]
        # the backoff starts over once connected
        h.events.clear()
        await h.drop("disconnect")
        await h.reach(sid, SessionState.RECONNECTING)
        await h.reach(sid, SessionState.CONNECTED)
        first = next(e.session.detail for e in h.of(SessionChanged) if e.session.state is SessionState.RECONNECTING)
        assert first.endswith("retrying in 0.02 s (attempt 1)")


@pytest.mark.parametrize(
    ("kind", "state", "detail"),
    [
        ("logout", SessionState.LOGGED_OUT, "Unlinked on the phone"),
        ("ban", SessionState.TEMPORARILY_BANNED, "temporarily banned"),
        ("replaced", SessionState.REPLACED, "Another WhatsApp client"),
        ("outdated", SessionState.CLIENT_OUTDATED, "update the app"),
    ],
)
@pytest.mark.asyncio
async def test_final_drops_reach_their_state_and_never_reconnect(
    db: Database, tmp_path: Path, kind: str, state: SessionState, detail: str
) -> None:
    async with harness(db, tmp_path) as h:
        sid = await h.linked_session()
        before = await h.attempts()
        await h.drop(kind, **({"ban_seconds": 600} if kind == "ban" else {}))
        row = await h.reach(sid, state)
        assert detail in (row.detail or "")
        if kind == "ban":
            assert row.state_until is not None
            assert timedelta(seconds=590) < row.state_until - datetime.now(UTC) <= timedelta(seconds=600)
        # several backoff periods later: still final, not a single redial
        await asyncio.sleep(0.3)
        assert h.row(sid).state is state
        assert await h.attempts() == before
        assert h.service.transport_for(sid) is None
        with pytest.raises(SessionLoggedOut if kind == "logout" else SessionNotConnected):
            await h.service.send_text(sid, ALICE, "hello?")


@pytest.mark.asyncio
async def test_retry_after_replaced_and_resume_after_an_expired_ban(db: Database, tmp_path: Path) -> None:
    async with harness(db, tmp_path) as h:
        sid = await h.linked_session()
        await h.drop("replaced")
        await h.reach(sid, SessionState.REPLACED)
        await h.service.retry(sid)
        await h.reach(sid, SessionState.CONNECTED)

        await h.drop("ban", ban_seconds=0.2)
        await h.reach(sid, SessionState.TEMPORARILY_BANNED)
        await wait_until(lambda: h.row(sid).state_until is not None
                         and h.row(sid).state_until <= datetime.now(UTC), what="ban over")  # type: ignore[operator]
        await h.service.close()
        service = new_service(h.network, db, EventBus(), tmp_path)
        try:
            assert [s.id for s in await service.resume_all()] == [sid]
            await h.reach(sid, SessionState.CONNECTED)
        finally:
            await service.close()


@pytest.mark.asyncio
async def test_keepalive_lost_goes_phone_offline_and_back(db: Database, tmp_path: Path) -> None:
    options = SessionOptions(**{**FAST.__dict__, "phone_offline_grace": 0.2})
    async with harness(db, tmp_path, options=options) as h:
        sid = await h.linked_session()
        await h.drop("keepalive_lost")
        await h.reach(sid, SessionState.PHONE_OFFLINE)
        assert h.service.transport_for(sid) is not None  # WhatsApp still takes our messages
        await h.drop("keepalive_restored")
        await h.reach(sid, SessionState.CONNECTED)
        # lost for longer than the grace period: the service drops the link and redials
        before = await h.attempts()
        h.events.clear()
        await h.drop("keepalive_lost")
        await h.reach(sid, SessionState.PHONE_OFFLINE)
        await h.reach(sid, SessionState.CONNECTED)
        assert await h.attempts() == before + 1
        assert h.states(sid) == [SessionState.PHONE_OFFLINE, SessionState.RECONNECTING, SessionState.CONNECTED]


@pytest.mark.asyncio
async def test_sends_are_paced_per_number(db: Database, tmp_path: Path) -> None:
    gap = 0.12
    options = SessionOptions(**{**FAST.__dict__, "send_min_gap": gap, "send_jitter": 0.05})
    async with harness(db, tmp_path, options=options) as h:
        sid = await h.linked_session()
        await h.network.add_phone(ALICE, "Alice")
        results = await asyncio.gather(*(h.service.send_text(sid, ALICE, f"burst {i}") for i in range(6)))
        assert not hasattr(h.service, "pace")  # one send path: no "take a slot, then send yourself"
        inbox = await h.network.get(f"/_sandbox/phones/{ALICE}/inbox")
        assert [e["text"] for e in inbox] == [f"burst {i}" for i in range(6)]  # in call order
        assert [e["id"] for e in inbox] == [r.message_id for r in results]
        received = [e["received_at"] for e in inbox]
        gaps = [b - a for a, b in itertools.pairwise(received)]
        assert min(gaps) >= gap, gaps  # measured by the network on receipt


@pytest.mark.asyncio
async def test_messages_reach_the_sink_before_the_ack_and_come_back_when_it_fails(
    db: Database, tmp_path: Path
) -> None:
    async with harness(db, tmp_path) as h:
        sid = await h.linked_session()
        await h.network.add_phone(ALICE, "Alice")
        sink = h.service.on_message
        h.service.on_message = None  # nothing can store messages yet: they must stay on WhatsApp
        first = await h.network.phone_send(ALICE, {"to": LINKED, "text": "one"})
        await asyncio.sleep(0.1)
        assert [q["data"]["id"] for q in h.network.net.linked[LINKED].queue] == [first]

        failures = 0

        async def flaky(session: WhatsAppSession, message: IncomingMessage) -> None:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise OSError("disk full")
            assert sink is not None
            await sink(session, message)

        h.service.on_message = flaky
        await h.drop("disconnect")  # redelivery happens on the next connection
        await h.reach(sid, SessionState.CONNECTED)
        await asyncio.sleep(0.1)
        assert failures == 1 and h.inbox == []
        await h.drop("disconnect")
        await wait_until(lambda: h.inbox, what="delivered")
        assert [m.id for m in h.inbox] == [first]
        await wait_until(lambda: h.network.net.linked[LINKED].queue == [], what="acked")

        # receipts go to their own sink
        sent = await h.service.send_text(sid, ALICE, "hi")
        await wait_until(lambda: h.receipts, what="receipt")
        assert h.receipts[0].message_ids == (sent.message_id,)


@pytest.mark.asyncio
async def test_logout_link_again_and_remove(db: Database, tmp_path: Path) -> None:
    forgotten: list[str] = []

    async def forget(session_id: str) -> None:  # a cluster's store schema (runtime.py wires it)
        forgotten.append(session_id)
        if len(forgotten) == 3:
            raise OSError("the database is gone")  # logged; remove goes on

    async with harness(db, tmp_path) as h:
        h.service.forget_store = forget
        sid = await h.linked_session()
        store = h.row(sid).store_path
        assert exists(store)
        await h.service.logout(sid)
        assert h.row(sid).state is SessionState.LOGGED_OUT
        assert not exists(store)  # the engine store is gone
        assert forgotten == [sid]
        assert await h.network.linked_state(LINKED) == "logged_out"

        shown = len(h.of(SessionQr))
        await h.service.link_again(sid)
        assert h.row(sid).state is SessionState.WAITING_FOR_SCAN
        await wait_until(lambda: len(h.of(SessionQr)) > shown, what="a fresh QR")
        await h.network.post("/_sandbox/whatsapp/scan", {"qr": h.of(SessionQr)[-1].code, "phone": LINKED})
        await h.reach(sid, SessionState.CONNECTED)

        await h.service.remove(sid)
        assert db.sessions.get(sid) is None
        assert not exists(store)
        # logout, link again, then remove: its logout (that one fails: only logged) and its own
        assert forgotten == [sid] * 4
        assert h.of(SessionRemoved) == [SessionRemoved(sid)]
        assert await h.network.linked_state(LINKED) == "logged_out"


@pytest.mark.asyncio
async def test_without_a_network_the_session_keeps_reconnecting(db: Database, tmp_path: Path) -> None:
    db.locations.upsert(Location(id=LOC, name="Dental Clinic"))
    bus = EventBus()
    events: list[SessionChanged] = []
    bus.subscribe(SessionChanged, events.append)
    # port 9 on loopback: nothing listens, the dial is refused at once
    service = SessionService(db.sessions, simulated_transport_factory("http://127.0.0.1:9"), bus,
                             sessions_dir=tmp_path / "sessions", options=FAST)
    try:
        session = await service.create_session(LOC)
        await wait_until(lambda: sum(e.session.state is SessionState.RECONNECTING for e in events) >= 4,
                         what="4 redials")
        assert "network unreachable" in (events[-1].session.detail or "")
        assert service.transport_for(session.id) is None
    finally:
        await service.close()


async def _forward_proxy(seen: list[str]) -> tuple[asyncio.AbstractServer, int]:
    """A minimal HTTP forward proxy (absolute-URI requests, then raw piping, enough for a WebSocket)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, rest = head.split(b"\r\n", 1)
        method, url, version = request_line.decode().split(" ")
        seen.append(url)
        hostport, _, path = url.removeprefix("http://").partition("/")
        host, _, port = hostport.partition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port or 80))
        up_writer.write(f"{method} /{path} {version}\r\n".encode() + rest)
        await up_writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.asyncio
async def test_a_session_proxy_carries_its_connection(db: Database, tmp_path: Path) -> None:
    seen: list[str] = []
    server, port = await _forward_proxy(seen)
    try:
        async with harness(db, tmp_path) as h:
            session = await h.service.create_session(LOC, proxy=f"http://127.0.0.1:{port}")
            assert h.row(session.id).proxy == f"http://127.0.0.1:{port}"
            qr = await wait_until(lambda: h.of(SessionQr), what="QR through the proxy")
            await h.network.post("/_sandbox/whatsapp/scan", {"qr": qr[-1].code, "phone": LINKED})
            await h.reach(session.id, SessionState.CONNECTED)
            assert seen and all("/_sandbox/whatsapp/ws" in url for url in seen)
            await h.network.add_phone(ALICE, "Alice")
            await h.service.send_text(session.id, ALICE, "via proxy")
            inbox = await h.network.get(f"/_sandbox/phones/{ALICE}/inbox")
            assert [e["text"] for e in inbox] == ["via proxy"]
    finally:
        server.close()


@pytest.mark.asyncio
async def test_close_stops_every_number_at_once_and_cancels_a_stuck_one(db: Database, tmp_path: Path) -> None:
    """Issue 11 item 6: quitting stops all numbers concurrently (neonize takes up to ~18 s each) and does
    not wait past its deadline for one whose engine never finishes stopping."""
    stops = {"active": 0, "max": 0, "started": 0}
    all_started = asyncio.Event()

    class SlowStop(SimulatedTransport):
        async def stop(self) -> None:
            stops["active"] += 1
            stops["started"] += 1
            stops["max"] = max(stops["max"], stops["active"])
            if stops["started"] == 3:
                all_started.set()
            try:
                await all_started.wait()  # no stop finishes before all three have begun
                if stops["started"] == 3 and self is stuck[0]:
                    await asyncio.Event().wait()  # this engine never finishes
            finally:
                stops["active"] -= 1
            await super().stop()

    stuck: list[SimulatedTransport] = []

    def factory(session: WhatsAppSession, handler: Any) -> SimulatedTransport:
        transport = SlowStop(session.id, h.network.url, handler, Path(session.store_path), rpc_timeout=5.0)
        if not stuck:
            stuck.append(transport)
        return transport

    db.locations.upsert(Location(id=LOC, name="Dental Clinic"))
    async with running_network(config=SLOW_QR) as network:
        h = Harness(network, SessionService(db.sessions, factory, EventBus(), sessions_dir=tmp_path / "sessions",
                                            options=FAST), EventBus(), db)
        ids = [(await h.service.create_session(LOC)).id for _ in range(3)]
        assert all(h.service.transport_for(i) is None for i in ids)  # waiting for a scan, not connected
        await asyncio.wait_for(h.service.close(within=0.3), 10)  # liveness bound only
        assert stops["started"] == 3 and stops["max"] == 3  # all three were stopping at the same time
        assert stops["active"] == 0  # the stuck one was cancelled, nothing left running
        # the app leaves a cancelled engine to die with the process; the test releases its HTTP session
        await SimulatedTransport.stop(stuck[0])

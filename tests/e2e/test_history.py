"""History on link (issue 15) end to end, against the sandbox over real loopback: the chats the sandbox's
WhatsApp offers when the number is linked (``POST /_sandbox/whatsapp/{phone}/history``) land in its
HighLevel within ``history_days``, oldest first, with their own dates, each once — also when a message
was carried live already, when the app quits mid-import and starts again, and when the user cancels;
live messages are never queued behind the import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.adapters.ghl.rate import RateLimitConfig
from ghl_desktop.adapters.ghl.tls import ssl_context
from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
from ghl_desktop.app import App
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.errors import ConfigError
from ghl_desktop.core.history import CANCELLED_NOTE, HistoryProgress
from ghl_desktop.core.models import JobState, SessionState, WhatsAppSession
from ghl_desktop.headless import SANDBOX_LINKED_PHONE, ensure_linked
from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions
from ghl_desktop.sandbox.consent import ConsentClicker
from ghl_desktop.sandbox.oauth import any_port
from ghl_desktop.sandbox.server import RunningSandbox, running_sandbox
from ghl_desktop.sandbox_mode import point_sandbox_webhooks
from ghl_desktop.services.bridge.history import HISTORY
from ghl_desktop.services.events import SessionChanged, SessionQr
from tests.e2e.harness import FAST_RUNTIME, eventually
from tests.fakes.secrets import MemorySecretStore

ALICE = "+4915112345678"
BOB = "+4915187654321"
CAROL = "+4915199999999"
LINKED = SANDBOX_LINKED_PHONE

#: a slow HighLevel budget (4 requests a second, not widened to the sandbox's advertised 100 per 10 s): an
#: import of a few dozen messages takes seconds, so a test can act in the middle of it
SLOW = RateLimitConfig(window_seconds=1.0, max_per_window=4, adapt_to_headers=False)


def ago(days: float, hours: float = 0) -> datetime:
    """A whole-second time ``days`` (+ ``hours``) before now."""
    return (datetime.now(UTC) - timedelta(days=days, hours=hours)).replace(microsecond=0)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).replace(microsecond=0)


def chat(phone: str, *messages: tuple[bool, str, datetime], ids: dict[str, str] | None = None) -> dict[str, Any]:
    return {"with": phone, "messages": [
        {"from_me": me, "text": text, "timestamp": at.isoformat(), **({"id": ids[text]} if ids and text in ids else {})}
        for me, text, at in messages]}


@dataclass
class Bridge:
    sandbox: RunningSandbox
    settings: Settings
    secrets: MemorySecretStore
    http: httpx.AsyncClient
    app: App | None = None
    runtime: BridgeRuntime | None = None

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def rt(self) -> BridgeRuntime:
        assert self.runtime is not None
        return self.runtime

    async def start(self, options: RuntimeOptions) -> None:
        opener = getattr(App, "open", None)  # off the loop where the App has it
        if opener is not None:
            self.app = await opener(self.settings, secrets=self.secrets, console_log=False, sandbox=True)
        else:
            self.app = App(self.settings, secrets=self.secrets, console_log=False, sandbox=True)
        self.runtime = BridgeRuntime(self.app, simulated_transport_factory(self.url), options,
                                     open_url=ConsentClicker())
        await self.runtime.start()
        await point_sandbox_webhooks(self.url, self.runtime.webhooks.url)

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        if self.app is not None:
            await self.app.aclose()
            self.app = None

    async def state(self) -> dict[str, Any]:
        answer = await self.http.get(f"{self.url}/_sandbox/state")
        answer.raise_for_status()
        return dict(answer.json())

    async def messages(self) -> list[dict[str, Any]]:
        return list((await self.state())["messages"])

    async def seed(self, *chats: dict[str, Any]) -> None:
        answer = await self.http.post(f"{self.url}/_sandbox/whatsapp/{LINKED}/history", json={"chats": list(chats)})
        assert answer.status_code == 201, answer.text

    async def customer(self, phone: str, name: str) -> None:
        answer = await self.http.post(f"{self.url}/_sandbox/phones", json={"phone": phone, "name": name})
        answer.raise_for_status()

    async def send(self, phone: str, text: str) -> str:
        answer = await self.http.post(f"{self.url}/_sandbox/phones/{phone}/send", json={"to": LINKED, "text": text})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def sessions(self) -> list[WhatsAppSession]:
        assert self.app is not None
        return list(await self.app.db.aio.sessions.list())

    async def progress(self) -> list[HistoryProgress]:
        return await self.rt.history.progress()

    async def landed(self, *texts: str, limit: float = 60) -> dict[str, dict[str, Any]]:
        """The sandbox messages with these bodies, once all are there."""
        async def there() -> dict[str, dict[str, Any]] | None:
            got = {m["body"]: m for m in await self.messages()}
            return got if set(texts) <= set(got) else None

        return dict(await eventually(there, limit))

    async def link(self, before_scan: Callable[[WhatsAppSession], Awaitable[None]] | None = None) -> WhatsAppSession:
        """Link the agency's phone as a new number (QR scanned in the sandbox); ``before_scan`` runs while
        the QR code is shown (what the window lets the user set then)."""
        rt = self.rt
        if not await rt.app.db.aio.locations.list():
            await rt.oauth.connect()
        location = (await rt.app.db.aio.locations.list())[0]
        loop = asyncio.get_running_loop()
        qr: asyncio.Future[str] = loop.create_future()
        connected: asyncio.Future[None] = loop.create_future()
        session_id: list[str] = []

        def on_qr(event: SessionQr) -> None:
            if not qr.done():
                qr.set_result(event.code)

        def on_change(event: SessionChanged) -> None:
            if session_id and event.session.id == session_id[0] and event.session.state is SessionState.CONNECTED \
                    and not connected.done():
                connected.set_result(None)

        off = [rt.app.bus.subscribe(SessionQr, on_qr), rt.app.bus.subscribe(SessionChanged, on_change)]
        try:
            phone = await self.http.post(f"{self.url}/_sandbox/phones", json={"phone": LINKED, "name": "Agency phone"})
            phone.raise_for_status()
            session = await rt.sessions.create_session(location.id)
            session_id.append(session.id)
            code = await asyncio.wait_for(qr, 30)
            if before_scan is not None:
                await before_scan(session)
            scan = await self.http.post(f"{self.url}/_sandbox/whatsapp/scan", json={"qr": code, "phone": LINKED})
            scan.raise_for_status()
            await asyncio.wait_for(connected, 30)
            return session
        finally:
            for unsubscribe in off:
                unsubscribe()


@asynccontextmanager
async def bridge(history_days: int = 0, *, rate: RateLimitConfig | None = None) -> AsyncIterator[Bridge]:
    """The sandbox and an unlinked bridge (``start`` then ``link`` / ``ensure_linked``)."""
    options: dict[str, Any] = {"status_race_seconds": 0.2, "webhook_retry_seconds": 0.05, "locations": 1,
               "redirect_uris": [any_port(app_registration().redirect_uri)]}
    async with running_sandbox(**options) as sb:
        settings = replace(load_settings(), api_base=sb.url, marketplace_base=sb.url, client_id=sb.client_id,
                           client_secret=sb.client_secret, provider_id=sb.provider_id,
                           webhook_ed25519_public_key=sb.public_key_pem, history_days=history_days)
        http = await asyncio.to_thread(lambda: httpx.AsyncClient(timeout=30, verify=ssl_context()))
        env = Bridge(sb, settings, MemorySecretStore(), http)
        try:
            await env.start(replace(FAST_RUNTIME, rate_limits=rate))
            yield env
            assert (await env.state())["validation_failures"] == 0, (await env.state())["validation_failure_details"]
        finally:
            await env.stop()
            await http.aclose()


def history_of(messages: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The sandbox's messages whose body starts with ``prefix``, in the order they reached it."""
    return sorted((m for m in messages if str(m["body"]).startswith(prefix)), key=lambda m: m["seq"])


def assert_once(messages: list[dict[str, Any]]) -> None:
    alt_ids = [m["altId"] for m in messages if m.get("altId")]
    assert len(alt_ids) == len(set(alt_ids)), "a message reached HighLevel twice"
    bodies = [m["body"] for m in messages]
    assert len(bodies) == len(set(bodies)), "a message reached HighLevel twice"


# --- the setting -------------------------------------------------------------------------------------


def test_history_days_setting_is_checked() -> None:
    assert load_settings({"GHL_DESKTOP_HOME": "/nonexistent-ghl"}).history_days == 0  # off by default
    assert load_settings({"GHL_DESKTOP_HOME": "/nonexistent-ghl", "GHL_DESKTOP_HISTORY_DAYS": "90"}).history_days == 90
    with pytest.raises(ConfigError, match=r"GHL_DESKTOP_HISTORY_DAYS must be from 0 \(off\) to 90 days, not 91"):
        load_settings({"GHL_DESKTOP_HOME": "/nonexistent-ghl", "GHL_DESKTOP_HISTORY_DAYS": "91"})
    with pytest.raises(ConfigError, match="whole number of days"):
        load_settings({"GHL_DESKTOP_HOME": "/nonexistent-ghl", "GHL_DESKTOP_HISTORY_DAYS": "a week"})
    with pytest.raises(ConfigError, match="history_days must be from 0"):
        Settings(history_days=365)


# --- end to end --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_history_is_off_by_default() -> None:
    async with bridge() as env:
        await env.seed(chat(ALICE, (False, "old: hello", ago(3)), (True, "old: hi Alice", ago(2))))
        await ensure_linked(env.rt, env.url, asyncio.Event())
        await env.customer(ALICE, "Alice")
        await env.send(ALICE, "live: after the link")
        await env.landed("live: after the link")
        assert history_of(await env.messages(), "old:") == []
        assert [p.total for p in await env.progress()] in ([], [0])


@pytest.mark.asyncio
async def test_history_within_the_days_lands_oldest_first_with_its_dates_once() -> None:
    seeded = {
        "old: too old": ago(40),
        "old: Alice 20 days ago": ago(20),
        "old: we answered 10 days ago": ago(10),
        "old: Alice 2 days ago": ago(2),
        "old: Bob 15 days ago": ago(15),
        "old: Bob yesterday": ago(1),
    }
    async with bridge(history_days=30) as env:
        await env.seed(
            chat(ALICE, (False, "old: too old", seeded["old: too old"]),
                 (False, "old: Alice 20 days ago", seeded["old: Alice 20 days ago"]),
                 (True, "old: we answered 10 days ago", seeded["old: we answered 10 days ago"]),
                 (False, "old: Alice 2 days ago", seeded["old: Alice 2 days ago"])),
            chat(BOB, (False, "old: Bob 15 days ago", seeded["old: Bob 15 days ago"]),
                 (False, "old: Bob yesterday", seeded["old: Bob yesterday"])),
        )
        await ensure_linked(env.rt, env.url, asyncio.Event())
        inside = [t for t in seeded if t != "old: too old"]
        await env.landed(*inside)

        async def finished() -> list[HistoryProgress] | None:
            progress = await env.progress()
            return progress if progress and progress[0].pending == 0 else None

        (progress,) = await eventually(finished, 30)
        assert (progress.imported, progress.total) == (5, 5)

        messages = await env.messages()
        imported = history_of(messages, "old:")
        assert [m["body"] for m in imported] == sorted(inside, key=lambda t: seeded[t])  # oldest first
        for m in imported:
            assert when(m["dateAdded"]) == seeded[m["body"]]  # the message's own date
            assert m["direction"] == ("outbound" if m["body"] == "old: we answered 10 days ago" else "inbound")
        contacts = {c["id"]: c["phone"] for c in (await env.state())["contacts"]}
        assert {contacts[m["contactId"]] for m in imported if "Bob" in m["body"]} == {BOB}
        assert {contacts[m["contactId"]] for m in imported if "Bob" not in m["body"]} == {ALICE}
        assert "old: too old" not in {m["body"] for m in messages}  # beyond history_days
        assert_once(messages)


@pytest.mark.asyncio
async def test_a_number_can_have_its_own_history_days() -> None:
    async with bridge(history_days=0) as env:  # the setting is off; this number imports 7 days
        await env.seed(chat(CAROL, (False, "old: 5 days ago", ago(5)), (False, "old: 9 days ago", ago(9))))

        async def seven_days(session: WhatsAppSession) -> None:
            with pytest.raises(ConfigError, match="from 0 \\(off\\) to 90 days, not 91"):
                await env.rt.history.set_days(session.id, 91)
            await env.rt.history.set_days(session.id, 7)

        await env.link(before_scan=seven_days)
        await env.landed("old: 5 days ago")
        (progress,) = await eventually(env.progress)
        assert (progress.days, progress.total) == (7, 1)
        assert "old: 9 days ago" not in {m["body"] for m in await env.messages()}


@pytest.mark.asyncio
async def test_history_that_overlaps_live_messages_lands_once() -> None:
    async with bridge(history_days=30) as env:
        first = await env.link()
        await env.customer(ALICE, "Alice")
        live = await env.send(ALICE, "both: sent live, also in the history")
        await env.landed("both: sent live, also in the history")
        # the same phone linked again (a new number in the app) is offered that chat with the live
        # message in it (same WhatsApp id) and older ones
        await env.seed(chat(ALICE, (False, "old: before", ago(3)),
                            (False, "both: sent live, also in the history", ago(0, 0.01)),
                            (True, "old: our answer", ago(0, 0.005)),
                            ids={"both: sent live, also in the history": live}))
        second = await env.link()
        assert second.id != first.id
        await env.landed("old: before", "old: our answer")

        async def settled() -> bool:
            return all(p.pending == 0 for p in await env.progress())

        await eventually(settled, 30)
        messages = await env.messages()
        assert [m["body"] for m in messages].count("both: sent live, also in the history") == 1
        assert_once(messages)
        assert sum(p.total for p in await env.progress()) == 2  # the live one was not queued again


def slow_history(count: int) -> list[dict[str, Any]]:
    """``count`` messages over three chats, one a minute, ending an hour ago."""
    phones = (ALICE, BOB, CAROL)
    per: dict[str, list[tuple[bool, str, datetime]]] = {p: [] for p in phones}
    for i in range(count):
        per[phones[i % 3]].append((i % 4 == 3, f"old: {i:03d}", ago(1) - timedelta(minutes=count - i)))
    return [chat(p, *per[p]) for p in phones]


def in_chat_order(imported: list[dict[str, Any]]) -> None:
    """Within each chat, the import reached HighLevel in the messages' own order."""
    by_contact: dict[str, list[str]] = {}
    for m in imported:
        by_contact.setdefault(m["contactId"], []).append(m["body"])
    for bodies in by_contact.values():
        assert bodies == sorted(bodies)


@pytest.mark.asyncio
async def test_an_import_interrupted_by_quitting_resumes_at_the_next_start_and_lands_once() -> None:
    count = 24
    async with bridge(history_days=30, rate=SLOW) as env:
        await env.seed(*slow_history(count))
        await ensure_linked(env.rt, env.url, asyncio.Event())

        async def some() -> int:
            n = len(history_of(await env.messages(), "old:"))
            return n if n >= 4 else 0

        await eventually(some, 60)
        await env.stop()  # the window is closed mid-import
        before = len(history_of(await env.messages(), "old:"))
        assert before < count, "the import finished before the restart: the test proves nothing"

        await env.start(replace(FAST_RUNTIME, rate_limits=SLOW))  # started again
        await env.landed(*[f"old: {i:03d}" for i in range(count)], limit=120)
        messages = await env.messages()
        imported = history_of(messages, "old:")
        assert len(imported) == count
        assert_once(messages)
        in_chat_order(imported)
        # the last job's completion commits just after its post landed (completions are group-committed)
        async def all_imported() -> list[HistoryProgress]:
            found = await env.progress()
            return found if [(p.imported, p.total) for p in found] == [(count, count)] else []

        (progress,) = await eventually(all_imported, 20)
        assert (progress.imported, progress.total) == (count, count)


@pytest.mark.asyncio
async def test_cancel_stops_the_import() -> None:
    count = 30
    async with bridge(history_days=30, rate=SLOW) as env:
        await env.seed(*slow_history(count))
        await ensure_linked(env.rt, env.url, asyncio.Event())
        (session,) = await env.sessions()

        async def started() -> bool:
            return len(history_of(await env.messages(), "old:")) >= 2

        await eventually(started, 60)
        cancelled = await env.rt.history.cancel(session.id)
        assert cancelled > 0

        async def settled() -> HistoryProgress | None:
            (p,) = await env.progress()
            return p if p.pending == 0 else None  # the one in flight when the user pressed Cancel is done

        progress = await eventually(settled, 30)
        assert progress.stopped and progress.cancelled == cancelled
        assert progress.imported + progress.cancelled == progress.total == count
        await env.customer(ALICE, "Alice")
        await env.send(ALICE, "live: after cancel")  # live traffic goes on; the runner had its chance
        await env.landed("live: after cancel")
        assert env.app is not None
        jobs = await env.app.db.aio.jobs.list(state=JobState.PENDING.value, limit=1000)
        assert [j for j in jobs if j.kind == HISTORY] == []
        imported = history_of(await env.messages(), "old:")
        assert len(imported) == progress.imported < count
        notes = await env.app.db.aio.run(_errors, env.app.db)
        assert notes.count(CANCELLED_NOTE) == cancelled  # the message log says why they were not imported


def _errors(db: Any) -> list[str | None]:
    from sqlalchemy import select

    from ghl_desktop.adapters.storage.orm import MessageRow

    with db.engine.connect() as conn:
        return list(conn.scalars(select(MessageRow.error)))


@pytest.mark.asyncio
async def test_live_messages_are_not_queued_behind_the_import() -> None:
    count = 30
    async with bridge(history_days=30, rate=SLOW) as env:
        await env.seed(*slow_history(count))
        await env.customer(ALICE, "Alice")
        await ensure_linked(env.rt, env.url, asyncio.Event())

        async def started() -> bool:
            return len(history_of(await env.messages(), "old:")) >= 2

        await eventually(started, 60)
        live = [f"live: {i}" for i in range(6)]
        for text in live:
            await env.send(ALICE, text)
        await env.landed(*live, limit=60)
        messages = await env.messages()
        seq = {m["body"]: m["seq"] for m in messages}
        imported = history_of(messages, "old:")
        assert len(imported) < count, "the import finished first: the test proves nothing"
        first, last = min(seq[t] for t in live), max(seq[t] for t in live)
        # while live messages waited, at most the one history message already in flight went ahead
        between = [m for m in imported if first < m["seq"] < last]
        assert len(between) <= 1, [m["body"] for m in between]
        await env.landed(*[f"old: {i:03d}" for i in range(count)], limit=120)  # and the import carries on
        assert_once(await env.messages())

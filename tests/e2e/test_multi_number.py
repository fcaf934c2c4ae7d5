"""Issue 15, several numbers per location, end to end against the sandbox over real loopback: two
WhatsApp numbers linked to one HighLevel location. A reply goes from the number its contact last wrote
to, a contact who never wrote gets the location's default number, a reply whose number is down waits
(its reason in the message log) and goes from that number once it is back — or, with "fall back to
another number" on, from the other number, the log saying so — and the stickiness holds through a
restart of the app (a new App on the same data directory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.adapters.ghl.tls import ssl_context
from ghl_desktop.adapters.storage.tx import RecordNotFound
from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
from ghl_desktop.app import App
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.models import WAITING_PREFIX, Message, MessageStatus, SessionState, WhatsAppSession
from ghl_desktop.headless import SANDBOX_LINKED_PHONE, ensure_linked
from ghl_desktop.runtime import BridgeRuntime
from ghl_desktop.sandbox.consent import ConsentClicker
from ghl_desktop.sandbox.oauth import any_port
from ghl_desktop.sandbox.server import running_sandbox
from ghl_desktop.sandbox_mode import point_sandbox_webhooks
from ghl_desktop.services.bridge import BridgeOptions, MessageLogged
from ghl_desktop.services.cockpit import Cockpit
from ghl_desktop.services.events import SessionQr
from tests.e2e.harness import FAST_RUNTIME, Env, eventually
from tests.fakes.secrets import MemorySecretStore

N1 = SANDBOX_LINKED_PHONE  # "+15550100001", linked first (ensure_linked)
N2 = "+15550100002"
ALICE = "+4915112340001"
BOB = "+4915112340002"
CAROL = "+4915112340003"

# a waiting reply looks again every 0.1 s (the default is 10 s): the test does not sit out the wait
OPTIONS = replace(FAST_RUNTIME, bridge=BridgeOptions(session_wait_seconds=0.1))


@dataclass
class Multi:
    """The sandbox, the app and its bridge; ``restart`` replaces the app and bridge by new ones on the
    same data directory and secrets, as quitting and starting the app again does."""

    env: Env
    settings: Settings
    secrets: MemorySecretStore

    async def restart(self) -> None:
        await self.env.runtime.stop()
        await self.env.app.aclose()
        app, runtime = await _start(self.env.sandbox.url, self.settings, self.secrets)
        self.env = Env(self.env.sandbox, app, runtime, self.env.http)
        await both_connected(self.env)

    async def close(self) -> None:
        await self.env.runtime.stop()
        await self.env.app.aclose()


async def _start(url: str, settings: Settings, secrets: MemorySecretStore) -> tuple[App, BridgeRuntime]:
    app = await asyncio.to_thread(lambda: App(settings, secrets=secrets, console_log=False, sandbox=True))
    runtime = BridgeRuntime(app, simulated_transport_factory(url), OPTIONS, open_url=ConsentClicker())
    try:
        await runtime.start()
        await point_sandbox_webhooks(url, runtime.webhooks.url)
        await ensure_linked(runtime, url, asyncio.Event())
    except BaseException:
        await runtime.stop()
        await app.aclose()
        raise
    return app, runtime


@asynccontextmanager
async def two_numbers() -> AsyncIterator[Multi]:
    """A location with two linked, connected numbers: N1 (linked first) and N2."""
    options: dict[str, Any] = {"status_race_seconds": 0.2, "webhook_retry_seconds": 0.05, "locations": 1,
               "redirect_uris": [any_port(app_registration().redirect_uri)]}
    async with running_sandbox(**options) as sb:
        settings = replace(
            load_settings(), api_base=sb.url, marketplace_base=sb.url, client_id=sb.client_id,
            client_secret=sb.client_secret, provider_id=sb.provider_id,
            webhook_ed25519_public_key=sb.public_key_pem,
        )
        secrets = MemorySecretStore()
        http = httpx.AsyncClient(timeout=30, verify=ssl_context())
        multi: Multi | None = None
        try:
            app, runtime = await _start(sb.url, settings, secrets)
            multi = Multi(Env(sb, app, runtime, http), settings, secrets)
            await link_second_number(multi.env, N2)
            yield multi
            assert (await multi.env.state())["validation_failures"] == 0
        finally:
            if multi is not None:
                await multi.close()
            await http.aclose()


async def link_second_number(env: Env, phone: str) -> WhatsAppSession:
    """Link ``phone`` to the location as the window does: a new session, its QR code scanned."""
    codes: dict[str, str] = {}

    def on_qr(event: SessionQr) -> None:
        codes.setdefault(event.session_id, event.code)

    unsubscribe = env.app.bus.subscribe(SessionQr, on_qr)
    try:
        created = await env.http.post(f"{env.url}/_sandbox/phones", json={"phone": phone, "name": "Second phone"})
        created.raise_for_status()
        session = await env.runtime.sessions.create_session(env.location_id)
        code = await eventually(lambda: codes.get(session.id), 30)
        scan = await env.http.post(f"{env.url}/_sandbox/whatsapp/scan", json={"qr": code, "phone": phone})
        scan.raise_for_status()
    finally:
        unsubscribe()
    await both_connected(env)
    return session


async def numbers(env: Env) -> dict[str, WhatsAppSession]:
    """The location's numbers by phone."""
    return {s.phone: s for s in await env.app.db.aio.sessions.list(env.location_id) if s.phone}


async def both_connected(env: Env) -> None:
    async def up() -> bool:
        found = await numbers(env)
        return {N1, N2} <= set(found) and all(env.runtime.sessions.transport_for(found[p].id) for p in (N1, N2))

    await eventually(up, 30)


async def set_up(env: Env, phone: str, up: bool) -> None:
    """Take ``phone`` down (its connection refused until brought up again) or bring it up."""
    body = {"kind": "disconnect", "refuse_connects": 1_000_000} if not up else {"kind": "clear"}
    answer = await env.http.post(f"{env.url}/_sandbox/whatsapp/{phone}/drop", json=body)
    answer.raise_for_status()
    session = (await numbers(env))[phone]

    async def there() -> bool:
        live = env.runtime.sessions.transport_for(session.id) is not None
        if up:
            return live
        stored = await env.app.db.aio.sessions.get(session.id)
        return not live and stored is not None and stored.state is not SessionState.CONNECTED

    await eventually(there, 30)


async def delivered_from(env: Env, customer: str, text: str) -> str:
    """The number that carried ``text`` to ``customer``'s phone (waits for it to arrive)."""
    async def arrived() -> list[dict[str, Any]]:
        return [m for m in await env.inbox(customer) if m.get("text") == text]

    got = await eventually(arrived, 30)
    assert len(got) == 1, got  # exactly once
    return str(got[0]["from"])


async def row_of(env: Env, ghl_id: str) -> Message:
    row = await eventually(lambda: env.app.db.aio.messages.by_ghl_id(env.location_id, ghl_id), 30)
    assert isinstance(row, Message)
    return row


async def logged_number(env: Env, ghl_id: str) -> str | None:
    """The message log's number column for the reply ``ghl_id``."""
    row = await row_of(env, ghl_id)
    assert row.id is not None
    [line] = await env.app.db.aio.message_log.rows([row.id])
    return line.number


async def write_in(env: Env, customer: str, to: str, text: str) -> str:
    """``customer`` writes to the linked number ``to``; returns the HighLevel contact once it landed."""
    answer = await env.http.post(f"{env.url}/_sandbox/phones/{customer}/send", json={"to": to, "text": text})
    assert answer.status_code == 201, answer.text
    alt = answer.json()["id"]

    async def landed() -> str | None:
        return next((m["contactId"] for m in await env.messages() if m.get("altId") == alt), None)

    return str(await eventually(landed, 30))


@pytest.mark.asyncio
async def test_replies_stick_to_the_number_the_contact_wrote_to_and_wait_for_it() -> None:
    async with two_numbers() as multi:
        env = multi.env
        cockpit = Cockpit(env.app, env.runtime)
        try:
            location = env.location_id
            by_phone = await numbers(env)
            for phone, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")):
                await env.customer(phone, name)
            alice = await write_in(env, ALICE, N1, "hello number one")
            bob = await write_in(env, BOB, N2, "hello number two")

            # each reply goes from the number its contact wrote to, and the log says which
            to_alice = await env.reply(alice, "Hi Alice")
            to_bob = await env.reply(bob, "Hi Bob")
            assert await delivered_from(env, ALICE, "Hi Alice") == N1
            assert await delivered_from(env, BOB, "Hi Bob") == N2
            assert await logged_number(env, to_alice) == N1
            assert await logged_number(env, to_bob) == N2

            # a contact who never wrote in: the location's default number (N2 here, not the first linked)
            assert (await cockpit.number_routing(location)).default_session_id is None
            with pytest.raises(RecordNotFound):  # only a number of this location can be its default
                await cockpit.set_default_number(location, "no-such-number")
            routing = await cockpit.set_default_number(location, by_phone[N2].id)
            assert routing.default_session_id == by_phone[N2].id and not routing.fallback
            carol = await env.add_contact(CAROL, "Carol")
            to_carol = await env.reply(carol, "Hi Carol, we never spoke")
            assert await delivered_from(env, CAROL, "Hi Carol, we never spoke") == N2
            assert await logged_number(env, to_carol) == N2
            # the default never overrides a contact's own number
            await env.reply(alice, "Still me, Alice")
            assert await delivered_from(env, ALICE, "Still me, Alice") == N1

            # N1 down: Alice's reply waits, visibly, rather than going from N2
            await set_up(env, N1, up=False)
            seen: list[Message] = []
            unsubscribe = env.app.bus.subscribe(MessageLogged, lambda event: seen.append(event.message))
            waiting = await env.reply(alice, "Sent while number one is down")
            reason = f"{N1} is disconnected"

            async def waits() -> Message | None:
                row = await row_of(env, waiting)
                return row if row.error == WAITING_PREFIX + reason else None

            row = await eventually(waits, 30)
            assert row.status is MessageStatus.PENDING and row.session_id == by_phone[N1].id
            assert await logged_number(env, waiting) == N1
            [line] = await env.app.db.aio.message_log.rows([row.id])
            assert line.error == f"waiting: {N1} is disconnected"
            assert any(m.id == row.id and m.error == WAITING_PREFIX + reason for m in seen)  # the panel hears it
            unsubscribe()
            details = await env.app.db.aio.message_log.details(row.id)
            assert details is not None
            assert any(job.last_error == WAITING_PREFIX + reason for job in details.jobs)  # the job's reason too
            await asyncio.sleep(0.5)  # several retries (every 0.1 s) meanwhile: still not sent from N2
            assert not [m for m in await env.inbox(ALICE) if m.get("text") == "Sent while number one is down"]

            # N1 back: it goes, from N1, once, and the waiting note is gone
            await set_up(env, N1, up=True)
            assert await delivered_from(env, ALICE, "Sent while number one is down") == N1
            sent = await eventually(lambda: _sent(env, waiting), 30)
            assert sent.error is None and sent.session_id == by_phone[N1].id

            # with "fall back to another number" on, N1 down: from N2, and the log says so
            assert (await cockpit.set_number_fallback(location, True)).fallback
            await set_up(env, N1, up=False)
            fallback = await env.reply(alice, "Fallback while number one is down")
            assert await delivered_from(env, ALICE, "Fallback while number one is down") == N2
            row = await eventually(lambda: _sent(env, fallback), 30)
            assert row.error == (f"sent from {N2} instead: {N1} is disconnected "
                                 "(fall back to another number is on)")
            assert await logged_number(env, fallback) == N2
            await set_up(env, N1, up=True)
            await cockpit.set_number_fallback(location, False)
        finally:
            cockpit.close()

        # through a restart: Alice still gets N1 (she wrote to it; the fallback reply did not move her),
        # Bob N2, and the default and fallback settings are kept
        await multi.restart()
        env = multi.env
        await env.reply(alice, "After the restart, Alice")
        await env.reply(bob, "After the restart, Bob")
        assert await delivered_from(env, ALICE, "After the restart, Alice") == N1
        assert await delivered_from(env, BOB, "After the restart, Bob") == N2
        routing = await env.app.db.aio.routing.get(location)
        assert routing.default_session_id == by_phone[N2].id and routing.fallback is False


async def _sent(env: Env, ghl_id: str) -> Message | None:
    row = await row_of(env, ghl_id)
    return row if row.status.rank >= MessageStatus.SENT.rank else None

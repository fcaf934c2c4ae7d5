"""The desktop's side of relay mode: one outgoing WebSocket to ``ghl-relay``.

Each streamed event is stored in the desktop's JobQueue through the same intake as direct mode
(same dedupe keys, so an event the relay re-sends after a lost ack is stored once), and only then
acknowledged. If the queue cannot take it (backlog full, database busy) the client does not ack,
drops the connection and comes back later: the relay re-sends from the first unacknowledged event,
so order is kept. OAuth codes are never written to the database: they are handed to whoever waits
for them through :class:`OAuthCodeReceived` on the bus.

Reconnects use capped, jittered exponential backoff. A 401 means the token was revoked or mistyped:
retrying cannot help, so the client stops in state ``unauthorized`` until it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp

from ghl_desktop.core.errors import MalformedWebhook, WebhookBacklogFull
from ghl_desktop.core.events import EventBus
from ghl_desktop.relay.server import STREAM_PATH
from ghl_desktop.webhooks.gate import KIND_OAUTH_CODE
from ghl_desktop.webhooks.intake import WebhookIntake

log = logging.getLogger("ghl.relay.client")


class RelayLinkState(StrEnum):
    """Where the desktop's link to its relay stands; the UI and tray show only this."""

    STOPPED = "stopped"  # not started, or stopped by the app
    CONNECTING = "connecting"  # first attempt in progress
    CONNECTED = "connected"  # stream open; events flow into the local queue
    RECONNECTING = "reconnecting"  # dropped or refused; retrying by itself with backoff
    UNAUTHORIZED = "unauthorized"  # the relay refused the token (401): the user must paste a new one (final)


@dataclass(frozen=True)
class RelayStateChanged:
    state: RelayLinkState
    detail: str | None = None
    retry_in: float | None = None  # seconds until the next attempt, while reconnecting


@dataclass(frozen=True)
class OAuthCodeReceived:
    """The relay received HighLevel's OAuth redirect. ``code`` is a credential: never log it."""

    state: str | None
    code: str | None = field(repr=False, default=None)
    error: str | None = None


@dataclass(frozen=True)
class RelayEventRejected:
    """The relay streamed an event this desktop cannot accept (different versions?); it was dropped."""

    event_id: int
    kind: str
    reason: str


class _Unauthorized(Exception):
    pass


class _Deferred(Exception):
    """The local queue could not take an event right now; reconnect later and get it again."""


def stream_url(relay_url: str) -> str:
    base = relay_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + STREAM_PATH


class RelayClient:
    def __init__(
        self,
        relay_url: str,
        token: str,
        intake: WebhookIntake,
        *,
        bus: EventBus | None = None,
        on_state: Callable[[RelayStateChanged], None] | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        heartbeat: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.url = stream_url(relay_url)
        self._token = token
        self._intake = intake
        self._bus = bus
        self._on_state = on_state
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.heartbeat = heartbeat
        self._rng = rng
        self._state = RelayLinkState.STOPPED
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.received = 0  # events stored (new or duplicate) and acknowledged since start

    @property
    def state(self) -> RelayLinkState:
        return self._state

    def _set_state(self, state: RelayLinkState, detail: str | None = None, retry_in: float | None = None) -> None:
        if state is self._state and state is not RelayLinkState.RECONNECTING:
            return
        self._state = state
        change = RelayStateChanged(state, detail, retry_in)
        log.info("relay link %s%s", state, f": {detail}" if detail else "")
        if self._on_state is not None:
            try:
                self._on_state(change)
            except Exception:
                log.exception("relay state callback failed")
        if self._bus is not None:
            self._bus.publish(change)

    def start(self) -> None:
        """Run in the background until :meth:`stop` or a 401."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="relay-client")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state(RelayLinkState.STOPPED)

    def backoff(self, attempt: int) -> float:
        """Capped exponential backoff with jitter (50–100 % of the step) so desktops do not stampede."""
        step: float = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt, 30))
        return step * (0.5 + self._rng() / 2)

    async def run(self) -> None:
        attempt = 0
        self._set_state(RelayLinkState.CONNECTING)
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._connect_once(session)
                    attempt = 0  # the link worked; a later drop starts the backoff afresh
                    detail = "the relay closed the stream"
                except _Unauthorized:
                    self._set_state(RelayLinkState.UNAUTHORIZED, "the relay refused this desktop's token")
                    return
                except _Deferred as exc:
                    detail = str(exc)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    detail = f"cannot reach the relay ({type(exc).__name__})"
                except Exception as exc:  # a bug must not end the link silently: log, back off, retry
                    log.exception("relay link failed unexpectedly")
                    detail = f"unexpected error ({type(exc).__name__})"
                delay = self.backoff(attempt)
                attempt += 1
                self._set_state(RelayLinkState.RECONNECTING, detail, delay)
                await asyncio.sleep(delay)

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        try:
            ws = await session.ws_connect(
                self.url,
                headers={"Authorization": f"Bearer {self._token}"},
                heartbeat=self.heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                max_msg_size=4 * 1024 * 1024,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise _Unauthorized from exc
            raise
        self._ws = ws
        self._set_state(RelayLinkState.CONNECTED)
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._handle_frame(ws, msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self._ws = None
            await ws.close()

    async def _handle_frame(self, ws: aiohttp.ClientWebSocketResponse, data: str) -> None:
        try:
            frame = json.loads(data)
            event_id, kind, event = frame["id"], frame["kind"], frame["event"]
            if not isinstance(event_id, int) or not isinstance(kind, str) or not isinstance(event, dict):
                raise ValueError("bad frame field types")
        except (ValueError, KeyError, TypeError):
            log.error("relay sent an unreadable frame; closing the stream")
            raise _Deferred("the relay sent an unreadable frame") from None
        if kind == KIND_OAUTH_CODE:
            self._deliver_oauth(event)
        else:
            try:
                self._intake.store_relayed(kind, event)
            except WebhookBacklogFull as exc:
                raise _Deferred(exc.message) from exc
            except MalformedWebhook as exc:
                # Acking drops it, but not acking would block every later event for good.
                log.error("dropping relayed event %d (%s): %s", event_id, kind, exc.message)
                if self._bus is not None:
                    self._bus.publish(RelayEventRejected(event_id, kind, exc.message))
        await ws.send_str(json.dumps({"ack": event_id}))
        self.received += 1

    def _deliver_oauth(self, event: dict[str, Any]) -> None:
        code, state, error = event.get("code"), event.get("state"), event.get("error")
        log.info("OAuth redirect received through the relay%s", f" (error {error})" if error else "")
        if self._bus is not None:
            self._bus.publish(OAuthCodeReceived(
                state=state if isinstance(state, str) else None,
                code=code if isinstance(code, str) else None,
                error=error if isinstance(error, str) else None,
            ))

    async def drop_connection(self) -> None:
        """Close the current stream (the run loop reconnects after its backoff)."""
        if self._ws is not None:
            await self._ws.close()


__all__ = [
    "OAuthCodeReceived",
    "RelayClient",
    "RelayEventRejected",
    "RelayLinkState",
    "RelayStateChanged",
    "stream_url",
]

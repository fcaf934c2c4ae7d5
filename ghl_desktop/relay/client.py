"""The desktop's side of relay mode: one outgoing WebSocket to ``ghl-relay``.

Each streamed event is stored in the desktop's JobQueue through the same intake as direct mode
(same dedupe keys, so an event the relay re-sends after a lost ack is stored once), and only then
acknowledged. If the queue cannot take it (backlog full, database busy) the client does not ack,
drops the connection and comes back later: the relay re-sends from the first unacknowledged event,
so order is kept. OAuth codes are never written to the database: they are handed to whoever waits
for them through :class:`OAuthCodeReceived` on the bus.

An event the desktop can never store (nesting too deep to parse, a shape this version refuses) must
not block the stream: it is quarantined — kept as a dead-lettered job of kind
``relay.quarantined`` with the reason and an excerpt of the frame (visible in the Dead letters tab),
announced as :class:`RelayEventRejected` — and then acknowledged. Only a full or unavailable local
store (which will recover) leaves an event unacknowledged.

Sign-in through the relay (:meth:`RelayClient.expect_authorization` / :meth:`wait_authorization`):
the desktop registers the OAuth ``state`` with the relay before opening the browser, so the relay
hands the redirect to this desktop only; the connector then waits for the code with that state.

Reconnects use capped, jittered exponential backoff. A 401 means the token was revoked or mistyped:
retrying cannot help, so the client stops in state ``unauthorized`` until it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp

from ghl_desktop.core.backoff import backoff_ceiling
from ghl_desktop.core.errors import MalformedWebhook, OAuthError, WebhookBacklogFull
from ghl_desktop.core.events import EventBus
from ghl_desktop.relay.server import (
    CLOSE_REVOKED,
    OAUTH_AUTHORIZATIONS_PATH,
    OAUTH_CALLBACK_PATH,
    STREAM_PATH,
    WORKER_HEADER,
)
from ghl_desktop.webhooks.gate import KIND_OAUTH_CODE, MAX_JSON_DEPTH, json_depth
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


#: the relay writes frames as ``{"id":N,...``; used to acknowledge a frame too deep to parse
_FRAME_ID = re.compile(r'\A\s*\{\s*"id"\s*:\s*(\d{1,19})\s*,')


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
        worker: str | None = None,
    ) -> None:
        self.base_url = relay_url.rstrip("/")
        #: a cluster worker's name (issue 14): its stream then runs beside the other workers' ones
        self.worker = worker
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
        self.quarantined = 0  # events acknowledged without being stored (kept as dead letters)
        self._authorizations: dict[str, asyncio.Future[str]] = {}

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
        """The product's capped exponential step (core.backoff) with jitter over 50–100 % of it, so
        desktops do not stampede and a flapping relay is never redialled in a tight loop."""
        return backoff_ceiling(attempt, self.backoff_initial, self.backoff_max) * (0.5 + self._rng() / 2)

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
            headers = {"Authorization": f"Bearer {self._token}"}
            if self.worker:
                headers[WORKER_HEADER] = self.worker
            ws = await session.ws_connect(
                self.url,
                headers=headers,
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
        if ws.close_code == CLOSE_REVOKED:
            raise _Unauthorized

    async def _handle_frame(self, ws: aiohttp.ClientWebSocketResponse, data: str) -> None:
        try:
            frame = json.loads(data)
            event_id, kind, event = frame["id"], frame["kind"], frame["event"]
            if not isinstance(event_id, int) or not isinstance(kind, str) or not isinstance(event, dict):
                raise ValueError("bad frame field types")
        except RecursionError:
            found = _FRAME_ID.match(data)
            if found is None:
                raise _Deferred("the relay sent an unreadable frame") from None
            await self._quarantine(ws, int(found.group(1)), "?", data,
                                   f"nested deeper than {MAX_JSON_DEPTH} levels")
            return
        except (ValueError, KeyError, TypeError):
            log.error("relay sent an unreadable frame; closing the stream")
            raise _Deferred("the relay sent an unreadable frame") from None
        if kind == KIND_OAUTH_CODE:
            self._deliver_oauth(event)
        elif json_depth(event) > MAX_JSON_DEPTH:
            await self._quarantine(ws, event_id, kind, data, f"nested deeper than {MAX_JSON_DEPTH} levels")
            return
        else:
            try:
                await self._intake.store_relayed(kind, event)
            except WebhookBacklogFull as exc:  # full or unavailable store: it recovers, come back later
                raise _Deferred(exc.message) from exc
            except MalformedWebhook as exc:
                await self._quarantine(ws, event_id, kind, data, exc.message)
                return
            except Exception as exc:  # anything else would block every later event for good
                log.exception("relayed event %d (%s) cannot be processed", event_id, kind)
                await self._quarantine(ws, event_id, kind, data, f"cannot be processed ({type(exc).__name__})")
                return
        await ws.send_str(json.dumps({"ack": event_id}))
        self.received += 1

    async def _quarantine(self, ws: aiohttp.ClientWebSocketResponse, event_id: int, kind: str, data: str,
                          reason: str) -> None:
        """Keep an event this desktop cannot process as a dead letter, then acknowledge it."""
        log.error("quarantining relayed event %d (%s): %s", event_id, kind, reason)
        digest = hashlib.sha256(data.encode("utf-8", "replace")).hexdigest()
        try:
            await self._intake.quarantine(kind, data, reason, key=f"relay:{digest}", relay_event_id=event_id)
        except WebhookBacklogFull as exc:  # cannot even keep it: leave it unacknowledged
            raise _Deferred(exc.message) from exc
        if self._bus is not None:
            self._bus.publish(RelayEventRejected(event_id, kind, reason))
        await ws.send_str(json.dumps({"ack": event_id}))
        self.quarantined += 1

    def _deliver_oauth(self, event: dict[str, Any]) -> None:
        code, state, error = event.get("code"), event.get("state"), event.get("error")
        log.info("OAuth redirect received through the relay%s", f" (error {error})" if error else "")
        waiter = self._authorizations.get(state) if isinstance(state, str) else None
        if waiter is not None and not waiter.done():
            if isinstance(code, str) and code:
                waiter.set_result(code)
            else:
                reason = event.get("error_description") or error or "no code"
                waiter.set_exception(OAuthError(f"HighLevel did not grant access: {reason}"))
        elif waiter is None:
            log.warning("the relay handed over a sign-in this desktop is not waiting for; ignored")
        if self._bus is not None:
            self._bus.publish(OAuthCodeReceived(
                state=state if isinstance(state, str) else None,
                code=code if isinstance(code, str) else None,
                error=error if isinstance(error, str) else None,
            ))

    # --- sign-in through the relay (adapters.ghl.oauth.RelayHandoff) -----------------------------

    @property
    def oauth_redirect_uri(self) -> str:
        """The redirect URI to register with HighLevel for sign-ins through this relay."""
        return self.base_url + OAUTH_CALLBACK_PATH

    async def expect_authorization(self, state: str) -> None:
        """Tell the relay that this desktop starts a sign-in with ``state`` (before opening the browser)."""
        self._authorizations[state] = asyncio.get_running_loop().create_future()
        try:
            async with aiohttp.ClientSession() as http, http.post(
                self.base_url + OAUTH_AUTHORIZATIONS_PATH, json={"state": state},
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as resp:
                if resp.status == 401:
                    raise OAuthError("the relay refused this desktop's token; paste a new relay token")
                if resp.status != 200:
                    raise OAuthError(f"the relay could not start the sign-in (HTTP {resp.status})")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._authorizations.pop(state, None)
            raise OAuthError(f"cannot reach the relay to start the sign-in ({type(exc).__name__})") from exc
        except OAuthError:
            self._authorizations.pop(state, None)
            raise

    async def wait_authorization(self, state: str, limit_seconds: float) -> str:
        """The code the relay streams for ``state``; OAuthError on a denial or after ``limit_seconds``."""
        waiter = self._authorizations.get(state)
        if waiter is None:
            raise RuntimeError("expect_authorization was not called for this state")
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=limit_seconds)
        except TimeoutError:
            raise OAuthError(f"no authorization arrived through the relay within {limit_seconds:g} s") from None
        finally:
            self._authorizations.pop(state, None)

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

"""Webhooks the sandbox sends: ProviderOutboundMessage to the delivery URL, INSTALL/UNINSTALL to the app URL.

Signed like HighLevel's current scheme: Ed25519 over the raw body bytes, base64, in ``x-ghl-signature``
(docs/highlevel-api.md §5). Delivery follows HighLevel's documented policy (docs/highlevel-api.md §2.2,
HELP 155000007071): a 2xx is
delivered; a 429 is retried later (up to 6 times, ~10 min apart with jitter; the interval is
configurable so tests stay fast); anything else (other status, timeout, refused connection) is final and
the event is lost. Every outcome is recorded on the delivery.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from typing import TYPE_CHECKING, Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ghl_desktop.sandbox.state import WebhookDelivery, new_id

if TYPE_CHECKING:
    from ghl_desktop.sandbox.runtime import Sandbox

log = logging.getLogger("ghl.sandbox.webhooks")

SIGNATURE_HEADER = "x-ghl-signature"


def sign(private_key_pem: str, body: bytes) -> str:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("the sandbox signing key must be Ed25519")
    return base64.b64encode(key.sign(body)).decode()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class WebhookSender:
    """Sends one webhook, records the outcome, retries on 429 in the background."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        #: deliveries with an attempt or a retry under way in this process
        self._active: set[str] = set()

    def active(self, delivery: WebhookDelivery) -> bool:
        return delivery.id in self._active

    def mark_active(self, delivery: WebhookDelivery) -> None:
        self._active.add(delivery.id)

    def new_delivery(self, kind: str, url: str | None, payload: dict[str, Any],
                     message_id: str | None = None) -> WebhookDelivery:
        delivery = WebhookDelivery(id=new_id(), kind=kind, url=url, payload=payload, message_id=message_id,
                                   created_at=self._sandbox.state.now())
        self._sandbox.state.deliveries.append(delivery)
        self._active.add(delivery.id)
        return delivery

    async def attempt(self, delivery: WebhookDelivery) -> None:
        """One attempt; on a 429 schedules the next one (in the background) until retries run out."""
        self._active.add(delivery.id)
        try:
            await self._attempt(delivery)
        finally:
            if delivery.status != "retrying":
                self._active.discard(delivery.id)

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        sandbox = self._sandbox
        config = sandbox.config
        if sandbox.holding_webhooks:
            log.info("webhook %s %s held for the next run (the receiver is shutting down)", delivery.kind, delivery.id)
            sandbox.changed()
            return
        if not delivery.url:
            delivery.status = "lost"
            delivery.error = "no webhook URL configured"
            sandbox.changed()
            return
        body = encode(delivery.payload)
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(sandbox.state.signing_key_pem, body)}
        delivery.attempts += 1
        try:
            session = sandbox.http()
            timeout = aiohttp.ClientTimeout(total=config.webhook_timeout)
            async with session.post(delivery.url, data=body, headers=headers, timeout=timeout) as resp:
                delivery.last_status_code = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.status = "lost"
            delivery.error = f"{type(exc).__name__}: {exc}"
            log.info("webhook %s %s lost: %s", delivery.kind, delivery.id, delivery.error)
            sandbox.changed()
            return
        code = delivery.last_status_code
        if 200 <= code < 300:
            delivery.status = "delivered"
            delivery.error = None
        elif code == 429 and delivery.attempts <= config.webhook_max_retries:
            delivery.status = "retrying"
            delay = config.webhook_retry_seconds * random.uniform(0.8, 1.2)
            sandbox.spawn(self._retry_later(delivery, delay))
        else:
            delivery.status = "lost"
            delivery.error = f"HTTP {code}"
        log.info("webhook %s %s -> %s (%s)", delivery.kind, delivery.id, code, delivery.status)
        sandbox.changed()

    async def _retry_later(self, delivery: WebhookDelivery, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.attempt(delivery)

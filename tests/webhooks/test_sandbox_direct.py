"""Direct mode against helper B's sandbox: its signed reply, INSTALL and UNINSTALL webhooks land in a
real SQLite job queue; a sandbox signed with a key we do not trust gets refused (and loses the event,
as HighLevel would)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.config import Settings
from ghl_desktop.sandbox.server import running_sandbox
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH, WebhookServer
from ghl_desktop.webhooks.gate import KIND_APP_EVENT, KIND_OUTBOUND_MESSAGE
from ghl_desktop.webhooks.intake import WebhookIntake
from tests.relay.helpers import wait_for


@pytest.mark.asyncio
async def test_sandbox_webhooks_into_the_desktop_queue(db: Database) -> None:
    server: WebhookServer | None = None
    async with running_sandbox(locations=1) as sb:
        settings = replace(Settings(), webhook_port=0, webhook_ed25519_public_key=sb.public_key_pem)
        server = WebhookServer(settings, WebhookIntake(db.aio.jobs))
        url = await server.start()
        try:
            sb.state.webhook_url = url + PROVIDER_PATH
            sb.state.app_webhook_url = url + APP_PATH
            location = sb.location_ids[0]
            sb.sandbox.install([location], "Location")
            await wait_for(lambda: db.jobs.count() == 1, "INSTALL stored")
            contact = sb.sandbox.create_contact(location, "+15550100001")
            result = await sb.reply(location, contact.id, "hello from the inbox")
            assert result["delivery"]["statusCode"] == 200
            sb.sandbox.uninstall(location)
            await wait_for(lambda: db.jobs.count() == 3, "reply and UNINSTALL stored")
        finally:
            await server.stop()
    jobs = db.jobs.list()
    assert [(j.kind, j.payload["event"].get("type")) for j in jobs] == [
        (KIND_APP_EVENT, "INSTALL"), (KIND_OUTBOUND_MESSAGE, "SMS"), (KIND_APP_EVENT, "UNINSTALL")]
    assert jobs[1].payload["event"]["messageId"] == result["messageId"]
    assert jobs[1].payload["event"]["message"] == "hello from the inbox"
    assert all(j.payload["signature"] == "ed25519" for j in jobs)


@pytest.mark.asyncio
async def test_sandbox_with_an_untrusted_key_is_refused(db: Database) -> None:
    async with running_sandbox(locations=1) as sb:
        server = WebhookServer(replace(Settings(), webhook_port=0), WebhookIntake(db.aio.jobs))  # HighLevel's keys
        url = await server.start()
        try:
            sb.state.webhook_url = url + PROVIDER_PATH
            location = sb.location_ids[0]
            contact = sb.sandbox.create_contact(location, "+15550100002")
            result = await sb.reply(location, contact.id, "forged?")
        finally:
            await server.stop()
    assert result["delivery"]["statusCode"] == 401
    assert db.jobs.count() == 0

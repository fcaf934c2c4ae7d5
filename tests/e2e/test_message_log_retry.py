"""Retry from the message log, end to end: an agent's reply to a number not on WhatsApp fails with
that reason; the person joins WhatsApp; Retry (MessageLogService, as the panel calls it) sends the
same message once — the bridge asks WhatsApp again instead of failing from its cache — and a second
Retry does nothing."""

from __future__ import annotations

from typing import Any

import pytest

from ghl_desktop.core.models import MessageStatus
from ghl_desktop.services.message_log import MessageLogService
from tests.e2e.harness import bridge_env, eventually

LATE_JOINER = "+4915166666666"


@pytest.mark.asyncio
async def test_retry_sends_a_failed_reply_once_after_the_recipient_joined_whatsapp() -> None:
    async with bridge_env() as env:
        log = MessageLogService.for_app(env.app, env.runtime)
        contact = await env.add_contact(LATE_JOINER, "Late Joiner")
        ghl_id = await env.reply(contact, "Your appointment is confirmed")

        def failed() -> Any:
            row = env.app.db.messages.by_ghl_id(env.location_id, ghl_id)
            return row if row is not None and row.status is MessageStatus.FAILED else None

        row = await eventually(failed, 30)
        assert "not on WhatsApp" in (row.error or "")
        assert (await log.details(row.id)).retryable  # type: ignore[union-attr]

        await env.customer(LATE_JOINER, "Late Joiner")  # now on WhatsApp
        result = await log.retry_message(row.id)
        assert result.requeued == 1

        async def delivered() -> bool:
            inbox = await env.inbox(LATE_JOINER)
            return any(m.get("text") == "Your appointment is confirmed" for m in inbox)

        await eventually(delivered, 30)
        await eventually(lambda: env.app.db.messages.get(row.id).status.rank >= MessageStatus.SENT.rank, 30)
        assert (await log.retry_message(row.id)).requeued == 0  # a second press: nothing left to retry
        await env.runtime.runner.run_until_idle(10)
        inbox = await env.inbox(LATE_JOINER)
        assert sum(1 for m in inbox if m.get("text") == "Your appointment is confirmed") == 1
        assert env.app.db.messages.get(row.id).error is None  # type: ignore[union-attr]

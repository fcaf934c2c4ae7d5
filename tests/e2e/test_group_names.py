"""Issue 15, group names, end to end against the sandbox: a WhatsApp group's one HighLevel contact is
named after the group's subject; a group whose subject is not known yet is "WhatsApp group <id>" and
is renamed once it is; a name an agent gave the contact in HighLevel is never overwritten."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ghl_desktop.services.bridge import BridgeOptions
from tests.e2e.harness import FAST_RUNTIME, Env, bridge_env, eventually

ALICE = "+4915112345678"
BOOK_CLUB = "120363000000000101@g.us"
RUNNERS = "120363000000000102@g.us"
VIPS = "120363000000000103@g.us"

# a group whose subject is unknown is asked again at its next message (the default waits 60 s)
OPTIONS = replace(FAST_RUNTIME, bridge=BridgeOptions(group_subject_retry_seconds=0.0))


async def group_contact(env: Env, text: str) -> dict[str, Any]:
    """The HighLevel contact the message ``text`` (``Alice (+49…): text``) landed on."""
    async def landed() -> dict[str, Any] | None:
        state = await env.state()
        message = next((m for m in state["messages"] if str(m.get("body", "")).endswith(f": {text}")), None)
        if message is None:
            return None
        return dict(next(c for c in state["contacts"] if c["id"] == message["contactId"]))

    return dict(await eventually(landed, 30))


async def set_subject(env: Env, group: str, subject: str) -> None:
    answer = await env.http.post(f"{env.url}/_sandbox/whatsapp/groups/{group}", json={"subject": subject})
    answer.raise_for_status()


async def rename_in_highlevel(env: Env, contact_id: str, name: str) -> None:
    """An agent renames the contact in HighLevel (the contacts API, as the HighLevel app does)."""
    token = env.sandbox.location_token(env.location_id)["access_token"]
    answer = await env.http.put(f"{env.url}/contacts/{contact_id}", json={"name": name},
                                headers={"Authorization": f"Bearer {token}", "Version": "2021-07-28"})
    assert answer.status_code == 200, answer.text


@pytest.mark.asyncio
async def test_group_contacts_are_named_after_the_subject_and_an_agents_name_stays() -> None:
    async with bridge_env(OPTIONS) as env:
        await env.customer(ALICE, "Alice")

        # a group with a subject: its contact is named after it from the start
        await env.send(ALICE, text="first book?", group=BOOK_CLUB, group_subject="Book club")
        book_club = await group_contact(env, "first book?")
        assert book_club["name"] == "Book club"

        # no subject yet: the placeholder; the subject appears: renamed at the group's next message
        await env.send(ALICE, text="run at 7?", group=RUNNERS)
        runners = await group_contact(env, "run at 7?")
        assert runners["name"] == f"WhatsApp group {RUNNERS.split('@')[0]}"
        await set_subject(env, RUNNERS, "Running team")
        await env.send(ALICE, text="see you there", group=RUNNERS)
        again = await group_contact(env, "see you there")
        assert again["id"] == runners["id"]  # still the one contact of the group
        assert (await env.contact_for(name="Running team"))["id"] == runners["id"]

        # an agent named the contact in HighLevel: a later subject never overwrites that
        await env.send(ALICE, text="hello vips", group=VIPS)
        vips = await group_contact(env, "hello vips")
        await rename_in_highlevel(env, vips["id"], "VIP customers (do not rename)")
        await set_subject(env, VIPS, "vips 2026")
        await env.send(ALICE, text="anyone?", group=VIPS)
        await group_contact(env, "anyone?")
        await env.send(ALICE, text="still the same name?", group=VIPS)
        final = await group_contact(env, "still the same name?")
        assert final["id"] == vips["id"] and final["name"] == "VIP customers (do not rename)"
        link = await env.app.db.aio.contacts.find(env.location_id, wa_jid=VIPS)
        assert link is not None and link.name == "VIP customers (do not rename)"  # not asked again
        names = [c["name"] for c in (await env.state())["contacts"]]
        assert "vips 2026" not in names and names.count("Book club") == 1

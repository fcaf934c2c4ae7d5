"""Issue 15 end to end against the sandbox over real loopback: polls and votes, view-once and
disappearing messages, groups (sender prefix, replies to the group, ignore_groups), contact names
from the WhatsApp profile, calls (one line per call, optional automatic decline with a reply)."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from ghl_desktop.core.whatsapp import CallEvent, CallOutcome
from ghl_desktop.services.bridge import BridgeOptions
from tests.e2e.harness import FAST_RUNTIME, PNG, Env, bridge_env, eventually

ALICE = "+4915112345678"
BOB = "+4915187654321"
GROUP = "120363000000000042@g.us"


def by_alt(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["altId"]: m for m in messages if m.get("altId")}


async def landed(env: Env, *ids: str) -> dict[str, dict[str, Any]]:
    async def there() -> dict[str, dict[str, Any]] | None:
        got = by_alt(await env.messages())
        return got if set(ids) <= set(got) else None

    return dict(await eventually(there, 30))


@pytest.mark.asyncio
async def test_polls_votes_view_once_and_disappearing_messages_arrive_readably() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        poll = await env.send(ALICE, kind="poll", text="When shall we meet?",
                              poll={"name": "When shall we meet?", "options": ["Friday 3pm", "Monday 9am"]})
        vote = await env.send(ALICE, kind="poll_vote", target_id=poll, options=["Friday 3pm"])
        withdrawn = await env.send(ALICE, kind="poll_vote", target_id=poll, options=[])
        png = base64.b64encode(PNG).decode()
        once = await env.send(ALICE, kind="view_once",
                              media={"data": png, "mimetype": "image/png", "file_name": "once.png"})
        fleeting = await env.send(ALICE, text="see you tomorrow", ephemeral=True)
        got = await landed(env, poll, vote, withdrawn, once, fleeting)

        assert got[poll]["body"] == "📊 Poll: When shall we meet?\n• Friday 3pm\n• Monday 9am"
        assert got[vote]["body"] == "🗳 voted: Friday 3pm on “When shall we meet?”"
        assert got[withdrawn]["body"] == "🗳 Withdrew their vote on “When shall we meet?”"
        assert got[once]["body"].startswith("👁 View-once photo")
        assert len(got[once]["attachments"]) == 1  # carried (once: the message is posted once)
        assert got[fleeting]["body"] == "see you tomorrow\n⏳ Disappearing messages are on in this chat"
        alt_ids = [m["altId"] for m in await env.messages() if m.get("altId")]
        assert len(alt_ids) == len(set(alt_ids))


@pytest.mark.asyncio
async def test_group_messages_name_their_sender_and_replies_go_to_the_group() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        await env.customer(BOB, "Bob")
        first = await env.send(ALICE, text="hello group", group=GROUP)
        second = await env.send(BOB, text="hi Alice", group=GROUP)
        got = await landed(env, first, second)
        assert got[first]["body"] == f"Alice ({ALICE}): hello group"
        assert got[second]["body"] == f"Bob ({BOB}): hi Alice"
        assert got[first]["contactId"] == got[second]["contactId"]  # one HighLevel contact per group
        group_contact = got[first]["contactId"]
        assert group_contact not in {c["id"] for c in (await env.state())["contacts"] if c["phone"] in (ALICE, BOB)}

        await env.reply(group_contact, "Thanks both!")

        async def in_group() -> list[dict[str, Any]]:
            return [m for m in await env.inbox(ALICE) if m.get("text") == "Thanks both!"]

        delivered = await eventually(in_group, 30)
        assert delivered[0].get("chat") == GROUP or delivered[0].get("is_group")


@pytest.mark.asyncio
async def test_ignore_groups_drops_group_chats_entirely() -> None:
    options = replace(FAST_RUNTIME, bridge=BridgeOptions(ignore_groups=True))
    async with bridge_env(options) as env:
        await env.customer(ALICE, "Alice")
        dropped = await env.send(ALICE, text="hello group", group=GROUP)
        kept = await env.send(ALICE, text="just to you")
        got = await landed(env, kept)
        assert dropped not in got
        await asyncio.sleep(0.5)  # the group message came first (one socket, in order); nothing may follow
        assert dropped not in by_alt(await env.messages())
        assert all(c["name"] != f"WhatsApp group {GROUP.split('@')[0]}" for c in (await env.state())["contacts"])


@pytest.mark.asyncio
async def test_contact_name_comes_from_the_push_name_and_an_agents_name_stays() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice Profile")
        await env.customer(BOB, "Bob Profile")
        carol = "+4915100000003"
        await env.customer(carol, "Carol Profile")
        await env.add_contact(BOB, "Robert (VIP)")
        await env.add_contact(carol, "")  # in HighLevel already, without a name
        a = await env.send(ALICE, text="hi")
        b = await env.send(BOB, text="hello")
        c = await env.send(carol, text="hey")
        await landed(env, a, b, c)
        assert (await env.contact_for(phone=ALICE))["name"] == "Alice Profile"
        assert (await env.contact_for(phone=BOB))["name"] == "Robert (VIP)"
        assert (await env.contact_for(phone=carol))["name"] == "Carol Profile"


async def call(env: Env, phone: str, **body: Any) -> str:
    answer = await env.http.post(f"{env.url}/_sandbox/phones/{phone}/call", json={"to": env.linked, **body})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def call_lines(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    lines: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        if str(m.get("altId") or "").startswith("CALL-"):
            lines.setdefault(m["altId"].removeprefix("CALL-"), []).append(m)
    return lines


@pytest.mark.asyncio
async def test_each_call_becomes_one_readable_line_in_the_callers_conversation() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        missed = await call(env, ALICE)
        answered = await call(env, ALICE, video=True, outcome="answered")
        rejected = await call(env, ALICE, outcome="rejected")

        async def all_three() -> dict[str, list[dict[str, Any]]] | None:
            lines = call_lines(await env.messages())
            return lines if {missed, answered, rejected} <= set(lines) else None

        lines = await eventually(all_three, 30)
        contact = await env.contact_for(phone=ALICE)
        assert {m["contactId"] for ms in lines.values() for m in ms} == {contact["id"]}
        assert lines[missed][0]["body"].startswith("📞 Missed WhatsApp voice call at ")
        assert lines[answered][0]["body"].startswith("📞 Answered WhatsApp video call at ")
        assert lines[rejected][0]["body"].startswith("📞 Rejected WhatsApp voice call at ")
        hhmm = lines[missed][0]["body"].rsplit(" ", 1)[1]
        assert len(hhmm) == 5 and hhmm[2] == ":"

        # a late, repeated event of a call already carried adds nothing
        session = env.app.db.sessions.list()[0]
        again = CallEvent(call_id=missed, caller=f"{ALICE[1:]}@s.whatsapp.net", caller_phone=ALICE, video=False,
                          outcome=CallOutcome.MISSED, timestamp=datetime.now(UTC))
        await env.runtime.bridge.on_call(session, again)
        await asyncio.sleep(0.5)
        lines = call_lines(await env.messages())
        assert {k: len(v) for k, v in lines.items()} == {missed: 1, answered: 1, rejected: 1}


@pytest.mark.asyncio
async def test_calls_can_be_declined_automatically_with_a_reply() -> None:
    options = replace(FAST_RUNTIME, bridge=BridgeOptions(reject_calls=True, reject_call_text="Please write to us."))
    async with bridge_env(options) as env:
        await env.customer(ALICE, "Alice")
        call_id = await call(env, ALICE)

        async def replied() -> list[dict[str, Any]]:
            return [m for m in await env.inbox(ALICE) if m.get("text") == "Please write to us."]

        assert len(await eventually(replied, 30)) == 1

        async def declined() -> bool:
            answer = await env.http.get(f"{env.url}/_sandbox/phones/{ALICE}/sent")
            return any(e["id"] == call_id and e["status"] == "rejected" for e in answer.json())

        await eventually(declined, 30)
        lines = await eventually(lambda: _lines_for(env, call_id), 30)
        assert len(lines) == 1 and lines[0]["body"].startswith("📞 Rejected WhatsApp voice call at ")


async def _lines_for(env: Env, call_id: str) -> list[dict[str, Any]]:
    return call_lines(await env.messages()).get(call_id, [])

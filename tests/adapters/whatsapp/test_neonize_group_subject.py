"""Group names (issue 15) on the real engine's side: the transport reads a group's subject from
neonize's ``get_group_info`` answer (a real ``GroupInfo`` protobuf, from a recording stand-in for the
logged-in client, as in test_neonize_send.py) and asks once per group within the cache time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from neonize.proto import Neonize_pb2 as N

from ghl_desktop.adapters.whatsapp.neonize import NeonizeTransport
from ghl_desktop.adapters.whatsapp.neonize import outbound as neonize_outbound
from tests.adapters.whatsapp.test_neonize_send import logged_in_transport
from tests.fakes import neonize_events as fx

GROUP = "120363000000000042@g.us"
OTHER = "120363000000000043@g.us"


class GroupEngine:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.subjects = {"120363000000000042": "Book club", "120363000000000043": ""}
        self.uuid = b"groups"
        self.me = N.Device(JID=fx.jid(fx.OTHER_PHONE, device=7))  # neonize sets this once paired

    async def get_group_info(self, jid: N.JID) -> N.GroupInfo:
        self.asked.append((jid.User, jid.Server))
        if jid.User not in self.subjects:
            raise RuntimeError("failed to get group info: 404 item-not-found")
        return N.GroupInfo(JID=jid, GroupName=N.GroupName(Name=self.subjects[jid.User], NameSetAt=1_700_000_000))


def transport_with(tmp_path: Path, engine: GroupEngine) -> NeonizeTransport:
    return logged_in_transport(tmp_path, engine)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_subject_comes_from_get_group_info_and_is_cached(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    engine = GroupEngine()
    transport = transport_with(tmp_path, engine)
    assert await transport.group_subject(GROUP) == "Book club"
    assert await transport.group_subject(GROUP) == "Book club"
    assert engine.asked == [("120363000000000042", "g.us")]  # once: cached
    assert await transport.group_subject(OTHER) is None  # a group without a subject
    assert await transport.group_subject(OTHER) is None
    assert engine.asked.count(("120363000000000043", "g.us")) == 1  # the miss is cached too
    assert await transport.group_subject("120363000000000099@g.us") is None  # the engine's error: no name

    monkeypatch.setattr(neonize_outbound, "GROUP_SUBJECT_TTL", 0.0)  # the cache expires: asked again
    engine.subjects["120363000000000042"] = "Book club 2027"
    assert await transport.group_subject(GROUP) == "Book club 2027"


@pytest.mark.asyncio
async def test_a_transport_that_is_not_logged_in_gives_no_subject(tmp_path: Path) -> None:
    engine = GroupEngine()
    transport: Any = transport_with(tmp_path, engine)
    transport._logged_in = False
    assert await transport.group_subject(GROUP) is None
    assert engine.asked == []  # never touches the engine's store unpaired

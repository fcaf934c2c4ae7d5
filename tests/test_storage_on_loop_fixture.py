"""The storage-on-the-loop check (tests/fixtures/storage_on_loop.py): app code that runs SQL or a
secret-store call on the loop thread is caught, whatever the call's duration; a test reading state
directly, and app code that offloads, are not."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ghl_desktop.adapters.ghl import TokenManager
from ghl_desktop.adapters.storage import Database
from ghl_desktop.config import Settings
from tests.fakes.secrets import MemorySecretStore
from tests.fixtures.storage_on_loop import watching


def _tokens(db: Database, http: httpx.AsyncClient, *, offload: bool) -> TokenManager:
    return TokenManager(MemorySecretStore(), db.locations, http, Settings(),
                        offload=asyncio.to_thread if offload else None)


@pytest.mark.asyncio
async def test_app_coroutines_calling_storage_inline_are_caught(db: Database) -> None:
    async with httpx.AsyncClient() as http:
        tokens = _tokens(db, http, offload=False)  # no offload: its storage work runs inline, on the loop
        with watching() as found:
            assert await tokens._off_loop(db.locations.get, "nowhere") is None
            await tokens._off_loop(tokens._secrets.get, "some-key")
    assert any(entry.startswith("SQL: ['SELECT'") for entry in found), found
    assert any(entry.startswith("secret store: get") for entry in found), found
    assert all("ghl_desktop/adapters/ghl/tokens.py" in entry for entry in found)


@pytest.mark.asyncio
async def test_offloaded_calls_and_a_tests_own_reads_are_not(db: Database) -> None:
    async with httpx.AsyncClient() as http:
        tokens = _tokens(db, http, offload=True)
        with watching() as found:
            assert await tokens._off_loop(db.locations.get, "nowhere") is None
            await tokens._off_loop(tokens._secrets.get, "some-key")
            assert db.locations.get("nowhere") is None  # the test itself, arranging or asserting
    assert found == []


def test_outside_a_running_loop_nothing_is_recorded(db: Database) -> None:
    with watching() as found:
        assert db.locations.get("nowhere") is None
    assert found == []

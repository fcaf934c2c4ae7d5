"""``ghl-desktop numbers list --db-url URL`` as an operator runs it (a subprocess), on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession


def _run(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    clean.update({"GHL_DESKTOP_HOME": str(home), **(env or {})})
    return subprocess.run([sys.executable, "-m", "ghl_desktop", *args], capture_output=True, text=True,
                          timeout=120, env=clean)


@pytest.mark.postgres
def test_numbers_list_prints_one_line_per_number(pg_url: str, tmp_path: Path) -> None:
    with open_database(pg_url) as db:
        db.locations.upsert(Location(id="locA", name="Alpha"))
        db.locations.upsert(Location(id="locB", name="Beta"))
        db.sessions.create(WhatsAppSession(id="s1", location_id="locB", state=SessionState.CONNECTED,
                                           store_path="s1", phone="+14155550002"))
        db.sessions.create(WhatsAppSession(id="s2", location_id="locA", state=SessionState.RECONNECTING,
                                           store_path="s2", phone="+14155550001"))
        db.sessions.create(WhatsAppSession(id="s3", location_id="locA", state=SessionState.WAITING_FOR_SCAN,
                                           store_path="s3"))
    expected = ["- locA waiting_for_scan -", "+14155550001 locA reconnecting -", "+14155550002 locB connected -"]
    result = _run("numbers", "list", "--db-url", pg_url, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
    # the same database through GHL_DESKTOP_DB_URL
    result = _run("numbers", "list", home=tmp_path, env={"GHL_DESKTOP_DB_URL": pg_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_numbers_list_on_an_unreachable_database_says_so(tmp_path: Path) -> None:
    result = _run("numbers", "list", "--db-url", "postgresql+psycopg://nobody@127.0.0.1:1/none", home=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("ghl-desktop numbers list: ")


@pytest.mark.postgres
def test_numbers_list_names_the_worker_holding_each_number(pg_url: str, tmp_path: Path) -> None:
    from ghl_desktop.adapters.storage.ownership import ownership_repo

    with open_database(pg_url) as db:
        db.locations.upsert(Location(id="locA", name="Alpha"))
        for sid, phone in (("s1", "+14155550001"), ("s2", "+14155550002")):
            db.sessions.create(WhatsAppSession(id=sid, location_id="locA", state=SessionState.CONNECTED,
                                               store_path=sid, phone=phone))
        own = ownership_repo(db)
        assert own.claim("east-1", 1, 30.0) == {"s1": 1}
        assert own.claim("west-2", 1, 30.0) == {"s2": 1}
        own.release("west-2", ["s2"])  # given back: nobody holds it now
    result = _run("numbers", "list", "--db-url", pg_url, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["+14155550001 locA connected east-1", "+14155550002 locA connected -"]

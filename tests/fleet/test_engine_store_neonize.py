"""The real engine (neonize/whatsmeow) opens a number's store in the cluster's PostgreSQL (issue 14): given
the address of adapters/storage/engine_store.py, whatsmeow creates its tables in that number's own schema
and no SQLite store file is made. No WhatsApp needed: the engine migrates its store before it dials (here
the dial fails, or shows a QR code where there is network; either way the transport is stopped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.adapters.storage.engine_store import drop_engine_store, engine_store_address, ensure_engine_store

pytestmark = [pytest.mark.postgres, pytest.mark.engine]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import asyncio, json, sys, time
from ghl_desktop.adapters.whatsapp.neonize import NeonizeTransport
events = []
async def handler(ev):
    events.append(type(ev).__name__)
async def main():
    t = NeonizeTransport("pgstore", sys.argv[1], handler, retry_initial=0.05, retry_max=0.2, store_address=sys.argv[2])
    await t.start()
    t0 = time.monotonic()
    while not {"ConnectFailed", "QrCode"} & set(events) and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.05)
    await t.stop()
    print("RESULT " + json.dumps({"events": sorted(set(events))}), flush=True)
asyncio.run(main())
"""


def test_neonize_keeps_its_store_in_the_numbers_schema(pg_url: str, tmp_path: Path) -> None:
    session_id = uuid.uuid4().hex
    store_file = tmp_path / "sessions" / f"{session_id}.db"
    with open_database(pg_url) as db:
        schema = ensure_engine_store(db, session_id)
        try:
            env = dict(os.environ, NEONIZE_BOT_TAG="off", PYTHONPATH=str(REPO))
            proc = subprocess.run([sys.executable, "-c", SCRIPT, str(store_file),
                                   engine_store_address(make_url(pg_url), session_id)],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr[-3000:]
            result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
            assert {"ConnectFailed", "QrCode"} & set(result["events"]), result
            with db.engine.connect() as conn:
                tables = set(conn.execute(text("SELECT table_name FROM information_schema.tables "
                                               "WHERE table_schema = :s"), {"s": schema}).scalars())
            assert {"whatsmeow_device", "whatsmeow_identity_keys", "whatsmeow_sessions"} <= tables, tables
            assert not store_file.exists()  # no SQLite store beside it
        finally:
            drop_engine_store(db, session_id)

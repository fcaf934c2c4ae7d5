"""One cluster worker for test_cluster_tokens: its own process, engine and TokenManager.

    python -m tests.fleet._token_worker SANDBOX_URL DB_URL LOCATION_ID CLIENT_ID CLIENT_SECRET CALLS

Prints ``ready``, waits for a line on stdin (the start signal, so the workers race), then makes CALLS
concurrent API calls (a 401 makes it refresh with the refused token, as the client does) and prints one
JSON line: the HTTP status and the token of every call, and the refresh requests it sent."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import httpx

from ghl_desktop.adapters.ghl.tokens import TokenManager
from ghl_desktop.adapters.storage import open_database
from ghl_desktop.adapters.storage.secrets_db import cluster_token_parts
from ghl_desktop.config import Settings


async def main(url: str, db_url: str, location_id: str, client_id: str, client_secret: str, calls: int) -> None:
    db = open_database(db_url, migrate=False)
    try:
        parts = cluster_token_parts(db)
        assert parts is not None, "not a PostgreSQL database"
        store, lock = parts
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(home=Path(home), client_id=client_id, client_secret=client_secret, api_base=url)
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                tokens = TokenManager(store, db.locations, http, settings, cluster=lock)
                print("ready", flush=True)
                await asyncio.to_thread(sys.stdin.readline)

                async def call() -> tuple[int, str]:
                    token = await tokens.access_token(location_id)
                    for attempt in range(2):
                        answer = await http.get(f"/locations/{location_id}", headers={
                            "Authorization": f"Bearer {token}", "Version": "2021-07-28"})
                        if answer.status_code != 401 or attempt:
                            return answer.status_code, token
                        token = await tokens.refresh(location_id, rejected_token=token)
                    raise AssertionError("unreachable")

                results = await asyncio.gather(*(call() for _ in range(calls)))
                print(json.dumps({"results": results, "refresh_requests": tokens.refresh_requests}), flush=True)
    finally:
        db.close()


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], a[4], int(a[5])))

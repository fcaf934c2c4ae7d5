"""The agency (Company) token in a cluster: two workers finding it expired at the same moment make ONE
refresh between them. HighLevel rotates refresh tokens, so a second refresh with the same refresh token
is refused once its grace has passed, and the agency would look disconnected (docs/cluster.md).
Real PostgreSQL from the harness, the sandbox in its own process, one TokenManager per worker."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from ghl_desktop.adapters.crypto import ENV_KEY
from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.adapters.ghl.tokens import TokenManager, company_key
from ghl_desktop.adapters.storage import open_database
from ghl_desktop.adapters.storage.secrets_db import cluster_token_parts
from ghl_desktop.config import Settings
from ghl_desktop.core.models import utcnow
from tests.fixtures.processes import standalone_sandbox

pytestmark = pytest.mark.postgres

WORKERS, CALLS = 2, 5


async def _agency_grant(http: httpx.AsyncClient) -> tuple[dict[str, str], str, dict[str, object]]:
    """The agency-wide install, as HighLevel's consent page does it: approve for the company, exchange."""
    state = (await http.get("/_sandbox/state")).json()
    app, company = state["app"], state["company"]["id"]
    reg = app_registration()
    consent = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": reg.redirect_uri,
               "state": "st", "scope": reg.scope_text, "companyId": company}
    answer = await http.get("/oauth/chooselocation/approve", params=consent)
    assert answer.status_code == 302, answer.text
    code = httpx.URL(answer.headers["location"]).params["code"]
    grant = await http.post("/oauth/token", data={
        "client_id": app["client_id"], "client_secret": app["client_secret"], "grant_type": "authorization_code",
        "code": code, "user_type": "Company", "redirect_uri": reg.redirect_uri})
    assert grant.status_code == 200, grant.text
    return app, company, grant.json()


@pytest.mark.asyncio
async def test_two_workers_refresh_the_agency_token_once(pg_url: str) -> None:
    key = secrets.token_hex(32)
    env = {ENV_KEY: key}
    with standalone_sandbox(locations=1) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            app, company, grant = await _agency_grant(http)
            before = (await http.get("/_sandbox/state")).json()["stats"]
        dbs = [open_database(pg_url) for _ in range(WORKERS)]
        try:
            parts = [cluster_token_parts(db, env) for db in dbs]
            assert all(p is not None for p in parts)
            store = parts[0][0]  # type: ignore[index]
            # the cluster's record says the agency token expired a minute ago: every worker refreshes up front
            await dbs[0].aio.run(store.set, company_key(company, "refresh_token"), str(grant["refresh_token"]))
            await dbs[0].aio.run(store.set, company_key(company, "access_token"), str(grant["access_token"]))
            await dbs[0].aio.run(store.set, company_key(company, "expires_at"),
                                 (utcnow() - timedelta(minutes=1)).isoformat())
            with tempfile.TemporaryDirectory() as home:
                settings = Settings(home=Path(home), client_id=app["client_id"], client_secret=app["client_secret"],
                                    api_base=url)
                async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                    workers = [TokenManager(p[0], db.locations, client, settings, cluster=p[1])  # type: ignore[index]
                               for p, db in zip(parts, dbs, strict=True)]
                    tokens = await asyncio.gather(*(w.company_access_token(company)
                                                    for w in workers for _ in range(CALLS)))
                    assert sum(w.refresh_requests for w in workers) == 1
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                after = (await http.get("/_sandbox/state")).json()["stats"]
            stored = await dbs[1].aio.run(store.get, company_key(company, "access_token"))
            stored_refresh = await dbs[1].aio.run(store.get, company_key(company, "refresh_token"))
        finally:
            for db in dbs:
                db.close()
    assert after.get("oauth_refreshes", 0) - before.get("oauth_refreshes", 0) == 1
    assert after.get("oauth_refresh_grace_reuse", 0) == before.get("oauth_refresh_grace_reuse", 0)
    assert stored and stored != grant["access_token"] and stored_refresh != grant["refresh_token"]
    assert tokens == [stored] * (WORKERS * CALLS)  # every caller on both workers got the new token

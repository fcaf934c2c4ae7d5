"""The window on a cluster's PostgreSQL (issue 14): one more worker — no keyring, vault or passphrase;
its tokens are the database's sealed store; without the app's credentials in the environment it says
what to set instead of opening a sandbox on the cluster's database; its numbers panel shows which
worker holds each number."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from ghl_desktop.adapters.crypto import ENV_KEY
from ghl_desktop.adapters.storage.ownership import ownership_repo
from ghl_desktop.app import App
from ghl_desktop.cli import build_parser
from ghl_desktop.config import Settings
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession
from ghl_desktop.services.cockpit import Cockpit
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.main import cluster_window, run_window
from ghl_desktop.ui.models import SessionsModel
from ghl_desktop.ui.panels.base import Tasks
from ghl_desktop.ui.panels.numbers import NumbersPanel
from tests.fakes.secrets import MemorySecretStore

PG = "postgresql+psycopg://ghl@127.0.0.1:5432/ghl"


def test_which_window_is_a_cluster_worker(tmp_path: Path) -> None:
    real = Settings(home=tmp_path, db_url=PG, client_id="id", client_secret="secret")
    assert cluster_window(real, sandbox=False)
    assert cluster_window(Settings(home=tmp_path, db_url=PG, client_id="id"), sandbox=False)  # secret: env only
    assert not cluster_window(real, sandbox=True)  # --sandbox: the built-in sandbox, its own secrets
    assert not cluster_window(Settings(home=tmp_path, db_url=PG), sandbox=False)  # no client ID: sandbox mode
    assert not cluster_window(Settings(home=tmp_path, client_id="id", client_secret="s"), sandbox=False)  # SQLite


def test_the_window_takes_a_database_url() -> None:
    args = build_parser().parse_args(["--db-url", PG])
    assert args.window_db_url == PG and args.command is None
    assert build_parser().parse_args(["numbers", "list", "--db-url", PG]).db_url == PG


@pytest.mark.asyncio
async def test_a_cluster_window_without_the_client_secret_says_what_to_set(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, secrets.token_hex(32))
    settings = Settings(home=tmp_path / "home", db_url=PG, client_id="id")
    why = await run_window(settings, None)
    assert why is not None and "GHL_CLIENT_SECRET" in why and "GHL_DESKTOP_DB_URL" in why
    assert not (tmp_path / "home" / "sandbox").exists()  # no sandbox was started on the cluster's database


def _numbers(app: App) -> tuple[str, str]:
    app.db.locations.upsert(Location(id="L1", name="Dental Care"))
    ids = []
    for phone in ("+15550100001", "+15550100002"):
        session = app.db.sessions.create(WhatsAppSession(id=uuid.uuid4().hex, location_id="L1",
                                                         state=SessionState.CONNECTED, store_path="unused",
                                                         phone=phone))
        ids.append(session.id)
    return ids[0], ids[1]


async def _panel(app: App, qtbot: Any) -> tuple[Cockpit, NumbersPanel]:
    cockpit = Cockpit(app)
    panel = NumbersPanel(cockpit, ServiceBridge(app.bus), tasks=Tasks(), confirm=lambda *_: True)
    qtbot.addWidget(panel)
    panel.show()
    return cockpit, panel


def _column(panel: NumbersPanel, column: int) -> list[str]:
    model = panel.model
    return [model.data(model.index(row, column)) for row in range(model.rowCount())]


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_cluster_window_shows_which_worker_holds_each_number(pg_url: str, tmp_path: Path, qtbot: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, secrets.token_hex(32))
    app = await App.open(Settings(home=tmp_path / "home", db_url=pg_url), console_log=False)
    try:
        held, free = await asyncio.to_thread(_numbers, app)
        assert await asyncio.to_thread(ownership_repo(app.db).claim_one, "office-2", held, 30) is not None
        cockpit, panel = await _panel(app, qtbot)
        try:
            overview = await cockpit.overview()
            assert overview.holders == {held: "office-2"}
            panel.set_numbers(overview.numbers, overview.location_names, overview.holders)
            worker = SessionsModel.WORKER_COLUMN
            assert panel.model.headerData(worker, Qt.Orientation.Horizontal) == "Worker"
            assert not panel.view.isColumnHidden(worker)
            rows = dict(zip(_column(panel, 0), _column(panel, worker), strict=True))
            assert rows == {"+15550100001": "office-2", "+15550100002": "—"}
            tip = panel.model.data(panel.model.index(1, worker), Qt.ItemDataRole.ToolTipRole)
            assert tip.startswith("No worker holds this number right now")

            # the next poll (a cluster's numbers change under other workers) repaints in place
            panel.view.selectRow(1)
            resets: list[int] = []
            panel.model.modelReset.connect(lambda: resets.append(1))
            await asyncio.to_thread(app.db.sessions.set_state, free, SessionState.RECONNECTING)
            await asyncio.to_thread(ownership_repo(app.db).claim_one, "office-3", free, 30)
            overview = await cockpit.overview()
            panel.set_numbers(overview.numbers, overview.location_names, overview.holders)
            assert dict(zip(_column(panel, 0), _column(panel, worker), strict=True))["+15550100002"] == "office-3"
            assert not resets and panel.view.selectionModel().selectedRows()[0].row() == 1
        finally:
            cockpit.close()
    finally:
        await app.aclose()


@pytest.mark.asyncio
async def test_one_desktop_has_no_worker_column(tmp_path: Path, qtbot: Any) -> None:
    app = await App.open(Settings(home=tmp_path / "home"), secrets=MemorySecretStore(), console_log=False)
    try:
        await asyncio.to_thread(_numbers, app)
        cockpit, panel = await _panel(app, qtbot)
        try:
            overview = await cockpit.overview()
            assert overview.holders is None
            panel.set_numbers(overview.numbers, overview.location_names, overview.holders)
            assert panel.view.isColumnHidden(SessionsModel.WORKER_COLUMN)
        finally:
            cockpit.close()
    finally:
        await app.aclose()

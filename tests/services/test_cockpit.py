"""The UI-facing service API: derived health (a stalled location is not a green number), the ban
sentence in local time, and a real-mode Connect that says at once that HighLevel cannot be reached."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.core.models import LocationState, NewJob
from ghl_desktop.runtime import BridgeRuntime
from ghl_desktop.services.cockpit import Cockpit, HighLevelUnreachable, NoRuntime
from ghl_desktop.services.health import HealthAction, HealthLevel
from tests.fakes.secrets import MemorySecretStore
from tests.ui.seed import seed


@pytest.fixture
def app() -> Iterator[App]:
    instance = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    yield instance
    if not instance.closed:
        instance.db.close()
    instance.logging.close()


@pytest.mark.asyncio
async def test_a_number_of_a_location_needing_reconnect_is_stalled_with_its_waiting_count(app: App) -> None:
    seeded = seed(app.db)
    dental = seeded["locations"][0]
    cockpit = Cockpit(app)
    try:
        assert (await cockpit.refresh_health()).number("s-dental").health.ok  # type: ignore[union-attr]
        app.db.locations.set_state(dental.id, LocationState.NEEDS_RECONNECT)  # type: ignore[attr-defined]
        for i in range(3):
            app.db.jobs.enqueue(NewJob(kind="wa.inbound",
                                       payload={"session_id": "s-dental", "message": {"id": f"m{i}"}}))
        number = (await cockpit.refresh_health()).number("s-dental")
        assert number is not None and number.waiting == 3
        assert number.health.level is HealthLevel.NEEDS_YOU
        reason = number.health.reason.lower()
        assert reason.startswith("bridging stalled") and "reconnect" in reason and "3" in reason and "waiting" in reason
        assert number.health.action is HealthAction.RECONNECT_LOCATION
        location = cockpit.snapshot().location(dental.id)  # type: ignore[attr-defined]
        assert location is not None and location.health.action is HealthAction.RECONNECT_LOCATION
        status = await cockpit.status()
        assert status.needs_you >= 2 and status.numbers == 2 and status.locations == 2
        assert status.pending_jobs == 3
    finally:
        cockpit.close()


@pytest.mark.asyncio
async def test_the_reads_run_on_the_storage_executor_not_the_loop_thread(app: App,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seed(app.db)
    cockpit = Cockpit(app)
    threads: list[str] = []
    for repository, method in ((app.db.locations, "list"), (app.db.sessions, "list"), (app.db.sessions, "get"),
                               (app.db.jobs, "count")):
        original = getattr(repository, method)

        def spy(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(repository, method, spy)
    try:
        overview = await cockpit.overview()
        assert [loc.name for loc in overview.locations] == ["Bright Smiles Dental", "Northside Fitness"]
        assert [n.id for n in overview.numbers] == ["s-dental", "s-fitness"]
        assert overview.status.locations == 2 and overview.status.numbers == 2
        assert [loc.name for loc in overview.linkable_locations] == ["Bright Smiles Dental"]
        assert [loc.name for loc in await cockpit.linkable_locations()] == ["Bright Smiles Dental"]
        assert (await cockpit.location_names())[overview.locations[0].id] == "Bright Smiles Dental"
        number = await cockpit.number("s-dental")
        assert number is not None and number.id == "s-dental" and await cockpit.number("nope") is None
        assert len(await cockpit.numbers()) == 2
        assert threads and all(name.startswith("ghl-db") for name in threads), threads
    finally:
        cockpit.close()


@pytest.mark.asyncio
async def test_actions_without_a_runtime_say_why(app: App) -> None:
    with pytest.raises(NoRuntime, match="bridge is not running"):
        await Cockpit(app).link_number("loc")


@pytest.mark.asyncio
async def test_real_mode_connect_with_highlevel_unreachable_fails_fast_and_readably() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused, like a dead network path
    settings = replace(load_settings(), client_id="real-id", client_secret="real-secret",
                       api_base=f"http://127.0.0.1:{port}", marketplace_base=f"http://127.0.0.1:{port}",
                       oauth_redirect_port=0)
    app = App(settings, secrets=MemorySecretStore(), console_log=False)
    runtime = BridgeRuntime(app, transport_factory=lambda *_: None, open_url=lambda _url: True)  # type: ignore[arg-type,return-value]
    try:
        assert not app.sandbox
        cockpit = Cockpit(app, runtime)
        urls: list[str] = []
        # the old Connect waited for the browser (300 s) before saying anything; the guard only keeps
        # a regression from hanging the suite
        with pytest.raises(HighLevelUnreachable) as caught:
            await asyncio.wait_for(cockpit.connect_location(urls.append), 60)
        text = str(caught.value)
        assert f"127.0.0.1:{port}" in text and "cannot be reached" in text and "internet connection" in text
        assert urls == [] and runtime.oauth.receiver is None  # no sign-in was started
    finally:
        await runtime.stop()
        await app.aclose()

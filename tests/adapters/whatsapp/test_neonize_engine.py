"""The engine running for real (no network here): connect/retry/stop behaviour and the five traps
of docs/neonize.md. Anything that starts Go's connect, or could panic the Go runtime,
runs in a subprocess so a SIGABRT cannot take pytest down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from ghl_desktop.adapters.whatsapp.neonize import (
    RESERVE_THREADS,
    BotTagNotDisabled,
    NeonizeTransport,
    ensure_executor,
    quote_store_path,
)
from ghl_desktop.core.whatsapp import IncomingMessage, TransportEvent
from tests.fakes import neonize_events as fx

REPO = Path(__file__).resolve().parents[3]

PRELUDE = """
import asyncio, json, os, sys, time, socket, threading, logging
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
logging.basicConfig(level=logging.WARNING)
from PySide6.QtWidgets import QApplication
import qasync
from ghl_desktop.adapters.whatsapp.neonize import NeonizeTransport
app = QApplication([])
loop = qasync.QEventLoop(app)
asyncio.set_event_loop(loop)
events = []
async def handler(ev):
    events.append(ev)
class Ticker:
    '''Largest gap between 10 ms ticks of the loop: how long the UI would have frozen.'''
    def __init__(self):
        self.gap, self.running = 0.0, True
        self.task = asyncio.ensure_future(self.run())
    async def run(self):
        last = time.monotonic()
        while self.running:
            await asyncio.sleep(0.01)
            now = time.monotonic(); self.gap = max(self.gap, now - last); last = now
    async def close(self):
        self.running = False; await self.task
def out(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
"""


def run_script(body: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict, str]:
    code = PRELUDE + textwrap.dedent(body)
    full_env = dict(os.environ, NEONIZE_BOT_TAG="off", QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return proc.returncode, result, proc.stderr


def test_offline_start_retries_into_reconnecting_without_freezing_and_stops(tmp_path: Path) -> None:
    """No network (DNS fails at once here): the first connect is retried with backoff, the
    transport reports reconnecting, the loop never stalls and stop() is quick. The store lives
    at a path with URI-hostile characters and is created 0600."""
    store = tmp_path / "we#ird ?dir" / "st%20ore 1.db"
    rc, result, stderr = run_script(
        """
        async def main():
            ticker = Ticker()
            t = NeonizeTransport("offline", sys.argv[1], handler, retry_initial=0.05, retry_max=0.2)
            await t.start()
            t0 = time.monotonic()
            while sum(type(e).__name__ == "ConnectFailed" for e in events) < 3 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.02)
            status = t.status.value
            s0 = time.monotonic(); await t.stop(); stop_s = time.monotonic() - s0
            await ticker.close()
            out(status=status, attempts=t.attempts, after=t.status.value, gap=ticker.gap, stop_s=stop_s,
                failed=[[e.reason, e.permanent] for e in events if type(e).__name__ == "ConnectFailed"])
        loop.run_until_complete(main())
        """,
        str(store),
    )
    assert rc == 0, stderr
    assert result["status"] == "reconnecting" and result["after"] == "stopped"
    assert result["attempts"] >= 3
    assert len(result["failed"]) >= 3 and all(not permanent for _, permanent in result["failed"])
    assert "retrying in" in result["failed"][0][0]
    assert result["gap"] < 1.0  # behaviour guard, generous: the loop never froze
    assert result["stop_s"] < 10
    assert store.exists(), "the engine store must be at exactly the path given (quoted for the URI)"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert store.stat().st_size > 0  # the engine really opened and migrated this file


def test_quote_store_path_keeps_uri_characters_literal() -> None:
    assert quote_store_path("/a/we#ird ?dir/x%20y.db") == "/a/we%23ird%20%3Fdir/x%2520y.db"
    assert quote_store_path("C:\\Users\\me\\wa.db") == "C:\\Users\\me\\wa.db"


def test_trap5_stop_during_a_hanging_dial_never_freezes_and_the_app_quits(tmp_path: Path) -> None:
    """A proxy that accepts and never answers keeps Go's dial pending (~60 s). stop() must not
    cancel the connect task (neonize would then run Go's Stop on the loop thread), must return in
    bounded time, the loop keeps ticking, and the process exits instead of joining Go threads."""
    rc, result, stderr = run_script(
        """
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(8)
        held = []
        def accept():
            while True:
                c, _ = srv.accept(); held.append(c)
        threading.Thread(target=accept, daemon=True).start()
        async def main():
            ticker = Ticker()
            t = NeonizeTransport("hang", sys.argv[1], handler, stop_timeout=2.0,
                                 proxy=f"socks5://127.0.0.1:{srv.getsockname()[1]}")
            await t.start()
            t0 = time.monotonic()
            while not held and time.monotonic() - t0 < 15:
                await asyncio.sleep(0.02)
            status = t.status.value
            task = t.client.connect_task
            s0 = time.monotonic(); await t.stop(); stop_s = time.monotonic() - s0
            await ticker.close()
            out(held=len(held), status=status, gap=ticker.gap, stop_s=stop_s, after=t.status.value,
                cancelled=task.cancelled())
        loop.run_until_complete(main())
        loop.close()
        """,
        str(tmp_path / "hang.db"),
        timeout=40,  # a hung exit fails here
    )
    assert rc == 0, stderr
    assert result["held"] >= 1 and result["status"] == "connecting"
    assert result["cancelled"] is False
    assert result["gap"] < 1.0
    assert result["stop_s"] < 10 and result["after"] == "stopped"


def test_trap1_store_calls_before_login_are_guarded_while_the_raw_call_kills_the_process(tmp_path: Path) -> None:
    body = """
        async def main():
            t = NeonizeTransport("trap1", sys.argv[1], handler, journal=False)
            await t.attach()
            out(me=await t.get_me(), pn=await t.resolve_lid("187743256012345@lid"))
            if sys.argv[2] == "raw":
                from neonize.utils import build_jid
                await t.client.get_pn_from_lid(build_jid("187743256012345", "lid"))
                out(survived=True)
        asyncio.run(main())
        """
    rc, result, stderr = run_script(body, str(tmp_path / "t1.db"), "guarded")
    assert rc == 0, stderr
    assert result == {"me": None, "pn": None}
    # the control: the same call without the guard is a Go panic (SIGABRT) that kills the process
    rc_raw, result_raw, stderr_raw = run_script(body, str(tmp_path / "t1b.db"), "raw")
    assert rc_raw in (-6, 134) and "panic" in stderr_raw
    assert "survived" not in result_raw


def test_trap2_cli_reexecs_with_bot_tag_off(tmp_path: Path) -> None:
    """``ensure_engine_environment`` (the CLI entry path) replaces the process with one whose
    *start-up* environment has NEONIZE_BOT_TAG=off. A wrapper standing in for the interpreter
    records the environment it was exec'd with, then runs the real CLI."""
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(
        f'#!/bin/sh\necho "STARTUP NEONIZE_BOT_TAG=${{NEONIZE_BOT_TAG:-missing}}"\nexec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(0o755)
    code = (
        "import sys; sys.executable = sys.argv[1]; "
        "from ghl_desktop.cli import ensure_engine_environment; ensure_engine_environment(['--version']); "
        "print('NOT RE-EXECUTED')"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NEONIZE_BOT_TAG", "GHL_DESKTOP_NO_REEXEC")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(wrapper)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "STARTUP NEONIZE_BOT_TAG=off" in proc.stdout
    assert "ghl-desktop" in proc.stdout and "NOT RE-EXECUTED" not in proc.stdout


def test_trap2_startup_env_is_what_counts(tmp_path: Path) -> None:
    """Setting os.environ after start does not reach Go: the transport checks the start-up env."""
    rc, result, stderr = run_script(
        """
        os.environ["NEONIZE_BOT_TAG"] = "off"   # too late for Go
        from ghl_desktop.adapters.whatsapp.neonize import bot_tag_disabled
        out(disabled=bot_tag_disabled())
        """,
        env={"NEONIZE_BOT_TAG": "on"},
    )
    assert rc == 0, stderr
    assert result == {"disabled": False}


@pytest.mark.asyncio
async def test_trap2_transport_refuses_to_connect_without_bot_tag_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NEONIZE_BOT_TAG", raising=False)

    async def handler(event: TransportEvent) -> None:
        return None

    transport = NeonizeTransport(f"bot-{uuid.uuid4().hex[:6]}", tmp_path / "b.db", handler)
    with caplog.at_level(logging.ERROR, logger="ghl.whatsapp"), pytest.raises(BotTagNotDisabled):
        await transport.start()
    assert any("NEONIZE_BOT_TAG=off" in r.getMessage() for r in caplog.records)
    assert transport.client is None and not (tmp_path / "b.db").exists()  # nothing was started


@pytest.mark.asyncio
async def test_trap3_executor_holds_fifty_live_sessions_and_still_serves_calls() -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()
    started = threading.Semaphore(0)

    def live_session() -> None:  # what a connected number does to its executor thread
        started.release()
        release.wait(30)

    executor = ensure_executor(loop, 50)
    assert executor.max_workers == 50 + RESERVE_THREADS
    assert ensure_executor(loop, 10) is executor  # never shrinks under running sessions
    sessions = [loop.run_in_executor(None, live_session) for _ in range(50)]
    try:
        for _ in range(50):
            await asyncio.to_thread(started.acquire)  # itself needs a free thread
        # every engine call is a to_thread: it must still get a thread with 50 numbers live
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 10) == 42
        assert all(t.daemon for t in threading.enumerate() if t.name.startswith("ghl-engine"))
    finally:
        release.set()
        await asyncio.gather(*sessions)


@pytest.mark.asyncio
async def test_trap3_control_qasync_default_executor_is_exhausted_by_ten_sessions() -> None:
    """Why the helper exists: qasync's default executor has 10 threads."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    started = threading.Semaphore(0)
    default = qasync.QThreadExecutor()  # what qasync uses unless told otherwise
    blockers = [loop.run_in_executor(default, lambda: (started.release(), release.wait(30))) for _ in range(10)]
    for _ in range(10):
        await asyncio.to_thread(started.acquire)
    eleventh = loop.run_in_executor(default, lambda: 42)
    await asyncio.sleep(0.2)
    assert not eleventh.done()  # stuck behind ten "live sessions"
    release.set()
    assert await eleventh == 42
    await asyncio.gather(*blockers)
    default.shutdown()


def test_trap4_events_reach_a_second_event_loop(tmp_path: Path) -> None:
    """neonize remembers only the first loop; a restart on a new loop must still get events."""
    app = QApplication.instance() or QApplication([])
    session = f"loop-{uuid.uuid4().hex[:6]}"
    for round_no in range(2):
        loop = qasync.QEventLoop(app)
        received: list[TransportEvent] = []
        arrived = asyncio.Event()

        async def handler(
            event: TransportEvent, sink: list[TransportEvent] = received, flag: asyncio.Event = arrived
        ) -> None:
            sink.append(event)
            flag.set()

        async def one_round(n: int = round_no, flag: asyncio.Event = arrived) -> None:
            transport = NeonizeTransport(session, tmp_path / "s.db", handler, drain_quiet=0.02)
            await transport.attach()
            ev = fx.message_event(fx.text(f"round {n}"), msg_id=f"R{n}")
            thread = threading.Thread(target=fx.dispatch, args=(transport.client, ev))
            thread.start()
            thread.join()
            await asyncio.wait_for(flag.wait(), 10)
            await transport.stop()

        try:
            loop.run_until_complete(one_round())
        finally:
            loop.close()
        assert [e.id for e in received if isinstance(e, IncomingMessage)] == [f"R{round_no}"]


def test_crash_after_the_engine_handed_over_a_message_loses_nothing(tmp_path: Path) -> None:
    """Durability: a process that dies after neonize delivered a message (already acknowledged to
    WhatsApp by whatsmeow) but before the app stored it gets the message again on restart."""
    store = str(tmp_path / "crash.db")
    crash = """
        from tests.fakes import neonize_events as fx
        async def dying(ev):
            os._exit(3)   # the process dies inside the handler, before any durable write
        async def main():
            t = NeonizeTransport("crashy", sys.argv[1], dying)
            await t.attach()
            ev = fx.message_event(fx.text("do not lose me"), msg_id="3EBCRASH")
            threading.Thread(target=fx.dispatch, args=(t.client, ev)).start()
            await asyncio.sleep(10)
        asyncio.run(main())
        """
    rc, _, stderr = run_script(crash, store)
    assert rc == 3, stderr
    restart = """
        async def main():
            t = NeonizeTransport("crashy", sys.argv[1], handler, drain_quiet=0.05)
            await t.attach()
            for _ in range(200):
                if events: break
                await asyncio.sleep(0.02)
            await t.stop()
            out(got=[[e.id, e.text] for e in events])
        asyncio.run(main())
        """
    rc, result, stderr = run_script(restart, store)
    assert rc == 0, stderr
    assert result["got"] == [["3EBCRASH", "do not lose me"]]

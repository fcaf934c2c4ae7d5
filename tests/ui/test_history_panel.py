"""History on link (issue 15) in the window: while a number's import runs, the numbers panel shows
"N of M imported" with a progress bar and a Cancel button that stops it; the number's "History import…"
dialog shows the outcome and saves the number's own history days. Against the sandbox over loopback, with
a real bridge (tests/e2e/test_history.py's), through the Cockpit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from PySide6.QtCore import Qt

from ghl_desktop.headless import ensure_linked
from ghl_desktop.services.cockpit import Cockpit
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.panels.base import Tasks
from ghl_desktop.ui.panels.history import ACTION, AUTOMATIONS_NOTE, HistoryDialog
from ghl_desktop.ui.panels.numbers import NumbersPanel
from tests.e2e.test_history import LINKED, SLOW, bridge, slow_history


async def until(check: Callable[[], Any], seconds: float = 60.0) -> Any:
    """Poll ``check`` (a liveness bound, not a speed goal)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.asyncio
async def test_the_panel_shows_the_imports_progress_and_cancel_stops_it(qtbot: Any) -> None:
    count = 30
    async with bridge(history_days=30, rate=SLOW) as env:
        await env.seed(*slow_history(count))
        events = ServiceBridge(env.rt.app.bus)
        cockpit = Cockpit(env.rt.app, env.rt)
        tasks = Tasks()
        panel = NumbersPanel(cockpit, events, tasks=tasks, confirm=lambda *_: True)
        qtbot.addWidget(panel)
        panel.show()
        try:
            await ensure_linked(env.rt, env.url, asyncio.Event())
            (session,) = await env.sessions()
            strip = panel.history
            await until(lambda: session.id in strip.rows and strip.rows[session.id][1].value() >= 2)
            assert strip.isVisible()
            label, bar, cancel = strip.rows[session.id]
            assert label.text().startswith(f"History import for {LINKED}: ")
            assert label.text().endswith(f" of {count} imported")
            assert bar.maximum() == count and 2 <= bar.value() < count

            qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
            await until(lambda: session.id not in strip.rows)  # the line goes once nothing waits
            assert not strip.isVisible()
            (progress,) = await cockpit.history_progress()
            assert progress.stopped and progress.cancelled > 0
            assert progress.imported + progress.cancelled == progress.total == count
            assert len([m for m in await env.messages() if m["body"].startswith("old:")]) == progress.imported

            # the number's row offers the dialog now that it has an import; it shows how it ended
            names = [name for name, _ in panel._actions(session)]
            assert ACTION in names
            dialog = HistoryDialog(cockpit, tasks, session.id, LINKED)
            qtbot.addWidget(dialog)
            await dialog.load()
            assert dialog.progress_text.text() == f"{progress.imported} of {count} imported (cancelled)"
            assert not dialog.cancel_button.isEnabled()
            assert dialog.follow.isChecked() and not dialog.days.isEnabled()  # follows the setting (30 days)
            assert "30 days" in dialog.follow.text()
            assert AUTOMATIONS_NOTE in [w.text() for w in dialog.findChildren(type(label))]
            dialog.follow.setChecked(False)
            assert dialog.days.isEnabled()
            dialog.days.setValue(14)
            dialog.save()
            await until(lambda: dialog.result() == HistoryDialog.DialogCode.Accepted, 20)
            (progress,) = await cockpit.history_progress(session.id)
            assert progress.days == 14
        finally:
            await tasks.cancel_all()
            cockpit.close()
            events.detach()

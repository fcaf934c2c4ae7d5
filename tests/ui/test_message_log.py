"""The message log and dead letters panels, driven through clicks and keys over a real SQLite file:
filters (text, combos, no-match hint), sorting by header click, selection → details, retry of a
failed row (context menu via Enter, and the button), CSV export read back, live updates applied by
id (no reset), keyboard (Tab leaves the table) and accessible names; qtmodeltester on both models."""

from __future__ import annotations

import asyncio
import csv
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QFileDialog, QWidget

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.message_log import LogColumn, LogFilter, LogSort
from ghl_desktop.core.models import Direction, Message, MessageKind, MessageStatus, NewJob
from ghl_desktop.services.bridge import MessageLogged
from ghl_desktop.services.message_log import MessageLogService
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.message_log_models import (
    HEAD_ROWS,
    LOADING_CELL,
    PAGE_SIZE,
    DeadLettersModel,
    IdRole,
    MessageLogModel,
    RowRole,
)
from ghl_desktop.ui.panels.dead_letters import DeadLettersPanel
from ghl_desktop.ui.panels.message_log import NO_MATCH, NO_MESSAGES, MessageLogPanel
from tests.fixtures.message_log import bulk_messages, seed_directory

ROWS = 240


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def service(db: Database, bus: EventBus) -> MessageLogService:
    seed_directory(db)
    bulk_messages(db, ROWS)
    return MessageLogService(db.message_log, run=db.aio.run, bus=bus)


@pytest.fixture
def bridge(bus: EventBus) -> Iterator[ServiceBridge]:
    instance = ServiceBridge(bus)
    yield instance
    instance.detach()


def _wait(loop: asyncio.AbstractEventLoop, panel: MessageLogPanel) -> None:
    loop.run_until_complete(asyncio.wait_for(panel.wait_idle(), 30))


@pytest.fixture
def panel(qtbot: Any, qloop: asyncio.AbstractEventLoop, service: MessageLogService,
          bridge: ServiceBridge) -> MessageLogPanel:
    widget = MessageLogPanel(service, bridge)
    qtbot.addWidget(widget)
    widget.resize(1280, 700)
    widget.show()
    qtbot.waitExposed(widget)
    _wait(qloop, widget)
    return widget


def _rows(panel: MessageLogPanel) -> list[Any]:
    """Every row of the view, as the view gets them: asked for (placeholders, pages scheduled), read
    off the loop, then shown."""
    model = panel.model
    for r in range(model.rowCount()):
        model.index(r, 0).data(RowRole)
    _wait(asyncio.get_event_loop(), panel)
    rows = [model.index(r, 0).data(RowRole) for r in range(model.rowCount())]
    assert None not in rows
    return rows


def _click_row(qtbot: Any, panel: MessageLogPanel, row: int) -> None:
    rect = panel.view.visualRect(panel.model.index(row, 1))
    qtbot.mouseClick(panel.view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    _wait(asyncio.get_event_loop(), panel)  # its details are read off the loop


def _search(qtbot: Any, loop: asyncio.AbstractEventLoop, panel: MessageLogPanel, text: str) -> None:
    panel.search.setFocus()
    panel.search.selectAll()
    qtbot.keyClicks(panel.search, text)
    qtbot.keyClick(panel.search, Qt.Key.Key_Return)
    _wait(loop, panel)


def _choose(qtbot: Any, combo: Any, label: str) -> None:
    """Pick an entry with the keyboard (Home, then Down until it is current)."""
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Home)
    for _ in range(combo.count()):
        if combo.currentText() == label:
            return
        qtbot.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentText() == label


def test_models_pass_the_model_tester(qtmodeltester: Any, qloop: asyncio.AbstractEventLoop,
                                      service: MessageLogService, db: Database) -> None:
    model = MessageLogModel(service, page_size=50, cache_rows=120)
    qtmodeltester.check(model)  # empty
    model.load_now()
    assert model.rowCount() == ROWS
    qtmodeltester.check(model)  # filled
    texts = [model.index(r, len(LogColumn) - 1).data() for r in range(ROWS)]  # asks for every page
    assert set(texts) == {""} and model.index(0, 0).data() == LOADING_CELL  # not read yet: placeholders
    qloop.run_until_complete(asyncio.wait_for(model.wait_idle(), 30))
    assert model.pages_read == ROWS // 50 + 1 and model.reads == 1  # one hop for what one pass asked
    assert model.cached_rows() == 120  # the cache keeps the most recent rows only
    texts = [t for t in (model.index(r, len(LogColumn) - 1).data() for r in range(ROWS)) if t]
    assert len(texts) == 120 and all(t.startswith("message number") or t.startswith("the recipient") for t in texts)
    qloop.run_until_complete(asyncio.wait_for(model.wait_idle(), 30))  # the evicted ones were read again
    qtmodeltester.check(model)
    qloop.run_until_complete(asyncio.wait_for(model.wait_idle(), 30))
    dead = DeadLettersModel()
    qtmodeltester.check(dead)
    db.jobs.enqueue(NewJob(kind="ghl.app_event", payload={"event": {"type": "INSTALL", "locationId": "L"}}))
    (job,) = db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30)
    db.jobs.dead_letter(job.id, "w", error="HighLevel said 400")
    dead.set_records(qloop.run_until_complete(service.dead_letters()))
    assert dead.rowCount() == 1
    qtmodeltester.check(dead)


def test_all_history_loads_off_the_loop_thread(qtbot: Any, qloop: asyncio.AbstractEventLoop, db: Database,
                                               service: MessageLogService, bridge: ServiceBridge,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bool, int | None]] = []
    ids = db.message_log.ids

    def spy(*args: Any) -> Any:
        calls.append((threading.current_thread() is threading.main_thread(), args[2] if len(args) > 2 else None))
        return ids(*args)

    monkeypatch.setattr(db.message_log, "ids", spy)
    panel = MessageLogPanel(service, bridge)
    qtbot.addWidget(panel)
    shown: list[tuple[str, int, bool]] = []
    panel.model.modelReset.connect(lambda: shown.append(("reset", panel.model.rowCount(), panel.model.loading)))
    panel.model.rowsInserted.connect(lambda *_: shown.append(("insert", panel.model.rowCount(),
                                                                panel.model.loading)))
    panel.resize(1000, 500)
    panel.show()
    assert panel.model.loading and panel.count_label.text() == "Loading messages…"
    _wait(qloop, panel)
    # at its full length at once (an index count, both ends read by scans that stop), then the whole
    # id list fills it in place: one reset, no insert
    assert shown == [("reset", ROWS, True)]
    assert panel.model.rowCount() == ROWS and panel.count_label.text() == f"{ROWS} messages"
    # every id query ran off the loop thread: the bounded head and tail too
    assert calls == [(False, HEAD_ROWS), (False, HEAD_ROWS), (False, None)]
    assert 0 < panel.model.cached_rows() <= 2 * PAGE_SIZE < ROWS  # the visible rows, a page at a time
    assert _rows(panel)[0].id == ROWS  # newest first


def test_a_big_log_opens_at_its_full_length_with_both_ends_then_fills_in_place(
        qtbot: Any, qloop: asyncio.AbstractEventLoop, service: MessageLogService, db: Database, bus: EventBus,
        bridge: ServiceBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the whole id list is in, the view has its full length: the newest and oldest rows show
    their content (scroll to the end works at once), the rows between are placeholders that read
    nothing. A message logged meanwhile is inserted once, at the top, when the list arrives."""
    bulk_messages(db, 1000 - ROWS, start=datetime.now(UTC))  # after the fixture's: time order is id order
    total = 1000
    gate = asyncio.Event()
    full_ids = service.ids

    async def slow_ids(*args: Any, **kwargs: Any) -> Any:
        ids = await full_ids(*args, **kwargs)
        if len(args) < 3 and "limit" not in kwargs:  # the whole list: held until the test lets it go
            await gate.wait()
        return ids

    monkeypatch.setattr(service, "ids", slow_ids)
    panel = MessageLogPanel(service, bridge)
    qtbot.addWidget(panel)
    panel.resize(1000, 500)
    panel.show()
    model = panel.model
    resets: list[int] = []
    inserted: list[tuple[int, int]] = []
    model.modelReset.connect(lambda: resets.append(model.rowCount()))
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    qloop.run_until_complete(asyncio.wait_for(_until(lambda: model.rowCount() == total), 30))
    assert resets == [total] and model.loading
    assert model.index(0, 0).data(RowRole).id == total  # newest first, with its content
    assert model.index(total - 1, 0).data(RowRole).id == 1  # the oldest too: scroll to the end at once
    middle = model.index(total // 2, 0)
    assert middle.data() == LOADING_CELL and middle.data(RowRole) is None and middle.data(IdRole) is None
    assert model._send_handle is None and not model._want  # an unknown id reads nothing
    panel.view.scrollToBottom()
    panel.view.selectRow(total - 1)

    message, _ = db.messages.record(Message(
        location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND, kind=MessageKind.TEXT,
        chat_jid="34600111222@s.whatsapp.net", wa_message_id="LIVE-OPEN", body="while it opened",
        created_at=datetime.now(UTC) + timedelta(hours=1)))  # after the bulk rows, which end in the future
    bus.publish(MessageLogged(message))
    gate.set()
    _wait(qloop, panel)
    assert resets == [total] and inserted == [(0, 0)]  # filled in place; the new message inserted once
    assert model.rowCount() == total + 1 and not model.loading
    ids = list(model.ids())
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == total + 1 and ids[0] == message.id
    assert model.index(0, 0).data(RowRole).text == "while it opened"
    assert panel.selected_id() == 1  # the selection stayed on the oldest row (its id moved one down)
    assert model.index(total // 2, 0).data() == LOADING_CELL  # now a page to read
    _wait(qloop, panel)
    assert model.index(total // 2, 0).data(RowRole).id == ids[total // 2]
    maria = LogFilter(text="Maria", statuses=frozenset({MessageStatus.RECEIVED}))  # the count follows filters
    assert db.message_log.count(maria) == len(service.ids_now(maria, LogSort())) > 0


async def _until(ready: Any) -> None:
    while not ready():  # noqa: ASYNC110 - a model's state, polled while the loop runs its reads
        await asyncio.sleep(0.005)


def test_a_row_not_read_yet_is_a_placeholder_and_its_page_is_read_once(
        qtbot: Any, qloop: asyncio.AbstractEventLoop, service: MessageLogService, db: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = MessageLogModel(service, page_size=50)
    model.load_now()
    threads: list[bool] = []
    rows_of = db.message_log.rows

    def spy(ids: Any, **options: Any) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return rows_of(ids, **options)

    monkeypatch.setattr(db.message_log, "rows", spy)
    changed: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda top, bottom, *_: changed.append((top.row(), bottom.row())))
    for _ in range(3):  # a view paints the same cells several times before the page is there
        assert [model.index(r, 0).data() for r in range(60, 70)] == [LOADING_CELL] * 10
        assert model.index(65, 0).data(RowRole) is None
    assert threads == []  # nothing read yet: data() only scheduled the page
    qloop.run_until_complete(asyncio.wait_for(model.wait_idle(), 30))
    assert threads == [False] and model.pages_read == 1  # one read, off the loop thread
    assert changed == [(50, 99)]  # the page's rows repaint
    row = model.index(65, 0).data(RowRole)
    assert row is not None and row.id == model.id_at(65) and model.index(65, 0).data() != LOADING_CELL
    model.index(99, 0).data()
    assert model._send_handle is None  # same page: cached, nothing scheduled


def test_filter_by_text_and_combos_then_no_match(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                 panel: MessageLogPanel) -> None:
    _search(qtbot, qloop, panel, "Maria")  # a contact's name finds her messages
    rows = _rows(panel)
    assert rows and {r.contact_name for r in rows} == {"Maria Lopez"}
    assert panel.count_label.text() == f"{len(rows)} messages match"

    _choose(qtbot, panel.location_box, "Northside Fitness")
    _wait(qloop, panel)
    rows = _rows(panel)
    assert rows and {(r.contact_name, r.location_name) for r in rows} == {("Maria Lopez", "Northside Fitness")}

    _choose(qtbot, panel.status_box, "Failed")  # Maria has no failed message in the data set
    _wait(qloop, panel)
    assert panel.model.rowCount() == 0
    assert panel.stack.currentWidget() is panel.hint and panel.hint.text() == NO_MATCH != NO_MESSAGES

    qtbot.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    _wait(qloop, panel)
    assert panel.model.rowCount() == ROWS and panel.stack.currentWidget() is panel.view

    _choose(qtbot, panel.number_box, "+14155550199 (Northside Fitness)")
    _choose(qtbot, panel.direction_box, "HighLevel → WhatsApp")
    _wait(qloop, panel)
    rows = _rows(panel)
    assert rows and {(r.number, r.direction) for r in rows} == {("+14155550199", Direction.OUTBOUND)}

    _choose(qtbot, panel.time_box, "Last hour")  # the bulk rows are one a second up to now
    _wait(qloop, panel)
    assert panel.model.rowCount() == len(rows)


def test_sort_by_clicking_a_header(qtbot: Any, qloop: asyncio.AbstractEventLoop, panel: MessageLogPanel) -> None:
    header = panel.view.horizontalHeader()
    column = list(LogColumn).index(LogColumn.CONTACT)
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    _wait(qloop, panel)
    assert panel.model.log_sort.column is LogColumn.CONTACT
    labels = [(r.contact_name or r.chat_jid).lower() for r in _rows(panel)]
    descending = panel.model.log_sort.descending
    assert labels == sorted(labels, reverse=descending) and labels[0] != labels[-1]
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    _wait(qloop, panel)
    assert panel.model.log_sort.descending is not descending
    assert [(r.contact_name or r.chat_jid).lower() for r in _rows(panel)] == sorted(labels, reverse=not descending)


def test_select_shows_details_and_retry_a_failed_row(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                     panel: MessageLogPanel, db: Database) -> None:
    _click_row(qtbot, panel, 0)
    first = _rows(panel)[0]
    text = panel.details.toPlainText()
    assert f"BULK{first.id:012d}" in text and f"ghl-{first.id:012d}" in text and first.number in text
    assert not panel.retry_button.isEnabled() or first.status is MessageStatus.FAILED

    _choose(qtbot, panel.status_box, "Failed")
    _wait(qloop, panel)
    failed = _rows(panel)
    assert len(failed) == ROWS // 6
    # the reason is in the row itself, not only in a tooltip
    text_column = list(LogColumn).index(LogColumn.TEXT)
    assert panel.model.index(0, text_column).data().startswith("the recipient is not on WhatsApp")

    panel.view.setFocus()
    _click_row(qtbot, panel, 0)
    assert "Failed: the recipient is not on WhatsApp" in panel.details.toPlainText()
    assert panel.retry_button.isEnabled()
    resets: list[int] = []
    panel.model.modelReset.connect(lambda: resets.append(1))
    qtbot.keyClick(panel.view, Qt.Key.Key_Return)  # Enter opens the row's actions
    menu = panel.last_menu
    (retry,) = [a for a in menu.actions() if a.text() == "Retry"]
    assert retry.isEnabled()
    retry.trigger()
    menu.close()
    _wait(qloop, panel)
    assert db.messages.get(failed[0].id).status is MessageStatus.PENDING  # type: ignore[union-attr]
    assert "Queued again" in panel.action_label.text()
    # the change arrived through the bus and removed the row from the "Failed" view in place
    assert panel.model.rowCount() == len(failed) - 1 and resets == []
    assert panel.model.row_of(failed[0].id) is None

    _click_row(qtbot, panel, 0)
    qtbot.mouseClick(panel.retry_button, Qt.MouseButton.LeftButton)
    _wait(qloop, panel)
    assert db.messages.get(failed[1].id).status is MessageStatus.PENDING  # type: ignore[union-attr]
    assert db.jobs.count("pending") == 2


def test_export_the_filtered_view_to_csv(qtbot: Any, qloop: asyncio.AbstractEventLoop, panel: MessageLogPanel,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _search(qtbot, qloop, panel, "john")
    shown = [r.id for r in _rows(panel)]
    target = tmp_path / "john.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "CSV files")))
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    _wait(qloop, panel)
    with target.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in records] == shown
    assert {r["contact_name"] for r in records} == {"John Smith"}
    assert panel.last_export == (str(target), len(shown))
    assert panel.action_label.text().startswith(f"Exported {len(shown)} messages")


def test_live_messages_apply_by_id_without_reset(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                 panel: MessageLogPanel, db: Database, bus: EventBus) -> None:
    resets: list[int] = []
    inserted: list[int] = []
    panel.model.modelReset.connect(lambda: resets.append(1))
    panel.model.rowsInserted.connect(lambda _p, first, _last: inserted.append(first))
    message, _ = db.messages.record(Message(
        location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND, kind=MessageKind.TEXT,
        chat_jid="34600111222@s.whatsapp.net", wa_message_id="LIVE1", body="Can I move my appointment?"))
    bus.publish(MessageLogged(message))
    _wait(qloop, panel)
    assert inserted == [0] and resets == [] and _rows(panel)[0].text == "Can I move my appointment?"
    _click_row(qtbot, panel, 0)
    assert message.id is not None
    changed = db.messages.update(message.id, status=MessageStatus.SENT, ghl_message_id="GLIVE1")
    bus.publish(MessageLogged(changed))
    _wait(qloop, panel)
    assert _rows(panel)[0].status is MessageStatus.SENT and "GLIVE1" in panel.details.toPlainText()
    assert resets == [] and panel.model.rowCount() == ROWS + 1

    _search(qtbot, qloop, panel, "appointment")  # a filtered view takes only what matches
    count = panel.model.rowCount()
    other, _ = db.messages.record(Message(
        location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND, kind=MessageKind.TEXT,
        chat_jid="34600111222@s.whatsapp.net", wa_message_id="LIVE2", body="thanks"))
    bus.publish(MessageLogged(other))
    _wait(qloop, panel)
    assert panel.model.rowCount() == count


def test_a_burst_of_live_messages_is_one_read_and_one_insert_with_every_row_once(
        qtbot: Any, qloop: asyncio.AbstractEventLoop, panel: MessageLogPanel, db: Database, bus: EventBus,
        service: MessageLogService, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live log coalesces: a burst of new messages and status changes is read in one hop and
    applied as one insert (newest on top) and one repaint of the changed rows, never a reset."""
    model = panel.model
    reads: list[int] = []
    changes = service.changes

    async def spy(message_ids: Any, log_filter: Any) -> Any:
        reads.append(len(message_ids))
        return await changes(message_ids, log_filter)

    monkeypatch.setattr(service, "changes", spy)
    events: list[tuple[str, int, int]] = []
    model.modelReset.connect(lambda: events.append(("reset", 0, 0)))
    model.rowsInserted.connect(lambda _p, first, last: events.append(("insert", first, last)))
    model.dataChanged.connect(lambda top, bottom, *_: events.append(("changed", top.row(), bottom.row())))
    old = [model.id_at(r) for r in (0, 5)]
    batches = model.live_batches
    burst = []
    for n in range(12):
        message, _ = db.messages.record(Message(
            location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND, kind=MessageKind.TEXT,
            chat_jid="34600111222@s.whatsapp.net", wa_message_id=f"BURST{n}", body=f"burst {n}"))
        burst.append(message)
    for message in burst:  # as the bridge publishes them, in one go
        bus.publish(MessageLogged(message))
    for message_id in old:  # two shown rows change meanwhile
        bus.publish(MessageLogged(db.messages.update(message_id, status=MessageStatus.READ)))
    _wait(qloop, panel)
    assert model.live_batches == batches + 1 and reads == [14]
    assert [e for e in events if e[0] != "changed" or e[1] >= 12] == [("insert", 0, 11), ("changed", 12, 17)]
    ids = list(model.ids())
    assert model.rowCount() == ROWS + 12 and len(set(ids)) == len(ids)
    assert ids[:12] == sorted((m.id for m in burst), reverse=True) and ids[12:] == sorted(ids[12:], reverse=True)
    rows = _rows(panel)
    assert [r.text for r in rows[:12]] == [f"burst {n}" for n in reversed(range(12))]
    assert [rows[12].status, rows[17].status] == [MessageStatus.READ, MessageStatus.READ]


def test_select_message_clears_filters_that_hide_it(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                    panel: MessageLogPanel) -> None:
    _search(qtbot, qloop, panel, "Chen")
    hidden = next(r for r in range(1, ROWS) if r % 4 != 3)  # not Chen's
    assert panel.select_message(hidden)
    _wait(qloop, panel)
    assert panel.search.text() == "" and panel.selected_id() == hidden
    assert f"BULK{hidden:012d}" in panel.details.toPlainText()
    assert not qloop.run_until_complete(panel.reveal_message(10_000_000))


def test_tab_leaves_the_table_and_controls_have_names(qtbot: Any, panel: MessageLogPanel) -> None:
    panel.view.setFocus()
    _click_row(qtbot, panel, 2)
    qtbot.keyClick(panel.view, Qt.Key.Key_Down)
    assert panel.view.currentIndex().row() == 3  # arrows move inside
    qtbot.keyClick(panel.view, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not panel.view and not panel.view.tabKeyNavigation()
    unnamed = [w.objectName() or type(w).__name__ for w in panel.findChildren(QWidget)
               if w.focusPolicy() != Qt.FocusPolicy.NoFocus and w.isVisibleTo(panel) and not w.accessibleName()
               and w.parent() is not None and type(w).__name__ not in ("QWidget", "QScrollBar", "QSplitterHandle")
               and w.parentWidget() not in (panel.view, panel.details)]
    assert unnamed == []


def test_dead_letters_panel_retry_one_by_keyboard_and_all(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                          db: Database, service: MessageLogService,
                                                          bridge: ServiceBridge, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    for n in range(3):
        db.jobs.enqueue(NewJob(kind="ghl.app_event", dedupe_key=f"ghl:wh:{n}",
                               payload={"event": {"type": "INSTALL", "locationId": f"L{n}"}}))
    for job in db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30):
        db.jobs.dead_letter(job.id, "w", error=f"HighLevel said 400 for job {job.id}")
    panel = DeadLettersPanel(service, bridge, poll_ms=0)
    qtbot.addWidget(panel)
    counts: list[int] = []
    panel.count_changed.connect(counts.append)
    panel.show()

    def idle() -> None:
        qloop.run_until_complete(asyncio.wait_for(panel.wait_idle(), 30))

    idle()
    assert panel.model.rowCount() == 3 and panel.stack.currentWidget() is panel.view
    reason_column = DeadLettersModel.COLUMNS.index("Reason")
    assert panel.model.index(0, reason_column).data().startswith("HighLevel said 400")

    panel.view.setFocus()
    panel.view.setCurrentIndex(panel.model.index(0, 0))
    first = panel.model.record(0).job_id
    qtbot.keyClick(panel.view, Qt.Key.Key_Return)
    (retry,) = [a for a in panel.last_menu.actions() if a.text() == "Retry"]
    retry.trigger()
    panel.last_menu.close()
    idle()
    assert panel.model.rowCount() == 2
    assert db.jobs.get(first).state.value == "pending"  # type: ignore[union-attr]
    assert panel.status.text() == "1 job queued again."

    # the poll reads the list again only when something changed
    reads: list[int] = []
    original = db.message_log.dead_letters
    monkeypatch.setattr(db.message_log, "dead_letters", lambda *a, **k: reads.append(1) or original(*a, **k))
    panel.poll()
    idle()
    assert reads == []
    db.jobs.requeue_dead(panel.model.record(0).job_id)
    panel.poll()
    idle()
    assert reads == [1] and panel.model.rowCount() == 1
    db.jobs.enqueue(NewJob(kind="ghl.app_event", dedupe_key="ghl:wh:again",
                           payload={"event": {"type": "INSTALL", "locationId": "L9"}}))
    for job in db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30):  # every pending one
        db.jobs.dead_letter(job.id, "w", error="HighLevel said 400 again")
    panel.poll()
    idle()
    assert reads == [1, 1] and panel.model.rowCount() == 4  # + the one retried above, dead again

    qtbot.mouseClick(panel.retry_all_button, Qt.MouseButton.LeftButton)
    idle()
    assert panel.model.rowCount() == 0
    assert panel.status.text() == "4 jobs queued again." and db.jobs.count("dead") == 0
    assert panel.stack.currentWidget() is panel.hint and not panel.retry_all_button.isEnabled()
    assert counts == [3, 2, 1, 4, 0]  # the first read arrives after the panel was built


def test_rendered_log_with_details_pane_keeps_labels_whole(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                          panel: MessageLogPanel) -> None:
    """The log as a user sees it (saved to test-artifacts/ to look at): a failed row selected, the details
    pane beside the table; the status labels and the time are not elided at the default column widths."""
    import os

    _choose(qtbot, panel.status_box, "Any status")
    target = next(r for r in range(ROWS) if _rows(panel)[r].status is MessageStatus.FAILED)
    _click_row(qtbot, panel, target)
    assert "Failed: the recipient is not on WhatsApp" in panel.details.toPlainText()
    header = panel.view.horizontalHeader()
    metrics = panel.view.fontMetrics()
    status = list(LogColumn).index(LogColumn.STATUS)
    for label in ("Delivered", "Received", "Queued", "Failed", "Read", "Sent"):
        assert metrics.horizontalAdvance(label) + 16 + 14 <= header.sectionSize(status), label
    time_column = list(LogColumn).index(LogColumn.TIME)
    for row in range(3):
        shown = panel.model.index(row, time_column).data()
        assert metrics.horizontalAdvance(shown) + 8 <= header.sectionSize(time_column), shown
    sizes = panel.splitter.sizes()
    assert sizes[0] > sizes[1] > 200  # the table keeps most of the width, the pane stays readable
    out = Path(os.environ.get("GHL_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    assert panel.grab().save(str(out / "message-log-details.png"))
    from ghl_desktop.ui import theme

    before = QApplication.palette()
    QApplication.setPalette(theme.dark_palette())
    try:
        QApplication.processEvents()
        bad = theme.colors().bad
        text_column = list(LogColumn).index(LogColumn.TEXT)
        brush = panel.model.index(target, text_column).data(Qt.ItemDataRole.ForegroundRole)
        assert brush.color() == bad  # the failure colour follows the scheme, in the table and the pane
        assert bad.name() in panel.details.toHtml()
        assert panel.grab().save(str(out / "message-log-details-dark.png"))
    finally:
        QApplication.setPalette(before)


def test_custom_time_range_and_new_numbers_in_the_filter(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                         panel: MessageLogPanel, db: Database, bus: EventBus) -> None:
    from PySide6.QtCore import QDateTime

    _choose(qtbot, panel.time_box, "Custom range…")
    assert panel.range_row.isVisibleTo(panel)
    newest = _rows(panel)[0].time if panel.model.rowCount() else None
    assert newest is not None
    # the 60 seconds before the newest message (one message a second)
    panel.until_edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(newest.timestamp())))
    panel.since_edit.setDateTime(QDateTime.fromSecsSinceEpoch(int(newest.timestamp()) - 60))
    _wait(qloop, panel)
    rows = _rows(panel)
    assert 55 <= len(rows) <= 61 and all(newest.timestamp() - 61 <= r.time.timestamp() < newest.timestamp()
                                         for r in rows)

    from ghl_desktop.core.models import SessionState, WhatsAppSession
    from ghl_desktop.services.events import SessionChanged

    session = db.sessions.create(WhatsAppSession(id="s-new", location_id="loc-dental", state=SessionState.CONNECTED,
                                                 store_path="s-new.db", phone="+14155550777"))
    bus.publish(SessionChanged(session))
    _wait(qloop, panel)
    assert panel.number_box.findData("s-new") > 0


def test_a_superseded_query_never_runs_and_a_stale_answer_is_dropped(
        qtbot: Any, qloop: asyncio.AbstractEventLoop, panel: MessageLogPanel, db: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    ids = db.message_log.ids

    def spy(log_filter: Any, *rest: Any) -> Any:
        seen.append(log_filter.text)
        return ids(log_filter, *rest)

    monkeypatch.setattr(db.message_log, "ids", spy)
    for text in ("M", "Ma", "Mar", "Maria"):  # as if typed faster than the queries run
        panel.search.setText(text)
        panel.apply_filters()
    _wait(qloop, panel)
    assert seen == ["Maria"]
    assert {r.contact_name for r in _rows(panel)} == {"Maria Lopez"}


def test_a_page_read_that_started_before_a_live_change_does_not_bring_back_the_old_row(
        qloop: asyncio.AbstractEventLoop, service: MessageLogService, db: Database,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With several storage threads (PostgreSQL) a page read may come back after a newer read of one of
    its rows: the row read last for a change wins, whatever order the answers arrive in."""
    model = MessageLogModel(service, page_size=50)
    model.load_now()
    stale = {row.id: row for row in db.message_log.rows([model.id_at(r) for r in range(50)])}
    newer = MessageStatus.READ
    position = next(r for r in range(50) if stale[model.id_at(r)].status.rank < newer.rank
                    and stale[model.id_at(r)].status is not MessageStatus.FAILED)
    target = model.id_at(position)
    release = asyncio.Event()
    rows_of = service.rows

    async def slow_page(ids: Any) -> Any:
        await release.wait()
        return [stale[i] for i in ids if i in stale]  # what the page read saw before the change

    monkeypatch.setattr(service, "rows", slow_page)
    assert model.index(position, 0).data() == LOADING_CELL  # the page read starts (and waits)
    applied = asyncio.Event()
    model.changes_applied.connect(lambda _ids: applied.set())

    async def change_then_release() -> None:
        await asyncio.sleep(0.01)
        assert model.reads == 1
        db.messages.update(target, status=newer)
        model.apply_id(target)
        await applied.wait()  # the change's row is in, while the older page read still waits
        release.set()
        await model.wait_idle()

    qloop.run_until_complete(asyncio.wait_for(change_then_release(), 30))
    monkeypatch.setattr(service, "rows", rows_of)
    assert stale[target].status is not newer
    assert model.index(position, 0).data(RowRole).status is newer  # the newer read kept
    assert all(model.index(r, 0).data(RowRole) is not None for r in range(50))  # the rest: the old read

"""What the panels of the main window share: :class:`Tasks` (every action is an asyncio task owned by
the window, cancelled when it closes; a failure becomes a sentence where the panel says), panel
frames, and :func:`readable_error`.

``PanelBase`` (the old mixin view of the window) remains only for the old message-log panel until
its standalone replacement lands; the other panels are standalone QWidgets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractItemModel
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QMainWindow, QPushButton, QTableView, QVBoxLayout, QWidget

from ghl_desktop.app import App
from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.ui.models import (
    DeadJobsModel,
    LocationsModel,
    MessageLogFilter,
    MessageLogModel,
    RecordTableModel,
    SessionsModel,
)
from ghl_desktop.ui.notify import NoticeCoalescer, NoticePolicy

if TYPE_CHECKING:
    from ghl_desktop.runtime import BridgeRuntime

log = logging.getLogger("ghl.ui")

#: opens a URL in the user's browser; the return value is not trusted (see qt-headless.md §4)
OpenUrl = Callable[[str], bool]
#: asks the user to confirm a destructive action: (title, question) -> yes
Confirm = Callable[[str, str], bool]


def readable_error(exc: BaseException) -> str:
    """One sentence for the user: our own errors already are; others get their type named."""
    if isinstance(exc, GhlDesktopError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Tasks:
    """The window's running actions: kept until done, failures shown via ``on_error``, all cancelled
    (and awaited) by :meth:`cancel_all` when the window shuts down."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str,
              on_error: Callable[[str], None] | None = None) -> asyncio.Task[Any]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed: %s", name, readable_error(exc), exc_info=not isinstance(exc, GhlDesktopError))
                if on_error is not None:
                    on_error(readable_error(exc))

        task = asyncio.get_event_loop().create_task(guarded(), name=f"ui-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def add(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def panel_frame(title: str, *header_widgets: QWidget) -> tuple[QFrame, QVBoxLayout]:
    """A titled panel: the frame, and its layout to add the body to."""
    return _panel(title, *header_widgets)


def _panel(title: str, *header_widgets: QWidget) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame()
    frame.setObjectName("panel")
    frame.setFrameShape(QFrame.Shape.StyledPanel)
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(10, 8, 10, 10)
    layout.setSpacing(6)
    header = QHBoxLayout()
    label = QLabel(title)
    label.setObjectName("panelTitle")
    label.setAccessibleName(title)
    frame.setAccessibleName(title)
    header.addWidget(label)
    header.addStretch(1)
    for widget in header_widgets:
        header.addWidget(widget)
    layout.addLayout(header)
    return frame, layout


def _status_label(name: str) -> QLabel:
    from ghl_desktop.ui.widgets import StatusLabel

    return StatusLabel(name)


class PanelBase(QMainWindow):
    """The main window as its panels see it; :class:`~ghl_desktop.ui.main_window.MainWindow` sets it up."""

    app: App
    runtime: BridgeRuntime | None
    open_url: OpenUrl
    confirm: Confirm
    locations_model: LocationsModel
    sessions_model: SessionsModel
    messages_model: MessageLogModel
    messages_filter: MessageLogFilter
    dead_model: DeadJobsModel
    notices: NoticeCoalescer
    policy: NoticePolicy
    _tasks: set[asyncio.Task[Any]]

    if TYPE_CHECKING:

        def refresh(self) -> None:
            """Reload every panel from the database (the window's)."""

    # -- row actions --

    def _row_actions(
        self,
        view: QTableView,
        model: RecordTableModel[Any],
        actions_for: Callable[[Any], list[tuple[str, Callable[[], object]]]],
    ) -> None:
        """Buttons in the model's ACTIONS_COLUMN of every row, rebuilt when the row changes."""
        column = model.ACTIONS_COLUMN

        def install(*_args: object) -> None:
            for row in range(model.rowCount()):
                record = model.record(row)
                actions = actions_for(record)
                signature = (getattr(record, "id", None), tuple(name for name, _ in actions))
                index = model.index(row, column)
                current = view.indexWidget(index)
                if current is not None and current.property("signature") == repr(signature):
                    continue
                holder = QWidget()
                holder.setProperty("signature", repr(signature))
                row_layout = QHBoxLayout(holder)
                row_layout.setContentsMargins(2, 1, 2, 1)
                row_layout.setSpacing(4)
                for name, callback in actions:
                    button = QPushButton(name)
                    button.setObjectName("rowAction")
                    button.clicked.connect(callback)
                    row_layout.addWidget(button)
                row_layout.addStretch(1)
                view.setIndexWidget(index, holder)
            view.resizeColumnToContents(column)

        source: QAbstractItemModel = model
        for signal in (source.modelReset, source.rowsInserted, source.rowsRemoved, source.dataChanged):
            signal.connect(install)

    @staticmethod
    def row_button(view: QTableView, row: int, text: str) -> QPushButton | None:
        """The action button ``text`` in ``row`` (None when the row offers no such action)."""
        model = view.model()
        holder = view.indexWidget(model.index(row, getattr(model, "ACTIONS_COLUMN", -1)))
        if holder is None:
            return None
        return next((b for b in holder.findChildren(QPushButton) if b.text() == text), None)

    # -- tasks --

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], *, on_error: Callable[[str], None], name: str
    ) -> asyncio.Task[Any]:
        """Run a window action: kept until done, its failure shown where ``on_error`` puts it."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed: %s", name, readable_error(exc), exc_info=not isinstance(exc, GhlDesktopError))
                on_error(readable_error(exc))

        task = asyncio.get_event_loop().create_task(guarded(), name=f"ui-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def _say(self, label: QLabel, text: str | None, *, error: bool = False) -> None:
        from ghl_desktop.ui.widgets import StatusLabel

        if isinstance(label, StatusLabel):
            label.say(text, error=error)
            return
        label.setText(text or "")
        label.setVisible(bool(text))

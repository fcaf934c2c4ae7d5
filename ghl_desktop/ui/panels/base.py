"""What the panels of the main window share: :class:`Tasks` (every action is an asyncio task owned by
the window, cancelled when it closes; a failure becomes a sentence where the panel says), panel
frames, and :func:`readable_error`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ghl_desktop.core.errors import GhlDesktopError

log = logging.getLogger("ghl.ui")

#: opens a URL in the user's browser; the return value is not trusted (see docs/qt-headless.md §4)
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

    async def wait(self) -> None:
        """Until every task started so far (and those they start) has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
